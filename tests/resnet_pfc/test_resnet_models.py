"""Models: shapes, measured layers, the classifier in flattened coordinates, Table I."""

from __future__ import annotations

import math

import pytest
import torch

from resnet_pfc.models import (
    TABLE_I,
    ConvResNet,
    FCResNet,
    LNResNet,
    build_depth_model,
    build_model,
    paper_model,
)
from ufm.errors import InputError


def test_fc_shapes_and_layers(taps):
    torch.manual_seed(0)
    m = FCResNet(64, 10, width=32, blocks=3).double()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    out, feats = taps(m, x)
    assert out.shape == (5, 10)
    assert list(feats) == ["input", "block1", "block2", "block3"]
    assert all(h.shape == (5, 32) for h in feats.values())
    assert m.feature_dim == 32
    # residual structure: h_l = h_{l-1} + f_l(h_{l-1})
    h1 = feats["input"] + m.blocks[0].fc2(torch.relu(m.blocks[0].fc1(feats["input"])))
    torch.testing.assert_close(h1, feats["block1"], rtol=0, atol=0)
    W, b = m.measured_classifier()
    torch.testing.assert_close(feats["block3"] @ W.T + b, out, rtol=1e-12, atol=1e-12)


def test_conv_classifier_is_exact_on_flattened_features(taps):
    torch.manual_seed(1)
    m = ConvResNet((3, 16, 16), 7, widths=(8, 12), blocks=2).double()
    m.eval()  # running statistics: the map from features to logits is the same for any batch
    x = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad():
        out, feats = taps(m, x)
    assert m.stage_shape == (12, 8, 8)
    assert feats["block2"].shape == (4, 12, 8, 8)
    W, b = m.measured_classifier()
    assert W.shape == (7, 12 * 64) and b.shape == (7,)
    logits = feats["block2"].reshape(4, -1) @ W.T + b
    torch.testing.assert_close(logits, out, rtol=1e-12, atol=1e-12)


def test_conv_stage_keeps_one_dimension(taps):
    m = ConvResNet((1, 28, 28), 10, widths=(4, 8, 8), blocks=3)
    with torch.no_grad():
        _, feats = taps(m, torch.randn(2, 1, 28, 28))
    dims = {h[0].numel() for h in feats.values()}
    assert dims == {m.feature_dim} == {8 * 7 * 7}


@pytest.mark.parametrize(
    "dataset,blocks",
    [
        ("mnist", [10]),
        ("fashion_mnist", [5, 4]),
        ("cifar10", [2, 3, 4]),
        ("stl10", [5, 5, 5, 5]),
        ("cifar100", [3, 3, 4, 4]),
    ],
)
def test_table_i_block_counts(dataset, blocks):
    assert [r.blocks for r in TABLE_I[dataset]] == blocks
    m = paper_model(dataset, blocks[-1], variant=blocks.count(blocks[-1]) - 1)
    assert len(m.blocks) == blocks[-1]


def test_paper_mnist_model():
    m = paper_model("mnist")
    assert isinstance(m, FCResNet) and m.width == 1000 and len(m.blocks) == 10
    assert m.stem[1].in_features == 784


def test_paper_cifar10_dimension():
    m = paper_model("cifar10", blocks=3)
    assert isinstance(m, ConvResNet) and m.feature_dim == 256 * 8 * 8
    assert paper_model("stl10", variant=3).feature_dim == 256 * 12 * 12


