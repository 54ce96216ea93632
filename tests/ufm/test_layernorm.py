"""The sphere-constrained (LayerNorm) UFM against independent references.

References written here: finite differences along the retraction, a torch-autograd + scipy
L-BFGS-B multi-start solver over an unconstrained parameterisation ``h = sqrt(d) P z / ||P z||``,
a cvxpy SDP of the class-mean Gram relaxation, and a direct numpy formula for the objective.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import scipy.optimize
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import class_counts, log_uniform

import ufm
from ufm import BackendError, ConvergenceWarning, DegenerateInputError, InputError
from ufm import layernorm as LN

Y6 = np.repeat(np.arange(3), 2)
SETTINGS = [  # (loss, bias, lam_b)
    ("ce", True, 5e-3),
    ("ce", False, 5e-3),
    ("mse", True, 5e-3),
    ("mse", False, 5e-3),
    ("mse", True, 0.0),
]


def _on_sphere_err(H: np.ndarray) -> float:
    d = H.shape[1]
    return max(
        float(np.max(np.abs(H.mean(axis=1)))),
        float(np.max(np.abs(np.linalg.norm(H, axis=1) - math.sqrt(d)))),
    )


# ------------------------------------------------------------------ independent reference
def _reference(y, d, loss, bias, lam_w, lam_b, affine=False, lam_a=None, starts=2):
    """Multi-start scipy L-BFGS-B on (W, b, Z[, gamma, beta]), h = sqrt(d) P z/||P z||."""
    y = np.asarray(y)
    N, K = len(y), int(y.max()) + 1
    lam_a = lam_w if lam_a is None else lam_a
    Yt = torch.nn.functional.one_hot(torch.as_tensor(y), K).double()
    sizes = [K * d, K, N * d] + ([d, d] if affine else [])

    def f_torch(v):
        parts = torch.split(v, sizes)
        W = parts[0].reshape(K, d)
        b = parts[1] if bias else torch.zeros(K, dtype=torch.float64)
        Z = parts[2].reshape(N, d)
        C = Z - Z.mean(dim=1, keepdim=True)
        H = math.sqrt(d) * C / C.norm(dim=1, keepdim=True)
        pen = 0.0
        if affine:
            g, be = parts[3], parts[4]
            H = H * g + be
            pen = 0.5 * lam_a * (g @ g + be @ be)
        L = H @ W.T + b
        if loss == "ce":
            lv = (torch.logsumexp(L, dim=1) - (L * Yt).sum(dim=1)).mean()
        else:
            lv = 0.5 * ((L - Yt) ** 2).sum() / N
        return lv + 0.5 * lam_w * (W * W).sum() + (0.5 * lam_b * (b @ b) if bias else 0) + pen

    def fg(v):
        t = torch.tensor(v, dtype=torch.float64, requires_grad=True)
        val = f_torch(t)
        (g,) = torch.autograd.grad(val, t)
        return float(val.detach()), g.numpy()

    best = math.inf
    for s in range(starts):
        rng = np.random.default_rng(1000 + s)
        v0 = rng.standard_normal(sum(sizes))
        if affine:
            v0[-2 * d : -d], v0[-d:] = 1.0, 0.0
        r = scipy.optimize.minimize(
            fg,
            v0,
            jac=True,
            method="L-BFGS-B",
            options={"maxiter": 20000, "maxcor": 20, "ftol": 1e-15, "gtol": 1e-9},
        )
        best = min(best, float(r.fun))
    return best


SLOW_REF = pytest.mark.slow  # the reference needs thousands of L-BFGS-B steps for MSE + bias


@pytest.mark.parametrize(
    "loss,bias,lam_b",
    [
        pytest.param(*s, marks=SLOW_REF) if s[0] == "mse" and s[1] else pytest.param(*s)
        for s in SETTINGS
    ],
)
def test_matches_independent_solver(loss, bias, lam_b):
    y = np.array([0, 0, 1, 1, 1, 2, 2])  # unbalanced: the closed form does not apply
    d, lam_w = 5, 1e-2
    res = ufm.solve(y, d=d, features="layernorm", loss=loss, bias=bias, lam_w=lam_w, lam_b=lam_b)
    assert res.converged, res
    ref = _reference(y, d, loss, bias, lam_w, lam_b)
    np.testing.assert_allclose(res.objective, ref, rtol=1e-7)


@pytest.mark.parametrize("loss,bias,lam_b", SETTINGS)
@pytest.mark.parametrize("d", [3, 5])
def test_equals_closed_form_optimum(loss, bias, lam_b, d):
    lam_w = 1e-2
    res = ufm.solve(Y6, d=d, features="layernorm", loss=loss, bias=bias, lam_w=lam_w, lam_b=lam_b)
    assert res.converged
    opt = ufm.layernorm_etf_optimum(3, d, loss=loss, lam_w=lam_w, lam_b=lam_b, bias=bias)
    assert opt.optimal
    np.testing.assert_allclose(res.objective, opt.objective, rtol=1e-8)
    # larger balanced problem, several samples per class
    y = np.repeat(np.arange(5), 4)
    res = ufm.solve(
        y, d=d + 3, features="layernorm", loss=loss, bias=bias, lam_w=lam_w, lam_b=lam_b
    )
    opt = ufm.layernorm_etf_optimum(5, d + 3, loss=loss, lam_w=lam_w, lam_b=lam_b, bias=bias)
    np.testing.assert_allclose(res.objective, opt.objective, rtol=1e-8)


def test_affine_is_a_local_minimum_of_the_reference_problem():
    # affine=True has spurious local minima: check value against the reference's best and that
    # the reference, started at our solution, finds no descent.
    lam_w = 1e-2
    res = ufm.solve(Y6, d=4, features="layernorm", loss="ce", lam_w=lam_w, affine=True)
    assert res.converged
    ref = _reference(Y6, 4, "ce", True, lam_w, 5e-4, affine=True, starts=3)
    assert res.objective <= ref * (1 + 1e-3)
    g, be = res.params["gamma"], res.params["beta"]
    val = ufm.layernorm_objective(
        res.W, res.b, res.params["n"], Y6, lam_w=lam_w, lam_b=5e-4, gamma=g, beta=be
    )
    np.testing.assert_allclose(val, res.objective, rtol=1e-12)
    assert _on_sphere_err(res.params["n"]) < 1e-12


def test_d_equals_K_per_sample_start_has_spurious_minimum_collapsed_start_does_not():
    # K = d = 3: features on a circle. From a per-sample start (seed 0) the per-sample iteration
    # stops at a stationary point where one class's samples sit at antipodal points; the
    # solver's collapsed (class-level) start reaches the closed-form optimum for every seed.
    lam_w, lam_b = 1e-2, 5e-3
    opt = ufm.layernorm_etf_optimum(3, 3, loss="ce", lam_w=lam_w, lam_b=lam_b)
    rng = np.random.default_rng(0)
    model = LN._Model(np.eye(3)[Y6], 3, 3, "ce", True, False, lam_w, lam_b, 0.0)
    x = {"W": rng.standard_normal((3, 3)), "b": rng.standard_normal(3)}
    x["n"] = LN.layernorm_normalize(rng.standard_normal((6, 3)))
    x, status, *_ = LN._minimise(model, x, 10_000, 1e-8, False)
    f_spurious = LN._fg(model, x)[0]
    assert status == "converged" and f_spurious > 2 * opt.objective
    for seed in range(5):
        for loss in ("ce", "mse"):
            res = ufm.solve(Y6, d=3, features="layernorm", loss=loss, lam_w=lam_w, lam_b=lam_b,
                            seed=seed)  # fmt: skip
            ref = ufm.layernorm_etf_optimum(3, 3, loss=loss, lam_w=lam_w, lam_b=lam_b)
            np.testing.assert_allclose(res.objective, ref.objective, rtol=1e-8)


def test_closed_form_d_equals_K_mse_against_multistart():
    # d = K: the offset has no room; the ETF is optimal (majorisation), checked against the solver
    for bias in (True, False):
        opt = ufm.layernorm_etf_optimum(3, 3, loss="mse", lam_w=1e-2, lam_b=1e-2, bias=bias)
        assert opt.structure == "etf" and opt.optimal
        ref = _reference(Y6, 3, "mse", bias, 1e-2, 1e-2, starts=4)
        np.testing.assert_allclose(ref, opt.objective, rtol=1e-7)


# --------------------------------------------------------------- the closed form vs cvxpy
def _sdp_bound(K, d, loss, bias, lam_w, lam_b):
    cp = pytest.importorskip("cvxpy")
    X = cp.Variable((2 * K, 2 * K), PSD=True)
    b = cp.Variable(K) if bias else np.zeros(K)
    terms = []
    for k in range(K):
        z = X[:K, K + k] + b
        e = np.eye(K)[k]
        terms.append(cp.log_sum_exp(z) - z[k] if loss == "ce" else 0.5 * cp.sum_squares(z - e))
    obj = sum(terms) / K + 0.5 * lam_w * cp.trace(X[:K, :K])
    if bias:
        obj = obj + 0.5 * lam_b * cp.sum_squares(b)
    prob = cp.Problem(cp.Minimize(obj), [cp.diag(X[K:, K:]) <= d])
    prob.solve(solver="CLARABEL")
    return prob.value


@pytest.mark.parametrize("loss,bias,lam_b", SETTINGS)
def test_lower_bound_equals_sdp_relaxation(loss, bias, lam_b):
    K, d, lam_w = 3, 5, 2e-2
    opt = ufm.layernorm_etf_optimum(K, d, loss=loss, lam_w=lam_w, lam_b=lam_b, bias=bias)
    np.testing.assert_allclose(
        opt.lower_bound, _sdp_bound(K, d, loss, bias, lam_w, lam_b), rtol=1e-5
    )


@settings(max_examples=30, deadline=None)
@given(
    K=class_counts(6),
    extra=st.integers(0, 3),
    lam_w=log_uniform(1e-4, 1.0),
    lam_b=log_uniform(1e-4, 1.0),
    loss=st.sampled_from(["ce", "mse"]),
    bias=st.booleans(),
)
def test_closed_form_properties(K, extra, lam_w, lam_b, loss, bias):
    d = K + extra
    opt = ufm.layernorm_etf_optimum(K, d, loss=loss, lam_w=lam_w, lam_b=lam_b, bias=bias)
    assert opt.optimal and opt.gap <= 1e-12 * max(1, opt.objective)
    assert opt.lower_bound <= opt.objective * (1 + 1e-12) <= opt.etf_objective * (1 + 1e-12)
    assert _on_sphere_err(opt.H) < 1e-12
    y = np.repeat(np.arange(K), 2)
    val = ufm.layernorm_objective(opt.W, opt.b, opt.H[y], y, lam_w=lam_w, lam_b=lam_b, loss=loss)
    np.testing.assert_allclose(val, opt.objective, rtol=1e-10)
    C = opt.H - opt.H.mean(axis=0)
    G = C @ C.T  # the centred class means always form a simplex ETF
    if K > 2 or np.linalg.norm(G) > 0:
        np.testing.assert_allclose(
            G / np.linalg.norm(G), (np.eye(K) - 1 / K) / math.sqrt(K - 1), atol=1e-10
        )
    if opt.structure == "etf":
        np.testing.assert_allclose(opt.H.mean(axis=0), 0, atol=1e-12)
        assert opt.objective == pytest.approx(opt.etf_objective, rel=1e-13)
    else:
        assert loss == "mse" and d >= K + 1


def test_closed_form_structures():
    kw = dict(loss="mse", lam_w=1e-3)
    assert ufm.layernorm_etf_optimum(4, 8, bias=False, **kw).structure == "orthogonal frame"
    assert ufm.layernorm_etf_optimum(4, 8, lam_b=1e-3, **kw).structure == "etf+offset"
    assert ufm.layernorm_etf_optimum(4, 8, lam_b=1e-4, **kw).structure == "etf"  # p* clipped
    assert ufm.layernorm_etf_optimum(4, 8, lam_b=0.0, **kw).structure == "etf"
    of = ufm.layernorm_etf_optimum(4, 8, bias=False, **kw)
    np.testing.assert_allclose(of.H @ of.H.T, 8 * np.eye(4), atol=1e-12)


# ------------------------------------------------------------------ gradients, constraint
@pytest.mark.parametrize("loss,bias,lam_b", SETTINGS)
@pytest.mark.parametrize("affine", [False, True])
@pytest.mark.parametrize("weighted", [False, True])
def test_riemannian_gradient_by_finite_differences(loss, bias, lam_b, affine, weighted):
    rng = np.random.default_rng(3)
    N, K, d = 7, 3, 5
    y = rng.integers(0, K, N)
    Y = np.eye(K)[y]
    w = rng.uniform(0.5, 2, N) if weighted else None  # the class phase's weights n_k / N
    model = LN._Model(
        Y, K, d, loss, bias, affine, 0.03, lam_b, 0.02, w=None if w is None else w / w.sum()
    )
    x = {"n": LN.layernorm_normalize(rng.standard_normal((N, d)))}
    if loss == "ce":
        x["W"] = rng.standard_normal((K, d))
        if bias:
            x["b"] = rng.standard_normal(K)
    if affine:
        x["gamma"], x["beta"] = rng.standard_normal(d), rng.standard_normal(d)
    flat = LN._Flat(model, x)  # balanced coordinates: row i of n scaled by sqrt(w_i)
    z = flat.pack(x)
    f0, eg = flat.fg(z)
    g = flat.project(z, eg)
    Zn, Gn = z[: flat.stop].reshape(N, d), g[: flat.stop].reshape(N, d)
    np.testing.assert_allclose(Gn.mean(axis=1), 0, atol=1e-14)
    np.testing.assert_allclose(np.einsum("ij,ij->i", Gn, Zn), 0, atol=1e-13)
    # the n-block is the weighted Riemannian gradient P_n(grad_n f) / w_i, in coordinates sqrt(w_i) n
    _, egx, _ = LN._fg(model, x)
    w = model.weights[:, None]
    np.testing.assert_allclose(
        Gn, np.sqrt(w) * LN._tangent(x["n"], egx["n"]) / w, rtol=1e-10, atol=1e-14
    )
    xi = flat.project(z, rng.standard_normal(z.shape))
    t = 1e-5
    fp = flat.fg(flat.retract(z + t * xi))[0]
    fm = flat.fg(flat.retract(z - t * xi))[0]
    np.testing.assert_allclose((fp - fm) / (2 * t), g @ xi, rtol=1e-6)
    back = flat.unpack(flat.retract(z + 0.3 * xi))["n"]
    assert _on_sphere_err(back) < 1e-13


@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_constraint_metrics_and_result(loss):
    y = np.repeat(np.arange(4), 3)
    res = ufm.solve(y, d=6, features="layernorm", loss=loss, lam_w=5e-3, lam_b=5e-3, seed=2)
    assert (
        res.converged
        and res.grad_norm <= 1e-8
        and res.method == "lbfgs"
        and "sphere" in res.params["manifold"]
    )
    assert _on_sphere_err(res.H) < 1e-12
    assert res.H.shape == (12, 6) and res.W.shape == (4, 6) and res.b.shape == (4,)
    assert res.metrics["pfc1"] < 1e-10 and res.metrics["pfc2"] < 1e-5
    assert res.params["features"] == "layernorm" and res.params["lam_h"] == 0.0
    h = res.history["objective"]
    assert h[0] >= h[-1] and len(h) == res.n_iter + 1
    assert res.objective == pytest.approx(
        ufm.layernorm_objective(res.W, res.b, res.H, y, lam_w=5e-3, lam_b=5e-3, loss=loss),
        rel=1e-12,
    )


# ------------------------------------------------------------------------------ invariances
@pytest.mark.parametrize("loss", ["ce", "mse"])
def test_invariant_to_class_permutation_and_seed(loss):
    y = np.array([0, 0, 1, 1, 1, 2, 2, 2, 2])
    kw = dict(d=4, features="layernorm", loss=loss, lam_w=1e-2, lam_b=1e-2)
    base = ufm.solve(y, **kw).objective
    perm = np.array([2, 0, 1])
    assert ufm.solve(perm[y], **kw).objective == pytest.approx(base, rel=1e-9)
    for seed in (1, 7):
        assert ufm.solve(y, seed=seed, **kw).objective == pytest.approx(base, rel=1e-9)
    # sample order does not matter either
    order = np.random.default_rng(0).permutation(len(y))
    assert ufm.solve(y[order], **kw).objective == pytest.approx(base, rel=1e-9)


def test_seed_reproducible():
    a = ufm.solve(Y6, d=4, features="layernorm", loss="ce", seed=5)
    b = ufm.solve(Y6, d=4, features="layernorm", loss="ce", seed=5)
    np.testing.assert_array_equal(a.H, b.H)


# ------------------------------------------------------------------ objective evaluator
def test_layernorm_objective_against_direct_formula():
    rng = np.random.default_rng(0)
    N, K, d = 6, 3, 4
    y = np.array([0, 1, 2, 0, 1, 2])
    n = LN.layernorm_normalize(rng.standard_normal((N, d)))
    W, b = rng.standard_normal((K, d)), rng.standard_normal(K)
    g, be = rng.standard_normal(d), rng.standard_normal(d)
    H = n * g + be
    Z = H @ W.T + b
    ce = np.mean(np.log(np.exp(Z).sum(1)) - Z[np.arange(N), y])
    direct = ce + 0.05 * (W**2).sum() + 0.1 * (b**2).sum() + 0.15 * (g @ g + be @ be)
    val = ufm.layernorm_objective(
        W, b, n, y, lam_w=0.1, lam_b=0.2, loss="ce", gamma=g, beta=be, lam_affine=0.3
    )
    np.testing.assert_allclose(val, direct, rtol=1e-13)


def test_layernorm_normalize_matches_torch_layer_norm():
    Z = np.random.default_rng(1).standard_normal((5, 7))
    ref = torch.nn.functional.layer_norm(torch.as_tensor(Z), (7,), eps=0.0).numpy()
    np.testing.assert_allclose(LN.layernorm_normalize(Z), ref, atol=1e-12)


# ------------------------------------------------------------------------------ bad input
def test_bad_input():
    kw = dict(d=4, features="layernorm")
    with pytest.raises(InputError, match="lam_h"):
        ufm.solve(Y6, lam_h=1e-3, **kw)
    with pytest.raises(InputError, match="d >= 3"):
        ufm.solve(Y6, d=2, features="layernorm")
    with pytest.raises(InputError, match="method"):
        ufm.solve(Y6, method="gd", **kw)
    with pytest.raises(BackendError):
        ufm.solve(Y6, backend="torch", **kw)
    with pytest.raises(InputError, match="features"):
        ufm.solve(Y6, d=4, features="sphere")
    with pytest.raises(InputError, match="layernorm"):
        ufm.solve(Y6, d=4, affine=True)
    with pytest.raises(InputError, match="lam_affine"):
        ufm.solve(Y6, affine=True, lam_affine=0.0, **kw)
    with pytest.raises(InputError, match="lam_w"):
        ufm.solve(Y6, lam_w=0.0, **kw)
    with pytest.raises(InputError, match="loss"):
        ufm.solve(Y6, loss="hinge", **kw)
    with pytest.raises(DegenerateInputError):
        ufm.solve(np.zeros(4, int), **kw)
    with pytest.raises(InputError):
        ufm.layernorm_etf_optimum(1, 4)
    with pytest.raises(InputError, match="d >= 4"):
        ufm.layernorm_etf_optimum(4, 3)
    with pytest.raises(InputError, match="loss"):
        ufm.layernorm_etf_optimum(3, 4, loss="l2")
    W, b = np.ones((3, 4)), np.zeros(3)
    with pytest.raises(InputError, match="sphere"):
        ufm.layernorm_objective(W, b, np.ones((6, 4)), Y6, lam_w=1e-3)
    n = LN.layernorm_normalize(np.random.default_rng(0).standard_normal((6, 4)))
    with pytest.raises(InputError, match="both"):
        ufm.layernorm_objective(W, b, n, Y6, lam_w=1e-3, gamma=np.ones(4))
    with pytest.raises(InputError, match="constant"):
        LN.layernorm_normalize(np.ones((2, 3)))


def test_budget_spent_warns():
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        with pytest.raises(ConvergenceWarning):
            ufm.solve(Y6, d=4, features="layernorm", loss="ce", max_iter=2)
    with pytest.warns(ConvergenceWarning):
        res = ufm.solve(Y6, d=4, features="layernorm", loss="mse", max_iter=2)
    assert res.status == "max_iter" and not res.converged


@pytest.mark.parametrize(
    "row",
    [
        [1e300, -1e300, 0.0, 5e299, 3.0],  # the norm overflowed: mapped to 0
        [1.7e308, 1.7e308, -1.7e308, 0.0, 1.0],  # the mean overflowed
        [1.0, 1.0, 1.0, 1.0, 1.0 + 2**-52],  # differences in the last bit
        [3.0, 3.0, 3.0, 3.0, 3.0000000000000004],
        [1e16, 1e16 + 2, 1e16, 1e16, 1e16],
        [5e-324, 0.0, 0.0, 0.0, 0.0],  # subnormal
        [1e-310, 2e-310, 3e-310, 0.0, 1e-320],
    ],
)
def test_layernorm_normalize_puts_extreme_rows_on_the_sphere(row):
    """Rows at the edges of float64 land on the sphere (mean 0, norm sqrt(d)) with the
    direction of the exact centred row."""
    from fractions import Fraction

    n = LN.layernorm_normalize(np.array([row]))[0]
    assert abs(np.linalg.norm(n) - math.sqrt(5)) < 1e-14
    assert abs(n.mean()) < 1e-15
    exact = [Fraction(v) for v in row]
    m = sum(exact) / 5
    c = np.array([float((v - m) / max(abs(w - m) for w in exact)) for v in exact])
    np.testing.assert_allclose(n / np.abs(n).max(), c, atol=1e-12)


def test_layernorm_normalize_refuses_constant_rows_clearly():
    with pytest.raises(InputError, match=r"rows \[1\] of Z are constant: .*no direction"):
        LN.layernorm_normalize(np.array([[1.0, 2.0], [1e300, 1e300]]))
    with pytest.raises(InputError, match="constant"):
        LN.layernorm_normalize(np.zeros((1, 4)))
