"""The (M)UFM objective, its gradients, the closed-form classifier and the L-BFGS engine."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import seeds

from ufm import InputError
from ufm.engine.core import NP, TORCH, Params, Problem
from ufm.engine.lbfgs import lbfgs
from ufm.objective import objective

RTOL64 = 1e-12


def slow_objective(W, b, H, y, X=None, lam=0.0, lam_w=0.0, lam_h=0.0, lam_b=0.0, loss="mse"):
    """Independent reference: explicit loops over samples and classes, plain Python floats."""
    W, H = np.asarray(W, float), np.asarray(H, float)
    b = None if b is None else [float(v) for v in b]
    K, d = W.shape
    N = H.shape[0]
    total = 0.0
    for i in range(N):
        z = [
            sum(W[k, j] * H[i, j] for j in range(d)) + (b[k] if b is not None else 0.0)
            for k in range(K)
        ]
        if loss == "mse":
            li = 0.5 * sum((z[k] - (1.0 if k == y[i] else 0.0)) ** 2 for k in range(K))
        else:
            m = max(z)
            li = m + math.log(sum(math.exp(zk - m) for zk in z)) - z[y[i]]
        pen = 0.5 * lam_h * sum(H[i, j] ** 2 for j in range(d))
        if X is not None:
            pen += 0.5 * lam * sum((H[i, j] - X[i, j]) ** 2 for j in range(d))
        total += li + pen
    out = total / N + 0.5 * lam_w * sum(W[k, j] ** 2 for k in range(K) for j in range(d))
    if b is not None:
        out += 0.5 * lam_b * sum(bk**2 for bk in b)
    return out


def random_problem(seed, K=3, n=2, d=4):
    rng = np.random.default_rng(seed)
    N = K * n
    y = rng.permutation(np.repeat(np.arange(K), n))
    return (
        rng.standard_normal((K, d)),
        rng.standard_normal(K),
        rng.standard_normal((N, d)),
        y,
        rng.standard_normal((N, d)),
    )


@settings(max_examples=25, deadline=None)
@given(
    seed=seeds,
    loss=st.sampled_from(["mse", "ce"]),
    with_bias=st.booleans(),
    with_x=st.booleans(),
    lams=st.tuples(*[st.floats(0.0, 2.0) for _ in range(4)]),
)
def test_objective_matches_slow_reference(seed, loss, with_bias, with_x, lams):
    W, b, H, y, X = random_problem(seed)
    lam, lam_w, lam_h, lam_b = lams
    b = b if with_bias else None
    X = X if with_x else None
    lam = lam if with_x else 0.0
    kw = dict(lam=lam, lam_w=lam_w, lam_h=lam_h, lam_b=lam_b, loss=loss)
    ref = slow_objective(W, b, H, y, X, **kw)
    got = objective(W, b, H, y, X=X, **kw)
    np.testing.assert_allclose(got, ref, rtol=RTOL64)
    tt = [None if a is None else torch.as_tensor(a) for a in (W, b, H, X)]
    got_t = objective(tt[0], tt[1], tt[2], torch.as_tensor(y), X=tt[3], **kw)
    np.testing.assert_allclose(got_t, ref, rtol=RTOL64)


def test_objective_float32_input_computed_in_float64():
    W, b, H, y, X = random_problem(1)
    ref = slow_objective(
        W.astype(np.float32), b.astype(np.float32), H.astype(np.float32), y, lam_w=0.1, lam_b=0.1
    )
    got = objective(
        torch.as_tensor(W, dtype=torch.float32),
        torch.as_tensor(b, dtype=torch.float32),
        torch.as_tensor(H, dtype=torch.float32),
        y,
        lam_w=0.1,
        lam_b=0.1,
    )
    np.testing.assert_allclose(got, ref, rtol=1e-12)


#: The penalties of :func:`make_problem` where a test does not override them.
PENALTIES = dict(lam=0.3, lam_w=0.2, lam_h=0.1, lam_b=0.05)


def make_problem(ops, seed=0, *, loss="mse", bias=True, K=3, n=3, d=4, dtype=torch.float64, **pen):
    W, b, H, y, X = random_problem(seed, K, n, d)
    if ops is NP:
        like = np.empty(0)
        conv = np.asarray
        yy = y
    else:
        like = torch.empty(0, dtype=dtype)

        def conv(a):
            return torch.as_tensor(a, dtype=dtype)

        yy = torch.as_tensor(y)
    pb = Problem(ops, yy, K, d, conv(X), Params(**PENALTIES | pen, loss=loss, bias=bias), like)
    return pb, conv(W), conv(b), conv(H)


def fd_check(f, x, g, eps=1e-6, rtol=1e-6, atol=1e-8):
    """Central finite differences of ``f`` at ``x`` against the analytic gradient ``g``."""
    x = np.array(x, dtype=float)
    num = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e.flat[i] = eps
        num.flat[i] = (f(x + e) - f(x - e)) / (2 * eps)
    np.testing.assert_allclose(np.asarray(g), num, rtol=rtol, atol=atol)


@pytest.mark.parametrize("ops", [NP, TORCH], ids=["numpy", "torch"])
@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("bias", [True, False])
def test_full_gradient_matches_finite_differences(ops, loss, bias):
    pb, W, b, H = make_problem(ops, 3, loss=loss, bias=bias)
    v = pb.pack(W, b, H)
    f0, g = pb.fg_joint(v)

    def f(x):
        return pb.fg_joint(x if ops is NP else torch.as_tensor(x))[0]

    fd_check(f, ops.to_numpy(v), ops.to_numpy(g))
    # the packed gradient is the balanced-coordinate gradient: its norm is grad_norm
    _, gW, gb, gH = pb.full(W, b, H)
    assert math.isclose(
        pb.grad_norm(gW, gb if bias else None, gH),
        float(np.linalg.norm(ops.to_numpy(g))),
        rel_tol=1e-12,
    )


@pytest.mark.parametrize("bias,lam_b", [(True, 0.0), (True, 0.07), (False, 0.0)])
@pytest.mark.parametrize("shape", [(3, 4, 5), (3, 1, 7)], ids=["primal", "dual"])
def test_closed_form_classifier_matches_least_squares(bias, lam_b, shape):
    K, n, d = shape  # (3, 1, 7): N = 3 < d + 1 takes the N x N dual route
    pb, W, b, H = make_problem(NP, 5, bias=bias, lam_b=lam_b, K=K, n=n, d=d)
    Wc, bc = pb.ridge(H)
    # Direct ridge via an augmented least-squares problem of the full MSE objective
    N, lw = pb.N, pb.p.lam_w
    rows = [np.hstack([H, np.ones((N, 1))]) if bias else H]
    reg = np.sqrt(N * lw) * np.eye(d + (1 if bias else 0))
    if bias:
        reg[-1, -1] = np.sqrt(N * lam_b)
    A = np.vstack(rows + [reg])
    T = np.vstack([pb.Y, np.zeros((reg.shape[0], K))])
    theta = np.linalg.lstsq(A, T, rcond=None)[0].T
    np.testing.assert_allclose(Wc, theta[:, :d], rtol=1e-9, atol=1e-12)
    if bias:
        np.testing.assert_allclose(bc, theta[:, d], rtol=1e-9, atol=1e-12)
    else:
        assert np.all(bc == 0)
    # and it is a stationary point of the full objective in (W, b)
    _, gW, gb, _ = pb.full(Wc, bc, H)
    assert np.linalg.norm(gW) < 1e-12
    if bias:
        assert np.linalg.norm(gb) < 1e-12


def test_closed_form_classifier_minimises_over_w_by_optimisation():
    pb, W, b, H = make_problem(NP, 8, lam_b=0.03)
    Wc, bc = pb.ridge(H)
    K, d = pb.K, pb.d

    def f(v):
        val, gW, gb, _ = pb.full(v[: K * d].reshape(K, d), v[K * d :], H)
        return val, np.concatenate([gW.ravel(), gb])

    res = scipy.optimize.minimize(
        f, np.zeros(K * d + K), jac=True, method="BFGS", options={"gtol": 1e-12}
    )
    np.testing.assert_allclose(res.x[: K * d].reshape(K, d), Wc, atol=1e-7)
    np.testing.assert_allclose(res.x[K * d :], bc, atol=1e-7)


def test_primal_and_dual_routes_agree():
    pb, W, b, H = make_problem(NP, 2, lam_b=0.1, K=3, n=2, d=5)  # N = 6 = d + 1: primal
    W1, b1 = pb.ridge(H)
    Hbig = np.hstack([H, np.zeros((pb.N, 3))])  # d = 8 > N: dual
    pb2 = Problem(NP, pb.y, pb.K, 8, None, pb.p, np.empty(0))
    W2, b2 = pb2.ridge(Hbig)
    np.testing.assert_allclose(W2[:, :5], W1, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(W2[:, 5:], 0, atol=1e-13)
    np.testing.assert_allclose(b2, b1, rtol=1e-10)


@pytest.mark.parametrize("ops", [NP, TORCH], ids=["numpy", "torch"])
@pytest.mark.parametrize("bias,lam_b", [(True, 0.0), (True, 0.1), (False, 0.0)])
def test_reduced_gradient_is_envelope_gradient(ops, bias, lam_b):
    pb, W, b, H = make_problem(ops, 4, bias=bias, lam_b=lam_b)
    u = H.reshape(-1) / pb.sqrtN
    f0, g = pb.fg_reduced(u)

    def f(x):
        return pb.fg_reduced(x if ops is NP else torch.as_tensor(x))[0]

    fd_check(f, ops.to_numpy(u), ops.to_numpy(g))
    # the reduced value is the full objective at the optimal (W, b) and below any other (W, b)
    Wc, bc = pb.ridge(H)
    assert math.isclose(f0, pb.full(Wc, bc, H)[0], rel_tol=1e-14)
    assert f0 <= pb.full(W, b, H)[0]


@pytest.mark.parametrize("ops", [NP, TORCH], ids=["numpy", "torch"])
def test_lbfgs_engine_matches_scipy(ops):
    pb, W, b, H = make_problem(ops, 6, loss="ce", lam=0.2, lam_w=0.05, lam_h=0.05, lam_b=0.05)
    v0 = pb.pack(W, b, H)
    out = lbfgs(pb.fg_joint, v0, ops, max_iter=1000, tol=1e-10)
    assert out.status == "converged"
    ref = scipy.optimize.minimize(
        lambda x: pb.fg_joint(x if ops is NP else torch.as_tensor(x)),
        ops.to_numpy(v0),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-12, "ftol": 0, "maxiter": 5000},
    )
    np.testing.assert_allclose(out.f, ref.fun, rtol=1e-10)
    np.testing.assert_allclose(ops.to_numpy(out.x), ref.x, atol=1e-6)
    assert np.all(np.diff(out.history_f) <= 1e-15 * abs(out.history_f[0]))


def test_lbfgs_engine_rosenbrock_and_budget():
    def fg(x):
        return float(scipy.optimize.rosen(x)), scipy.optimize.rosen_der(x)

    out = lbfgs(fg, np.array([-1.2, 1.0, -0.5, 0.7]), NP, max_iter=2000, tol=1e-9)
    assert out.status == "converged"
    np.testing.assert_allclose(out.x, 1.0, atol=1e-8)
    out = lbfgs(fg, np.array([-1.2, 1.0]), NP, max_iter=3, tol=1e-9)
    assert out.status == "max_iter" and out.n_iter == 3


# ------------------------------------------------------------------------------- bad input
def _good():
    W, b, H, y, X = random_problem(0)
    return dict(W=W, b=b, H=H, y=y)


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(lam_w=-1.0), "lam_w"),
        (dict(lam_h=float("nan")), "lam_h"),
        (dict(lam_b=float("inf")), "lam_b"),
        (dict(lam=0.5), "needs the data X"),
        (dict(loss="hinge"), "loss"),
    ],
)
def test_objective_bad_options(change, match):
    g = _good()
    kw = dict(lam_w=0.1)
    kw.update(change)
    with pytest.raises(InputError, match=match):
        objective(g["W"], g["b"], g["H"], g["y"], **kw)


def test_objective_bad_arrays():
    g = _good()
    W, b, H, y = g["W"], g["b"], g["H"], g["y"]
    with pytest.raises(InputError, match="columns"):
        objective(W, b, H[:, :3], y, lam_w=0.1)
    with pytest.raises(InputError, match="b must have shape"):
        objective(W, b[:2], H, y, lam_w=0.1)
    with pytest.raises(InputError, match="one label per row"):
        objective(W, b, H, y[:-1], lam_w=0.1)
    with pytest.raises(InputError, match="labels must be 0..K-1"):
        objective(W, b, H, y + 5, lam_w=0.1)
    Hn = H.copy()
    Hn[0, 0] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        objective(W, b, Hn, y, lam_w=0.1)
    with pytest.raises(InputError, match="X must have the shape"):
        objective(W, b, H, y, X=H[:2], lam=1.0, lam_w=0.1)
