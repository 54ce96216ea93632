"""The deep UFM (ufm.deep): closed-form optimum, solver against it, deep neural collapse.

References written here, independent of the module: the objective in numpy, the scalar
problem of the closed form by a grid search, and a multi-start scipy L-BFGS on all factors.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize
from strategies import log_uniform, seeds

import ufm
from ufm import ConvergenceWarning, InputError
from ufm.deep import deep_linear_optimum, deep_objective, solve_deep


def ref_objective(Ws, H, y, lam_w, lam_h, relu=False, loss="mse"):
    N, K = H.shape[0], Ws[-1].shape[0]
    A = H
    for W in Ws[:-1]:
        A = A @ W.T
        if relu:
            A = np.maximum(A, 0)
    Z = A @ Ws[-1].T
    if loss == "mse":
        data = 0.5 * np.sum((Z - np.eye(K)[y]) ** 2) / N
    else:
        m = Z.max(1, keepdims=True)
        lse = m[:, 0] + np.log(np.exp(Z - m).sum(1))
        data = np.mean(lse - Z[np.arange(N), y])
    return (
        data
        + 0.5 * lam_h * np.sum(H**2) / N
        + sum(0.5 * l * np.sum(W**2) for l, W in zip(lam_w, Ws))
    )


def brute_force_linear(counts, L, d, lam, starts=6, seed=0):
    """Multi-start scipy L-BFGS over (W_1..W_L, H) with a finite-difference-free numpy gradient."""
    y = np.repeat(np.arange(len(counts)), counts)
    K, N = len(counts), y.size
    Y = np.eye(K)[y]
    shapes = [(d, d)] * (L - 1) + [(K, d)]

    def fun(theta):
        Ws, i = [], 0
        for s in shapes:
            Ws.append(theta[i : i + s[0] * s[1]].reshape(s))
            i += s[0] * s[1]
        H = theta[i:].reshape(N, d)
        acts = [H]
        for W in Ws:
            acts.append(acts[-1] @ W.T)
        R = (acts[-1] - Y) / N
        f = 0.5 * np.sum((acts[-1] - Y) ** 2) / N + 0.5 * lam * np.sum(H**2) / N
        f += sum(0.5 * lam * np.sum(W**2) for W in Ws)
        grads, G = [], R
        for l in range(L - 1, -1, -1):
            grads.append(G.T @ acts[l] + lam * Ws[l])
            G = G @ Ws[l]
        gH = G + lam * H / N
        return f, np.concatenate([g.ravel() for g in reversed(grads)] + [gH.ravel()])

    rng = np.random.default_rng(seed)
    size = sum(a * b for a, b in shapes) + N * d
    opts = {"maxiter": 20000, "gtol": 1e-12, "ftol": 1e-16, "maxcor": 30}
    return min(
        minimize(
            fun, rng.standard_normal(size) * 0.7, jac=True, method="L-BFGS-B", options=opts
        ).fun
        for _ in range(starts)
    )


def scalar_grid(t, m, Nc):
    """min over a >= 0 of (a - t)^2/2 + (m/2) Nc a^(2/m), by a fine grid then golden refinement."""
    a = np.linspace(0, t, 200_001)
    g = 0.5 * (a - t) ** 2 + 0.5 * m * Nc * a ** (2 / m)
    return a[np.argmin(g)]


# ------------------------------------------------------------------------------------------------
# the closed form
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("L", [1, 2, 3, 5])
@pytest.mark.parametrize("counts", [(4, 4, 4), (9, 3, 1), (50, 1)])
def test_closed_form_scalar_problem_matches_grid(counts, L):
    lam = 2e-3
    opt = deep_linear_optimum(counts, L=L, lam_w=lam, lam_h=lam)
    N, m = sum(counts), L + 1
    c = (lam / N * lam**L) ** (1 / m)
    for k, n in enumerate(counts):
        a = scalar_grid(math.sqrt(n), m, N * c)
        assert opt.singular_values[k] == pytest.approx(a, abs=2e-5 * math.sqrt(n))
    a = opt.singular_values
    f = np.sum((a - np.sqrt(counts)) ** 2) / (2 * N) + 0.5 * m * c * np.sum(a ** (2 / m))
    assert opt.objective == pytest.approx(f, rel=1e-12)


def test_closed_form_L1_is_the_certified_bias_free_ufm():
    """L = 1 is the bias-free MSE UFM: the closed form equals the nuclear-norm certificate
    (cvxpy) for balanced and imbalanced classes, including a minority class thresholded to 0."""
    for counts, lam in [((4, 4, 4), 1e-2), ((20, 5, 2), 1e-2), ((30, 6, 1), 0.2)]:
        y = np.repeat(np.arange(len(counts)), counts)
        opt = deep_linear_optimum(counts, L=1, lam_w=lam, lam_h=lam)
        cert = ufm.certify(y, d=len(counts), lam_w=lam, lam_h=lam, loss="mse", bias=False)
        assert cert.exact and opt.objective == pytest.approx(cert.optimum, rel=1e-7)
    assert opt.logit_scale[-1] == 0.0  # n_k = 1 <= N lam_w lam_h: the minority class collapsed


@pytest.mark.parametrize("counts, L", [((3, 3, 3), 2), ((5, 2), 3), ((4, 2, 1), 2)])
def test_closed_form_against_multistart_brute_force(counts, L):
    lam = 5e-3
    opt = deep_linear_optimum(counts, L=L, lam_w=lam, lam_h=lam)
    best = brute_force_linear(counts, L, len(counts), lam)
    assert best == pytest.approx(opt.objective, rel=1e-7)


def test_deep_zero_solution_when_penalties_are_large():
    opt = deep_linear_optimum((3, 3), L=3, lam_w=0.5, lam_h=0.5)
    assert np.all(opt.singular_values == 0) and opt.objective == pytest.approx(0.5)


# ------------------------------------------------------------------------------------------------
# the solver
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "counts, L, lam",
    [((4, 4, 4), 2, 1e-2), ((4, 4, 4), 3, 1e-3), ((6, 3, 1), 3, 1e-3), ((5, 5), 4, 1e-3)],
)
@pytest.mark.parametrize("init", ["balanced", "random"])
def test_deep_linear_solver_reaches_closed_form_with_deep_collapse(counts, L, lam, init):
    """init="random" keeps the solver independent of the closed form (the balanced start
    reads which classes it switches off)."""
    y = np.repeat(np.arange(len(counts)), counts)
    K = len(counts)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = solve_deep(y, L=L, d=K + 1, lam_w=lam, lam_h=lam, starts=2, init=init)
    opt = deep_linear_optimum(counts, L=L, lam_w=lam, lam_h=lam)
    assert r.converged and r.objective == pytest.approx(opt.objective, rel=1e-8)
    # logits of class k are s_k e_k
    for k in range(K):
        want = np.broadcast_to(np.eye(K)[k] * opt.logit_scale[k], (counts[k], K))
        np.testing.assert_allclose(r.logits[y == k], want, atol=1e-6)
    for F, m in zip(r.features, r.metrics, strict=True):
        assert m["pfc1"] < 1e-8  # NC1 in every layer
        means = np.stack([F[y == k].mean(0) for k in range(K)])
        G = means @ means.T  # orthogonal frame: off-diagonal zero, norms ~ a_k^(...)
        off = G - np.diag(np.diag(G))
        # tol = 1e-8 on the gradient with curvature ~ lam = 1e-3 leaves ~1e-6 errors in features
        assert np.abs(off).max() <= 1e-5 * np.abs(G).max()
        if len(set(counts)) == 1:
            assert m["pfc2"] < 1e-5  # balanced: centred means form a simplex ETF


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_one_layer_is_the_certified_bias_free_ufm(loss):
    """L = 1 is the bias-free UFM: solve_deep reaches ufm.certify's optimum (cvxpy), cross
    entropy included, on imbalanced string labels."""
    y = np.array(["p"] * 7 + ["q"] * 3 + ["r"] * 1)
    kw = dict(lam_w=1e-2, lam_h=1e-2)
    r = solve_deep(y, L=1, d=3, loss=loss, **kw)
    cert = ufm.certify(r.y, d=3, loss=loss, bias=False, **kw)
    assert cert.exact and r.objective == pytest.approx(cert.optimum, rel=1e-7)


def test_binary_relu_reaches_deep_collapse_optimum():
    """Sukenik et al. (2023): for K = 2 deep neural collapse is optimal with ReLU, so the best
    start reaches the DNC value and no start goes below it."""
    y = np.repeat([0, 1], 3)
    for L, d, lam in [(2, 4, 1e-2), (3, 4, 1e-2)]:
        r = solve_deep(
            y, L=L, d=d, lam_w=lam, lam_h=lam, activation="relu", starts=6, max_iter=3000
        )
        dnc = deep_linear_optimum((3, 3), L=L, lam_w=lam, lam_h=lam).objective
        assert r.objective == pytest.approx(dnc, rel=1e-7)
        assert min(r.objectives) >= dnc * (1 - 1e-7)
        for F, m in zip(r.features, r.metrics, strict=True):
            assert m["pfc1"] < 1e-6
        for F in r.features[1:]:  # post-ReLU class means: non-negative, orthogonal
            mu0, mu1 = F[y == 0].mean(0), F[y == 1].mean(0)
            assert abs(mu0 @ mu1) <= 1e-6 * (mu0 @ mu0 + mu1 @ mu1)


def test_relu_K_above_2_no_worse_than_deep_collapse():
    """Sukenik et al. (2024): for K > 2 low-rank solutions can beat deep neural collapse; the
    solver's best must be at least as good as the DNC candidate."""
    K = 4
    y = np.repeat(np.arange(K), 2)
    lam = 3e-3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = solve_deep(y, L=4, d=K, lam_w=lam, lam_h=lam, activation="relu", max_iter=2000)
        low = solve_deep(y, L=4, d=K, lam_w=lam, lam_h=lam, activation="relu", max_iter=2000,
                         init="random")  # fmt: skip
    dnc = deep_linear_optimum([2] * K, L=4, lam_w=lam, lam_h=lam).objective
    # the default (balanced) start is the DNC candidate: never worse than it
    assert r.objective <= dnc * (1 + 1e-9)
    # a random start finds a lower, rank-deficient solution (measured: -1.30%)
    assert low.objective <= dnc * (1 - 1e-3)


