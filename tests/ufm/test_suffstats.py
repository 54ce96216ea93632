"""The MSE (M)UFM through sufficient statistics (ufm.suffstats) against independent references."""

from __future__ import annotations

import pickle
import time
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import class_counts, log_uniform, seeds

import mufm
import ufm
from ufm.engine.statistics import ReducedObjective, solve_statistics
from ufm.errors import ConvergenceWarning, DegenerateInputError, InputError
from ufm.metrics import collapse_metrics
from ufm.suffstats import SufficientStatistics

RNG = np.random.default_rng(0)


def _data(K=4, n=7, d=6, seed=0, unbalanced=True):
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(K), n)
    if unbalanced:
        y[:3] = 1
    C = rng.standard_normal((K, d))
    X = C[y] + 0.5 * rng.standard_normal((len(y), d))
    return X, y


def _stats(X, y, K, batch=5, gram="auto"):
    s = SufficientStatistics(K, gram=gram)
    for i in range(0, len(y), batch):
        s.update(X[i : i + batch], y[i : i + batch])
    return s


def _full_objective(W, b, H, X, y, lam, lam_w, lam_h, lam_b):
    """MATH.md sec. 5 objective written directly (independent of the package)."""
    N, K = H.shape[0], W.shape[0]
    Z = H @ W.T + b
    E = np.eye(K)[y]
    f = 0.5 * np.sum((Z - E) ** 2) + 0.5 * lam_h * np.sum(H**2)
    f += 0.5 * lam * np.sum((H - X) ** 2)
    return f / N + 0.5 * lam_w * np.sum(W**2) + 0.5 * lam_b * np.sum(b**2)


@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("gram", ["auto", "dense"])
def test_gradient_and_hessian_match_finite_differences(bias, gram):
    X, y = _data()
    red = ReducedObjective(_stats(X, y, 4, gram=gram), 0.3, 1e-2, 0.05, 1e-3, bias)
    rng = np.random.default_rng(1)
    z = rng.standard_normal(red.n)
    f, g = red.fg(z)
    e = 1e-6
    E = np.eye(red.n)
    gfd = np.array([(red.f(z + e * u) - red.f(z - e * u)) / (2 * e) for u in E])
    assert np.allclose(g, gfd, atol=1e-8)
    p = rng.standard_normal(red.n)
    hfd = (red.g(z + e * p) - red.g(z - e * p)) / (2 * e)
    assert np.allclose(red.hessp(z, p), hfd, atol=1e-7)


def test_reduced_objective_equals_full_objective_at_closed_form_features():
    X, y = _data()
    lam, lam_w, lam_h, lam_b = 0.3, 1e-2, 0.05, 1e-3
    st_ = _stats(X, y, 4)
    red = ReducedObjective(st_, lam, lam_w, lam_h, lam_b, True)
    rng = np.random.default_rng(2)
    W, b = rng.standard_normal((4, 6)), rng.standard_normal(4)
    mu = lam + lam_h
    # h_i by a direct linear solve per sample
    M = W.T @ W + mu * np.eye(6)
    H = np.linalg.solve(M, (W.T @ (np.eye(4)[y] - b).T) + lam * X.T).T
    f_full = _full_objective(W, b, H, X, y, lam, lam_w, lam_h, lam_b)
    assert red.f(np.concatenate([W.ravel(), b])) == pytest.approx(f_full, rel=1e-12)


def test_rows_and_dense_storage_agree_and_switch():
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((12, 40)), np.arange(12) % 3
    a = _stats(X, y, 3, batch=4)
    assert not a.dense and len(a.rows) == 3  # N = 12 <= d = 40: the Gram route
    b = _stats(X, y, 3, gram="dense")
    sa, sb = solve_statistics(a, lam=0.3, tol=1e-11), solve_statistics(b, lam=0.3, tol=1e-11)
    assert sa.converged and sb.converged
    assert sa.objective == pytest.approx(sb.objective, rel=1e-12)
    c = _stats(rng.standard_normal((50, 40)), np.arange(50) % 3, 3)
    assert c.dense  # switched once N > d


