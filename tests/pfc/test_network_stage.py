"""The network stage's structural-limit measurement against independent linear algebra."""

import numpy as np
import pytest

import mufm
from pfc.stages.network import structural_limit


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_mufm_displacement_lies_in_rowspace_of_its_own_w(loss):
    """With lam_h = 0, lam (h_i - x_i) = -W^T g_i: H* - X is in rowspace(W) (both losses)."""
    rng = np.random.default_rng(0)
    K, n, d = 3, 6, 12
    X = rng.standard_normal((K * n, d))
    y = np.repeat(np.arange(K), n)
    r = mufm.solve(X, y, lam=0.5, loss=loss, tol=1e-10, seed=0)
    H, W = np.asarray(r.H), np.asarray(r.W)
    HL = X + rng.standard_normal(X.shape)  # a "network layer" free to move in all d dimensions
    lim = structural_limit(X, H, W, HL)
    # independent: least-squares residual of each displacement on the rows of W
    disp = H - X
    coef, *_ = np.linalg.lstsq(W.T, disp.T, rcond=1e-8)
    off = np.linalg.norm(disp.T - W.T @ coef) / np.linalg.norm(disp)
    assert off < 1e-6 and lim["mufm_off_rowspace"] < 1e-6
    np.testing.assert_allclose(lim["mufm_off_rowspace"], off, atol=1e-9)
    # a random displacement is mostly outside a K-dim subspace of R^12, and the floors bound
    # the distance of the MUFM solution to HL from below
    net = HL - X
    c2, *_ = np.linalg.lstsq(W.T, net.T, rcond=1e-8)
    floor = np.linalg.norm(net.T - W.T @ c2) / np.linalg.norm(HL)
    np.testing.assert_allclose(lim["distance_floor_own_w"], floor, rtol=1e-10)
    rel = np.linalg.norm(HL - H) / np.linalg.norm(HL)
    assert lim["distance_floor_any_k"] <= lim["distance_floor_own_w"] <= rel + 1e-9
    assert 0 < lim["network_in_rowspace"] <= lim["network_best_k_share"] <= 1
    # with lam_h > 0 the displacement leaves the row space (the limit is lam_h = 0's)
    r2 = mufm.solve(X, y, lam=0.5, lam_h=0.5, loss=loss, tol=1e-10, seed=0)
    lim2 = structural_limit(X, np.asarray(r2.H), np.asarray(r2.W), HL)
    assert lim2["mufm_off_rowspace"] > 1e-3
