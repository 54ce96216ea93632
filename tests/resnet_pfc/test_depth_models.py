"""LayerNorm ResNets and the transformer classifier: measured layers against hand-written forwards."""

from __future__ import annotations

import math

import pytest
import torch

from resnet_pfc import models, train
from resnet_pfc.config import TrainConfig, resolve_config
from resnet_pfc.models import (
    DEPTH_FAMILIES,
    LNResNet,
    TransformerClassifier,
    build_depth_model,
)
from resnet_pfc.runs import read_csv
from ufm.errors import InputError


def _ln(h, eps=1e-5):
    # LayerNorm without affine, written out (population variance over the last axis).
    mu = h.mean(-1, keepdim=True)
    var = ((h - mu) ** 2).mean(-1, keepdim=True)
    return (h - mu) / torch.sqrt(var + eps)


@pytest.mark.parametrize("linears", [1, 2])
def test_ln_resnet_layers_match_a_hand_written_forward(linears, taps):
    torch.manual_seed(0)
    m = LNResNet(64, 10, width=16, blocks=3, linears=linears).double()
    x = torch.randn(7, 1, 8, 8, dtype=torch.float64)
    out, feats = taps(m, x)
    assert list(feats) == ["input", "block1", "block2", "block3"]
    A, a = m.stem[1].weight, m.stem[1].bias
    h = _ln(x.reshape(7, -1) @ A.T + a)
    torch.testing.assert_close(feats["input"], h, rtol=1e-12, atol=1e-12)
    for i, blk in enumerate(m.blocks):
        f = torch.relu(h @ blk.fc1.weight.T + blk.fc1.bias)
        if linears == 2:
            f = f @ blk.fc2.weight.T + blk.fc2.bias
        h = _ln(h + f)
        torch.testing.assert_close(feats[f"block{i + 1}"], h, rtol=1e-12, atol=1e-12)
    W, b = m.measured_classifier()
    torch.testing.assert_close(h @ W.T + b, out, rtol=1e-12, atol=1e-12)
    # every measured layer lies on LayerNorm's sphere (up to eps)
    for v in feats.values():
        torch.testing.assert_close(v.mean(1), torch.zeros(7, dtype=v.dtype), atol=1e-12, rtol=0)
        torch.testing.assert_close(
            v.norm(dim=1), torch.full((7,), math.sqrt(16), dtype=v.dtype), rtol=1e-4, atol=0
        )
    n_lin = sum(isinstance(mod, torch.nn.Linear) for mod in m.blocks.modules())
    assert n_lin == 3 * linears


