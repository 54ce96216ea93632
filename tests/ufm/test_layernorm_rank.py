"""The LayerNorm UFM with fewer dimensions than classes (issue 22 point 3).

For ``d >= K`` the optimum is a simplex ETF on LayerNorm's sphere (closed form,
``layernorm_etf_optimum``). For ``3 <= d < K`` the mean-zero subspace has ``d - 1 < K - 1``
dimensions, so no ETF fits: the solver still runs (RankWarning) and reports metrics; for ``d = 3``
(a circle) its optimum is checked against an independent reference, the regular ``K``-gon with
the convex-optimal classifier. ``d = 2 < K`` (two points) is refused, and so is the closed form
for every ``d < K``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.optimize

import ufm
from ufm import InputError, RankWarning
from ufm import layernorm as LN


def _polygon_reference(K, loss, bias, lam_w, lam_b):
    """Regular K-gon on the circle {1^T n = 0, ||n|| = sqrt 3} with its optimal (W, b)."""
    A = np.array([[1.0, -1.0, 0.0], [1.0, 1.0, -2.0]]).T
    V = A / np.linalg.norm(A, axis=0)  # orthonormal basis of the mean-zero plane of R^3
    ang = 2 * np.pi * np.arange(K) / K
    H = math.sqrt(3) * (np.cos(ang)[:, None] * V[:, 0] + np.sin(ang)[:, None] * V[:, 1])
    y = np.arange(K)

    def f(z):
        W = z[: 3 * K].reshape(K, 3)
        b = z[3 * K :] if bias else None
        return ufm.objective(W, b, H, y, lam_w=lam_w, lam_b=lam_b, lam_h=0.0, loss=loss)

    # the objective is convex in (W, b) for fixed features: BFGS from 0 finds the minimum
    r = scipy.optimize.minimize(f, np.zeros(3 * K + K * bias), method="BFGS", tol=1e-13)
    return r.fun


@pytest.mark.parametrize("K", [4, 5, 7])
@pytest.mark.parametrize("loss, bias", [("ce", True), ("ce", False), ("mse", True)])
def test_d_below_K_is_solved_to_the_regular_polygon(K, loss, bias):
    y = np.repeat(np.arange(K), 3)
    kw = {"lam_w": 5e-3, "lam_b": 5e-3, "loss": loss, "bias": bias}
    with pytest.warns(RankWarning, match=r"d=3 < K=\d: .*not an ETF.*spherical code"):
        res = ufm.solve(y, d=3, features="layernorm", seed=1, **kw)
    assert res.converged
    ref = _polygon_reference(K, **kw)
    assert res.objective == pytest.approx(ref, rel=1e-8)
    assert res.metrics["pfc2"] > 0.1  # not an ETF, reported as it is
    if loss == "mse":
        return  # MSE depends on the class Gram through a trace: other optima tie (seen, K = 7)
    # cross entropy: the class features are K equally spaced points of the circle
    Hc = np.asarray(res.H)[::3]
    cos = np.clip(Hc @ Hc.T / 3.0, -1, 1)
    angles = np.sort(np.arccos(cos[0]))
    want = np.sort(np.minimum(np.arange(K), K - np.arange(K)) * 2 * np.pi / K)
    np.testing.assert_allclose(angles, want, atol=1e-5)


def test_d_2_below_K_and_the_closed_form_below_K_are_refused():
    y = np.repeat(np.arange(3), 2)
    with pytest.raises(InputError, match=r"d=2 < K=3: .*two values.*use d >= 3"):
        ufm.solve(y, d=2, features="layernorm")
    with pytest.raises(InputError, match=r"d=3 < K=5: .*spherical code.*no closed form"):
        ufm.layernorm_etf_optimum(5, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RankWarning)  # d >= K: no warning
        ufm.solve(np.repeat(np.arange(3), 2), d=3, features="layernorm")
    assert LN.layernorm_etf_optimum(3, 3).structure == "etf"
