"""Scale-equivariance of every solver (issue 20, point 2).

``X a`` with ``lam / a^2``, ``lam_h / a^2``, ``lam_w a^2`` (``lam_b`` unchanged) is the same
(M)UFM as ``X`` (``H -> a H``, ``W -> W / a``, equal objective): every method must give the
rescaled solution, with the same status, over ``a`` in ``[2^-600, 2^600]`` wherever the
rescaled coefficients are float64 normal numbers. The reference is the well-scaled problem.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

import mufm
import ufm

# The problems here are rescaled on purpose with scale="none": mufm's ScaleWarning (lam acting
# 1000x stronger or weaker than on unit-scale data) is expected and not what is tested.
pytestmark = pytest.mark.filterwarnings("ignore::ufm.errors.ScaleWarning")

_SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


def _normal(*vals: float) -> bool:
    return all(2.0**-1022 <= abs(v) < math.inf for v in vals)


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((18, 5))
    y = np.arange(18) % 3
    return X, y


def _quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a scale-induced ConvergenceWarning fails the test
        warnings.simplefilter("ignore", ufm.ScaleWarning)  # expected: rescaled on purpose
        return fn(*args, **kw)


def _compare(r, r0, a, rtol=1e-7, gram=False):
    assert r.status == r0.status
    np.testing.assert_allclose(r.objective, r0.objective, rtol=1e-10)
    H, H0 = np.asarray(r.H), np.asarray(r0.H)
    assert np.all(np.isfinite(H))
    if gram:  # the UFM optimum is unique up to a rotation: compare Gram matrices and logits
        W, W0 = np.asarray(r.W), np.asarray(r0.W)
        G, G0 = (H / a) @ (H / a).T, H0 @ H0.T
        np.testing.assert_allclose(G, G0, rtol=rtol, atol=rtol * np.abs(G0).max())
        Z, Z0 = (W * a) @ (H / a).T, W0 @ H0.T
        np.testing.assert_allclose(Z, Z0, rtol=rtol, atol=rtol * np.abs(Z0).max())
        return
    np.testing.assert_allclose(H / a, H0, rtol=rtol, atol=rtol * np.abs(H0).max())
    W, W0 = np.asarray(r.W), np.asarray(r0.W)
    np.testing.assert_allclose(W * a, W0, rtol=1e-5, atol=1e-5 * np.abs(W0).max())
    for k in ("nc1", "pfc1", "nc3"):
        if k in r0.metrics:
            np.testing.assert_allclose(r.metrics[k], r0.metrics[k], rtol=1e-6)


_exp = st.integers(-600, 600)
_frac = st.sampled_from([0.0, 0.0, 0.3, 0.77])  # powers of two and others


@pytest.mark.parametrize("method", ["suffstats", "lbfgs-h"])
@_SETTINGS
@given(e=_exp, f=_frac)
def test_mufm_solve_is_scale_equivariant(method, e, f):
    a = 2.0 ** (e + f)
    lam, lam_w = 0.5, 5e-4
    assume(_normal(lam / a / a, lam_w * a * a))
    X, y = _data()
    r0 = _quiet(mufm.solve, X, y, lam=lam, lam_w=lam_w, method=method)
    r = _quiet(mufm.solve, X * a, y, lam=lam / a / a, lam_w=lam_w * a * a, method=method)
    _compare(r, r0, a)


@_SETTINGS
@given(e=_exp, f=_frac)
def test_ufm_solve_is_scale_equivariant(e, f):
    a = 2.0 ** (e + f)
    lam_w, lam_h = 5e-3, 5e-3
    assume(_normal(lam_h / a / a, lam_w * a * a))
    y = np.arange(12) % 3
    r0 = _quiet(ufm.solve, y, d=4, lam_w=lam_w, lam_h=lam_h)
    r = _quiet(ufm.solve, y, d=4, lam_w=lam_w * a * a, lam_h=lam_h / a / a)
    _compare(r, r0, a, rtol=1e-6, gram=True)


def test_issue_20_tiny_scale_converged_at_the_wrong_point():
    # a = 2^-50 once returned objective 0.0438 vs 0.0147 with status converged
    X, y = _data(1)
    a = 2.0**-50
    r0 = _quiet(mufm.solve, X, y, lam=0.5, lam_w=5e-4)
    r = _quiet(mufm.solve, X * a, y, lam=0.5 / a**2, lam_w=5e-4 * a**2)
    _compare(r, r0, a)
    assert r.params["scale"] != 1.0 and r.params["lam"] == 0.5 / a**2


def test_tiny_data_features_are_not_reported_as_changed_in_place():
    X, y = _data(2)
    for c in (1e-10, 1e-30, 1e-200):
        r = _quiet(mufm.solve, X * c, y)
        assert r.H.shape == X.shape and np.all(np.isfinite(r.H))
    # a real change is still detected (solved as given: no internal copy at this scale)
    X2 = X * 1e-10
    r = mufm.solve(X2, y)
    if r.params["scale"] == 1.0:
        X2[0, 0] += 1.0
        with pytest.raises(ufm.InputError, match="changed in place"):
            r.H  # noqa: B018


def test_subnormal_features_give_metrics_not_overflow():
    rng = np.random.default_rng(0)
    H = rng.standard_normal((30, 8))
    y = np.arange(30) % 3
    ref = ufm.collapse_metrics(H, y)
    for c in (2.0**-1030, 2.0**-1060):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # tr_sigma_* underflow to 0 (reported by a warning)
            m = ufm.collapse_metrics(H * c, y)
        # subnormals keep 2^-1074 / c of relative precision
        np.testing.assert_allclose(m["nc1"], ref["nc1"], rtol=1e-3)
        np.testing.assert_allclose(m["pfc1"], ref["pfc1"], rtol=1e-3)


@_SETTINGS
@given(e=_exp, f=_frac, loss=st.sampled_from(["ce", "mse"]))
@example(e=5, f=0.0, loss="ce")  # failed when |e| <= 8 was solved unscaled (max_iter, 3e-8)
@example(e=-5, f=0.3, loss="ce")  # another local minimum (1.5e-2) before the balancing scale
def test_layernorm_affine_is_scale_equivariant(e, f, loss):
    # affine=True: W / a, (gamma, beta) a with lam_w a^2, lam_affine / a^2 is the same problem;
    # it is solved at the balancing scale (lam_w / lam_affine)^(1/4) for every a
    from ufm.layernorm import solve_layernorm

    a = 2.0 ** (e + f)
    lam_w = lam_a = 5e-3
    assume(_normal(lam_w * a * a, lam_a / a / a))
    y = np.arange(12) % 3
    kw = {"d": 4, "affine": True, "loss": loss, "lam_b": 5e-3}
    r0 = _quiet(solve_layernorm, y, lam_w=lam_w, lam_affine=lam_a, **kw)
    r = _quiet(solve_layernorm, y, lam_w=lam_w * a * a, lam_affine=lam_a / a / a, **kw)
    assert r.status == r0.status
    np.testing.assert_allclose(r.objective, r0.objective, rtol=1e-9)
    H, H0 = np.asarray(r.H) / a, np.asarray(r0.H)
    G, G0 = H @ H.T, H0 @ H0.T  # unique up to a rotation unless a is a power of two
    np.testing.assert_allclose(G, G0, rtol=1e-4, atol=1e-4 * np.abs(G0).max())
    if f == 0.0:  # rescaled to exactly the reference problem
        np.testing.assert_array_equal(H, H0)
        np.testing.assert_array_equal(np.asarray(r.W) * a, np.asarray(r0.W))
