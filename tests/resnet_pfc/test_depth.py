"""The depth study: slope fits against independent formulas, the LN-UFM objective against
torch's cross entropy, a tiny end-to-end study, resumption cell by cell, the CLI."""

from __future__ import annotations

import csv
import importlib
import json
import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from pfc.cli import main
from resnet_pfc import depth as depth_mod
from resnet_pfc.depth import (
    DepthConfig,
    depth_config,
    depth_study,
    fit_slope,
    lnufm_objective,
    summarise,
)
from ufm.errors import InputError


def _ols_slope(x, z):
    # Independent reference: the closed-form simple regression slope.
    x, z = np.asarray(x, float), np.asarray(z, float)
    return float(((x - x.mean()) * (z - z.mean())).sum() / ((x - x.mean()) ** 2).sum())


def test_fit_slope_exact_power_law_has_a_zero_width_interval():
    L = [2, 2, 3, 3, 5, 5, 8, 8]
    v = [3.0 * x**-0.3 for x in L]
    fit = fit_slope(L, v, bootstrap=200, seed=0)
    assert fit["slope"] == pytest.approx(-0.3, abs=1e-12)
    assert fit["lo"] == pytest.approx(-0.3, abs=1e-12)
    assert fit["hi"] == pytest.approx(-0.3, abs=1e-12)
    assert fit["intercept"] == pytest.approx(math.log(3.0), abs=1e-12)
    assert fit["n"] == 8


def test_fit_slope_matches_ols_and_the_interval_covers_it():
    rng = np.random.default_rng(0)
    L = np.repeat([2, 3, 5, 8, 13, 21, 34], 4)
    v = np.exp(0.5 - 0.4 * np.log(L) + 0.2 * rng.standard_normal(L.size))
    fit = fit_slope(L, v, bootstrap=500, seed=1)
    assert fit["slope"] == pytest.approx(_ols_slope(np.log(L), np.log(v)), rel=1e-10)
    assert fit["lo"] < fit["slope"] < fit["hi"]
    assert fit["hi"] < 0  # a clear fall is detected
    # the bootstrap is seeded
    assert fit_slope(L, v, bootstrap=500, seed=1) == fit


def test_fit_slope_resamples_within_each_depth():
    # One cell per depth: every stratified resample is the data itself.
    L = [1, 2, 4, 8]
    v = [1.0, 0.7, 0.9, 0.2]
    fit = fit_slope(L, v, bootstrap=50, seed=0)
    assert fit["lo"] == pytest.approx(fit["slope"]) and fit["hi"] == pytest.approx(fit["slope"])


@settings(max_examples=30, deadline=None)
@given(
    c=st.floats(1e-3, 1e3),
    seed=st.integers(0, 2**16),
)
def test_fit_slope_ignores_a_constant_factor(c, seed):
    rng = np.random.default_rng(seed)
    L = np.repeat([1, 2, 4, 8], 3)
    v = np.exp(rng.standard_normal(L.size))
    a, b = fit_slope(L, v, bootstrap=50, seed=3), fit_slope(L, c * v, bootstrap=50, seed=3)
    for k in ("slope", "lo", "hi"):
        assert a[k] == pytest.approx(b[k], abs=1e-9)


def test_fit_slope_drops_non_positive_and_reports_unfittable():
    fit = fit_slope([1, 2, 4], [0.0, 0.5, math.nan], bootstrap=20)
    assert fit["n"] == 1 and math.isnan(fit["slope"])
    with pytest.raises(InputError, match="same length"):
        fit_slope([1, 2], [1.0])


def test_lnufm_objective_matches_torch():
    rng = np.random.default_rng(0)
    N, d, K = 40, 6, 4
    H = rng.standard_normal((N, d))
    y = rng.integers(0, K, N)
    W, b = rng.standard_normal((K, d)), rng.standard_normal(K)
    ref = (
        torch.nn.functional.cross_entropy(
            torch.tensor(H) @ torch.tensor(W).T + torch.tensor(b), torch.tensor(y)
        ).item()
        + 0.5 * 0.1 * (W**2).sum()
        + 0.5 * 0.2 * (b**2).sum()
    )
    assert lnufm_objective(H, y, W, b, lam_w=0.1, lam_b=0.2) == pytest.approx(ref, rel=1e-12)
    # large logits stay finite (log-sum-exp)
    assert math.isfinite(lnufm_objective(1e3 * H, y, W, b, lam_w=0.0, lam_b=0.0))