def test_ce_and_string_labels_and_result_fields():
    r = solve_deep(["b", "a", "b", "a", "c", "c"], L=2, d=3, loss="ce", lam_w=1e-2, lam_h=1e-2)
    assert list(r.classes) == ["a", "b", "c"] and r.L == 2 and r.K == 3 and r.N == 6
    assert len(r.features) == 2 and r.features[1].shape == (6, 3)
    f = ref_objective(r.W, r.H, r.y, [1e-2, 1e-2], 1e-2, loss="ce")
    assert r.objective == pytest.approx(f, rel=1e-12)
    assert r.history["objective"][0] >= r.objective and r.history["objective"][-1] == r.objective
    assert "L=2" in repr(r) and r.params["model"] == "deep_ufm"
    with pytest.raises(AttributeError):
        r.objective = 0.0  # frozen


@settings(max_examples=10, deadline=None)
@given(
    seed=seeds,
    L=st.integers(1, 4),
    counts=st.lists(st.integers(1, 7), min_size=2, max_size=5),
    lam=log_uniform(1e-4, 5e-2),
)
def test_default_start_finds_the_global_optimum(seed, L, counts, lam):
    """With weight decay a class can be caught at zero logits (a local minimum for L >= 2);
    the default balanced start reaches the closed-form optimum (0 of 40 failures measured,
    against 6 of 40 with one random start)."""
    y = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(seed)
    lam_w = list(lam * 10 ** rng.uniform(-0.5, 0.5, L))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = solve_deep(y, L=L, d=len(counts), lam_w=lam_w, lam_h=lam, seed=seed % 1000)
    opt = deep_linear_optimum(counts, L=L, lam_w=lam_w, lam_h=lam)
    assert r.objective == pytest.approx(opt.objective, rel=1e-6)


