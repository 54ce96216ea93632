"""Per-sample weights of ufm.engine.core.Problem (the LayerNorm UFM's class phase).

A weighted problem with weights ``n_k / N`` on ``K`` rows equals the unweighted problem whose
row ``k`` is repeated ``n_k`` times: value, gradients (summed over the copies) and the ridge
solution of MSE.
"""

from __future__ import annotations

import numpy as np
import pytest

from ufm.engine.core import NP, Params, Problem


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("bias, lam_b", [(True, 0.0), (True, 0.03), (False, 0.0)])
@pytest.mark.parametrize("lam_h", [0.0, 0.02])
def test_weights_equal_repeated_rows(loss, bias, lam_b, lam_h):
    rng = np.random.default_rng(0)
    K, d = 4, 3
    counts = np.array([1, 3, 2, 5])
    Hk, W, b = rng.standard_normal((K, d)), rng.standard_normal((K, d)), rng.standard_normal(K)
    params = Params(0.0, 0.05, lam_h, lam_b, loss, bias)
    pw = Problem(NP, np.arange(K), K, d, None, params, np.empty(0), weights=counts / counts.sum())
    y = np.repeat(np.arange(K), counts)
    pr = Problem(NP, y, K, d, None, params, np.empty(0))
    fw, gWw, gbw, gHw = pw.full(W, b, Hk)
    fr, gWr, gbr, gHr = pr.full(W, b, Hk[y])
    assert fw == pytest.approx(fr, rel=1e-13)
    np.testing.assert_allclose(gWw, gWr, rtol=1e-12, atol=1e-15)
    if bias:
        np.testing.assert_allclose(gbw, gbr, rtol=1e-12, atol=1e-15)
    sums = np.zeros_like(Hk)
    np.add.at(sums, y, gHr)
    np.testing.assert_allclose(gHw, sums, rtol=1e-12, atol=1e-15)
    if loss == "mse":
        for a, r in zip(pw.ridge(Hk), pr.ridge(Hk[y]), strict=True):
            np.testing.assert_allclose(a, r, rtol=1e-10, atol=1e-13)
        Ww, bw = pw.ridge(Hk)
        _, gW, gb, _ = pw.full(Ww, bw, Hk)
        assert np.abs(gW).max() < 1e-12 and (not bias or np.abs(gb).max() < 1e-12)