def test_merge_state_dict_pickle_equal_one_pass():
    X, y = _data(n=30)
    whole = _stats(X, y, 4, batch=1000)
    a, b = _stats(X[:40], y[:40], 4), _stats(X[40:], y[40:], 4)
    a.merge(b)
    r = SufficientStatistics.from_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    for s in (a, r):
        assert np.array_equal(s.counts, whole.counts)
        assert np.allclose(s.sums, whole.sums) and np.allclose(s.second, whole.second)
        assert s.sq == pytest.approx(whole.sq)
    with pytest.raises(InputError, match="state_dict"):
        SufficientStatistics.from_state_dict({"K": 3})
    with pytest.raises(InputError, match="same K"):
        a.merge(SufficientStatistics(5))


def test_all_reduce_needs_process_group():
    s = _stats(*_data(), 4)
    with pytest.raises(InputError, match="process group"):
        s.all_reduce()


def test_update_rejects_bad_batches():
    s = SufficientStatistics(3)
    with pytest.raises(InputError, match="labels"):
        s.update(np.zeros((2, 4)), np.array([0, 3]))
    with pytest.raises(InputError):
        s.update(np.zeros((2, 4)), np.array([0]))
    with pytest.raises(InputError, match="non-finite"):
        s.update(np.array([[np.inf, 0.0]]), np.array([0]))
    with pytest.raises(InputError, match="too large"):
        s.update(np.full((2, 2), 1e200), np.array([0, 1]))
    with pytest.raises(DegenerateInputError, match="no samples"):
        solve_statistics(SufficientStatistics(3).update(np.ones((2, 4)), [0, 1]), lam=0.1)


@pytest.mark.parametrize("bias", [True, False])
def test_unbalanced_agrees_with_lbfgs_on_h(bias):
    X, y = _data(K=3, n=9, d=5, seed=4)
    kw = dict(lam=0.2, lam_w=5e-3, lam_b=1e-3, bias=bias)
    a = mufm.solve(X, y, method="suffstats", tol=1e-12, **kw)
    b = mufm.solve(X, y, method="lbfgs-h", tol=1e-12, **kw)
    assert a.converged and b.converged
    assert a.objective == pytest.approx(b.objective, rel=1e-10)
    f = _full_objective(a.W, a.b, a.H, X, y, 0.2, 5e-3, 0.0, 1e-3 if bias else 0.0)
    assert f == pytest.approx(a.objective, rel=1e-12)


def test_lam_sweep_reuses_one_pass_and_class_metrics_match():
    X, y = _data(K=4, n=40, d=6, seed=5)
    s = _stats(X, y, 4, batch=17)
    for lam in (0.01, 0.1, 1.0):
        sol = solve_statistics(s, lam=lam, tol=1e-11)
        ref = mufm.solve(X, y, lam=lam, method="lbfgs-h", tol=1e-11)
        assert sol.objective == pytest.approx(ref.objective, rel=1e-10)
        H = sol.features(X, y)
        m = collapse_metrics(H, y)
        cm = sol.class_metrics(s)
        assert cm["pfc1"] == pytest.approx(m["pfc1"], rel=1e-8)
        assert cm["pfc2"] == pytest.approx(m["pfc2"], rel=1e-8, abs=1e-12)


def test_features_torch_matches_numpy():
    X, y = _data()
    sol = solve_statistics(_stats(X, y, 4), lam=0.3)
    Hn = sol.features(X, y)
    Ht = sol.features(torch.from_numpy(X), torch.from_numpy(y))
    assert np.allclose(Ht.numpy(), Hn, atol=1e-13)


# ------------------------------------------------------------------- saddles (issue 12)
def test_zero_data_is_not_reported_at_the_saddle():
    """mufm.solve(np.zeros((4, 5, 8))) used to stop at the stationary start (f = 0.375)."""
    cert = 0.0105940704834  # mufm.certify(np.zeros((4, 5, 8))).optimum
    for method in ("suffstats", "lbfgs", "lbfgs-h"):
        res = mufm.solve(np.zeros((4, 5, 8)), method=method)
        assert res.converged and res.n_iter > 0
        assert res.objective == pytest.approx(cert, rel=1e-8), method


def test_identical_class_means_escape_the_saddle():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((4, 50, 8))
    X -= X.mean(1, keepdims=True)  # every class mean is 0: H = X, W = 0 is stationary
    a = mufm.solve(X)
    assert a.converged and a.objective < 0.375 * 0.5 and a.params["n_escapes"] >= 1
    assert a.params["min_eig"] > -1e-7
    b = mufm.solve(X, method="lbfgs")
    assert b.converged and b.objective == pytest.approx(a.objective, rel=1e-8)


