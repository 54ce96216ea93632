"""The paper's ResNets, built so that one stage keeps a single feature dimension.

Two families, both with a *measured stage*: ``B`` residual blocks that map features of one fixed
dimension ``d`` to the same dimension, so that the collapse metrics of the stage input and of the
output of every block are comparable (PFC paper, Sec. IV-A and Table I).

* :class:`FCResNet` (the paper's MNIST model): flatten, a linear *stem* to ``width``, ``B`` blocks

  .. math:: h^{l} = h^{l-1} + W_2^{l}\\,\\mathrm{ReLU}(W_1^{l} h^{l-1} + c_1^{l}) + c_2^{l},

  then a linear classifier ``z = W h^B + b``. No normalisation layer, no activation after the
  stem or after a block: the measured features are exactly the residual stream, and the
  classifier acts on the last measured layer directly (so NC3/NC4 use ``(W, b)`` as they are).
  The last linear map of each block starts at ``1/sqrt(B)`` of PyTorch's default scale so that
  the residual stream does not grow with depth at initialisation.
* :class:`ConvResNet`: a stem (3x3 convolution, batch norm, ReLU; for large images a stride)
  followed by down-sampling basic blocks that reach ``C`` channels on an ``S x S`` grid, then the
  measured stage of ``B`` basic blocks without down-sampling (He et al.'s post-activation block
  ``relu(x + bn(conv(relu(bn(conv(x))))))``), then global average pooling and a linear classifier.
  Because pooling is linear, the logits are an affine function of the flattened last-block
  features (``d = C S^2``): ``z = W_eff h + b`` with ``W_eff[k, c S^2 + p] = W[k, c] / S^2``
  (:meth:`ConvResNet.measured_classifier`), which is what NC3/NC4 use for the last layer.

Three more families serve the depth study (:mod:`resnet_pfc.depth`; Sukenik, Lampert, Mondelli
2025), all with the same measured-stage design: :class:`LNResNet` (a LayerNorm after every
residual addition, one or two linear layers per block; every measured layer is the LayerNorm
output, on LayerNorm's sphere, and the last one is the classifier's input) and
:class:`TransformerClassifier` (pre-LN attention + MLP blocks over image rows or patches; the
measured layers are the token means of the residual stream, then ``"final"``, the final
LayerNorm's output fed to the classifier). See :func:`build_depth_model`.

Measured layers are named ``"input"`` (the output of the stem = the input of the measured stage)
and ``"block1" ... "blockB"``; :meth:`measured_layers` maps these labels to module names for
forward hooks.

Table I of the paper lists block counts per data set; the widths and the layer the stage starts
at were lost from the text, so :data:`TABLE_I` fixes them (*convention*, documented per row).

The paper's families (FC and conv ResNets, Table I) and the depth study's LayerNorm families
(declared in :mod:`resnet_pfc.families`) share the :class:`MeasuredModel` contract (measured
layers and the exact last-layer classifier).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from ufm.errors import InputError
from ufm.validate import check_int

from .families import DEPTH_FAMILIES, FAMILIES, TRANSFORMER_VARIANTS

__all__ = [
    "FCResNet",
    "ConvResNet",
    "BasicBlock",
    "PaperRow",
    "TABLE_I",
    "paper_model",
    "build_model",
    "MeasuredModel",
    "LNResNet",
    "TransformerBlock",
    "TransformerClassifier",
    "DEPTH_FAMILIES",
    "DEPTH_BUILDERS",
    "TRANSFORMER_VARIANTS",
    "build_depth_model",
]


class FCBlock(nn.Module):
    """Fully connected residual block ``x + W2 relu(W1 x + c1) + c2`` of width ``width``."""

    def __init__(self, width: int, *, hidden: int | None = None, residual_scale: float = 1.0):
        super().__init__()
        hidden = width if hidden is None else hidden
        self.fc1 = nn.Linear(width, hidden)
        self.fc2 = nn.Linear(hidden, width)
        with torch.no_grad():
            self.fc2.weight.mul_(residual_scale)
            self.fc2.bias.mul_(residual_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.relu(self.fc1(x)))


class BasicBlock(nn.Module):
    """He et al.'s post-activation basic block; a 1x1 projection when the shape changes."""

    def __init__(self, in_channels: int, channels: int, *, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, channels, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut: nn.Module
        if stride != 1 or in_channels != channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, channels, 1, stride=stride, bias=False),
                nn.BatchNorm2d(channels),
            )
        else:
            self.shortcut = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        # Not in place: forward hooks may still hold the block's input.
        return torch.relu(out + self.shortcut(x))


