"""The model families of the depth study, declared once, in a module without torch (option
parsers such as ``pfc --help`` list them); :func:`resnet_pfc.models.build_depth_model` builds them.

A family is a :class:`FamilySpec`: its name, a one-line description, the builder in
:mod:`resnet_pfc.models` (``"ln_resnet"`` or ``"transformer"``) with the builder's options, and
whether a block with all its parameters zero is an exact identity (needed by the depth study's
warm start). :data:`DEPTH_FAMILIES`, :data:`TRANSFORMER_VARIANTS` and :data:`WARM_FAMILIES` are
read off :data:`FAMILIES`. A family of an existing architecture is added here alone; a new
architecture adds its builder to :data:`resnet_pfc.models.DEPTH_BUILDERS` too.

>>> from resnet_pfc.families import FAMILIES
>>> FAMILIES["transformer_post"].options
{'norm': 'post', 'block_affine': True}
"""

from __future__ import annotations

from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["FamilySpec", "FAMILIES", "DEPTH_FAMILIES", "TRANSFORMER_VARIANTS", "WARM_FAMILIES"]


@dataclass(frozen=True)
class FamilySpec:
    """One model family of the depth study.

    Attributes
    ----------
    name : str
        The ``--model`` / ``--families`` name.
    description : str
        One line: what the blocks are.
    builder : {"ln_resnet", "transformer"}
        Key of :data:`resnet_pfc.models.DEPTH_BUILDERS`.
    options : dict
        Keyword arguments of the builder that make this family (``linears``, ``norm``,
        ``block_affine``).
    identity_block : bool
        Whether a block with all its parameters zero is the identity, so that a trained network
        can be deepened exactly (the warm start): the post-LN ResNets without LayerNorm affine
        parts (``LN(x + 0) = x`` on LayerNorm's sphere, up to its ``eps``) and the pre-LN
        transformers (``x + 0``). A post-LN transformer block with zero parameters maps every
        token to 0 (its LayerNorm's gain is 0); with gain 1 it is not an identity (the stream is
        not on the sphere).
    """

    name: str
    description: str
    builder: str
    options: dict[str, Any] = field(default_factory=dict)
    identity_block: bool = False


_SPECS = (
    FamilySpec(
        "ln_resnet1",
        "post-LayerNorm ResNet, one linear layer per block",
        "ln_resnet",
        {"linears": 1},
        identity_block=True,
    ),
    FamilySpec(
        "ln_resnet2",
        "post-LayerNorm ResNet, two linear layers per block",
        "ln_resnet",
        {"linears": 2},
        identity_block=True,
    ),
    FamilySpec(
        "transformer",
        "pre-LayerNorm transformer blocks with affine LayerNorms",
        "transformer",
        {"norm": "pre", "block_affine": True},
        identity_block=True,
    ),
    FamilySpec(
        "transformer_post",
        "post-LayerNorm transformer blocks",
        "transformer",
        {"norm": "post", "block_affine": True},
    ),
    FamilySpec(
        "transformer_noaffine",
        "pre-LayerNorm transformer blocks whose LayerNorms have no learnable scale and shift",
        "transformer",
        {"norm": "pre", "block_affine": False},
        identity_block=True,
    ),
)

#: Every family, by name, in declaration order.
FAMILIES: MappingProxyType[str, FamilySpec] = MappingProxyType({s.name: s for s in _SPECS})
#: Model families of the depth study (``TrainConfig.model`` names).
DEPTH_FAMILIES: tuple[str, ...] = tuple(FAMILIES)
#: The transformer families: ``(norm, block_affine)`` of each.
TRANSFORMER_VARIANTS: MappingProxyType[str, tuple[str, bool]] = MappingProxyType(
    {
        s.name: (s.options["norm"], s.options["block_affine"])
        for s in _SPECS
        if s.builder == "transformer"
    }
)
#: Families with an exact identity block (the depth study's warm start).
WARM_FAMILIES: tuple[str, ...] = tuple(s.name for s in _SPECS if s.identity_block)
