"""The depth cell's training: the full objective against an independent formula, its parts,
the warm start's identity blocks, the stationarity criterion, the not-at-optimum flag, the
transformer variants and ``pfc depth --loss mse``."""

from __future__ import annotations

import csv
import json
import math

import numpy as np
import pytest
import torch

from pfc.cli import main
from resnet_pfc import depth as depth_mod
from resnet_pfc.depth_train import (
    PARTS,
    WARM_FAMILIES,
    full_objective,
    parameter_parts,
    stationarity,
    train_cell,
    warm_start,
)
from resnet_pfc.models import DEPTH_FAMILIES, TransformerBlock, build_depth_model
from ufm.errors import InputError

SHAPE = (1, 8, 8)


def _model(family, depth, width=8, seed=0):
    torch.manual_seed(seed)
    kw = {"width": width}
    if family.startswith("transformer"):
        kw |= {"heads": 2, "patch": 4}
    return build_depth_model(family, SHAPE, 3, blocks=depth, **kw), kw


def _data(n=30, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, *SHAPE, generator=g), torch.arange(n) % 3


@pytest.mark.parametrize("family", DEPTH_FAMILIES)
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_full_objective_matches_a_direct_formula(family, loss):
    m, _ = _model(family, 2)
    x, y = _data()
    got = full_objective(m, x, y, weight_decay=0.01, loss=loss)
    m.eval()  # as full_objective evaluates (attention takes another kernel in eval mode)
    with torch.no_grad():
        z = m(x).double()
    if loss == "ce":
        ref_loss = float(torch.nn.functional.cross_entropy(z, y))
    else:
        ref_loss = float(0.5 * ((z - torch.eye(3, dtype=torch.float64)[y]) ** 2).sum(1).mean())
    sq = sum(float((p.detach().double() ** 2).sum()) for p in m.parameters())
    assert got["loss"] == pytest.approx(ref_loss, rel=1e-10)
    assert got["objective"] == pytest.approx(ref_loss + 0.005 * sq, rel=1e-10)
    assert sum(got[f"norm2_{p}"] for p in PARTS) == pytest.approx(sq, rel=1e-12)
    assert got["penalty"] == pytest.approx(sum(got[f"penalty_{p}"] for p in PARTS), rel=1e-12)


def test_parameter_parts():
    m, _ = _model("transformer", 2)
    parts = parameter_parts(m)
    assert parts["classifier.weight"] == "classifier"
    assert parts["blocks.0.norm1.weight"] == "layernorm"
    assert parts["blocks.1.fc2.bias"] == "blocks"
    assert parts["embed.weight"] == "embedding" and parts["pos"] == "embedding"
    # the affine-free variant has no LayerNorm parameters, the post-LN one has them
    noaff, _ = _model("transformer_noaffine", 2)
    assert "layernorm" not in set(parameter_parts(noaff).values())
    post, _ = _model("transformer_post", 2)
    assert "layernorm" in set(parameter_parts(post).values())
    res, _ = _model("ln_resnet2", 2)
    pr = parameter_parts(res)
    assert pr["stem.1.weight"] == "embedding" and "layernorm" not in pr.values()


def test_post_ln_block_is_ln_of_the_residual_sum():
    torch.manual_seed(0)
    blk = TransformerBlock(8, 2, norm="post")
    x = torch.randn(3, 4, 8)
    a = blk.norm1(x + blk.attn(x, x, x, need_weights=False)[0])
    ref = blk.norm2(a + blk.fc2(torch.relu(blk.fc1(a))))
    torch.testing.assert_close(blk(x), ref)
    with pytest.raises(InputError, match="norm"):
        TransformerBlock(8, 2, norm="middle")


@pytest.mark.parametrize("family", WARM_FAMILIES)
def test_warm_start_keeps_the_function_and_the_objective(family):
    m, kw = _model(family, 2)
    x, y = _data()
    w = warm_start(m, family, 4, input_shape=SHAPE, num_classes=3, **kw)
    assert len(w.blocks) == 4
    torch.testing.assert_close(w(x), m(x), rtol=1e-4, atol=1e-5)
    a = full_objective(m, x, y, weight_decay=0.01)["objective"]
    b = full_objective(w, x, y, weight_decay=0.01)["objective"]
    assert b == pytest.approx(a, rel=1e-5)
    for p in w.blocks[2:].parameters():
        assert not p.detach().any()


def test_warm_start_refuses_post_ln_and_shallower_depths():
    m, kw = _model("transformer_post", 2)
    with pytest.raises(InputError, match="identity block"):
        warm_start(m, "transformer_post", 3, input_shape=SHAPE, num_classes=3, **kw)
    m, kw = _model("ln_resnet1", 2)
    with pytest.raises(InputError, match="exceed"):
        warm_start(m, "ln_resnet1", 2, input_shape=SHAPE, num_classes=3, **kw)


