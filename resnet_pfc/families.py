"""Model family names, in a module without torch so that option parsers (``pfc --help``) can
list them; the families themselves are built by :mod:`resnet_pfc.models`."""

from __future__ import annotations

__all__ = ["DEPTH_FAMILIES"]

#: Model families of the depth study (``TrainConfig.model`` names).
DEPTH_FAMILIES: tuple[str, ...] = ("ln_resnet1", "ln_resnet2", "transformer")