class MeasuredModel(nn.Module):
    """Base class: a model with a measured stage (``stem`` -> ``blocks`` -> head)."""

    stem: nn.Module
    blocks: nn.ModuleList
    classifier: nn.Linear
    width: int

    def measured_layers(self) -> dict[str, str]:
        """Labels of the measured layers mapped to module names (for forward hooks).

        Returns
        -------
        dict[str, str]
            ``{"input": "stem", "block1": "blocks.0", ..., "blockB": "blocks.{B-1}"}``; the
            output of each module is the measured feature (flattened to ``(batch, d)``).
        """
        out = {"input": "stem"}
        for i in range(len(self.blocks)):
            out[f"block{i + 1}"] = f"blocks.{i}"
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``classifier(blocks(stem(x)))`` (models with a pooled head override it)."""
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.classifier(h)

    def measured_classifier(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The classifier ``(W (K, d), b (K,))`` acting on the flattened last measured layer
        (default: the ``classifier`` layer itself)."""
        return self.classifier.weight.detach(), self.classifier.bias.detach()

    @property
    def feature_dim(self) -> int:
        """Dimension ``d`` of every measured layer (flattened; default: ``width``)."""
        return self.width


class _FlatResNet(MeasuredModel):
    """The skeleton shared by :class:`FCResNet` and :class:`LNResNet`.

    Flatten, a linear stem to ``width`` (followed by ``stem_norm(width)`` when given), ``blocks``
    residual blocks ``block(width, residual_scale=1/sqrt(blocks))`` (each block scales its last
    linear map, so that the residual stream does not grow with depth at initialisation), and a
    linear classifier on the last block's output. The common arguments are checked before any
    module is built; the modules are built in the order stem, blocks, classifier, which fixes
    the seeded initialisation and the state-dict keys (``stem.*``, ``blocks.*``,
    ``classifier.*``).

    Parameters
    ----------
    input_dim, num_classes, width, blocks : int
        As in :class:`FCResNet`; ``width >= min_width``.
    block : callable
        ``block(width, residual_scale=s)`` returns one residual block ``(batch, width) ->
        (batch, width)``.
    min_width : int
        Smallest allowed ``width``.
    stem_norm : callable, optional
        ``stem_norm(width)`` returns a module appended to the stem.
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        width: int,
        blocks: int,
        block: Callable[..., nn.Module],
        *,
        min_width: int = 1,
        stem_norm: Callable[[int], nn.Module] | None = None,
    ):
        super().__init__()
        check_int(input_dim, "input_dim", low=1)
        check_int(num_classes, "num_classes", low=2)
        check_int(width, "width", low=min_width)
        check_int(blocks, "blocks", low=1)
        self.input_dim, self.num_classes, self.width = input_dim, num_classes, width
        stem: list[nn.Module] = [nn.Flatten(), nn.Linear(input_dim, width)]
        if stem_norm is not None:
            stem.append(stem_norm(width))
        self.stem = nn.Sequential(*stem)
        scale = 1.0 / math.sqrt(blocks)
        self.blocks = nn.ModuleList(block(width, residual_scale=scale) for _ in range(blocks))
        self.classifier = nn.Linear(width, num_classes)


class FCResNet(_FlatResNet):
    """Fully connected ResNet (the paper's MNIST model is ``width=1000, blocks=10``).

    Parameters
    ----------
    input_dim : int
        Number of input features after flattening (784 for MNIST, 64 for digits).
    num_classes : int
        ``K >= 2``.
    width : int
        Dimension ``d`` of the residual stream (the measured features).
    blocks : int
        Number ``B >= 1`` of residual blocks.
    hidden : int, optional
        Width of the hidden layer inside a block (default ``width``).

    Notes
    -----
    .. math:: h^0 = A\\,\\mathrm{vec}(x) + a,\\quad h^l = h^{l-1} + f_l(h^{l-1}),\\quad z = W h^B + b.
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        *,
        width: int = 1000,
        blocks: int = 10,
        hidden: int | None = None,
    ):
        super().__init__(input_dim, num_classes, width, blocks, partial(FCBlock, hidden=hidden))