def test_ufm_from_saddle_start_escapes():
    y = np.repeat(np.arange(3), 4)
    res = ufm.solve(y, d=5, lam_h=0.05, lam_w=0.05)
    ref = ufm.solve(y, d=5, lam_h=0.05, lam_w=0.05, method="lbfgs-h")
    assert res.converged and res.objective == pytest.approx(ref.objective, rel=1e-9)


# --------------------------------------------------------------- scale and huge coefficients
def test_huge_lam_is_fast_and_correct():
    X = np.random.default_rng(0).standard_normal((3, 4, 5))
    for lam in (1e12, 1e300):
        t = time.perf_counter()
        res = mufm.solve(X, lam=lam)
        assert time.perf_counter() - t < 5
        assert res.converged and np.isfinite(res.objective)
        # at huge lam the features stay at the data and (W, b) is the ridge fit on X
        assert np.allclose(res.H, X.reshape(-1, 5), atol=1e-9)


def test_scaled_data_is_rescaled_exactly():
    """X * a with lam / a^2, lam_w * a^2 is the same problem (h = a h', W = W' / a)."""
    X = np.random.default_rng(1).standard_normal((3, 6, 5))
    base = mufm.solve(X, lam=0.1, lam_w=5e-3, tol=1e-11)
    # the penalty limit is relative to the data's scale, so lam_w * a^2 with huge a is accepted
    for a in (2.0**60, 1e100):
        res = mufm.solve(X * a, lam=0.1 / a**2, lam_w=5e-3 * a**2, tol=1e-11)
        assert res.converged
        assert res.objective == pytest.approx(base.objective, rel=1e-9)
        assert np.allclose(res.W * a, base.W, rtol=1e-6, atol=1e-9)
    res = mufm.solve(X * 1e100)  # default coefficients: valid, far from collapse, finite
    assert res.converged and np.isfinite(res.objective)


def test_first_order_methods_refuse_extreme_scales_up_front():
    X = np.random.default_rng(0).standard_normal((3, 4, 5))
    for kw in ({"lam": 1e300}, {"lam": 1e60}):
        t = time.perf_counter()
        with pytest.raises(InputError, match="suffstats"):
            mufm.solve(X, method="gd", **kw)
        assert time.perf_counter() - t < 2
    with pytest.raises(InputError, match="scale"):
        mufm.solve(X * 1e100, method="lbfgs-h")


def test_suffstats_rejects_cross_entropy():
    with pytest.raises(InputError, match="mse"):
        mufm.solve(np.ones((2, 3, 4)) * np.arange(2)[:, None, None], loss="ce", method="suffstats")


# -------------------------------------------------------------------- property test
@settings(max_examples=20, deadline=None)
@given(
    K=class_counts(4),
    n=st.integers(1, 4),
    d=st.integers(1, 6),
    lam=log_uniform(1e-4, 1e4),
    lam_w=log_uniform(1e-4, 1.0),
    scale=st.sampled_from([1e-80, 1e-5, 1.0, 1e5, 1e80]),
    seed=seeds,
)
def test_property_solve_is_error_or_certified_optimum(K, n, d, lam, lam_w, scale, seed):
    """Any input gives a toolkit error or a converged local minimum, in bounded time."""
    X = scale * np.random.default_rng(seed).standard_normal((K, n, d))
    t = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            res = mufm.solve(X, lam=lam, lam_w=lam_w)
    except (InputError, TypeError) as exc:
        assert isinstance(exc, ufm.errors.PFCError)
        return
    assert time.perf_counter() - t < 20
    assert np.isfinite(res.objective) and res.objective >= -1e-12  # round-off at f* = 0
    if res.converged:
        assert res.params["min_eig"] >= -1e-6 * max(1.0, res.objective)
    else:
        assert res.status in ("max_iter", "stalled")


