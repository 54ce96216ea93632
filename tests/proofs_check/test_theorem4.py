import numpy as np
import pytest

import mufm
from proofs_check import analyze_mufm, check_theorem4, reduced_mse_flow
from proofs_check.instances import MUFMInstance, gaussian_data, random_mufm_instance
from proofs_check.theorem4 import lam_grid, observed_lam0
from ufm.errors import InputError
from ufm.metrics import collapse_metrics


def test_reference_flow_matches_library_flow():
    X = gaussian_data(np.random.default_rng(0), 3, 3, 4)
    Xf, y = X.reshape(9, 4), np.repeat(np.arange(3), 3)
    ref = reduced_mse_flow(Xf, y, lam_w=0.01, lam_b=0.0, t_max=5.0, n_eval=11)
    lib = mufm.gradient_flow(Xf, y, lam_w=0.01, lam_b=0.0, t_max=5.0, n_eval=11, rtol=1e-10)
    np.testing.assert_allclose(ref["tr_sigma_w"], lib.tr_sigma_w, rtol=1e-6)
    np.testing.assert_allclose(ref["tr_sigma_b"], lib.tr_sigma_b, rtol=1e-6)
    # traces against the metrics module
    m = collapse_metrics(ref["Hs"][-1], y)
    np.testing.assert_allclose(ref["tr_sigma_w"][-1], m["tr_sigma_w"], rtol=1e-10)
    assert np.all(np.diff(ref["tr_sigma_w"]) <= 0) and np.all(np.diff(ref["tr_sigma_b"]) >= 0)


def test_non_collapse_identity_at_the_optimum():
    """(lam I + W^T W) dH = lam dX for the within-class deviations (the non-collapse proof)."""
    X = gaussian_data(np.random.default_rng(1), 3, 4, 5)
    lam = 0.5
    res = mufm.solve(X, lam=lam, lam_w=0.01, lam_b=0.0, tol=1e-11)
    Xf, y = X.reshape(12, 5), np.repeat(np.arange(3), 4)
    H, W = np.asarray(res.H), np.asarray(res.W)
    dX = Xf - np.stack([Xf[y == k].mean(0) for k in range(3)])[y]
    dH = H - np.stack([H[y == k].mean(0) for k in range(3)])[y]
    np.testing.assert_allclose(dH @ (lam * np.eye(5) + W.T @ W), lam * dX, atol=1e-7)


def test_analyze_one_instance():
    inst = random_mufm_instance(np.random.default_rng(3))
    rec = analyze_mufm(inst, per_decade=2)
    assert rec["status"] == "confirmed", rec
    assert rec["min_pfc1_solution"] > 0
    assert rec["flow_max_rel_increase_trsw"] <= 1e-7


def pfc1_direct(H, y, K):
    """Slow reference: traces of the d x d covariance matrices (MATH.md section 3)."""
    N = H.shape[0]
    mus = np.stack([H[y == k].mean(0) for k in range(K)])
    muG = H.mean(0)
    Sw = sum(np.outer(h - mus[k], h - mus[k]) for h, k in zip(H, y, strict=True)) / N
    Sb = sum(np.outer(m - muG, m - muG) for m in mus) / K
    return np.trace(Sw) / np.trace(Sb)


def _solve_pfc1(inst, lam):
    r = mufm.solve(
        inst.X, lam=lam, lam_w=inst.lam_w, lam_b=inst.lam_b, loss="mse", bias=inst.bias, tol=1e-11
    )
    X, y = inst.flat()
    return pfc1_direct(np.asarray(r.H), y, inst.K)


@pytest.mark.parametrize("seed", [4, 5])
def test_lam0_against_independent_pfc1_on_both_sides(seed):
    """The reported lam_0 against PFC1(H*(lam)) vs PFC1(X) computed here, at grid points and
    between them: the inequality holds above lam_0 and fails at lam_0 itself (when lam_0 > 0);
    lam_0 = 0 means it holds on the whole grid, including off-grid points."""
    inst = random_mufm_instance(np.random.default_rng(seed))
    rec = analyze_mufm(inst, per_decade=2, flow=False)
    assert rec["status"] == "confirmed", rec
    X, y = inst.flat()
    px = pfc1_direct(X, y, inst.K)
    grid = lam_grid(per_decade=2)
    lam0 = rec["lam0"]
    rng = np.random.default_rng(seed)
    # off-grid points: one random point inside each of a few grid cells above lam_0
    cells = [i for i in range(len(grid) - 1) if grid[i] >= lam0]
    off = [grid[i] * (grid[i + 1] / grid[i]) ** rng.uniform() for i in rng.choice(cells, 4)]
    for lam in [*grid[grid > lam0], *off]:
        assert _solve_pfc1(inst, lam) < px, lam
    if lam0 > 0:
        assert _solve_pfc1(inst, lam0) >= px
    else:
        assert rec["grid_failures"] == [] and rec["pfc1_ratio_max"] < 1


def test_observed_lam0_on_planted_curves():
    """The grid rule on curves with known crossings (both sides of the reported value)."""
    grid = lam_grid(1e-5, 1e4, 4)
    assert len(grid) == 37 and grid[0] == pytest.approx(1e-5) and grid[-1] == pytest.approx(1e4)
    ref = 1.0
    for crossings in [(), (0.37,), (2e-4, 3e-3, 0.5)]:
        # value above ref (fails) between consecutive pairs of crossings, starting with "fails"
        def f(lam, c=crossings):
            return 2.0 if sum(lam >= x for x in c) % 2 == 0 and c else 0.5

        holds = np.array([f(g) < ref for g in grid])
        lam0 = observed_lam0(grid, holds)
        if not crossings:
            assert lam0 == 0.0
            continue
        assert f(lam0) >= ref and all(f(g) < ref for g in grid if g > lam0)
        assert lam0 < crossings[-1] <= grid[grid > lam0][0]
    assert observed_lam0(grid, np.arange(37) < 36) is None  # fails at the top: no threshold
    with pytest.raises(InputError):
        observed_lam0(grid, holds[:-1])
    with pytest.raises(InputError):
        lam_grid(1.0, 0.5)


def test_check_theorem4_and_degenerate():
    r = check_theorem4(3, seed=0, per_decade=1)
    assert r.ok and r.n_tried == 3
    assert len(r.details["lam0_per_instance"]) == r.n_assumptions_met
    assert sum(r.details["lam0_counts"].values()) == r.n_assumptions_met
    assert r.details["lam0_grid"]["n"] == 10
    inst = random_mufm_instance(np.random.default_rng(0), degenerate="collapsed")
    assert analyze_mufm(inst, flow=False)["reason"].startswith("collapsed data")
    with pytest.raises(InputError):
        analyze_mufm(MUFMInstance(X=inst.X, lam=1.0, lam_w=0.01, loss="ce"))


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(per_decade=10**9), "points, above 1,000"),
        (dict(lam_min=1e-300, lam_max=1e300), "points, above 1,000"),
        (dict(per_decade="4"), "per_decade must be an integer"),
        (dict(per_decade=float("nan")), "per_decade must be an integer"),
        (dict(per_decade=2.5), "per_decade must be an integer"),
    ],
)
def test_lam_grid_bounds(kw, match):
    with pytest.raises(InputError, match=match):
        lam_grid(**kw)
