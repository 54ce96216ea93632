from fractions import Fraction

import numpy as np
import pytest
from hypothesis import assume, given

from proofs_check import analyze_line, check_theorem1, line_coefficients, pfc1_closed_form
from proofs_check.certify import poly_mul, poly_trim
from proofs_check.instances import dyadic_etf, random_line_instance
from proofs_check.strategies import line_instances, property_settings
from proofs_check.theorem1 import pfc1_derivative_at_zero, pfc1_derivative_numerator
from ufm import Status
from ufm.errors import DegenerateInputError, InputError

# profiles registered in conftest.py; HYPOTHESIS_PROFILE=slow selects the long one
SETTINGS = property_settings()


def pfc1_direct(H, y, K):
    """Slow reference: traces of the d x d covariance matrices."""
    N, d = H.shape
    mus = np.stack([H[y == k].mean(0) for k in range(K)])
    muG = H.mean(0)
    Sw = sum(np.outer(h - mus[k], h - mus[k]) for h, k in zip(H, y, strict=True)) / N
    Sb = sum(np.outer(m - muG, m - muG) for m in mus) / K
    return np.trace(Sw) / np.trace(Sb)


def test_numerator_equals_simplified_form_exactly():
    for a, b, c, e in [(1, 2, 3, 4), (0.3, 1.7, -0.4, 2.5), (2, 1, 0, 1)]:
        num = pfc1_derivative_numerator(a, b, c, e)
        A, C, E = Fraction(a), Fraction(c), Fraction(e)
        # -2a(1-t)((1-t)c + te)
        ref = poly_mul(poly_trim([-2 * A]), poly_mul(poly_trim([1, -1]), poly_trim([C, E - C])))
        assert num == ref


def test_closed_form_matches_direct_reference():
    rng = np.random.default_rng(3)
    inst = random_line_instance(rng)
    K = inst.K
    a, b, c, e = line_coefficients(inst.X, inst.y, inst.end_means).floats()
    for t in (0.0, 0.2, 0.7, 0.99):
        H = (1 - t) * inst.X + t * inst.end_means[inst.y]
        np.testing.assert_allclose(
            pfc1_closed_form(t, a, b, c, e), pfc1_direct(H, inst.y, K), rtol=1e-10
        )


def test_exact_and_float_coefficients_agree():
    inst = random_line_instance(np.random.default_rng(5))
    ex = line_coefficients(inst.X, inst.y, inst.end_means)
    fl = line_coefficients(inst.X, inst.y, inst.end_means, exact_limit=0)
    assert ex.exact and not fl.exact
    np.testing.assert_allclose(ex.floats(), fl.floats(), rtol=1e-12)


@SETTINGS
@given(line_instances())
def test_theorem1_property(inst):
    a, b, c, e = line_coefficients(inst.X, inst.y, inst.end_means).floats()
    assume(a > 0 and b > 0 and e > 0)
    assume(abs(c) > 1e-9 * np.sqrt(b * e))
    rec = analyze_line(inst.X, inst.y, inst.end_means)
    assume(rec["status"] != "outside" or rec["reason"].startswith("c < 0"))
    ts = np.linspace(0, 1, 401)
    vals = pfc1_closed_form(ts, a, b, c, e)
    if c > 0:
        assert rec["status"] == "confirmed"
        assert np.all(np.diff(vals) < 0)  # dense sampling agrees with the certificate
        assert vals[-1] == 0
    else:
        assert rec["rises_first"]
        t_peak = rec["t_peak"]
        if t_peak >= ts[1]:  # PFC1 rises on [0, t_peak]; a peak before the first step is unseen
            assert vals[1] > vals[0]
        assert np.argmax(vals) == pytest.approx(t_peak * 400, abs=1.5)


@pytest.mark.parametrize("seed", range(8))
def test_derivative_at_zero_matches_finite_differences(seed):
    """PFC1'(0) = -2ac/b^2 (sign of -c) against a central difference of the direct d x d
    PFC1 on the line extended to t < 0."""
    rng = np.random.default_rng(seed)
    inst = random_line_instance(rng)
    E = inst.end_means if seed % 2 else -inst.end_means  # both signs of c
    coef = line_coefficients(inst.X, inst.y, E)
    a, b, c, e = coef.floats()
    d0 = float(pfc1_derivative_at_zero(coef.a, coef.b, coef.c))
    h = 1e-5

    def f(t):
        return pfc1_direct((1 - t) * inst.X + t * E[inst.y], inst.y, inst.K)

    fd = (f(h) - f(-h)) / (2 * h)
    np.testing.assert_allclose(d0, fd, rtol=1e-6, atol=1e-9 * abs(f(0.0)))
    assert np.sign(d0) == -np.sign(c) and np.sign(fd) == -np.sign(c)
    rec = analyze_line(inst.X, inst.y, E)
    if rec.get("reason", "").startswith("c < 0"):
        assert rec["rises_first"] and rec["rises_first_certified"] and rec["derivative_agrees"]
        assert f(0.5 * rec["t_peak"]) > f(0.0)  # it does rise, on the direct metric
    np.testing.assert_allclose(rec["dpfc1_dt_at_0"], d0, rtol=1e-15)


