"""The Sec. IV-B experiment (mufm.make_data, mufm.run_experiment): data, files, trends."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import mufm
from mufm.experiment import FIG4_METRICS as METRICS
from mufm.experiment import make_data, run_experiment
from ufm import InputError
from ufm.metrics import alignment, collapse_metrics

SMALL = dict(K=3, n=8, d=6, lams=np.logspace(-3, 2, 6))


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("exp")
    return out, run_experiment(out, **SMALL)


def test_make_data_shapes_and_seed():
    X, y = make_data(3, 4, 5, noise=0.1, seed=7)
    assert X.shape == (12, 5) and y.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    X2, _ = make_data(3, 4, 5, noise=0.1, seed=7)
    np.testing.assert_array_equal(X, X2)
    assert not np.array_equal(X, make_data(3, 4, 5, noise=0.1, seed=8)[0])


def test_make_data_centres_on_unit_sphere():
    X, y = make_data(5, 3, 7, noise=0.0, seed=1)  # no noise: samples are the centres
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-12)
    for k in range(5):
        np.testing.assert_array_equal(X[y == k], np.repeat(X[y == k][:1], 3, axis=0))


def test_make_data_noise_level():
    X, y = make_data(2, 4000, 3, noise=0.3, seed=0)
    centres = np.stack([X[y == k].mean(0) for k in range(2)])
    resid = X - centres[y]
    np.testing.assert_allclose(resid.std(), 0.3, rtol=0.02)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(K=1, n=2, d=2), "K must be >= 2"),
        (dict(K=2, n=0, d=2), "n must be >= 1"),
        (dict(K=2, n=2, d=0), "d must be >= 1"),
        (dict(K=2, n=2, d=2, noise=-1.0), "noise must be >= 0"),
        (dict(K=2, n=2, d=2, seed=-3), "seed must be >= 0"),
    ],
)
def test_make_data_bad_input(kwargs, match):
    with pytest.raises(InputError, match=match):
        make_data(**kwargs)


def test_files_written_and_match_tables(small_run):
    out, res = small_run
    for key in ("fig4_csv", "fig4_png", "fig5_csv", "fig5_png"):
        assert res.paths[key].exists() and res.paths[key].parent == out
    for key in ("fig4_png", "fig5_png"):
        assert res.paths[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(out.glob(".*.tmp"))  # atomic writes leave no temporaries
    with res.paths["fig4_csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert [r["model"] for r in rows] == ["data", "mufm", "ufm"]
    for r in rows:
        for k in METRICS:
            assert float(r[k]) == res.fig4[r["model"]][k]  # 17 digits: exact round trip
    with res.paths["fig5_csv"].open() as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 6
    np.testing.assert_array_equal([float(r["lam"]) for r in rows], res.sweep["lam"])
    np.testing.assert_array_equal([float(r["alignment"]) for r in rows], res.sweep["alignment"])


def test_shapes_and_convergence(small_run):
    _, res = small_run
    for key in (*METRICS, "alignment", "objective", "converged"):
        assert res.sweep[key].shape == (6,)
    assert np.all(res.sweep["converged"] == 1)
    assert set(res.fig4) == {"data", "mufm", "ufm"}
    assert res.params["K"] == 3 and res.params["lam"] == 1.0


def test_tables_agree_with_independent_recomputation(small_run):
    _, res = small_run
    X, y = make_data(3, 8, 6, noise=0.5, seed=0)
    m = collapse_metrics(X, y)
    for k in METRICS:
        assert res.fig4["data"][k] == pytest.approx(m[k], rel=1e-12)
    r = mufm.solve(X, y, lam=float(res.sweep["lam"][2]), lam_w=5e-3, lam_b=5e-4)
    assert res.sweep["alignment"][2] == pytest.approx(alignment(r.H, X), rel=1e-9)


def test_reproducible_with_seed(small_run, tmp_path):
    _, res = small_run
    again = run_experiment(tmp_path, **SMALL)
    for key in res.sweep:
        np.testing.assert_array_equal(res.sweep[key], again.sweep[key])
    assert again.fig4 == res.fig4


def test_trends(small_run):
    """What Theorem 4 and the paper's Fig. 5 justify.

    - large lam: the anchor dominates, H -> X, so the alignment tends to 1 and the metrics to
      the data's;
    - alignment grows with lam (the anchor weight) -- checked end to end;
    - PFC1 of the MUFM solution is below the data's for every lam (Theorem 4 for large lam;
      empirically everywhere here), and the UFM solution is collapsed (ETF).
    """
    _, res = small_run
    s, data = res.sweep, res.fig4["data"]
    assert s["alignment"][-1] > 0.999
    assert s["alignment"][0] < s["alignment"][-1]
    assert np.all(np.diff(s["alignment"]) > -1e-9)  # monotone in this sweep
    assert np.all(s["pfc1"] < data["pfc1"])
    assert s["pfc1"][-1] == pytest.approx(data["pfc1"], rel=0.05)
    assert s["pfc1"][0] < 0.5 * s["pfc1"][-1]  # small lam: much more collapsed
    assert s["pfc2"][0] < s["pfc2"][-1]  # closer to the ETF for small lam
    assert res.fig4["ufm"]["pfc1"] < 1e-6 and res.fig4["ufm"]["pfc2"] < 1e-5
    assert res.fig4["mufm"]["pfc1"] < data["pfc1"]


def test_different_seed_changes_data(small_run, tmp_path):
    _, res = small_run
    other = run_experiment(tmp_path, seed=1, **SMALL)
    assert other.fig4["data"]["pfc1"] != res.fig4["data"]["pfc1"]


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(lams=[1.0]), "at least 2 values"),
        (dict(lams=[1.0, -1.0]), "finite and > 0"),
        (dict(lams=[1.0, np.nan]), "finite and > 0"),
        (dict(lam=0.0), "lam must be > 0"),
        (dict(K=1), "K must be >= 2"),
    ],
)
def test_run_experiment_bad_input(kwargs, match, tmp_path):
    with pytest.raises(InputError, match=match):
        run_experiment(tmp_path, **kwargs)


def test_out_dir_that_is_a_file(tmp_path):
    f = tmp_path / "file.txt"
    f.write_text("x")
    with pytest.raises(InputError, match="not a directory"):
        run_experiment(f, **SMALL)
