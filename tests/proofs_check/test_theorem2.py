import math

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy.linalg import expm

from proofs_check import analyze_means_line, check_theorem2, pfc2_line_polynomials
from proofs_check.instances import (
    MeansInstance,
    dyadic_etf,
    near_etf_means_instance,
    random_means_instance,
)
from proofs_check.strategies import means_instances, near_etf_means_instances, property_settings
from proofs_check.theorem2 import pfc2_closed_form
from ufm.errors import InputError

# profiles registered in conftest.py; HYPOTHESIS_PROFILE=slow selects the long one
SETTINGS = property_settings()


def pfc2_direct(means):
    """Slow reference straight from the definition (unweighted centring)."""
    M = (means - means.mean(0)).T  # (d, K)
    G = M.T @ M
    K = G.shape[0]
    E = (np.eye(K) - np.ones((K, K)) / K) / math.sqrt(K - 1)
    return np.linalg.norm(G / np.linalg.norm(G) - E)


def _line(inst, t):
    return (1 - t) * inst.means0 + t * inst.means_star


def test_closed_form_matches_definition():
    inst = random_means_instance(np.random.default_rng(4), rho=1.5)
    s, n, Q, exact = pfc2_line_polynomials(inst.means0, inst.means_star)
    for t in (0.0, 0.3, 0.8):
        np.testing.assert_allclose(
            pfc2_closed_form(t, s, n, inst.K), pfc2_direct(_line(inst, t)), rtol=1e-9, atol=1e-12
        )


def test_exact_etf_detected():
    rng = np.random.default_rng(0)
    Ms = dyadic_etf(4, 5, rng, offset=True)
    *_, exact = pfc2_line_polynomials(Ms + 1.0, Ms)
    assert exact


@SETTINGS
@given(st.one_of(means_instances(), near_etf_means_instances()))
def test_theorem2_property(inst):
    rec = analyze_means_line(inst.means0, inst.means_star)
    assume(rec["status"] != "outside")
    assert rec["status"] == "confirmed"
    t0 = rec["t0"]
    assert 0 <= t0 < 1
    # dense sampling on the certified interval: PFC2 does not increase
    ts = np.linspace(t0, 1 - 1e-6, 300)
    vals = np.array([pfc2_direct(_line(inst, t)) for t in ts])
    assert np.all(np.diff(vals) <= 1e-9 * (1 + vals[:-1]))
    if t0 > 0.02:
        # just left of t0 PFC2 increases (the certificate is tight)
        left = np.linspace(max(0.0, t0 - 0.02), t0, 50)
        lv = np.array([pfc2_direct(_line(inst, t)) for t in left])
        assert np.any(np.diff(lv) > 0)
    # shrinking the transport below the critical cost makes it monotone on [0, 1]
    if math.isfinite(rec["rho_crit"]):
        s = 0.9 * rec["rho_crit"] / rec["rho"]
        if s < 1:
            M0 = inst.means_star + s * (inst.means0 - inst.means_star)
            rec2 = analyze_means_line(M0, inst.means_star)
            assert rec2["monotone_on_0_1"]


def _dense_increases(means0, means_star, ts):
    """Largest increase of the direct PFC2 between consecutive points of ``ts`` (relative)."""
    vals = np.array([pfc2_direct((1 - t) * means0 + t * means_star) for t in ts])
    return float(np.max(np.diff(vals) / (1e-300 + np.abs(vals[:-1]))))


def _sharp_instances():
    out = []
    for seed in range(40):
        rng = np.random.default_rng(seed)
        inst = near_etf_means_instance(rng) if seed % 2 else random_means_instance(rng, rho=5.0)
        rec = analyze_means_line(inst.means0, inst.means_star)
        if rec["status"] == "confirmed" and math.isfinite(rec["rho_crit"]):
            out.append((inst, rec))
        if len(out) == 6:
            break
    return out


@pytest.mark.parametrize("which", range(6))
def test_critical_cost_is_sharp_by_dense_evaluation(which):
    """Along the reported direction, a start just below rho_c is monotone on [0, 1] and one
    just above is not; checked on the direct PFC2 (no polynomial, no certificate)."""
    inst, rec = _sharp_instances()[which]
    rho, rc = rec["rho"], rec["rho_crit"]
    Ms = inst.means_star - inst.means_star.mean(0)
    D = (inst.means0 - inst.means0.mean(0)) - Ms  # the direction, at relative cost rho
    delta = 0.05
    below = Ms + (rc * (1 - delta) / rho) * D
    above = Ms + (rc * (1 + delta) / rho) * D
    ts = np.linspace(0.0, 1.0, 4001)[:-1]
    assert _dense_increases(below, Ms, ts) <= 1e-9
    # the increase sits right after t = 0 for the start above (the first delta of the line)
    t_c = 1 - 1 / (1 + delta)
    ts_up = np.linspace(0.0, 2 * t_c, 2001)
    assert _dense_increases(above, Ms, ts_up) > 1e-9


