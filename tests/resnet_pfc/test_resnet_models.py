"""Models: shapes, measured layers, the classifier in flattened coordinates, Table I."""

from __future__ import annotations

import pytest
import torch

from resnet_pfc.models import (
    TABLE_I,
    ConvResNet,
    FCResNet,
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
    ],
)
def test_model_errors(call, match):
    with pytest.raises(InputError, match=match):
        call()