def test_lnufm_objective_agrees_with_ufm_layernorm_objective():
    import ufm

    rng = np.random.default_rng(2)
    N, d, K = 30, 8, 3
    H = ufm.layernorm_normalize(rng.standard_normal((N, d)))
    y = np.arange(N) % K
    W, b = rng.standard_normal((K, d)), rng.standard_normal(K)
    ours = lnufm_objective(H, y, W, b, lam_w=5e-3, lam_b=5e-3)
    theirs = ufm.layernorm_objective(W, b, H, y, lam_w=5e-3, lam_b=5e-3, loss="ce")
    assert ours == pytest.approx(theirs, rel=1e-12)


def test_depth_config_presets_and_errors():
    cfg = depth_config("paper")
    assert cfg.train.width == 64 and cfg.depths == (2, 3, 5, 8, 13, 21, 34)
    assert cfg.train.weight_decay == 5e-3 and cfg.train.device == "cuda"
    cpu = depth_config("cpu", out="x", seeds=(2, 0))
    assert cpu.seeds == (0, 2) and cpu.train.dataset == "digits"
    with pytest.raises(InputError, match="preset"):
        depth_config("huge")
    with pytest.raises(InputError, match="unknown DepthConfig option"):
        depth_config("cpu", depthz=(1,))
    with pytest.raises(InputError, match="families"):
        depth_config("cpu", families=("mlp",))
    with pytest.raises(InputError, match="depths"):
        depth_config("cpu", depths=(0, 2))


def _tiny(tmp_path, **kw):
    opts = {
        "out": str(tmp_path / "study"),
        "families": ("ln_resnet1", "transformer"),
        "depths": (1, 2),
        "seeds": (0, 1),
        "train": {"width": 16, "per_class": 10},
        "epochs": 2,
        "transformer_epochs": 1,
        "bootstrap": 50,
        "progress": False,
        "jobs": 1,
    }
    opts.update(kw)
    return depth_config("tiny", **opts)


def test_tiny_study_end_to_end_and_resume(tmp_path, monkeypatch):
    cfg = _tiny(tmp_path)
    res = depth_study(cfg)
    out = res.out_dir
    assert res.missing == []
    for name in ("depth_cells.csv", "depth_layers.csv", "depth_slopes.csv", "report.md"):
        assert (out / name).is_file()
    # config.json records the training options the cells use, as used
    from resnet_pfc.depth_config import TRAIN_OPTIONS

    train = json.loads((out / "config.json").read_text())["config"]["train"]
    assert set(train) == set(TRAIN_OPTIONS) and train["width"] == 16 and train["per_class"] == 10
    assert (out / "figures" / "depth_metrics.png").is_file()
    for f in cfg.families:
        assert (out / "figures" / f"depth_layers_{f}.png").is_file()
    with open(out / "depth_cells.csv") as fh:
        cells = list(csv.DictReader(fh))
    assert len(cells) == 8
    last = {c["family"]: c["last_layer"] for c in cells}
    assert last["transformer"] == "final" and last["ln_resnet1"].startswith("block")
    # the last layer lies on LayerNorm's sphere
    assert max(float(c["sphere_dev"]) for c in cells) < 1e-3
    with open(out / "depth_layers.csv") as fh:
        layers = list(csv.DictReader(fh))
    n_layers = {("ln_resnet1", 1): 2, ("ln_resnet1", 2): 3, ("transformer", 1): 3}
    for (f, L), n in n_layers.items():
        assert sum(r["family"] == f and r["depth"] == str(L) for r in layers) == 2 * n
    with open(out / "depth_slopes.csv") as fh:
        slopes = list(csv.DictReader(fh))
    assert {(s["family"], s["metric"]) for s in slopes} >= {
        (f, m) for f in cfg.families for m in ("nc1", "nc2_equinorm", "nc2_equiangular", "nc3")
    }
    assert "Are the cells at their optimum?" in res.report and "8 of 8 cells finished" in res.report
    assert "published" not in res.report  # no unsourced published slope
    # every flagged cell is named in the report
    for c in cells:
        assert c["not_at_optimum"] in ("True", "False")
        assert float(c["full_objective"]) > 0
        if c["not_at_optimum"] == "True":
            assert f"{c['family']} L={c['depth']} s={c['seed']}" in res.report
    # the full objective is reproducible from the saved weights
    for c in cells:
        cdir = out / "cells" / c["family"] / f"L{int(c['depth']):03d}_s{c['seed']}"
        again = depth_mod.recompute_objective(cdir)
        assert again["objective"] == pytest.approx(float(c["full_objective"]), rel=1e-12)
    # the network's last layer, as saved, reproduces its cell's objective
    cell = json.loads((out / "cells" / "ln_resnet1" / "L002_s1" / "cell.json").read_text())
    z = np.load(out / "cells" / "ln_resnet1" / "L002_s1" / "last_layer.npz")
    obj = lnufm_objective(
        z["H"], z["y"], z["W"], z["b"], lam_w=cfg.train.weight_decay, lam_b=cfg.train.weight_decay
    )
    assert obj == pytest.approx(cell["net_objective"], rel=1e-5)

    # The reduction: a network's last layer is a feasible LN-UFM point, so F_net >= F*.
    gaps = [float(c["objective_gap_rel"]) for c in cells]
    assert min(gaps) > -1e-6
    assert float(cells[0]["lnufm_objective"]) == pytest.approx(
        float(cells[0]["lnufm_etf_objective"]), rel=1e-6
    )  # balanced classes (per_class): the solver meets the closed form

    # Rerun: every cell is skipped (training would fail here).
    def boom(*a, **k):
        raise AssertionError("a finished cell was retrained")

    monkeypatch.setattr(importlib.import_module("resnet_pfc.depth_train"), "train_cell", boom)
    again = depth_study(cfg)
    assert [c["net_objective"] for c in again.cells] == [c["net_objective"] for c in res.cells]