def test_near_etf_start_is_not_monotone_at_small_cost():
    """The issue's example: K=4, d=5, a slightly rotated ETF plus 1e-3 noise is not monotone
    at a relative transport cost of about 0.06 (dense evaluation of the direct PFC2)."""
    rng = np.random.default_rng(0)
    Ms = dyadic_etf(4, 5, rng)
    A = rng.standard_normal((5, 5))
    A = (A - A.T) / np.linalg.norm(A - A.T)
    M0 = Ms @ expm(0.12 * A) + 1e-3 * rng.standard_normal((4, 5))
    rho = np.linalg.norm((M0 - M0.mean(0)) - Ms) / np.linalg.norm(Ms)
    assert rho < 0.1
    ts = np.linspace(0.0, 1.0, 2001)[:-1]
    assert _dense_increases(M0, Ms, ts) > 1e-6  # PFC2 rises somewhere on [0, 1]
    rec = analyze_means_line(M0, Ms)
    assert rec["status"] == "confirmed" and not rec["monotone_on_0_1"]
    assert rec["rho_crit"] < rho


def test_near_etf_critical_cost_tends_to_zero():
    """No uniform threshold: smaller rotations give smaller critical costs (dense check of the
    start just above each reported rho_c)."""
    crits = []
    for angle in (0.3, 0.1, 0.03):
        inst = near_etf_means_instance(
            np.random.default_rng(1), K=4, d=5, angle=angle, noise=1e-3 * angle**2
        )
        rec = analyze_means_line(inst.means0, inst.means_star)
        assert not rec["monotone_on_0_1"]
        crits.append(rec["rho_crit"])
        # independent: at 1.1 x rho_c along this direction PFC2 rises first
        Ms = inst.means_star - inst.means_star.mean(0)
        D = (inst.means0 - inst.means0.mean(0)) - Ms
        start = Ms + 1.1 * rec["rho_crit"] / rec["rho"] * D
        assert _dense_increases(start, Ms, np.linspace(0, 0.2, 801)) > 0
    assert crits[0] > crits[1] > crits[2] and crits[2] < 0.02


def test_check_theorem2_reports_the_distribution():
    r = check_theorem2(40, seed=3)
    assert r.ok and r.n_confirmed == r.n_assumptions_met
    # recompute every instance's critical cost independently of the aggregation
    from proofs_check.theorem2 import draw

    crits = []
    for inst in draw(40, 3, 0.1, 0.25):
        rec = analyze_means_line(inst.means0, inst.means_star)
        if rec["status"] == "confirmed":
            crits.append(rec["rho_crit"])
    dist = r.details["rho_crit"]
    assert dist["n"] == len(crits) == r.n_confirmed
    assert dist["n_censored"] == sum(not math.isfinite(c) for c in crits)
    finite = [c for c in crits if math.isfinite(c)]
    assert dist["min"] == pytest.approx(min(finite))
    assert dist["quantiles"]["0.5"] == pytest.approx(float(np.sort(crits)[(len(crits) - 1) // 2]))
    assert set(r.details["rho_crit_by_family"]) == {"near_etf", "random"}
    assert "smallest_rho_not_monotone" not in r.details
    # the cost map is the empirical distribution of rho_c
    for row in r.details["cost_map"]:
        frac = np.mean(np.array(crits) >= row["rho"])
        assert row["fraction_monotone_on_0_1"] == pytest.approx(frac)
    assert r.details["max_crosscheck_err"] < 1e-6


def test_degenerate_instances_are_outside():
    rng = np.random.default_rng(0)
    for kind, reason in [
        ("d_lt_k_minus_1", "d < K-1"),
        ("zero_transport", "zero transport"),
        ("k_equals_2", "K = 2"),
    ]:
        inst = random_means_instance(rng, degenerate=kind)
        rec = analyze_means_line(inst.means0, inst.means_star)
        assert rec["status"] == "outside" and rec["reason"].startswith(reason), (kind, rec)
    Ms = dyadic_etf(3, 4, rng)
    rec = analyze_means_line(2.0 * Ms, Ms)  # a positive multiple: PFC2 is constant 0
    assert rec["reason"].startswith("zero transport")
    rec = analyze_means_line(-Ms, Ms)  # the means pass through a single point
    assert rec["reason"].startswith("class means coincide")
    bad = Ms.copy()
    bad[0] *= 2
    assert analyze_means_line(Ms, bad)["reason"] == "end point is not a simplex ETF"


def test_bad_input():
    Ms = dyadic_etf(3, 4, np.random.default_rng(0))
    with pytest.raises(InputError):
        analyze_means_line(Ms[:, :2], Ms)
    with pytest.raises(InputError):
        analyze_means_line(Ms[:1], Ms[:1])
    with pytest.raises(InputError):
        analyze_means_line(Ms, Ms, end_tol=0.9)
    with pytest.raises(InputError):
        check_theorem2([object()])
    inst = MeansInstance(Ms + 0.1, Ms)
    assert check_theorem2([inst]).n_tried == 1


@pytest.mark.parametrize(
    "grid, match",
    [
        ((-1,), r"rho_grid\[0\] must be > 0"),  # reported a negative certified interval
        ((0.0,), r"rho_grid\[0\] must be > 0"),
        ((1.0, float("nan")), r"rho_grid\[1\] must be finite"),
        ((1e9,), r"rho_grid\[0\] must be <= 100"),
        ((), "rho_grid is empty"),
        ("0.1", "rho_grid must be a sequence"),
        (5.0, "rho_grid must be a sequence"),
    ],
)
def test_check_theorem2_refuses_bad_rho_grids(grid, match):
    with pytest.raises(InputError, match=match):
        check_theorem2(2, seed=0, rho_grid=grid)


def test_check_theorem2_cost_map_intervals_lie_in_0_1():
    r = check_theorem2(4, seed=0, rho_grid=(0.5, 100.0))
    for row in r.details["cost_map"]:
        assert 0.0 <= row["min_interval"] <= row["median_interval"] <= 1.0
