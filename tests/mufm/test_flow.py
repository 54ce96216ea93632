"""The gradient flow of eq. 21 (Theorem 4's monotone traces)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import mufm
from mufm import gradient_flow
from ufm import InputError, SolverError
from ufm.metrics import collapse_metrics

RNG = np.random.default_rng(2)
X = RNG.standard_normal((3, 5, 4)) + 2 * RNG.standard_normal((3, 1, 4))


@pytest.fixture(scope="module")
def flow():
    return gradient_flow(X, t_max=20.0, n_eval=41)


def test_traces_monotone_and_loss_decreasing(flow):
    assert flow.Hs.shape == (41, 15, 4)
    np.testing.assert_array_equal(flow.Hs[0], X.reshape(15, 4))
    assert np.all(np.diff(flow.tr_sigma_w) < 0)
    assert np.all(np.diff(flow.tr_sigma_b) > 0)
    assert np.all(np.diff(flow.objective) < 0)
    assert "FlowResult" in repr(flow)


def test_traces_match_metrics_module(flow):
    for k in (0, 20, 40):
        m = collapse_metrics(flow.Hs[k], flow.y)
        np.testing.assert_allclose(flow.tr_sigma_w[k], m["tr_sigma_w"], rtol=1e-12)
        np.testing.assert_allclose(flow.tr_sigma_b[k], m["tr_sigma_b"], rtol=1e-12)


def test_velocity_is_minus_N_times_reduced_gradient(flow):
    # finite difference in time of the trajectory against h_i' = W^T (e_y - W h_i - b)
    fine = gradient_flow(X, t_max=1e-3, n_eval=3, rtol=1e-12)
    dt = fine.ts[1]
    vel = (fine.Hs[2] - fine.Hs[0]) / (2 * dt)
    W, b, H = fine.Ws[1], fine.bs[1], fine.Hs[1]
    expected = (np.eye(3)[fine.y] - H @ W.T - b) @ W
    np.testing.assert_allclose(vel, expected, rtol=1e-5, atol=1e-8)


def test_unpenalised_bias_and_torch_input():
    fl = gradient_flow(torch.as_tensor(X), lam_b=0.0, t_max=5.0, n_eval=11)
    assert isinstance(fl.Hs, torch.Tensor)
    assert np.all(np.diff(fl.tr_sigma_w) < 0) and np.all(np.diff(fl.tr_sigma_b) > 0)


def test_gradient_flow_is_the_one_flow_api():
    # solve() finds minimisers; the flow (no minimiser: H may grow while W shrinks) is a
    # trajectory over [0, t_max], available only as gradient_flow
    with pytest.raises(InputError, match="method must be one of"):
        mufm.solve(X[:, :2], lam=0.5, method="flow")
    assert not hasattr(mufm.solve(X[:, :2], lam=0.5), "trajectory")


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(t_max=0.0), "t_max"),
        (dict(n_eval=1), "n_eval"),
        (dict(rtol=-1.0), "rtol"),
        (dict(rtol=1.0), "rtol must be <= 1e-06"),  # let the objective rise
        (dict(rtol=1e-3), "rtol must be <="),
        (dict(rtol=1e-20), "rtol must be >="),
        (dict(n_eval=10**8), "n_eval must be <= 100,000"),  # was a MemoryError
        (dict(n_eval=1e3), "n_eval must be an integer"),
        (dict(lam_w=0.0), "lam_w"),
        (dict(lam_b=float("nan")), "lam_b"),
    ],
)
def test_bad_options(kw, match):
    with pytest.raises(InputError, match=match):
        gradient_flow(X, **kw)


def test_gradient_flow_refuses_an_endless_horizon():
    X = np.random.default_rng(0).standard_normal((3, 4, 5))
    with pytest.raises(InputError, match="t_max"):
        mufm.gradient_flow(X, t_max=1e300, n_eval=3)


def test_gradient_flow_bounds_the_trajectory_memory():
    X = np.random.default_rng(0).standard_normal((4, 100, 400))  # N d = 160,000
    with pytest.raises(InputError, match=r"n_eval=100,000 .* float64 values.*use n_eval <= 83"):
        mufm.gradient_flow(X, n_eval=100_000)


def test_gradient_flow_refuses_a_rising_objective(monkeypatch):
    """F decreases along the exact flow; a trajectory on which it rises (a loose integrator,
    as rtol=1.0 gave) is refused, not returned."""
    import mufm.flow as flow

    X = np.random.default_rng(0).standard_normal((3, 5, 4))
    monkeypatch.setattr(flow, "MAX_RTOL", 1.0)
    with pytest.raises(SolverError, match="objective rose"):
        flow.gradient_flow(X, rtol=1.0, t_max=1000.0)
    monkeypatch.undo()
    fl = flow.gradient_flow(X, rtol=flow.MAX_RTOL, t_max=1000.0)
    assert np.all(np.diff(fl.objective) <= 0)