def _attention_by_hand(mha, a):
    # nn.MultiheadAttention's maths, from its packed weights.
    n, T, d = a.shape
    h = mha.num_heads
    q, k, v = (a @ mha.in_proj_weight.T + mha.in_proj_bias).split(d, dim=-1)

    def heads(t):
        return t.reshape(n, T, h, d // h).transpose(1, 2)

    q, k, v = heads(q), heads(k), heads(v)
    att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d // h), dim=-1)
    o = (att @ v).transpose(1, 2).reshape(n, T, d)
    return o @ mha.out_proj.weight.T + mha.out_proj.bias


@pytest.mark.parametrize("patch", [None, 4, 2])
def test_transformer_layers_match_a_hand_written_forward(patch, taps):
    torch.manual_seed(1)
    m = TransformerClassifier((1, 8, 8), 10, width=8, blocks=2, heads=2, patch=patch).double()
    x = torch.randn(5, 1, 8, 8, dtype=torch.float64)
    out, feats = taps(m, x)
    assert list(feats) == ["input", "block1", "block2", "final"]
    # tokens by explicit loops: rows, or row-major p x p patches flattened channel-first
    img = x[:, 0]
    if patch is None:
        toks = torch.stack([img[:, r, :] for r in range(8)], dim=1)
    else:
        p = patch
        toks = torch.stack(
            [
                img[:, i * p : (i + 1) * p, j * p : (j + 1) * p].reshape(5, -1)
                for i in range(8 // p)
                for j in range(8 // p)
            ],
            dim=1,
        )
    assert m.tokens == toks.shape[1]
    h = toks @ m.embed.weight.T + m.embed.bias + m.pos
    torch.testing.assert_close(feats["input"], h.mean(1), rtol=1e-12, atol=1e-12)
    for i, blk in enumerate(m.blocks):
        h = h + _attention_by_hand(blk.attn, blk.norm1(h))
        h = h + blk.fc2(torch.relu(blk.fc1(blk.norm2(h))))
        torch.testing.assert_close(feats[f"block{i + 1}"], h.mean(1), rtol=1e-10, atol=1e-10)
    final = _ln(h.mean(1))
    torch.testing.assert_close(feats["final"], final, rtol=1e-10, atol=1e-10)
    W, b = m.measured_classifier()
    torch.testing.assert_close(final @ W.T + b, out, rtol=1e-10, atol=1e-10)


def test_build_depth_model_and_bad_sizes():
    for fam in DEPTH_FAMILIES:
        m = build_depth_model(fam, (1, 8, 8), 10, blocks=2, width=8, heads=2, patch=4)
        assert len(m.blocks) == 2 and m.feature_dim == 8
    with pytest.raises(InputError, match="family"):
        build_depth_model("mlp", (1, 8, 8), 10, blocks=2)
    with pytest.raises(InputError, match="linears"):
        LNResNet(64, 10, width=8, blocks=2, linears=3)
    with pytest.raises(InputError, match="divisible by heads"):
        TransformerClassifier((1, 8, 8), 10, width=10, heads=4)
    with pytest.raises(InputError, match="patch=3"):
        TransformerClassifier((1, 8, 8), 10, width=8, heads=2, patch=3)
    with pytest.raises(InputError, match="input_shape"):
        TransformerClassifier((64,), 10, width=8, heads=2)
    with pytest.raises(InputError, match="model must be one of"):
        resolve_config(TrainConfig(model="mlp"))


@pytest.mark.parametrize("family", DEPTH_FAMILIES)
def test_train_registers_the_families(family, tmp_path, tiny_run):
    extra = dict(out=str(tmp_path / family), model=family, heads=2, patch=4, epochs=1, per_class=5)
    res = train(TrainConfig(**tiny_run | extra))
    rows = read_csv(tmp_path / family / "metrics.csv")
    final = [r for r in rows if r["epoch"] == 1]
    labels = [r["layer"] for r in sorted(final, key=lambda r: r["layer_index"])]
    expect = ["input", "block1", "block2"] + (["final"] if family.startswith("transformer") else [])
    assert labels == expect
    # NC3/NC4 only on the layer the classifier acts on
    assert final[-1]["nc3"] is not None and final[0]["nc3"] is None
    assert res.epochs_run == 1


def test_families_are_declared_once_and_derived():
    from resnet_pfc import families

    assert families.DEPTH_FAMILIES == tuple(families.FAMILIES)
    assert set(families.TRANSFORMER_VARIANTS) == {
        n for n, s in families.FAMILIES.items() if s.builder == "transformer"
    }
    assert families.WARM_FAMILIES == (
        "ln_resnet1",
        "ln_resnet2",
        "transformer",
        "transformer_noaffine",
    )
    for spec in families.FAMILIES.values():
        assert spec.builder in models.DEPTH_BUILDERS


def test_a_family_added_to_the_registry_builds(monkeypatch):
    # a family of an existing architecture is one FamilySpec: no other table changes
    from types import MappingProxyType

    from resnet_pfc.families import FAMILIES, FamilySpec

    spec = FamilySpec(
        "transformer_post_noaffine",
        "post-LN blocks without LayerNorm affine parts",
        "transformer",
        {"norm": "post", "block_affine": False},
    )
    monkeypatch.setattr(models, "FAMILIES", MappingProxyType({**FAMILIES, spec.name: spec}))
    net = models.build_depth_model(spec.name, (1, 4, 4), 3, blocks=2, width=8, patch=2)
    assert isinstance(net, models.TransformerClassifier)
    assert net(torch.zeros(5, 1, 4, 4)).shape == (5, 3)
    assert not any("norm" in n and "weight" in n for n, _ in net.blocks.named_parameters())
    with pytest.raises(InputError, match="resnet_pfc/families.py"):
        models.build_depth_model("ln_resnet9", (1, 4, 4), 3, blocks=2, width=8)
