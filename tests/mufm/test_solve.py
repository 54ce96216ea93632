"""mufm.solve: methods agree, Theorem 4's first-order condition, backends, bad input."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import scipy.optimize
import torch

import mufm
from ufm import BackendError, ConvergenceWarning, DegenerateInputError, InputError
from ufm.metrics import pfc1
from ufm.objective import objective

RNG = np.random.default_rng(0)
X3 = RNG.standard_normal((3, 2, 4))  # K=3, n=2, d=4
KW = dict(lam_w=0.05, lam_b=0.05)


def test_five_line_usage():
    from mufm import solve

    res = solve(X3, lam=0.1)
    assert res.converged and res.H.shape == (6, 4) and res.X.shape == (6, 4)
    np.testing.assert_array_equal(res.y, np.repeat(np.arange(3), 2))
    np.testing.assert_array_equal(res.X, X3.reshape(6, 4))


def test_callable_however_imported():
    # In a fresh interpreter, importing the submodule first binds the *module* to the package
    # attributes mufm.solve / ufm.solve / ufm.objective; the public calls must still work.
    code = (
        "import numpy as np, mufm.solve, ufm.solve, ufm.objective\n"
        "from mufm import solve\n"
        "from ufm import solve as usolve, objective\n"
        "X = np.random.default_rng(0).standard_normal((3, 2, 4))\n"
        "r = solve(X, lam=0.1)\n"
        "u = usolve(np.repeat(np.arange(3), 2), d=4)\n"
        "v = objective(r.W, r.b, r.H, r.y, X=r.X, lam=0.1, lam_w=5e-4, lam_b=5e-4)\n"
        "assert abs(v - r.objective) < 1e-12 and u.converged\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


def test_balanced_and_flat_inputs_agree():
    a = mufm.solve(X3, lam=0.3, **KW)
    perm = RNG.permutation(6)
    Xf, yf = X3.reshape(6, 4)[perm], np.repeat(np.arange(3), 2)[perm]
    b = mufm.solve(Xf, yf, lam=0.3, **KW)
    np.testing.assert_allclose(b.objective, a.objective, rtol=1e-12)
    np.testing.assert_allclose(b.H, a.H[perm], atol=1e-8)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_methods_reach_same_optimum(loss):
    ref = mufm.solve(X3, lam=0.5, loss=loss, **KW)
    assert ref.converged
    for method in ("gd",):
        res = mufm.solve(X3, lam=0.5, loss=loss, method=method, tol=1e-6, **KW)
        assert res.converged
        np.testing.assert_allclose(res.objective, ref.objective, rtol=1e-6)
        np.testing.assert_allclose(res.H, ref.H, atol=1e-4)  # the anchor breaks rotations
        np.testing.assert_allclose(res.W, ref.W, atol=1e-4)


def test_clustered_data_has_a_strict_local_minimum_that_gd_can_reach():
    # A documented property of the MUFM, not a solver defect: with clustered data, plain GD
    # from the paper's standard-normal start (seed 0) converges to a strict local minimum whose
    # objective is about 29% above the one reached from H = X.
    rng = np.random.default_rng(2)
    X = (rng.standard_normal((3, 5, 4)) + 2 * rng.standard_normal((3, 1, 4)))[:, :2]
    kw = dict(lam=0.5, lam_w=0.05, lam_b=0.05)
    best = mufm.solve(X, **kw)
    local = mufm.solve(X, method="gd", seed=0, tol=1e-7, **kw)
    assert local.converged and local.objective > 1.2 * best.objective
    from_data = mufm.solve(X, method="gd", init="data", tol=1e-7, **kw)
    np.testing.assert_allclose(from_data.objective, best.objective, rtol=1e-6)
    with pytest.raises(InputError, match="init"):
        mufm.solve(X, init="zeros", **kw)


def test_optimum_matches_independent_joint_optimisation():
    lam, lw, lb = 0.2, 0.05, 0.0
    ref = mufm.solve(X3, lam=lam, lam_w=lw, lam_b=lb, tol=1e-10)
    Xf, y = X3.reshape(6, 4), np.repeat(np.arange(3), 2)

    def f(v):
        W, b, H = v[:12].reshape(3, 4), v[12:15], v[15:].reshape(6, 4)
        return objective(W, b, H, y, X=Xf, lam=lam, lam_w=lw, lam_b=lb)

    best = min(
        (
            scipy.optimize.minimize(
                f,
                np.random.default_rng(s).standard_normal(39),
                method="BFGS",
                options={"gtol": 1e-10},
            )
            for s in range(3)
        ),
        key=lambda r: r.fun,
    )
    assert ref.objective <= best.fun + 1e-10
    np.testing.assert_allclose(ref.objective, best.fun, rtol=1e-7)


@pytest.mark.parametrize("lam", [0.05, 1.0, 20.0])
def test_first_order_condition_is_implicit_euler_step(lam):
    # MATH.md sec. 5: H* = X - (1/lam) N grad F(H*), F the reduced MSE loss + W penalty
    res = mufm.solve(X3, lam=lam, tol=1e-11, **KW)
    R = res.H @ res.W.T + res.b - np.eye(3)[res.y]
    N_gradF = R @ res.W  # N * grad_H of (1/2N)||Z - Y||^2
    np.testing.assert_allclose(res.H, res.X - N_gradF / lam, atol=1e-9)


def test_theorem4_large_lam_is_less_collapsed_than_data_but_not_collapsed():
    rng = np.random.default_rng(1)
    C = rng.standard_normal((4, 1, 6))
    X = C + 0.8 * rng.standard_normal((4, 10, 6))
    p_x = pfc1(X.reshape(40, 6), np.repeat(np.arange(4), 10))
    p_h = [mufm.solve(X, lam=lam).metrics["pfc1"] for lam in (1.0, 10.0, 100.0)]
    assert all(0 < p < p_x for p in p_h)
    assert p_h[0] < p_h[1] < p_h[2]  # larger transport cost: closer to the data
    far = mufm.solve(X, lam=1e4)
    assert np.abs(far.H - far.X).max() < 1e-3


def test_lam_h_anchor_variant():
    res = mufm.solve(X3, lam=0.3, lam_h=0.2, **KW)
    val = objective(res.W, res.b, res.H, res.y, X=res.X, lam=0.3, lam_h=0.2, **KW)
    np.testing.assert_allclose(res.objective, val, rtol=1e-13)


def test_numpy_torch_float32():
    r_np = mufm.solve(X3, lam=0.3, **KW)
    Xt = torch.as_tensor(X3)
    r_t = mufm.solve(Xt, lam=0.3, **KW)
    assert r_t.backend == "torch" and r_t.H.dtype == torch.float64
    np.testing.assert_allclose(r_t.objective, r_np.objective, rtol=1e-12)
    np.testing.assert_allclose(r_t.H.numpy(), r_np.H, atol=1e-8)
    r32 = mufm.solve(Xt.float(), lam=0.3, **KW)
    assert r32.H.dtype == torch.float32 and r32.converged
    np.testing.assert_allclose(r32.objective, r_np.objective, rtol=1e-5)
    np.testing.assert_allclose(r32.H.double().numpy(), r_np.H, atol=1e-3)
    r_np32 = mufm.solve(X3.astype(np.float32), lam=0.3, **KW)  # numpy computes in float64
    assert r_np32.H.dtype == np.float64


# ------------------------------------------------------------------------------- bad input
def test_bad_data():
    Xn = X3.copy()
    Xn[0, 0, 0] = np.inf
    with pytest.raises(InputError, match="non-finite"):
        mufm.solve(Xn, lam=0.1)
    with pytest.raises(InputError, match="labels are implied"):
        mufm.solve(X3, np.zeros(6, dtype=int), lam=0.1)
    with pytest.raises(InputError, match="no labels"):
        mufm.solve(X3.reshape(6, 4), lam=0.1)
    with pytest.raises(InputError, match="one label per sample"):
        mufm.solve(X3.reshape(6, 4), np.arange(5) % 3, lam=0.1)
    with pytest.raises(InputError, match=r"\(K, n, d\)"):
        mufm.solve(np.zeros(5), lam=0.1)
    with pytest.raises(DegenerateInputError, match="K=2"):
        mufm.solve(X3[:1], lam=0.1)
    with pytest.raises(DegenerateInputError, match="K=2"):
        mufm.solve(X3.reshape(6, 4), np.zeros(6, dtype=int), lam=0.1)


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(lam=-0.1), "lam"),
        (dict(lam=float("nan")), "lam"),
        (dict(lam=0.0), "lam_h"),
        (dict(lam_w=0.0), "lam_w"),
        (dict(lam_b=-1.0), "lam_b"),
        (dict(lam_h=float("inf")), "lam_h"),
        (dict(method="adam"), "method"),
    ],
)
def test_bad_options(kw, match):
    with pytest.raises(InputError, match=match):
        mufm.solve(X3, **kw)


def test_max_iter_reached():
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        res = mufm.solve(X3, lam=0.1, max_iter=2)
    assert res.status == "max_iter" and not res.converged


def test_cuda_without_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendError, match="is_available"):
        mufm.solve(torch.as_tensor(X3), lam=0.1, device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    r_cpu = mufm.solve(X3, lam=0.3, **KW)
    r_gpu = mufm.solve(torch.as_tensor(X3, device="cuda"), lam=0.3, **KW)
    assert r_gpu.H.device.type == "cuda"
    np.testing.assert_allclose(r_gpu.objective, r_cpu.objective, rtol=1e-10)
    np.testing.assert_allclose(r_gpu.H.cpu().numpy(), r_cpu.H, atol=1e-7)