def test_partial_study_lists_missing_cells(tmp_path):
    cfg = _tiny(tmp_path, families=("ln_resnet1",), depths=(1, 2), seeds=(0,))
    depth_mod.run_cell(cfg, "ln_resnet1", 1, 0)
    res = summarise(cfg)
    assert res.missing == [("ln_resnet1", 2, 0)]
    assert "(ln_resnet1, 2, 0)" in res.report and "1 of 2 cells finished" in res.report


def test_an_interrupted_cell_resumes_from_its_checkpoint(tmp_path, monkeypatch):
    train_mod = importlib.import_module("resnet_pfc.depth_train")  # the module
    one = dict(families=("ln_resnet1",), depths=(1,), seeds=(0,), epochs=3, max_epochs=3)
    one |= dict(anneal_epochs=0)
    whole = depth_mod.run_cell(_tiny(tmp_path / "a", **one), "ln_resnet1", 1, 0)
    cfg = _tiny(tmp_path / "b", **one)
    real, calls = train_mod.save_checkpoint, []

    def save_then_die(*a, **k):
        real(*a, **k)
        calls.append(1)
        if len(calls) == 1:  # epoch 1 saved, then killed
            raise KeyboardInterrupt

    monkeypatch.setattr(train_mod, "train_cell", _every_epoch(train_mod.train_cell))

    monkeypatch.setattr(train_mod, "save_checkpoint", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        depth_mod.run_cell(cfg, "ln_resnet1", 1, 0)
    cdir = tmp_path / "b" / "study" / "cells" / "ln_resnet1" / "L001_s0"
    assert not (cdir / "cell.json").exists()
    monkeypatch.setattr(train_mod, "save_checkpoint", real)
    resumed = depth_mod.run_cell(cfg, "ln_resnet1", 1, 0)
    assert resumed["epochs"] == 3
    # deterministic training: the resumed cell equals the uninterrupted one
    assert resumed["net_objective"] == pytest.approx(whole["net_objective"], rel=1e-9)
    assert resumed["full_objective"] == pytest.approx(whole["full_objective"], rel=1e-9)
    assert resumed["layers"]["block1"]["nc1"] == pytest.approx(
        whole["layers"]["block1"]["nc1"], rel=1e-9
    )


def _every_epoch(fn):
    def wrapped(*a, **k):
        return fn(*a, **{**k, "checkpoint_every": 1})

    return wrapped


def test_cli_depth_tiny_and_bad_option(tmp_path, capsys):
    tiny = ["depth", "--preset", "tiny", "--seeds", "0", "--epochs", "1", "--per-class", "5"]
    tiny += ["--width", "16", "--no-progress"]
    rc = main(
        [*tiny, "--out", str(tmp_path / "d"), "--families", "ln_resnet2", "--depths", "1", "2"]
    )
    out, _ = capsys.readouterr()
    assert rc == 0, out
    assert "ln_resnet2" in out and "report:" in out
    assert (tmp_path / "d" / "report.md").is_file()
    with pytest.raises(SystemExit) as exc:
        main(["depth", "--depths", "0"])
    assert exc.value.code == 2
    # the bound of --bootstrap (>= 10) is refused as it is parsed, like every option's bound
    bad = ["--lr", "1e-3", "--families", "ln_resnet1", "--depths", "1", "--bootstrap", "5"]
    with pytest.raises(SystemExit) as exc:
        main([*tiny, "--out", str(tmp_path / "e"), *bad])
    _, err = capsys.readouterr()
    assert exc.value.code == 2 and "--bootstrap" in err and "in [10, 1000000]" in err
    assert not (tmp_path / "e").exists()


def test_depth_config_is_a_frozen_dataclass():
    with pytest.raises(AttributeError):
        DepthConfig().train = None  # type: ignore[misc]