def test_paper_model_overrides():
    m = paper_model("digits", width=16, num_classes=3)
    assert m.width == 16 and m.classifier.out_features == 3


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: paper_model("imagenet"), "dataset must be one of"),
        (lambda: paper_model("cifar10", blocks=7), "choose one of \\[2, 3, 4\\]"),
        (lambda: paper_model("stl10", variant=4), "variant must be in 0..3"),
        (lambda: build_model("mlp", (1, 8, 8), 10, blocks=2, width=8), "kind must be"),
        (lambda: ConvResNet((64,), 10), "input_shape must be"),
        (lambda: ConvResNet((1, 8, 8), 10, widths=()), "widths must be"),
        (lambda: FCResNet(64, 1), "num_classes must be >= 2"),
        (lambda: FCResNet(64, 10, blocks=0), "blocks must be >= 1"),
        (lambda: FCResNet(0, 10), "input_dim must be >= 1"),
        (lambda: FCResNet(64, 10, width=0), "width must be >= 1"),
        (lambda: LNResNet(64, 10, width=1), "width must be >= 2"),
        (lambda: LNResNet(64, 1), "num_classes must be >= 2"),
        (lambda: LNResNet(64, 10, blocks=0, linears=3), "blocks must be >= 1"),
        (lambda: LNResNet(64, 10, linears=3), "linears must be 1 or 2"),
    ],
)
def test_model_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()


def _fingerprint(model):
    """State-dict keys with shapes, and the plain and position-weighted sums of all values."""
    sd = model.state_dict()
    flat = torch.cat([v.detach().double().flatten() for v in sd.values()])
    pos = torch.arange(1, flat.numel() + 1, dtype=torch.float64)
    return [(k, tuple(v.shape)) for k, v in sd.items()], float(flat.sum()), float(flat @ pos)


def _keys(stem, blocks, params):
    out = [f"stem.{name}" for name in stem]
    out += [f"blocks.{i}.{p}" for i in range(blocks) for p in params]
    return out + ["classifier.weight", "classifier.bias"]


_FC = ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias")
_LIN = ("1.weight", "1.bias")

#: Recorded from the models before FCResNet and LNResNet shared their constructor
#: (torch.manual_seed(0) before each build): state-dict keys, number of values, sum, weighted sum.
_INIT_REFERENCE = {
    "fc": (
        lambda: FCResNet(12, 3, width=5, blocks=2),
        _keys(_LIN, 2, _FC), 60 + 5 + 2 * 60 + 18, -3.476078440900892, -458.22160174231976,
    ),
    "fc_hidden": (
        lambda: FCResNet(12, 3, width=5, blocks=3, hidden=4),
        _keys(_LIN, 3, _FC), 65 + 3 * 49 + 18, -3.966388665139675, -564.0554642195348,
    ),
    "ln1": (
        lambda: LNResNet(12, 3, width=6, blocks=2),
        _keys(_LIN, 2, _FC[:2]), 78 + 2 * 42 + 21, -2.9379842744674534, -329.22401845641434,
    ),
    "ln2_affine": (
        lambda: LNResNet(12, 3, width=6, blocks=3, linears=2, affine=True),
        _keys(("1.weight", "1.bias", "2.weight", "2.bias"), 3, (*_FC, "norm.weight", "norm.bias")),
        90 + 3 * 96 + 21, 21.294615431077546, 5365.454484755872,
    ),
    "depth_ln2": (
        lambda: build_depth_model("ln_resnet2", (1, 3, 4), 3, blocks=2, width=4),
        _keys(_LIN, 2, _FC), 52 + 2 * 40 + 15, -1.0820869840681553, -36.73687449563295,
    ),
}  # fmt: skip


@pytest.mark.parametrize("case", sorted(_INIT_REFERENCE))
def test_seeded_initialisation_is_unchanged(case):
    make, keys, size, total, weighted = _INIT_REFERENCE[case]
    torch.manual_seed(0)
    model = make()
    got_keys, got_total, got_weighted = _fingerprint(model)
    assert [k for k, _ in got_keys] == keys  # checkpoints of earlier versions still load
    assert sum(math.prod(shape) for _, shape in got_keys) == size
    assert got_total == pytest.approx(total, rel=1e-12, abs=1e-12)
    assert got_weighted == pytest.approx(weighted, rel=1e-12, abs=1e-12)
    blocks = len(model.blocks)
    assert model.measured_layers() == {
        "input": "stem",
        **{f"block{i + 1}": f"blocks.{i}" for i in range(blocks)},
    }