class ConvResNet(MeasuredModel):
    """Convolutional ResNet whose last stage keeps one feature dimension ``d = C S^2``.

    Parameters
    ----------
    input_shape : tuple of int
        ``(channels, height, width)`` of one input image.
    num_classes : int
        ``K >= 2``.
    widths : sequence of int
        Channels of the stem followed by those of each down-sampling block; the last entry is the
        measured stage's ``C``. Each entry after the first halves the grid (stride 2).
    blocks : int
        Number ``B >= 1`` of basic blocks in the measured stage.
    stem_stride : int
        Stride of the stem convolution (2 for 96 x 96 STL10 images).
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        widths: Sequence[int] = (64, 128, 256),
        blocks: int = 3,
        stem_stride: int = 1,
    ):
        super().__init__()
        if len(tuple(input_shape)) != 3:
            raise InputError(
                f"input_shape must be (channels, height, width) for a conv ResNet, got "
                f"{tuple(input_shape)}; use model='fc' for flat inputs"
            )
        c_in, h_in, w_in = (int(v) for v in input_shape)
        check_int(num_classes, "num_classes", low=2)
        check_int(blocks, "blocks", low=1)
        widths = tuple(int(w) for w in widths)
        if not widths or min(widths) < 1:
            raise InputError(f"widths must be a non-empty list of positive ints, got {widths}")
        check_int(stem_stride, "stem_stride", low=1)
        self.num_classes = num_classes
        stem: list[nn.Module] = [
            nn.Conv2d(c_in, widths[0], 3, stride=stem_stride, padding=1, bias=False),
            nn.BatchNorm2d(widths[0]),
            nn.ReLU(),
        ]
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            stem.append(BasicBlock(a, b, stride=2))
        self.stem = nn.Sequential(*stem)
        C = widths[-1]
        self.blocks = nn.ModuleList(BasicBlock(C, C) for _ in range(blocks))
        self.classifier = nn.Linear(C, num_classes)
        with torch.no_grad():
            probe = self.stem.eval()(torch.zeros(1, c_in, h_in, w_in))
        self.stem.train()
        self.stage_shape = tuple(int(v) for v in probe.shape[1:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stem(x)
        for block in self.blocks:
            h = block(h)
        return self.classifier(h.mean(dim=(2, 3)))

    def measured_classifier(self) -> tuple[torch.Tensor, torch.Tensor]:
        C, S1, S2 = self.stage_shape
        W = self.classifier.weight.detach()  # (K, C)
        # Flattening (C, S1, S2) is channel-major, so each channel's weight repeats S1*S2 times.
        W_eff = W.repeat_interleave(S1 * S2, dim=1) / (S1 * S2)
        return W_eff, self.classifier.bias.detach()

    @property
    def feature_dim(self) -> int:
        return math.prod(self.stage_shape)


@dataclass(frozen=True)
class PaperRow:
    """One row of Table I: block count plus this project's choice of the lost widths."""

    kind: str  # "fc" or "conv"
    blocks: int
    width: int  # FC width, or channels C of the measured conv stage
    widths: tuple[int, ...] = ()  # conv: stem + down-sampling channels, ending at ``width``
    stem_stride: int = 1
    note: str = ""


#: Table I of the PFC paper. Block counts are the paper's; widths of the conv models are this
#: project's convention (lost from the text), chosen so that d = C S^2 stays moderate.
#: ``"digits"`` is this project's embedded quick preset (not in the paper).
TABLE_I: dict[str, tuple[PaperRow, ...]] = {
    "mnist": (PaperRow("fc", 10, 1000, note="paper: FC width 1000, 10 blocks"),),
    "digits": (PaperRow("fc", 4, 256, note="embedded quick preset (not in the paper)"),),
    "fashion_mnist": tuple(
        PaperRow("conv", b, 128, (32, 64, 128), note="28x28 -> 128 x 7 x 7 (d = 6272)")
        for b in (5, 4)
    ),
    "cifar10": tuple(
        PaperRow("conv", b, 256, (64, 128, 256), note="32x32 -> 256 x 8 x 8 (d = 16384)")
        for b in (2, 3, 4)
    ),
    "stl10": tuple(
        PaperRow(
            "conv",
            5,
            c,
            (32, 64, c) if c >= 64 else (16, 32, c),
            stem_stride=2,
            note=f"96x96 -> {c} x 12 x 12 (d = {c * 144}); variant = stage width",
        )
        for c in (32, 64, 128, 256)
    ),
    "cifar100": tuple(
        PaperRow("conv", b, c, (64, 128, c), note=f"32x32 -> {c} x 8 x 8 (d = {c * 64})")
        for b, c in ((3, 128), (3, 256), (4, 128), (4, 256))
    ),
}

