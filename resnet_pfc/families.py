"""Model family names, in a module without torch so that option parsers (``pfc --help``) can
list them; the families themselves are built by :mod:`resnet_pfc.models`."""

from __future__ import annotations

__all__ = ["DEPTH_FAMILIES", "TRANSFORMER_VARIANTS"]

#: Model families of the depth study (``TrainConfig.model`` names).
#: ``transformer_post``: post-LayerNorm blocks; ``transformer_noaffine``: pre-LayerNorm blocks
#: whose LayerNorms have no learnable scale and shift.
DEPTH_FAMILIES: tuple[str, ...] = (
    "ln_resnet1",
    "ln_resnet2",
    "transformer",
    "transformer_post",
    "transformer_noaffine",
)
#: The transformer families of :data:`DEPTH_FAMILIES`: ``(norm, block_affine)`` of each.
TRANSFORMER_VARIANTS: dict[str, tuple[str, bool]] = {
    "transformer": ("pre", True),
    "transformer_post": ("post", True),
    "transformer_noaffine": ("pre", False),
}
