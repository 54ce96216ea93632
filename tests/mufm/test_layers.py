"""Theorem 3: result.layers(L) and the L-layer objective over explicit layers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import log_uniform, seeds

import mufm
import ufm
from mufm import multilayer_objective
from ufm import InputError

X3 = np.random.default_rng(0).standard_normal((3, 3, 4))
LAM, LW, LB = 0.4, 0.05, 0.05


def slow_multilayer(layers, y, W, b, lam, lam_w, lam_b):
    """Independent reference: loops over samples and layers, MSE loss."""
    L = len(layers) - 1
    N = layers[0].shape[0]
    K = W.shape[0]
    total = 0.0
    for i in range(N):
        z = W @ layers[-1][i] + b
        total += 0.5 * sum((z[k] - (k == y[i])) ** 2 for k in range(K))
        for l in range(1, L + 1):
            total += 0.5 * lam * L * float(np.sum((layers[l][i] - layers[l - 1][i]) ** 2))
    return total / N + 0.5 * lam_w * float(np.sum(W**2)) + 0.5 * lam_b * float(np.sum(b**2))


@pytest.fixture(scope="module")
def res():
    return mufm.solve(X3, lam=LAM, lam_w=LW, lam_b=LB, tol=1e-11)


@pytest.mark.parametrize("L", [1, 2, 3, 7, 20])
def test_layers_equally_spaced_and_objective_is_L_invariant(res, L):
    layers = res.layers(L)
    assert len(layers) == L + 1
    np.testing.assert_array_equal(layers[0], res.X)
    np.testing.assert_array_equal(layers[-1], res.H)
    steps = [layers[l] - layers[l - 1] for l in range(1, L + 1)]
    for s in steps:
        np.testing.assert_allclose(s, (res.H - res.X) / L, atol=1e-13)
    val = multilayer_objective(layers, res.y, res.W, res.b, lam=LAM, lam_w=LW, lam_b=LB)
    np.testing.assert_allclose(val, res.objective, rtol=1e-12)
    ref = slow_multilayer(layers, res.y, res.W, res.b, LAM, LW, LB)
    np.testing.assert_allclose(val, ref, rtol=1e-12)


def test_torch_layers(res):
    rt = mufm.solve(torch.as_tensor(X3), lam=LAM, lam_w=LW, lam_b=LB)
    layers = rt.layers(4)
    assert all(isinstance(h, torch.Tensor) for h in layers)
    val = multilayer_objective(layers, rt.y, rt.W, rt.b, lam=LAM, lam_w=LW, lam_b=LB)
    np.testing.assert_allclose(val, res.objective, rtol=1e-10)
    stacked = multilayer_objective(
        torch.stack(layers), rt.y, rt.W, rt.b, lam=LAM, lam_w=LW, lam_b=LB
    )
    assert stacked == val


@settings(max_examples=30, deadline=None)
@given(L=st.integers(2, 6), seed=seeds, scale=log_uniform(1e-4, 1.0))
def test_perturbing_an_intermediate_layer_increases_objective(res, L, seed, scale):
    layers = [h.copy() for h in res.layers(L)]
    base = multilayer_objective(layers, res.y, res.W, res.b, lam=LAM, lam_w=LW, lam_b=LB)
    rng = np.random.default_rng(seed)
    l = int(rng.integers(1, L))  # an intermediate layer: 1..L-1
    layers[l] = layers[l] + scale * rng.standard_normal(layers[l].shape)
    pert = multilayer_objective(layers, res.y, res.W, res.b, lam=LAM, lam_w=LW, lam_b=LB)
    # exact increase: lam * L * ||delta||^2 / N (the line is the minimiser of a quadratic)
    delta = layers[l] - res.layers(L)[l]
    np.testing.assert_allclose(pert - base, LAM * L * np.sum(delta**2) / res.N, rtol=1e-6)
    assert pert > base


def test_no_layers_for_ufm_and_bad_L(res):
    u = ufm.solve(np.repeat(np.arange(3), 2), d=4)
    with pytest.raises(InputError, match="UFM"):
        u.layers(2)
    with pytest.raises(InputError, match="L"):
        res.layers(0)


def test_bad_layers(res):
    kw = dict(lam=LAM, lam_w=LW)
    with pytest.raises(InputError, match="at least 2"):
        multilayer_objective([res.H], res.y, res.W, **kw)
    with pytest.raises(InputError, match="same samples"):
        multilayer_objective([res.X, res.H[:4]], res.y, res.W, **kw)
    bad = res.H.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        multilayer_objective([res.X, bad], res.y, res.W, **kw)
    with pytest.raises(InputError, match="lam"):
        multilayer_objective([res.X, res.H], res.y, res.W, lam=-1.0, lam_w=LW)
