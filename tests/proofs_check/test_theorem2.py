import math
import os

import numpy as np
import pytest
from hypothesis import assume, given, settings

from proofs_check import analyze_means_line, check_theorem2, pfc2_line_polynomials
from proofs_check.instances import MeansInstance, dyadic_etf, random_means_instance
from proofs_check.strategies import means_instances
from proofs_check.theorem2 import pfc2_closed_form
from ufm.errors import InputError

# profiles registered in conftest.py; HYPOTHESIS_PROFILE=slow selects the long one
SETTINGS = settings.get_profile(
    "slow" if os.environ.get("HYPOTHESIS_PROFILE") == "slow" else "proofs_check-fast"
)


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
@given(means_instances())
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


def test_small_transport_is_globally_monotone_and_cost_map():
    r = check_theorem2(40, seed=3)
    assert r.ok and r.n_confirmed == r.n_assumptions_met
    cm = r.details["cost_map"]
    assert cm[0]["rho"] == 0.01 and cm[0]["fraction_monotone_on_0_1"] == 1.0
    fr = [row["fraction_monotone_on_0_1"] for row in cm]
    assert fr == sorted(fr, reverse=True)  # shrinks as the cost grows
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