def test_nonconvergence_is_a_status_and_a_warning():
    with pytest.warns(ConvergenceWarning):
        r = solve_deep(np.repeat([0, 1], 3), L=3, d=3, max_iter=2)
    assert r.status == "max_iter" and not r.converged


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(L=0), "L"),
        (dict(L=2, d=[3]), "d has 1"),
        (dict(L=2, d=0), "d"),
        (dict(L=2, lam_w=[1e-2]), "lam_w has 1"),
        (dict(L=2, lam_w=0.0), "lam_w"),
        (dict(L=2, lam_h=-1.0), "lam_h"),
        (dict(L=2, lam_h=1e300), "lam_h"),
        (dict(L=2, lam_w=[1e-2, float("nan")]), "lam_w"),
        (dict(L=2, lam_w=[1e-2, 1e11]), "lam_w"),
        (dict(L=2, seed=-1), "seed"),
        (dict(L=2, max_iter=0), "max_iter"),
        (dict(L=2, d=2.5), "d"),
        (dict(L=2, activation="tanh"), "activation"),
        (dict(L=2, loss="hinge"), "loss"),
        (dict(L=2, starts=0), "starts"),
        (dict(L=2, tol=0.0), "tol"),
        (dict(L=2, verbose="yes"), "verbose"),
        (dict(L=2, init="zeros"), "init"),
    ],
)
def test_bad_input(kw, match):
    kw.setdefault("d", 3)
    with pytest.raises(InputError, match=match):
        solve_deep([0, 1, 0, 1], **kw)


@pytest.mark.parametrize(
    "y, match", [([0, 0], "K=2"), ([], "empty"), ([[0, 1]], "1-d"), ([0.5, 1.0], "integer")]
)
def test_bad_labels(y, match):
    with pytest.raises(InputError, match=match):
        solve_deep(y, L=2, d=2)