_DEFAULT_SHAPES = {
    "mnist": ((1, 28, 28), 10),
    "fashion_mnist": ((1, 28, 28), 10),
    "digits": ((1, 8, 8), 10),
    "cifar10": ((3, 32, 32), 10),
    "cifar100": ((3, 32, 32), 100),
    "stl10": ((3, 96, 96), 10),
}


def build_model(
    kind: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    blocks: int,
    width: int,
    widths: Sequence[int] | None = None,
    stem_stride: int = 1,
) -> MeasuredModel:
    """Build an :class:`FCResNet` (``kind="fc"``) or a :class:`ConvResNet` (``kind="conv"``).

    For ``"conv"``, ``widths`` defaults to ``(width // 4, width // 2, width)`` (at least 8).
    """
    if kind == "fc":
        return FCResNet(math.prod(input_shape), num_classes, width=width, blocks=blocks)
    if kind == "conv":
        if widths is None:
            widths = (max(8, width // 4), max(8, width // 2), width)
        elif widths[-1] != width:
            widths = (*widths[:-1], width)
        return ConvResNet(
            input_shape, num_classes, widths=widths, blocks=blocks, stem_stride=stem_stride
        )
    raise InputError(f"model kind must be 'fc' or 'conv', got {kind!r}")


def paper_model(
    dataset: str,
    blocks: int | None = None,
    *,
    variant: int = 0,
    width: int | None = None,
    input_shape: Sequence[int] | None = None,
    num_classes: int | None = None,
) -> MeasuredModel:
    """The model of Table I for ``dataset`` (optionally the row with ``blocks`` blocks).

    Parameters
    ----------
    dataset : str
        ``"mnist"``, ``"fashion_mnist"``, ``"cifar10"``, ``"stl10"``, ``"cifar100"`` (the
        paper's) or ``"digits"`` (this project's quick preset).
    blocks : int, optional
        Number of blocks of the measured stage; must be one of the data set's Table I counts
        (MNIST 10; Fashion-MNIST 5, 4; CIFAR10 2, 3, 4; STL10 5; CIFAR100 3, 3, 4, 4). Default:
        the first row.
    variant : int
        Index among the rows with that block count (STL10 has four 5-block variants, CIFAR100
        two of 3 and two of 4 blocks; here they differ by the stage width, see :data:`TABLE_I`).
    width : int, optional
        Override the FC width or the conv stage channels.
    input_shape, num_classes : optional
        Override the data set's defaults (e.g. for a subset of classes).

    Returns
    -------
    MeasuredModel

    Raises
    ------
    InputError
        Unknown data set, a block count not in Table I, or a variant out of range.
    """
    key = dataset.lower().replace("-", "_")
    if key not in TABLE_I:
        raise InputError(f"dataset must be one of {sorted(TABLE_I)}, got {dataset!r}")
    rows = [r for r in TABLE_I[key] if blocks is None or r.blocks == blocks]
    if not rows:
        counts = sorted({r.blocks for r in TABLE_I[key]})
        raise InputError(
            f"Table I has no {key} model with blocks={blocks}; choose one of {counts}, "
            "or build any depth with build_model(...)"
        )
    if not 0 <= variant < len(rows):
        raise InputError(f"variant must be in 0..{len(rows) - 1} for {key}, got {variant}")
    row = rows[variant]
    shape, K = _DEFAULT_SHAPES[key]
    shape = tuple(input_shape) if input_shape is not None else shape
    K = num_classes if num_classes is not None else K
    return build_model(
        row.kind,
        shape,
        K,
        blocks=row.blocks,
        width=row.width if width is None else width,
        widths=row.widths or None,
        stem_stride=row.stem_stride,
    )


# ------------------------------------------------------------------------------------------
# LayerNorm ResNets and a small transformer (the depth study, Sukenik, Lampert, Mondelli 2025)
# ------------------------------------------------------------------------------------------


def _layer_norm(width: int, affine: bool) -> nn.LayerNorm:
    return nn.LayerNorm(width, elementwise_affine=affine)


class LNBlock(nn.Module):
    """Post-LayerNorm residual block ``LN(x + f(x))`` of width ``width``.

    ``linears=1``: :math:`f(x) = \\mathrm{ReLU}(W x + c)`; ``linears=2``:
    :math:`f(x) = W_2\\,\\mathrm{ReLU}(W_1 x + c_1) + c_2`. The block's output is the
    LayerNorm output, so (without affine) it has zero mean across coordinates and norm
    :math:`\\sqrt{d}` (up to LayerNorm's ``eps``).
    """

    def __init__(
        self, width: int, *, linears: int = 1, residual_scale: float = 1.0, affine: bool = False
    ):
        super().__init__()
        if linears not in (1, 2):
            raise InputError(f"linears must be 1 or 2, got {linears!r}")
        self.fc1 = nn.Linear(width, width)
        self.fc2 = nn.Linear(width, width) if linears == 2 else None
        last = self.fc2 if self.fc2 is not None else self.fc1
        with torch.no_grad():
            # ReLU is positively homogeneous, so scaling the last linear map scales f.
            last.weight.mul_(residual_scale)
            last.bias.mul_(residual_scale)
        self.norm = _layer_norm(width, affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = torch.relu(self.fc1(x))
        if self.fc2 is not None:
            f = self.fc2(f)
        return self.norm(x + f)


class LNResNet(_FlatResNet):
    """Fully connected ResNet with a LayerNorm after every residual addition.

    Parameters
    ----------
    input_dim, num_classes, blocks : int
        As in :class:`FCResNet` (``blocks`` is the depth ``B``).
    width : int
        Dimension ``d >= 2`` of the residual stream (the paper's depth study: 64).
    linears : {1, 2}
        Linear layers per block (see :class:`LNBlock`).
    affine : bool
        Learnable LayerNorm scale and shift (default ``False``: every measured layer then lies
        exactly where LayerNorm puts it, the sphere-constrained UFM's feature set).

    Notes
    -----
    .. math:: h^0 = \\mathrm{LN}(A\\,\\mathrm{vec}(x) + a),\\quad
              h^l = \\mathrm{LN}\\big(h^{l-1} + f_l(h^{l-1})\\big),\\quad z = W h^B + b.

    *Measured layers* (convention): ``"input"`` is :math:`h^0` (the stem's LayerNorm output)
    and ``"block l"`` is :math:`h^l`, the residual stream after block ``l``'s LayerNorm. The
    classifier acts on :math:`h^B` directly, so the last measured layer is exactly the feature
    fed to the classifier (the ``H`` of the sphere-constrained UFM) and NC3/NC4 use
    ``(W, b)`` as they are. The last linear map of each block starts at ``1/sqrt(B)`` of
    PyTorch's default scale (as in :class:`FCResNet`).
    """

    def __init__(
        self,
        input_dim: int,
        num_classes: int,
        *,
        width: int = 64,
        blocks: int = 5,
        linears: int = 1,
        affine: bool = False,
    ):
        super().__init__(
            input_dim,
            num_classes,
            width,
            blocks,
            partial(LNBlock, linears=linears, affine=affine),
            min_width=2,
            stem_norm=partial(_layer_norm, affine=affine),
        )
        self.linears = linears


class _TokenMean(nn.Module):
    """Mean over the token axis ``(batch, T, d) -> (batch, d)`` (a measurement tap)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class TransformerBlock(nn.Module):
    """Encoder block, pre-LayerNorm (default) ``x + MHA(LN(x))`` then ``x + MLP(LN(x))``, or
    post-LayerNorm (``norm="post"``) ``LN(x + MHA(x))`` then ``LN(x + MLP(x))``.

    ``affine=False`` drops the two LayerNorms' learnable scale and shift.
    """

    def __init__(
        self,
        width: int,
        heads: int,
        *,
        mlp_ratio: int = 2,
        residual_scale: float = 1.0,
        norm: str = "pre",
        affine: bool = True,
    ):
        super().__init__()
        if norm not in ("pre", "post"):
            raise InputError(f"norm must be 'pre' or 'post', got {norm!r}")
        self.norm_position = norm
        self.norm1 = nn.LayerNorm(width, elementwise_affine=affine)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(width, elementwise_affine=affine)
        self.fc1 = nn.Linear(width, mlp_ratio * width)
        self.fc2 = nn.Linear(mlp_ratio * width, width)
        with torch.no_grad():
            self.attn.out_proj.weight.mul_(residual_scale)
            self.fc2.weight.mul_(residual_scale)
            self.fc2.bias.mul_(residual_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.norm_position == "post":
            x = self.norm1(x + self.attn(x, x, x, need_weights=False)[0])
            return self.norm2(x + self.fc2(torch.relu(self.fc1(x))))
        a = self.norm1(x)
        x = x + self.attn(a, a, a, need_weights=False)[0]
        return x + self.fc2(torch.relu(self.fc1(self.norm2(x))))


class TransformerClassifier(MeasuredModel):
    """A small transformer encoder over image tokens, with a final LayerNorm and a classifier.

    Parameters
    ----------
    input_shape : tuple of int
        ``(channels, height, width)`` of one image.
    num_classes : int
        ``K >= 2``.
    width : int
        Token dimension ``d`` (divisible by ``heads``).
    blocks : int
        Depth ``B >= 1`` (number of encoder blocks).
    heads : int
        Attention heads.
    patch : int, optional
        ``None`` (default): one token per image row (``T = height`` tokens of
        ``channels * width`` values). An int ``p``: non-overlapping ``p x p`` patches
        (``height`` and ``width`` divisible by ``p``).
    mlp_ratio : int
        Hidden width of the MLP as a multiple of ``width``.
    affine : bool
        Learnable scale and shift of the *final* LayerNorm (default ``False``, so that the
        classifier's input lies on LayerNorm's sphere; the blocks' LayerNorms are affine).
    norm : {"pre", "post"}
        Where the blocks' LayerNorms sit (:class:`TransformerBlock`; default ``"pre"``).
    block_affine : bool
        Learnable scale and shift of the blocks' LayerNorms (default ``True``).

    Notes
    -----
    .. math:: x^0 = E\\,\\mathrm{tokens}(x) + P,\\quad x^l = \\mathrm{Block}_l(x^{l-1}),\\quad
              h = \\mathrm{LN}\\Big(\\tfrac1T \\sum_t x^B_t\\Big),\\quad z = W h + b.

    *Measured layers* (convention): mean pooling over tokens, not a CLS token. ``"input"``
    is the token mean of :math:`x^0` (embedding plus position), ``"block l"`` the token mean
    of the residual stream after block ``l``, and ``"final"`` the final LayerNorm's output
    :math:`h`, the feature the classifier acts on (NC3/NC4 use ``(W, b)`` on it). The
    residual stream itself is not normalised (pre-LN); only ``"final"`` lies on the sphere.
    """

    def __init__(
        self,
        input_shape: Sequence[int],
        num_classes: int,
        *,
        width: int = 64,
        blocks: int = 4,
        heads: int = 4,
        patch: int | None = None,
        mlp_ratio: int = 2,
        affine: bool = False,
        norm: str = "pre",
        block_affine: bool = True,
    ):
        super().__init__()
        shape = tuple(int(v) for v in input_shape)
        if len(shape) != 3:
            raise InputError(
                f"input_shape must be (channels, height, width) for a transformer, got {shape}"
            )
        c, hgt, wid = shape
        check_int(num_classes, "num_classes", low=2)
        check_int(width, "width", low=2)
        check_int(blocks, "blocks", low=1)
        check_int(heads, "heads", low=1)
        check_int(mlp_ratio, "mlp_ratio", low=1)
        if width % heads:
            raise InputError(f"width={width} must be divisible by heads={heads}")
        if patch is None:
            tokens, token_dim = hgt, c * wid
        else:
            check_int(patch, "patch", low=1)
            if hgt % patch or wid % patch:
                raise InputError(
                    f"patch={patch} must divide the image size {hgt}x{wid}; choose a divisor "
                    "or patch=None (one token per row)"
                )
            tokens, token_dim = (hgt // patch) * (wid // patch), c * patch * patch
        self.input_shape, self.num_classes, self.width = shape, num_classes, width
        self.patch, self.tokens = patch, tokens
        self.embed = nn.Linear(token_dim, width)
        self.pos = nn.Parameter(torch.randn(tokens, width) * 0.02)
        scale = 1.0 / math.sqrt(blocks)
        self.blocks = nn.ModuleList(
            TransformerBlock(
                width,
                heads,
                mlp_ratio=mlp_ratio,
                residual_scale=scale,
                norm=norm,
                affine=block_affine,
            )
            for _ in range(blocks)
        )
        # One tap per measured residual-stream state: its output (the token mean) is measured.
        self.taps = nn.ModuleList(_TokenMean() for _ in range(blocks + 1))
        self.final_norm = _layer_norm(width, affine)
        self.classifier = nn.Linear(width, num_classes)

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        x = x.reshape(n, *self.input_shape)
        if self.patch is None:  # (n, c, H, W) -> (n, H, c*W)
            return x.permute(0, 2, 1, 3).reshape(n, self.input_shape[1], -1)
        p = self.patch
        cols = nn.functional.unfold(x, kernel_size=p, stride=p)  # (n, c*p*p, T)
        return cols.transpose(1, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.embed(self._tokens(x)) + self.pos
        pooled = self.taps[0](h)
        for block, tap in zip(self.blocks, self.taps[1:], strict=True):
            h = block(h)
            pooled = tap(h)
        return self.classifier(self.final_norm(pooled))

    def measured_layers(self) -> dict[str, str]:
        """``{"input": "taps.0", "block1": "taps.1", ..., "blockB": "taps.B", "final":
        "final_norm"}``: token means of the residual stream, then the classifier's input."""
        out = {"input": "taps.0"}
        for i in range(len(self.blocks)):
            out[f"block{i + 1}"] = f"taps.{i + 1}"
        out["final"] = "final_norm"
        return out


def build_depth_model(
    family: str,
    input_shape: Sequence[int],
    num_classes: int,
    *,
    blocks: int,
    width: int = 64,
    heads: int = 4,
    patch: int | None = None,
    affine: bool = False,
) -> MeasuredModel:
    """Build one of :data:`DEPTH_FAMILIES` at depth ``blocks`` and width ``width``.

    ``"ln_resnet1"`` / ``"ln_resnet2"``: :class:`LNResNet` with one / two linear layers per
    block; ``"transformer"``: :class:`TransformerClassifier` (``heads``, ``patch``), pre-LN
    blocks with affine LayerNorms; ``"transformer_post"``: post-LN blocks;
    ``"transformer_noaffine"``: pre-LN blocks whose LayerNorms have no scale and shift.

    Raises
    ------
    InputError
        Unknown family or bad sizes.
    """
    spec = FAMILIES.get(family) if isinstance(family, str) else None
    if spec is None:
        raise InputError(
            f"family must be one of {DEPTH_FAMILIES}, got {family!r}; "
            "a new family is declared in resnet_pfc/families.py"
        )
    return DEPTH_BUILDERS[spec.builder](
        input_shape,
        num_classes,
        blocks=blocks,
        width=width,
        heads=heads,
        patch=patch,
        affine=affine,
        **spec.options,
    )


def _ln_resnet(input_shape, num_classes, *, blocks, width, heads, patch, affine, linears):
    # heads and patch belong to the transformer; an LN-ResNet flattens its input
    return LNResNet(
        math.prod(input_shape),
        num_classes,
        width=width,
        blocks=blocks,
        linears=linears,
        affine=affine,
    )


def _transformer(input_shape, num_classes, *, blocks, width, heads, patch, affine, **block):
    return TransformerClassifier(
        input_shape,
        num_classes,
        width=width,
        blocks=blocks,
        heads=heads,
        patch=patch,
        affine=affine,
        **block,
    )


#: The builders that :data:`resnet_pfc.families.FAMILIES` name, each
#: ``(input_shape, num_classes, *, blocks, width, heads, patch, affine, **family options)``.
DEPTH_BUILDERS: dict[str, Callable[..., MeasuredModel]] = {
    "ln_resnet": _ln_resnet,
    "transformer": _transformer,
}