def test_stationarity_measure():
    assert stationarity([1.0] * 3, 2) == math.inf
    assert stationarity([2.0, 2.0, 1.0, 1.0], 2) == pytest.approx(1.0)
    assert stationarity([1.0, 3.0, 2.0, 2.0], 2) == 0.0


def test_train_cell_stops_when_stationary_or_at_the_cap():
    x, y = _data(60)
    m, _ = _model("ln_resnet1", 1)
    loose = train_cell(
        m, x, y, num_classes=3, min_epochs=4, max_epochs=50, window=2, tol=1e9, anneal_epochs=2
    )
    assert loose.criterion_met and loose.stationary_epoch == 4 and loose.epochs == 6
    assert loose.trajectory["phase"] == ["main"] * 4 + ["anneal"] * 2
    assert loose.trajectory["lr"][-1] == pytest.approx(0.005)
    # e-folds: sum over steps of lr * wd / (1 - momentum); 60 samples, batch 128: 1 step/epoch
    assert loose.efolds == pytest.approx((4 * 0.05 + 2 * 0.005) * 5e-3 / 0.1)
    m, _ = _model("ln_resnet1", 1)
    tight = train_cell(m, x, y, num_classes=3, min_epochs=2, max_epochs=5, window=2, tol=1e-30)
    assert not tight.criterion_met and tight.epochs == 5 and tight.stationary_epoch is None
    with pytest.raises(InputError, match="min_epochs"):
        train_cell(m, x, y, num_classes=3, min_epochs=5, max_epochs=2)


def _row(depth, obj, init="independent", seed=0, family="f"):
    return {"family": family, "depth": depth, "seed": seed, "init": init, "full_objective": obj}


def test_not_at_optimum_flag():
    cfg = depth_mod.depth_config("tiny", depths=(1, 2, 4))
    rows = [
        _row(1, 1.0),
        _row(2, 0.9),
        _row(4, 0.95),  # above depth 2's
        _row(2, 1.0 + 1e-7, init="warm"),  # equal to depth 1 up to round-off: not flagged
        _row(4, 1.2, init="warm"),  # above its chain's
        _row(4, 1.1, seed=1),  # no shallower cell of seed 1
    ]
    depth_mod._flag_not_at_optimum(rows, cfg)
    assert [r["not_at_optimum"] for r in rows] == [False, False, True, False, True, False]
    assert rows[2]["shallower_best_objective"] == 0.9
    assert rows[4]["shallower_best_objective"] == pytest.approx(1.0)


def test_cli_depth_mse_transformer_variants_and_warm_start(tmp_path, capsys):
    out = tmp_path / "d"
    args = ["depth", "--preset", "tiny", "--seeds", "0", "--per-class", "5", "--width", "8"]
    args += ["--families", "transformer_post", "transformer_noaffine", "--depths", "1", "2"]
    args += ["--loss", "mse", "--init", "both", "--no-progress", "--out", str(out)]
    rc = main(args)
    text, _ = capsys.readouterr()
    assert rc == 0, text
    with open(out / "depth_cells.csv") as fh:
        cells = list(csv.DictReader(fh))
    got = {(c["family"], c["depth"], c["init"]) for c in cells}
    assert got == {
        ("transformer_post", "1", "independent"),
        ("transformer_post", "2", "independent"),
        ("transformer_noaffine", "1", "independent"),
        ("transformer_noaffine", "2", "independent"),
        ("transformer_noaffine", "2", "warm"),
    }
    assert all(c["loss"] == "mse" for c in cells)
    for c in cells:
        for k in ("cdnv", "gram_eig_ratio", "full_objective", "efolds", "criterion_met"):
            assert c[k] != "", k
        tail = "_warm" if c["init"] == "warm" else ""
        cdir = out / "cells" / c["family"] / f"L{int(c['depth']):03d}_s0{tail}"
        cell = json.loads((cdir / "cell.json").read_text())
        assert cell["loss"] == "mse"
        again = depth_mod.recompute_objective(cdir)
        assert again["objective"] == pytest.approx(float(c["full_objective"]), rel=1e-12)
    warm = json.loads((out / "cells/transformer_noaffine/L002_s0_warm/cell.json").read_text())
    first = json.loads((out / "cells/transformer_noaffine/L001_s0/cell.json").read_text())
    assert warm["objective_init"] == pytest.approx(first["full_objective"], rel=1e-5)
    assert (out / "depth_trajectories.csv").is_file()
    assert (out / "figures" / "depth_objective.png").is_file()
    report = (out / "report.md").read_text()
    assert "Warm start against independent training" in report
    assert np.isfinite(float(cells[0]["full_objective"]))


def test_max_epochs_below_epochs_is_refused():
    with pytest.raises(InputError, match="max_epochs"):
        depth_mod.depth_config("tiny", epochs=10, max_epochs=5)