@pytest.mark.parametrize(
    "counts, d, shift, bias",
    [
        ([40] * 10, 16, 2.0, True),  # balanced, N > d
        ([5, 50, 200], 5, 1.0, True),  # unbalanced
        ([3, 7, 2, 10], 100, 1.0, True),  # d > N (Gram route)
        ([30, 1, 40, 2, 9], 20, 5.0, False),  # a singleton class, no bias
        ([300] * 4, 8, 300.0, True),  # large offset: class means far from the origin
    ],
)
def test_fused_metrics_equal_collapse_metrics_of_returned_h(counts, d, shift, bias):
    """The metrics computed while H is formed (class means from the statistics) equal
    ufm.collapse_metrics of the returned H, computed independently in two passes over it."""
    rng = np.random.default_rng(len(counts) * 1000 + d)
    K = len(counts)
    y = np.repeat(np.arange(K), counts)
    rng.shuffle(y)
    X = rng.standard_normal((y.size, d)) + shift * np.eye(K, d)[y] + 3.0
    for lam in (0.01, 0.1, 10.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = mufm.solve(X, y, lam=lam, bias=bias)
            ref = ufm.collapse_metrics(res.H, y, res.W, res.b if bias else None)
        assert set(res.metrics) == set(ref)
        for k, v in ref.items():
            assert res.metrics[k] == pytest.approx(v, rel=1e-10, abs=1e-13), (k, lam)
    # the features themselves are the closed form h_i = (W^T W + lam I)^-1 (W^T (e_y - b) + lam x_i)
    W, b = res.W, res.b if bias else np.zeros(K)
    rhs = (np.eye(K)[y] - b) @ W + lam * X
    H_ref = np.linalg.solve(W.T @ W + lam * np.eye(d), rhs.T).T
    assert res.H.dtype == np.float64
    assert np.allclose(res.H, H_ref, rtol=1e-9, atol=1e-9 * np.abs(H_ref).max())


@pytest.mark.parametrize("classifier", ["same", "other", "other-no-bias", "none"])
@pytest.mark.parametrize("scale", [1e-120, 1.0, 1e120])
@pytest.mark.parametrize("lam_h", [0.0, 0.3])
def test_feature_metrics_equal_collapse_metrics_of_features(classifier, scale, lam_h):
    """StatsSolution.feature_metrics never forms H, yet equals collapse_metrics of the features
    formed explicitly, for the solution's own classifier, another one, or none, at any scale."""
    rng = np.random.default_rng(11)
    K, d = 5, 12
    y = rng.integers(0, K, 900)
    X = (rng.standard_normal((900, d)) + 2.0 * rng.standard_normal((K, d))[y] + 1.0) * scale
    st_ = _stats(X, y, K, batch=400)
    sol = solve_statistics(st_, lam=0.2 * scale**-2, lam_h=lam_h * scale**-2, lam_w=1e-3 * scale**2)
    W, b = {
        "same": (sol.W, sol.b),
        "other": (rng.standard_normal((K, d)) / scale, rng.standard_normal(K)),
        "other-no-bias": (rng.standard_normal((K, d)) / scale, None),
        "none": (None, None),
    }[classifier]
    got = sol.feature_metrics(X, y, st_, W, b)
    H = sol.features(X, y)
    ref = collapse_metrics(H, y, W, b)
    assert set(got) == set(ref)
    for k, v in ref.items():
        np.testing.assert_allclose(got[k], v, rtol=1e-9, atol=1e-12, err_msg=k)


def test_feature_metrics_and_moments_split_between_threads_equal_one_block(monkeypatch):
    """With rows split into blocks run in two threads, the statistics and the metrics equal
    the one-block results (to round-off), and the thread settings are restored."""
    import importlib

    T = importlib.import_module("ufm.rowblocks")
    rng = np.random.default_rng(5)
    K, d = 4, 6
    y = rng.integers(0, K, 5000)
    X = rng.standard_normal((5000, d)) + 3.0 * rng.standard_normal((K, d))[y]
    with ufm.threads(1):
        st1 = SufficientStatistics(K).update(X, y)
        sol = solve_statistics(st1, lam=0.1)
        m1 = sol.feature_metrics(X, y, st1, sol.W, sol.b)
    monkeypatch.setattr(T, "MIN_BLOCK_ELEMS", 700 * 6)  # 700 rows of d = 6
    calls = []
    real = T.map_row_blocks

    def spy(n, fn, **kw):
        out = real(n, fn, n_threads=2, **kw)
        calls.append(len(out))
        return out

    monkeypatch.setattr("ufm.suffstats.map_row_blocks", spy)  # the pass of update
    monkeypatch.setattr("ufm.engine.statistics.map_row_blocks", spy)  # of feature_metrics
    before = torch.get_num_threads()
    st2 = SufficientStatistics(K).update(X, y)
    m2 = sol.feature_metrics(X, y, st2, sol.W, sol.b)
    assert calls == [7, 7] and torch.get_num_threads() == before  # min(2 x 4, 5000 // 700)
    np.testing.assert_array_equal(st1.counts, st2.counts)
    np.testing.assert_allclose(st2.sums, st1.sums, rtol=1e-13)
    np.testing.assert_allclose(st2.second, st1.second, rtol=1e-13)
    np.testing.assert_allclose(st2.second, X.T @ X, rtol=1e-12)
    for k, v in m1.items():
        np.testing.assert_allclose(m2[k], v, rtol=1e-10, err_msg=k)


def test_mufm_h_is_formed_on_first_access_and_checked():
    """mufm.solve (suffstats, numpy float64) defers H: metrics, N, d and repr without it; the
    first read forms the closed-form features; pickles carry the array; data changed in
    place before the first read raise instead of giving features of another problem."""
    X, y = _data(K=3, n=30, d=5, seed=2)
    res = mufm.solve(X, y, lam=0.1)
    assert not res.formed("H")
    assert (res.N, res.d, res.K) == (len(y), 5, 3) and "pfc1" in repr(res)
    assert not res.formed("H")
    W, b = res.W, res.b
    H_ref = np.linalg.solve(W.T @ W + 0.1 * np.eye(5), ((np.eye(3)[y] - b) @ W + 0.1 * X).T).T
    np.testing.assert_allclose(res.H, H_ref, rtol=1e-10, atol=1e-12)
    assert res.formed("H") and res.H is res.H
    assert len(res.layers(3)) == 4
    res2 = pickle.loads(pickle.dumps(mufm.solve(X, y, lam=0.1)))
    assert res2.formed("H")
    np.testing.assert_allclose(res2.H, H_ref, rtol=1e-10, atol=1e-12)
    for change in ("X", "y"):
        X2, y2 = X.copy(), y.copy()
        r = mufm.solve(X2, y2, lam=0.1)
        if change == "X":
            X2[3] *= 2.0
        else:
            y2[0] = (y2[0] + 1) % 3
        with pytest.raises(InputError, match="changed in place"):
            _ = r.H
    assert res.formed("W")  # every other field is an array from the start
    with pytest.raises(InputError, match="field name"):
        res.formed("Hx")
    from ufm.result import Deferred

    with pytest.raises(InputError, match="callable"):
        Deferred(np.zeros(3))
    # other methods and backends return H directly
    assert mufm.solve(X, y, lam=0.1, method="lbfgs-h").formed("H")
    assert mufm.solve(torch.from_numpy(X), torch.from_numpy(y), lam=0.1).formed("H")


def test_merge_partner_is_checked_by_both_accumulators():
    """ufm.validate.check_merge_partner: another type or another K is refused by name; an
    empty partner merges as a no-op."""
    from ufm.validate import check_merge_partner

    a, b = SufficientStatistics(3), SufficientStatistics(4)
    with pytest.raises(InputError, match="SufficientStatistics with the same K"):
        a.merge(b)
    with pytest.raises(InputError, match="CollapseAccumulator with the same K"):
        ufm.CollapseAccumulator(3).merge(a)
    assert check_merge_partner(a, SufficientStatistics(3)) is False
    X, y = _data(K=3)
    full = _stats(X, y, 3)
    assert check_merge_partner(a, full) is True
    np.testing.assert_array_equal(a.merge(full).counts, full.counts)
    np.testing.assert_array_equal(full.merge(SufficientStatistics(3)).counts, a.counts)


def test_moments_of_device_tensors_are_taken_on_the_device(monkeypatch):
    """Data on a GPU stay there (only the moments cross to the CPU): the torch route, run here
    on CPU tensors by declaring them 'on an accelerator', equals the numpy route; the rows
    route (N <= d) still keeps the rows on the CPU."""
    import ufm.suffstats as S

    X, y = _data(K=3, n=40, d=5, seed=4)
    ref = _stats(X, y, 3, batch=50)
    monkeypatch.setattr(S, "_on_accelerator", lambda t: True)
    got = _stats(torch.from_numpy(X), torch.from_numpy(y), 3, batch=50)
    np.testing.assert_array_equal(got.counts, ref.counts)
    np.testing.assert_allclose(got.sums, ref.sums, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(got.second, ref.second, rtol=1e-13, atol=1e-12)
    np.testing.assert_allclose(got.sq, ref.sq, rtol=1e-13)
    small = SufficientStatistics(3).update(torch.from_numpy(X[:4]), torch.from_numpy(y[:4]))
    assert small.second is None and len(small.rows) == 1
    with pytest.raises(InputError, match="non-finite"):
        SufficientStatistics(3).update(torch.full((10, 5), 1e200, dtype=torch.float64), y[:10])


@pytest.mark.parametrize("d, gram", [(6, "auto"), (100, "auto"), (6, "dense")])
def test_from_state_dict_refuses_tampered_values(d, gram):
    """Negative counts or scatter, inconsistent shapes or sums: refused with the key named
    (they were accepted and solved as if they were data), for the dense second moment and for
    kept rows."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((40, d)), np.arange(40) % 4
    st_ = SufficientStatistics(4, gram=gram).update(X[:20], y[:20]).update(X[20:], y[20:])
    sd = st_.state_dict()
    back = SufficientStatistics.from_state_dict(sd)
    np.testing.assert_array_equal(back.counts, st_.counts)
    cases = [
        ("counts", -sd["counts"], "'counts' must hold counts >= 0"),
        ("counts", sd["counts"] + 0.5, "non-integer"),
        ("counts", sd["counts"][:2], "must be 4 integer counts"),
        ("sums", sd["sums"] * np.nan, "'sums' holds NaN"),
        ("sums", sd["sums"][:, :2], rf"'sums' must have shape \(4, {d}\)"),
        ("sums", sd["sums"] * 100, "is below sum_k"),
        ("sq", -sd["sq"], "'sq' is a sum of squares"),
        ("sq", sd["sq"] / 2, "'sq' = .* differs"),
        ("rows", "x", "'rows' must be a list"),
        ("d", -1, "'d' must be >= 1"),
    ]
    if sd["second"] is not None:
        cases += [
            ("second", -sd["second"], "negative diagonal"),
            ("second", np.eye(3), rf"'second' must have shape \({d}, {d}\)"),
            ("second", sd["second"] + np.triu(np.ones((d, d)), 1), "symmetric"),
        ]
    else:
        cases += [("rows", sd["rows"][:1], "hold 20 rows but the counts sum to 40")]
    for key, value, match in cases:
        with pytest.raises(InputError, match=match):
            SufficientStatistics.from_state_dict({**sd, key: value})


def test_integer_and_unsigned_data_are_accepted():
    """uint8 images (and every integer dtype) were refused as "must be a real array"."""
    rng = np.random.default_rng(0)
    X, y = rng.integers(0, 255, (30, 5)), np.arange(30) % 3
    ref = SufficientStatistics(3).update(X.astype(np.float64), y)
    for dt in (np.uint8, np.int8, np.int16, np.uint16, np.uint32, np.uint64):
        Xc = X.astype(dt) if np.iinfo(dt).max >= 255 else (X % 100).astype(dt)
        st_ = SufficientStatistics(3).update(Xc, y)
        want = ref if Xc.max() == X.max() else SufficientStatistics(3).update(Xc * 1.0, y)
        np.testing.assert_array_equal(st_.sums, want.sums)
    for bad in (X > 5, X + 0j):
        with pytest.raises(InputError, match="real array"):
            SufficientStatistics(3).update(bad, y)


def test_explicit_start_is_shape_checked():
    """A wrong-shape W0/b0 raised numpy's raw reshape error (or was silently reshaped)."""
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 5)), np.arange(30) % 3
    stats = SufficientStatistics(3).update(X, y)
    good = solve_statistics(stats, W0=np.zeros((3, 5)), b0=np.zeros(3), max_iter=50)
    assert np.isfinite(good.objective if hasattr(good, "objective") else 0.0)
    cases = [
        (dict(W0=np.zeros((5, 3))), r"W0 must have shape \(3, 5\)"),
        (dict(W0=np.zeros(15)), r"W0 must have shape \(3, 5\)"),
        (dict(W0=np.zeros((3, 5)), b0=np.zeros(4)), r"b0 must have shape \(3,\)"),
        (dict(W0=np.full((3, 5), np.nan)), "W0 contains NaN"),
        (dict(W0=np.zeros((3, 5), dtype=bool)), "W0 must be a real array"),
        (dict(W0="abc"), "W0 must be a numeric array"),
        (dict(b0=np.zeros(3)), "b0 was given without W0"),
    ]
    for kw, match in cases:
        with pytest.raises(InputError, match=match):
            solve_statistics(stats, **kw)