def test_bad_objective_input():
    with pytest.raises(InputError, match="W\\[1\\]"):
        deep_objective([np.ones((3, 2)), np.ones((2, 4))], np.ones((4, 2)), [0, 1, 0, 1])
    with pytest.raises(InputError, match="labels"):
        deep_objective([np.ones((2, 2))], np.ones((2, 2)), [0, 5])
    with pytest.raises(InputError, match="counts"):
        deep_linear_optimum([3], L=2)


# ------------------------------------------------------------------------------------------------
# theorem-style properties (hypothesis)
# ------------------------------------------------------------------------------------------------
@settings(max_examples=15, deadline=None)
@given(
    seed=seeds,
    L=st.integers(1, 4),
    relu=st.booleans(),
    loss=st.sampled_from(["mse", "ce"]),
    scale=log_uniform(1e-2, 1e2),
)
def test_objective_matches_reference_and_invariances(seed, L, relu, loss, scale):
    """deep_objective equals the numpy reference; rotating H (and W_1 with it) leaves it
    unchanged; rescaling W_l by a > 0 and W_(l+1) by 1/a leaves the loss unchanged (positive
    homogeneity of ReLU), so only the penalties move, by the exact amount."""
    rng = np.random.default_rng(seed)
    K, N, d = 3, 7, 4
    y = rng.integers(0, K, N)
    Ws = [rng.standard_normal((d, d)) for _ in range(L - 1)] + [rng.standard_normal((K, d))]
    H = rng.standard_normal((N, d))
    lam = list(rng.uniform(1e-3, 1e-1, L))
    kw = dict(lam_w=lam, lam_h=0.03, loss=loss, activation="relu" if relu else "linear")
    f = deep_objective(Ws, H, y, **kw)
    assert f == pytest.approx(ref_objective(Ws, H, y, lam, 0.03, relu, loss), rel=1e-12)
    Q = np.linalg.qr(rng.standard_normal((d, d)))[0]
    W_rot = [Ws[0] @ Q.T, *Ws[1:]]
    assert deep_objective(W_rot, H @ Q.T, y, **kw) == pytest.approx(f, rel=1e-10)
    if L >= 2:
        W_s = [Ws[0] * scale, Ws[1] / scale, *Ws[2:]]
        dpen = 0.5 * lam[0] * (scale**2 - 1) * np.sum(Ws[0] ** 2)
        dpen += 0.5 * lam[1] * (scale**-2 - 1) * np.sum(Ws[1] ** 2)
        assert deep_objective(W_s, H, y, **kw) == pytest.approx(f + dpen, rel=1e-9, abs=1e-9)


@settings(max_examples=8, deadline=None)
@given(
    seed=seeds,
    L=st.integers(2, 3),
    relu=st.booleans(),
    counts=st.lists(st.integers(1, 4), min_size=2, max_size=3),
)
def test_stationary_points_are_balanced(seed, L, relu, counts):
    """At any stationary point, lam_l ||W_l||^2 is the same for every layer and equals
    lam_H ||H||^2 / N (the derivative of f along W_l -> a W_l, W_(l+1) -> W_(l+1)/a is 0)."""
    y = np.repeat(np.arange(len(counts)), counts)
    lam = [1e-2, 3e-3, 2e-2][:L]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        r = solve_deep(y, L=L, d=len(counts) + 1, lam_w=lam, lam_h=5e-3, seed=seed % 1000,
                       activation="relu" if relu else "linear", tol=1e-10, max_iter=2000)  # fmt: skip
    if not r.converged:
        return  # a ReLU kink can stall the line search; the property is about stationary points
    e = [l * np.sum(W**2) for l, W in zip(lam, r.W, strict=True)]
    e.append(5e-3 * np.sum(r.H**2) / r.N)
    np.testing.assert_allclose(e, np.full(len(e), np.mean(e)), rtol=1e-5, atol=1e-9)


@settings(max_examples=6, deadline=None)
@given(
    seed=seeds,
    t=st.lists(log_uniform(0.2, 5.0), min_size=2, max_size=2),
    perm=st.permutations([0, 1, 2]),
)
def test_optimum_depends_on_penalty_product_and_class_sizes_only(seed, t, perm):
    """Rescaling the penalties with their product kept (lam_1 t_1, lam_2 t_2, lam_H / (t_1 t_2))
    and permuting the classes leave the deep linear optimum unchanged."""
    counts = np.array([5, 2, 1])
    lam = 2e-3
    base = deep_linear_optimum(counts, L=2, lam_w=lam, lam_h=lam).objective
    y = np.repeat(np.array(perm), counts)
    lam_w = [lam * t[0], lam * t[1]]
    r = solve_deep(y, L=2, d=3, lam_w=lam_w, lam_h=lam / (t[0] * t[1]), starts=2, seed=seed % 1000)
    assert r.objective == pytest.approx(base, rel=1e-7)