def test_c_negative_counterexample_confirmed_by_metric():
    rng = np.random.default_rng(0)
    K, n, d = 3, 4, 4
    X = rng.standard_normal((K * n, d)) * 0.3
    y = np.repeat(np.arange(K), n)
    mus = np.stack([X[y == k].mean(0) for k in range(K)])
    E = -3.0 * (mus - mus.mean(0))  # end means opposite to the data's: c < 0
    E = dyadic_etf(K, d, rng)
    # rotate the ETF to point away from the data's means
    from proofs_check.instances import _procrustes

    E = -_procrustes(mus - mus.mean(0), E)
    rec = analyze_line(X, y, E)
    assert rec["reason"] == "c < 0 (assumption fails)" and rec["rises_first"]
    assert rec["rise_metric"] > 0
    assert rec["rise"] == pytest.approx(rec["rise_metric"], rel=1e-8)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("collapsed", "collapsed data"), ("d_lt_k_minus_1", "d < K-1"), ("c_zero", "c = 0 boundary")],
)
def test_degenerate_instances_are_outside(kind, reason):
    inst = random_line_instance(np.random.default_rng(1), degenerate=kind)
    rec = analyze_line(inst.X, inst.y, inst.end_means)
    assert rec["status"] == Status.OUTSIDE and rec["reason"].startswith(reason), rec


def test_non_etf_end_point_is_outside():
    inst = random_line_instance(np.random.default_rng(2))
    E = inst.end_means.copy()
    E[0] *= 1.5
    rec = analyze_line(inst.X, inst.y, E)
    assert rec["reason"] == "end point is not a simplex ETF"


def test_check_theorem1_counts_add_up():
    r = check_theorem1(40, seed=1)
    assert r.n_tried == 40
    assert r.n_assumptions_met + sum(r.outside.values()) == 40
    assert r.n_confirmed == r.n_assumptions_met and r.n_violations == 0 and r.ok
    assert r.worst_margin > 0
    assert r.details["n_c_negative"] == r.details["n_c_negative_rising_first"]
    assert r.details["n_c_negative"] == r.details["n_c_negative_derivative_agrees"] > 0
    assert "certified consequence" in r.details["c_negative_rises_first"]
    assert all(ce["kind"] == "assumption_needed" for ce in r.counterexamples)
    assert r.details["max_crosscheck_rel_err"] < 1e-9
    # reproducible
    assert check_theorem1(40, seed=1).to_dict() == r.to_dict()


def test_given_instances_and_a_planted_violation(monkeypatch):
    inst = random_line_instance(np.random.default_rng(11))
    r = check_theorem1([inst, inst], seed=None)
    assert r.n_tried == 2
    import proofs_check.theorem1 as t1

    monkeypatch.setattr(t1, "_metric_pfc1", lambda *a: 123.0)  # a wrong "metric"
    bad = [
        i
        for i in (random_line_instance(np.random.default_rng(s)) for s in range(30))
        if analyze_line(i.X, i.y, i.end_means, crosscheck=False).get("status") == "confirmed"
    ]
    r = check_theorem1(bad[:2])
    assert r.n_violations == 2 and not r.ok
    assert r.counterexamples[0]["kind"] == "violation"


def test_bad_input():
    inst = random_line_instance(np.random.default_rng(0))
    with pytest.raises(InputError):
        analyze_line(inst.X, inst.y, inst.end_means[:, :-1])
    with pytest.raises(InputError):
        analyze_line(inst.X, inst.y[:-1], inst.end_means)
    with pytest.raises(InputError):
        analyze_line(np.full_like(inst.X, np.nan), inst.y, inst.end_means)
    with pytest.raises(DegenerateInputError):
        analyze_line(inst.X, np.zeros_like(inst.y), inst.end_means[:1])
    with pytest.raises(InputError):
        check_theorem1(-1)
    with pytest.raises(InputError):
        check_theorem1(["not an instance"])
    with pytest.raises(InputError):
        check_theorem1(3, degenerate_rate=2.0)
    with pytest.raises(InputError):
        analyze_line(inst.X, inst.y, inst.end_means, c_tol=-1)
