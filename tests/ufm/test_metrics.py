"""Collapse metrics against independent slow references (direct d x d formulas, float64)."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import class_counts, log_uniform, seeds

from ufm.errors import DegenerateInputError, InputError, PFCWarning, RankWarning
from ufm.metrics import (
    CollapseAccumulator,
    LineAccumulator,
    alignment,
    collapse_metrics,
    effective_depth,
    nc1,
    nc2,
    nc3,
    nc4,
    ncc_accuracy,
    pfc1,
    pfc2,
    pfc3,
    relative_position,
    simplex_etf,
)
from ufm.registry import METRICS

RTOL64 = 1e-10


# ------------------------------------------------------------------------------------------
# slow reference: the textbook d x d formulas of MATH.md section 2-3, written independently
# ------------------------------------------------------------------------------------------
def reference(H, y, W=None, b=None):
    H = np.asarray(H, dtype=np.float64)
    y = np.asarray(y)
    N, d = H.shape
    K = int(y.max()) + 1
    mu = np.array([H[y == k].mean(axis=0) for k in range(K)])
    mu_g = H.mean(axis=0)
    sw = np.zeros((d, d))
    for i in range(N):
        v = H[i] - mu[y[i]]
        sw += np.outer(v, v)
    sw /= N
    M = (mu - mu_g).T  # (d, K)
    sb = M @ M.T / K
    G = M.T @ M
    etf = (np.eye(K) - np.ones((K, K)) / K) / np.sqrt(K - 1)
    dist = np.array([[np.linalg.norm(H[i] - mu[k]) for k in range(K)] for i in range(N)])
    ncc_pred = dist.argmin(axis=1)
    norms = np.linalg.norm(M, axis=0)
    cos = [M[:, j] @ M[:, k] / (norms[j] * norms[k]) for j in range(K) for k in range(K) if j != k]
    out = {
        "tr_sigma_w": np.trace(sw),
        "tr_sigma_b": np.trace(sb),
        "pfc1": np.trace(sw) / np.trace(sb),
        "nc1": np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10, hermitian=True)) / K,
        "pfc2": np.linalg.norm(G / np.linalg.norm(G) - etf),
        "ncc_accuracy": np.mean(ncc_pred == y),
        "pfc3": 1 - np.mean(ncc_pred == y),
        "nc2_equinorm": norms.std() / norms.mean(),
        "nc2_equiangular": np.mean(np.abs(np.array(cos) + 1 / (K - 1))),
    }
    if W is not None:
        W = np.asarray(W, dtype=np.float64)
        out["nc3"] = np.linalg.norm(W.T / np.linalg.norm(W) - M / np.linalg.norm(M)) ** 2
        logits = H @ W.T + (0 if b is None else np.asarray(b))
        out["nc4"] = np.mean(logits.argmax(axis=1) != ncc_pred)
    return out


def make_data(seed=0, N=60, K=4, d=7, spread=1.0, sep=2.0, unbalanced=True, dtype=np.float64):
    rng = np.random.default_rng(seed)
    if unbalanced:
        y = rng.integers(0, K, N)
        y[:K] = np.arange(K)
    else:
        y = np.repeat(np.arange(K), N // K)
    centres = sep * rng.standard_normal((K, d))
    H = centres[y] + spread * rng.standard_normal((N, d))
    return H.astype(dtype), y


def assert_metrics_close(got, want, rtol=RTOL64, atol=1e-12, keys=None):
    for k in keys or want:
        np.testing.assert_allclose(got[k], want[k], rtol=rtol, atol=atol, err_msg=k)


# ------------------------------------------------------------------------------------------
# agreement with the reference
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("shape", [(60, 4, 7), (40, 3, 2), (90, 10, 12), (30, 5, 40)])
def test_matches_reference(seed, shape):
    N, K, d = shape
    H, y = make_data(seed, N, K, d)
    rng = np.random.default_rng(seed + 100)
    W, b = rng.standard_normal((K, d)), rng.standard_normal(K)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankWarning)  # d < K-1 in one shape
        got = collapse_metrics(H, y, W, b)
    want = reference(H, y, W, b)
    assert_metrics_close(got, want)


def test_individual_functions_match_collapse_metrics():
    H, y = make_data(3)
    W = np.random.default_rng(1).standard_normal((4, 7))
    m = collapse_metrics(H, y, W)
    assert pfc1(H, y) == pytest.approx(m["pfc1"], rel=1e-14)
    assert pfc2(H, y) == pytest.approx(m["pfc2"], rel=1e-14)
    assert pfc3(H, y) == pytest.approx(m["pfc3"], abs=1e-15)
    assert ncc_accuracy(H, y) == pytest.approx(m["ncc_accuracy"], abs=1e-15)
    assert nc1(H, y) == pytest.approx(m["nc1"], rel=1e-12)
    assert nc2(H, y) == pytest.approx((m["nc2_equinorm"], m["nc2_equiangular"]), rel=1e-12)
    assert nc3(H, y, W) == pytest.approx(m["nc3"], rel=1e-12)
    assert nc4(H, y, W) == pytest.approx(m["nc4"], abs=1e-15)
    assert set(m) == set(METRICS)  # every registered metric, nothing else
    # one argument order: features, labels, then the classifier; the old nc3(W, H, y) fails
    with pytest.raises(InputError):
        nc3(W, H, y)


def test_balanced_3d_input_equals_labelled():
    H, y = make_data(0, N=40, K=4, unbalanced=False)
    H3 = H.reshape(4, 10, 7)
    assert_metrics_close(collapse_metrics(H3), collapse_metrics(H, y), rtol=1e-13)


def test_nc1_exact_where_naive_pinv_fails():
    # well-separated classes in a wide space: the d x d Sigma_B has rank K-1 and a huge
    # condition number; NC1 via the K x K route stays exact.
    H, y = make_data(5, N=200, K=5, d=300, spread=1e-3, sep=10.0)
    want = reference(H, y)["nc1"]
    np.testing.assert_allclose(nc1(H, y), want, rtol=1e-8)


def test_rank_deficient_sigma_b_warns():
    H, y = make_data(1, N=50, K=6, d=3)  # d < K-1: rank(Sigma_B) <= 3 < 5
    with pytest.warns(RankWarning, match="rank 3 < K-1 = 5"):
        got = nc1(H, y)
    np.testing.assert_allclose(got, reference(H, y)["nc1"], rtol=1e-9)


def test_collinear_means_warn():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    centres = np.outer([0.0, 1.0, 3.0], rng.standard_normal(5))  # means on one line
    H = centres[y] + 0.1 * rng.standard_normal((30, 5))
    H -= np.array([H[y == k].mean(0) for k in range(3)])[y] - centres[y]  # exact means
    with pytest.warns(RankWarning):
        collapse_metrics(H, y)


# ------------------------------------------------------------------------------------------
# simplex ETF and collapsed features
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("K,d", [(2, 1), (3, 2), (4, 4), (5, 9), (10, 64), (10, 9)])
def test_simplex_etf_geometry(K, d):
    E = simplex_etf(K, d, seed=K + d, scale=2.5)
    assert E.shape == (K, d)
    G = E @ E.T
    np.testing.assert_allclose(np.diag(G), 2.5**2, rtol=1e-12)
    off = G[~np.eye(K, dtype=bool)]
    np.testing.assert_allclose(off, -(2.5**2) / (K - 1), rtol=1e-12)
    np.testing.assert_allclose(E.sum(0), 0.0, atol=1e-12)


@given(
    K=class_counts(8),
    extra=st.integers(0, 6),
    seed=seeds,
    scale=log_uniform(1e-3, 1e3),
    offset=st.floats(-100, 100),
)
@settings(max_examples=30, deadline=None)
def test_collapsed_etf_features_give_zero(K, extra, seed, scale, offset):
    d = K + extra
    E = simplex_etf(K, d, seed=seed, scale=scale) + offset
    y = np.repeat(np.arange(K), 3)
    H = E[y]
    m = collapse_metrics(H, y)
    assert m["pfc2"] < 1e-6
    assert m["pfc1"] == 0.0 or m["pfc1"] < 1e-20
    assert m["nc1"] < 1e-20
    assert m["pfc3"] == 0.0
    assert m["nc2_equinorm"] < 1e-6 and m["nc2_equiangular"] < 1e-6


def test_pfc2_of_non_etf_is_positive():
    H, y = make_data(2)
    assert pfc2(H, y) > 0.05


# ------------------------------------------------------------------------------------------
# invariances (hypothesis)
# ------------------------------------------------------------------------------------------
INVARIANT_KEYS = ["pfc1", "pfc2", "pfc3", "ncc_accuracy", "nc1", "nc2_equinorm", "nc2_equiangular"]


def random_orthogonal(d, rng):
    Q, R = np.linalg.qr(rng.standard_normal((d, d)))
    return Q * np.sign(np.diag(R))


@given(
    seed=seeds,
    K=class_counts(6),
    d=st.integers(5, 12),
    scale=log_uniform(1e-3, 1e3),
    shift=st.floats(-50, 50),
)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
def test_rotation_translation_scale_invariance(seed, K, d, scale, shift):
    H, y = make_data(seed, N=8 * K, K=K, d=d)
    rng = np.random.default_rng(seed)
    Q = random_orthogonal(d, rng)
    base = collapse_metrics(H, y)
    moved = collapse_metrics(scale * (H @ Q) + shift, y)
    for k in INVARIANT_KEYS:
        np.testing.assert_allclose(moved[k], base[k], rtol=1e-7, atol=1e-9, err_msg=k)
    # rotation and translation alone keep the traces up to the scale factor
    np.testing.assert_allclose(moved["tr_sigma_w"], scale**2 * base["tr_sigma_w"], rtol=1e-7)


@given(seed=seeds, K=class_counts(6))
@settings(max_examples=30, deadline=None)
def test_label_permutation_invariance(seed, K):
    H, y = make_data(seed, N=6 * K, K=K, d=6)
    perm = np.random.default_rng(seed).permutation(K)
    rng = np.random.default_rng(seed + 1)
    W, b = rng.standard_normal((K, 6)), rng.standard_normal(K)
    base = collapse_metrics(H, y, W, b)
    # relabel classes; the classifier rows follow their classes
    Wp, bp = np.empty_like(W), np.empty_like(b)
    Wp[perm], bp[perm] = W, b
    moved = collapse_metrics(H, perm[y], Wp, bp)
    for k in INVARIANT_KEYS + ["nc3", "nc4"]:
        np.testing.assert_allclose(moved[k], base[k], rtol=1e-9, atol=1e-12, err_msg=k)


@given(seed=seeds, cuts=st.lists(st.integers(1, 59), max_size=6))
@settings(max_examples=40, deadline=None)
def test_streaming_equals_batch_for_any_split(seed, cuts):
    H, y = make_data(seed, N=60, K=4, d=7)
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((4, 7))
    order = rng.permutation(60)  # streaming order is arbitrary
    H, y = H[order], y[order]
    bounds = [0, *sorted(set(cuts)), 60]
    acc = CollapseAccumulator(4, W=W)
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        acc.update(H[a:b], y[a:b])
    pass1 = acc.compute()
    acc.end_first_pass()
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        acc.update(H[a:b], y[a:b])
    got = acc.compute()
    want = collapse_metrics(H, y, W)
    assert_metrics_close(got, want, rtol=1e-12)
    assert_metrics_close(pass1, want, rtol=1e-12, keys=["pfc1", "pfc2", "tr_sigma_w", "nc3"])


def test_merge_of_shards_equals_batch():
    H, y = make_data(7, N=90, K=5, d=9)
    shards = [CollapseAccumulator(5) for _ in range(3)]
    for i, acc in enumerate(shards):
        acc.update(H[i::3], y[i::3])
    merged = shards[0].merge(shards[1]).merge(shards[2])
    merged.end_first_pass()
    p2 = [CollapseAccumulator.from_state_dict(merged.state_dict()) for _ in range(3)]
    for i, acc in enumerate(p2):
        acc.update(H[i::3], y[i::3])
    total = p2[0].merge(p2[1]).merge(p2[2])
    assert_metrics_close(total.compute(), collapse_metrics(H, y), rtol=1e-12)


def test_chan_merge_is_stable_under_large_offset():
    # a naive E[h^2] - E[h]^2 loses every digit here; the pairwise merge does not
    H, y = make_data(3, N=80, K=4, d=5, spread=1e-3)
    H = H + 1e6
    acc = CollapseAccumulator(4)
    for a in range(0, 80, 7):
        acc.update(H[a : a + 7], y[a : a + 7])
    want = reference(H - 1e6, y)
    np.testing.assert_allclose(acc.compute()["tr_sigma_w"], want["tr_sigma_w"], rtol=1e-7)


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("shape", [(60, 4, 7), (90, 10, 12), (1000, 3, 300)])
def test_float32_input_is_accumulated_exactly(seed, shape):
    # float32 features are converted exactly and accumulated in float64: the result equals the
    # float64 reference on the same (float32) values to float64 accuracy
    N, K, d = shape
    H, y = make_data(seed, N, K, d, dtype=np.float32)
    W = np.random.default_rng(seed).standard_normal((K, d)).astype(np.float32)
    want = reference(H.astype(np.float64), y, W.astype(np.float64))
    assert_metrics_close(collapse_metrics(H, y, W), want, rtol=1e-9)
    got_t = collapse_metrics(torch.from_numpy(H), torch.from_numpy(y), torch.from_numpy(W))
    assert_metrics_close(got_t, want, rtol=1e-9)


@pytest.mark.parametrize("offset", [1e4, -3e5])
@pytest.mark.parametrize("scale", [1e-30, 1.0, 1e30])
def test_float32_with_large_offset_is_exact_over_chunks(offset, scale):
    # float32 features far from the origin (a common offset 1e4-3e5 times the spread) and at
    # extreme scales, over several chunks: every metric still equals the float64 d x d
    # reference on the same float32 values, because pass 2 works on float64 deviations from
    # the float64 class means (the float32 rounding is in the input only, never in the sums)
    H, y = make_data(7, N=1500, K=6, d=300)
    H32 = ((H + offset) * scale).astype(np.float32)
    assert H32.shape[0] > 1.5 * (1 << 18) // 300  # at least two chunks
    W = np.random.default_rng(7).standard_normal((6, 300)).astype(np.float32)
    want = reference(H32.astype(np.float64), y, W.astype(np.float64))
    got = collapse_metrics(H32, y, W)
    assert_metrics_close(got, want, rtol=1e-9, atol=0.0)


def test_float32_agrees_with_float64():
    H, y = make_data(4, N=200, K=5, d=30)
    m64 = collapse_metrics(H, y)
    m32 = collapse_metrics(H.astype(np.float32), y)
    for k in ["pfc1", "pfc2", "nc1", "nc2_equinorm", "nc2_equiangular"]:
        np.testing.assert_allclose(m32[k], m64[k], rtol=2e-5, err_msg=k)
    assert m32["ncc_accuracy"] == m64["ncc_accuracy"]


def test_torch_equals_numpy():
    H, y = make_data(6, N=100, K=4, d=11)
    W = np.random.default_rng(0).standard_normal((4, 11))
    mn = collapse_metrics(H, y, W)
    mt = collapse_metrics(torch.from_numpy(H), torch.from_numpy(y), torch.from_numpy(W))
    assert_metrics_close(mt, mn, rtol=1e-14)
    m16 = collapse_metrics(torch.from_numpy(H).to(torch.bfloat16), torch.from_numpy(y))
    np.testing.assert_allclose(m16["pfc1"], mn["pfc1"], rtol=3e-2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_cuda_equals_cpu():  # pragma: no cover - runs only with a GPU
    H, y = make_data(6, N=100, K=4, d=11)
    mc = collapse_metrics(torch.from_numpy(H).cuda(), torch.from_numpy(y).cuda())
    assert_metrics_close(mc, collapse_metrics(H, y), rtol=1e-12)


# ------------------------------------------------------------------------------------------
# line accumulator
# ------------------------------------------------------------------------------------------
def test_line_accumulator_matches_interpolated_features():
    A, y = make_data(8, N=70, K=5, d=6)
    B = np.tanh(A) + 0.3 * np.random.default_rng(0).standard_normal(A.shape)
    ts = np.linspace(0, 1, 6)
    line = LineAccumulator(5, ts)
    for a in range(0, 70, 9):
        line.update(A[a : a + 9], B[a : a + 9], y[a : a + 9])
    line.end_first_pass()
    for a in range(0, 70, 13):
        line.update(A[a : a + 13], B[a : a + 13], y[a : a + 13])
    got = line.compute()
    for i, t in enumerate(ts):
        want = reference((1 - t) * A + t * B, y)
        for k in ["pfc1", "pfc2", "nc1", "ncc_accuracy", "tr_sigma_w"]:
            np.testing.assert_allclose(got[k][i], want[k], rtol=1e-10, atol=1e-13, err_msg=k)
    fine = line.compute(np.linspace(0, 1, 21))
    assert "nc1" not in fine and fine["pfc1"].shape == (21,)


def test_line_accumulator_merge():
    A, y = make_data(9, N=50, K=3, d=4)
    B = A**2
    whole = LineAccumulator(3).update(A, B, y)
    s1 = LineAccumulator(3).update(A[:20], B[:20], y[:20])
    s2 = LineAccumulator(3).update(A[20:], B[20:], y[20:])
    np.testing.assert_allclose(s1.merge(s2).compute()["pfc1"], whole.compute()["pfc1"], rtol=1e-12)


# ------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------
def test_alignment_and_relative_position():
    H, _ = make_data(0)
    X = H + 0.5
    want = np.sum(H * X) / (np.linalg.norm(H) * np.linalg.norm(X))
    assert alignment(H, X) == pytest.approx(want, rel=1e-14)
    assert alignment(H, 3 * H) == pytest.approx(1.0)
    layers = [H + t * (X - H) for t in (0, 0.25, 0.5, 1.0)]
    np.testing.assert_allclose(relative_position(layers, mode="distance"), [0, 0.25, 0.5, 1])
    np.testing.assert_allclose(relative_position(layers), [0, 1 / 3, 2 / 3, 1])


def test_effective_depth():
    H, y = make_data(0, N=60, K=3, d=5, spread=3.0)
    collapsed = simplex_etf(3, 5, seed=0)[y]
    assert effective_depth([H, H, collapsed], y, epsilon=0.0) == 2
    assert effective_depth([0.5, 0.2, 0.05, 0.0], epsilon=0.1) == 2
    assert effective_depth([0.5, 0.4], epsilon=0.1) is None


# ------------------------------------------------------------------------------------------
# bad input: each error names the argument
# ------------------------------------------------------------------------------------------
def test_bad_input_errors():
    H, y = make_data(0)
    with pytest.raises(InputError, match="y has 59 labels but the features have 60"):
        collapse_metrics(H, y[:-1])
    with pytest.raises(InputError, match="label -1"):
        collapse_metrics(H, np.where(y == 0, -1, y))
    with pytest.raises(InputError, match="label 3 but K=3"):
        collapse_metrics(H, y, K=3)
    with pytest.raises(InputError, match="integer class labels"):
        collapse_metrics(H, y + 0.5)
    with pytest.raises(DegenerateInputError, match=r"class\(es\) \[2\]"):
        collapse_metrics(H, np.where(y == 2, 3, y))
    with pytest.raises(DegenerateInputError, match="at least K=2"):
        collapse_metrics(H, np.zeros(60, dtype=int))
    Hn = H.copy()
    Hn[3, 2] = np.nan
    with pytest.raises(InputError, match="non-finite"):
        collapse_metrics(Hn, y)
    Hi = H.copy()
    Hi[0, 0] = np.inf
    with pytest.raises(InputError, match="H contains 1 non-finite"):
        pfc1(Hi, y)
    with pytest.raises(DegenerateInputError, match="all class means coincide"):
        collapse_metrics(np.ones((60, 7)), y)
    with pytest.raises(InputError, match=r"W must have shape \(K, d\) = \(4, 7\)"):
        collapse_metrics(H, y, W=np.ones((7, 4)))
    with pytest.raises(InputError, match=r"shape \(N, d\)"):
        collapse_metrics(H[:, :, None], y)
    with pytest.raises(InputError, match="labels y are required"):
        collapse_metrics(H)
    with pytest.raises(InputError, match="d >= K-1"):
        simplex_etf(5, 3)
    with pytest.raises(InputError, match="same shape"):
        alignment(H, H[:10])


def test_overflowing_sum_is_not_mistaken_for_inf():
    H, y = make_data(0, dtype=np.float32)
    H = H * np.float32(3e37)  # finite, but a float32 sum overflows
    collapse_metrics(H, y)  # must not raise


def test_accumulator_bad_use():
    H, y = make_data(0)
    acc = CollapseAccumulator(4)
    with pytest.raises(InputError, match="seen no data"):
        acc.compute()
    acc.update(H, y)
    with pytest.raises(InputError, match="earlier batches had d=7"):
        acc.update(H[:, :3], y)
    with pytest.raises(InputError, match="outside 0..K-1"):
        acc.update(H, y + 1)
    acc.end_first_pass()
    acc.update(H[:10], y[:10])
    with pytest.raises(InputError, match="pass 2 saw 10 samples"):
        acc.compute()
    with pytest.raises(InputError, match="different passes"):
        acc.merge(CollapseAccumulator(4).update(H, y))


# ------------------------------------------------------------------------------------------
# issue 12: scale, degeneracy, two-pass consistency, state dicts, label types
# ------------------------------------------------------------------------------------------
SCALE_FREE = ["pfc1", "pfc2", "pfc3", "ncc_accuracy", "nc1", "nc2_equinorm", "nc2_equiangular"]


@pytest.mark.parametrize("scale", [1e-300, 1e-200, 1e-150, 1e-120, 1e100, 1e150, 1e200, 1e300])
def test_metrics_are_scale_invariant_over_float64_range(scale):
    # issue 12: H * 1e100 gave pfc2 = 1 and nc1 = NaN; H * 1e-120 gave pfc2 = inf
    H, y = make_data(3, N=80, K=4, d=9)
    W, b = np.random.default_rng(1).standard_normal((4, 9)), np.random.default_rng(2).random(4)
    want = reference(H, y, W, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PFCWarning)  # tr_sigma_* leave float64's range
        got = collapse_metrics(H * scale, y, W, b * scale)
    assert_metrics_close(got, want, rtol=1e-9, keys=SCALE_FREE + ["nc3", "nc4"])
    tw = float(want["tr_sigma_w"]) * scale
    if 1e-145 < abs(scale) < 1e145:
        tw *= scale
        np.testing.assert_allclose(got["tr_sigma_w"], tw, rtol=1e-9)


def test_trace_outside_float64_range_warns():
    H, y = make_data(3, N=80, K=4, d=9)
    with pytest.warns(PFCWarning, match="tr_sigma_w"):
        m = collapse_metrics(H * 1e200, y)
    assert m["tr_sigma_w"] == np.inf
    np.testing.assert_allclose(m["pfc1"], reference(H, y)["pfc1"], rtol=1e-9)


def test_streaming_scale_grows_between_batches():
    # batches of very different magnitudes: the state is rescaled exactly as the maximum grows
    H, y = make_data(5, N=90, K=3, d=6)
    H = H * np.where(np.arange(90) < 45, 1e-100, 1.0)[:, None] * 1e120
    acc = CollapseAccumulator(3)
    for a in range(0, 90, 15):
        acc.update(H[a : a + 15], y[a : a + 15])
    acc.end_first_pass()
    for a in range(0, 90, 30):
        acc.update(H[a : a + 30], y[a : a + 30])
    want = reference(H / 1e120, y)
    assert_metrics_close(acc.compute(), want, rtol=1e-9, keys=SCALE_FREE)
    np.testing.assert_allclose(
        acc.class_means() / 1e120,
        np.stack([(H[y == k] / 1e120).mean(0) for k in range(3)]),
        rtol=1e-12,
        atol=1e-300,
    )


@pytest.mark.parametrize("offset", [0.0, 3.0, 1e6])
def test_class_means_subtracted_is_degenerate(offset):
    # issue 12: all class means 0 gave pfc1 = 1e33 instead of the degeneracy error
    H, y = make_data(0, N=120, K=4, d=8)
    mu = np.stack([H[y == k].mean(0) for k in range(4)])
    with pytest.raises(DegenerateInputError, match="all class means coincide"):
        collapse_metrics(H - mu[y] + offset, y)
    with pytest.raises(DegenerateInputError, match="all class means coincide"):
        CollapseAccumulator(4).update(H - mu[y] + offset, y).compute()


def test_pass2_on_other_data_raises():
    # issue 12: a second pass fed other data returned pfc1 = 147,934 unchecked
    H, y = make_data(0, N=200, K=4, d=8)
    H2, _ = make_data(1, N=200, K=4, d=8)
    acc = CollapseAccumulator(4).update(H, y).end_first_pass()
    acc.update(H2, y)
    with pytest.raises(InputError, match="pass 2 saw different data"):
        acc.compute()
    # same number of samples, other labels: the per-class counts differ
    acc = CollapseAccumulator(4).update(H, y).end_first_pass()
    acc.update(H, np.roll(y, 1) if (np.roll(y, 1) != y).any() else y[::-1])
    with pytest.raises(InputError, match="pass 2"):
        acc.compute()
    # larger values than anything pass 1 saw are refused at once
    acc = CollapseAccumulator(4).update(H, y).end_first_pass()
    with pytest.raises(InputError, match="larger than"):
        acc.update(H * 10, y)


def test_pass2_same_data_any_order_and_batching_is_accepted():
    H, y = make_data(2, N=150, K=5, d=6, dtype=np.float32)
    want = collapse_metrics(H, y)
    rng = np.random.default_rng(0)
    acc = CollapseAccumulator(5)
    for part in np.array_split(rng.permutation(150), 4):
        acc.update(H[part], y[part])
    acc.end_first_pass()
    for part in np.array_split(rng.permutation(150), 7):
        acc.update(H[part], y[part])
    assert_metrics_close(acc.compute(), want, rtol=1e-9)


def test_pass2_fingerprint_survives_state_dict_and_merge():
    H, y = make_data(2, N=120, K=4, d=6)
    a = CollapseAccumulator(4).update(H, y).end_first_pass()
    b = CollapseAccumulator.from_state_dict(a.state_dict())
    a.update(H[:60], y[:60])
    b.update(H[60:], y[60:])
    a.merge(CollapseAccumulator.from_state_dict(b.state_dict()))
    assert_metrics_close(a.compute(), collapse_metrics(H, y), rtol=1e-9)


@pytest.mark.parametrize(
    "sd, match",
    [
        ({}, "lacks key"),
        ({"K": 4}, "lacks key"),
        (5, "needs the dict"),
        ("state", "needs the dict"),
    ],
)
def test_from_state_dict_on_wrong_input(sd, match):
    with pytest.raises(InputError, match=match):
        CollapseAccumulator.from_state_dict(sd)


def test_from_state_dict_bad_values():
    H, y = make_data(0)
    sd = CollapseAccumulator(4).update(H, y).state_dict()
    with pytest.raises(InputError, match=r"\['means'\]"):
        CollapseAccumulator.from_state_dict({**sd, "means": np.zeros(3)})
    with pytest.raises(InputError, match="phase"):
        CollapseAccumulator.from_state_dict({**sd, "phase": 7})
    with pytest.raises(InputError, match="K"):
        CollapseAccumulator.from_state_dict({**sd, "K": "four"})
    sd2 = CollapseAccumulator(4).update(H, y).end_first_pass().state_dict()
    del sd2["S"]
    with pytest.raises(InputError, match="S"):
        CollapseAccumulator.from_state_dict(sd2)


@pytest.mark.parametrize(
    "y, K, exc, match",
    [
        (np.array(["a", "b"] * 30), None, InputError, "y must be a numeric array"),
        (np.array([0, 1] * 29 + ["a", "b"], dtype=object), None, InputError, "y must be"),
        ([0.0, 1.0, 2.5] * 20, None, InputError, "integer class labels"),
        (np.array([0, 1, 2, 3] * 15), 4.0, InputError, "K must be an integer"),
        (np.array([0, 1, 2, 3] * 15), "4", InputError, "K must be an integer"),
        (np.array([0, 1, 2, 3] * 15), True, InputError, "K must be an integer"),
        (np.array([0, 1, 2, 3] * 14 + [10**12] * 4), None, DegenerateInputError, "only 60"),
        (np.array([True, False] * 30), None, InputError, "integer class labels"),
    ],
)
def test_bad_labels_raise_toolkit_errors(y, K, exc, match):
    H, _ = make_data(0)
    with pytest.raises(exc, match=match):
        collapse_metrics(H, y, K=K)
    with pytest.raises(exc):
        pfc1(H, y, K=K)


def test_bad_labels_in_accumulator():
    H, _ = make_data(0)
    with pytest.raises(InputError, match="numeric array"):
        CollapseAccumulator(4).update(H, np.array(["a"] * 60))
    with pytest.raises(InputError, match="K must be an integer"):
        CollapseAccumulator(4.0)


# ------------------------------------------------------------------------------------------
# property tests (hypothesis): scale invariance; only toolkit errors on invalid input
# ------------------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=seeds,
    K=class_counts(5),
    d=st.integers(1, 9),
    s=st.integers(-150, 150),
    f32=st.booleans(),
)
def test_property_scaled_metrics_equal_unscaled(seed, K, d, s, f32):
    H, y = make_data(seed, N=6 * K + 5, K=K, d=d)
    if f32:
        H = H.astype(np.float32).astype(np.float64)  # exactly representable either way
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RankWarning)
        want = collapse_metrics(H, y)
        got = collapse_metrics(H * 10.0**s, y)
    # the scaled data are rounded once (H * 10**s), which moves each metric by ~1e-16 x its
    # condition number; NCC ties cannot flip at this data's margins
    assert_metrics_close(got, want, rtol=1e-9, atol=1e-12, keys=SCALE_FREE)


_junk = st.one_of(
    st.none(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=3),
    st.lists(st.one_of(st.integers(-3, 3), st.floats(), st.text(max_size=1)), max_size=8),
    st.builds(
        lambda n, d, v: np.full((n, d), v),
        st.integers(0, 4),
        st.integers(0, 3),
        st.sampled_from([0.0, 1.0, np.nan, np.inf, 1e308]),
    ),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    H=_junk, y=_junk, K=st.one_of(st.none(), st.integers(-2, 6), st.floats(), st.text(max_size=2))
)
def test_property_invalid_input_raises_only_toolkit_errors(H, y, K):
    from ufm.errors import PFCError

    for fn in (collapse_metrics, pfc1, ncc_accuracy):
        try:
            fn(H, y, K=K)
        except PFCError:
            pass
    try:
        CollapseAccumulator(K if K is not None else 3).update(H, y)
    except PFCError:
        pass


def test_chan_merge_equals_direct_class_means_and_scatter():
    """Merging two disjoint halves equals the per-class mean and scatter of the whole, computed
    directly (a class present on one side only, and a class absent from both, included)."""
    from ufm.metrics.accumulator import chan_merge

    rng = np.random.default_rng(3)
    K, d = 4, 5
    y = rng.choice([0, 1, 2], size=60)
    y[:30][y[:30] == 2] = 0  # class 2 only in the second half; class 3 nowhere
    X = rng.standard_normal((60, d)) + 100.0

    def part(Xp, yp):
        n = np.bincount(yp, minlength=K)
        m = np.zeros((K, d))
        ss = np.zeros(K)
        for k in range(K):
            if n[k]:
                m[k] = Xp[yp == k].mean(0)
                ss[k] = ((Xp[yp == k] - m[k]) ** 2).sum()
        return torch.from_numpy(n), torch.from_numpy(m), torch.from_numpy(ss)

    n, m, ss = chan_merge(*part(X[:30], y[:30]), *part(X[30:], y[30:]))
    n_ref, m_ref, ss_ref = part(X, y)
    np.testing.assert_array_equal(n.numpy(), n_ref.numpy())
    np.testing.assert_allclose(m.numpy(), m_ref.numpy(), rtol=1e-14)
    np.testing.assert_allclose(ss.numpy(), ss_ref.numpy(), rtol=1e-10)


def _tampered_states():
    rng = np.random.default_rng(0)
    H, y = rng.standard_normal((40, 6)), np.arange(40) % 4
    acc = CollapseAccumulator(4).update(H, y)
    sd1 = acc.state_dict()
    acc.end_first_pass()
    sd2 = acc.update(H, y).state_dict()
    return sd1, sd2


@pytest.mark.parametrize(
    "phase, key, change, match",
    [
        (1, "counts", lambda c: -c, "'counts' must hold counts >= 0"),
        (1, "counts", lambda c: c.double() + 0.5, "non-integer"),
        (1, "ss", lambda c: -c, "'ss' is a sum of squares and must be >= 0"),
        (1, "means", lambda c: c * np.nan, "'means' holds NaN"),
        (1, "maxabs", lambda c: -1.0, "'maxabs' must be >= 0"),
        (1, "scale_exp", lambda c: 1.5, "'scale_exp' must be an integer"),
        (2, "ss2", lambda c: -c, "'ss2' is a sum of squares"),
        (2, "S", lambda c: c * np.inf, "'S' holds NaN or inf"),
        (2, "correct", lambda c: 10**6, "'correct' = 1000000 exceeds n2"),
        (2, "fp_sq", lambda c: -c, "'fp_sq' is a sum of squares"),
        (2, "counts2", lambda c: -c, "'counts2' must hold counts >= 0"),
        (2, "fp_sum", lambda c: c[:, :2], "fp_sum/fp_sq. must be tensors of shapes"),
    ],
)
def test_from_state_dict_refuses_tampered_values(phase, key, change, match):
    """Negative counts or scatters, NaN, inconsistent fingerprints: impossible statistics were
    accepted and gave metrics; now a clear InputError naming the key."""
    sd = _tampered_states()[phase - 1]
    CollapseAccumulator.from_state_dict(sd)  # the untouched one loads
    with pytest.raises(InputError, match=match):
        CollapseAccumulator.from_state_dict({**sd, key: change(sd[key])})


def test_classifier_metrics_without_W_are_refused_clearly():
    """nc3(H, y, None) raised KeyError('nc3')."""
    rng = np.random.default_rng(0)
    H, y = rng.standard_normal((12, 4)), np.arange(12) % 3
    for f in (nc3, nc4):
        with pytest.raises(InputError, match=f"{f.__name__} needs the classifier weights W"):
            f(H, y, None)


@pytest.mark.parametrize(
    "bad, shown",
    [(1e20, "1e+20"), (-1e20, "-1e+20"), (np.inf, "inf"), (-np.inf, "-inf"), (2.0**70, "1.18")],
)
def test_huge_labels_are_reported_as_given(bad, shown):
    """Float labels beyond int64 were cast first and reported as -9223372036854775808."""
    rng = np.random.default_rng(0)
    H, y = rng.standard_normal((12, 4)), (np.arange(12) % 3).astype(float)
    y[5] = bad
    for f in (
        lambda: collapse_metrics(H, y),
        lambda: CollapseAccumulator(3).update(H, y),
        lambda: nc1(torch.as_tensor(H), torch.as_tensor(y)),
    ):
        with pytest.raises(InputError, match="label " + re.escape(shown)) as e:
            f()
        assert "9223372036854775808" not in str(e.value)


def test_uint64_labels_and_integer_features():
    rng = np.random.default_rng(0)
    H, y = rng.integers(0, 50, (12, 4)), np.arange(12) % 3
    ref = collapse_metrics(H.astype(float), y)
    for Hc in (H.astype(np.uint8), H.astype(np.int16), H.astype(np.uint32), H.astype(np.uint64)):
        got = collapse_metrics(Hc, y.astype(np.uint64))
        for k in ref:
            assert got[k] == pytest.approx(ref[k], rel=1e-12), k
    y_bad = y.astype(np.uint64)
    y_bad[3] = np.uint64(2**64 - 1)
    with pytest.raises(InputError, match="label 1.8446744073709552e"):
        collapse_metrics(H, y_bad)


@pytest.mark.filterwarnings("ignore")
@pytest.mark.parametrize("e", [-520, -1000, -1030, -1050, -1060])
def test_subnormal_features_are_measured(e):
    """max |H| < 2**-1022 (subnormal) raised OverflowError from math.ldexp, and the streaming
    accumulator gave a NaN scatter below 2**-511 (0 * inf in its rescale); the scale-free
    metrics of the (exactly representable) scaled data equal those of the data."""
    rng = np.random.default_rng(0)
    H0, y = np.round(rng.standard_normal((12, 4)) * 8) / 8, np.arange(12) % 3  # few bits
    ref = collapse_metrics(H0, y)
    got = collapse_metrics(H0 * 2.0**e, y)
    for k in ("pfc1", "pfc2", "nc1", "pfc3"):
        assert got[k] == pytest.approx(ref[k], rel=1e-9), k
    acc = CollapseAccumulator(3).update(H0 * 2.0**e, y)
    assert acc.compute()["pfc1"] == pytest.approx(ref["pfc1"], rel=1e-9)


def test_accumulator_from_statistics_equals_feeding_the_data():
    # the public start from given first-pass statistics reproduces the streamed metrics
    from ufm.metrics import CollapseAccumulator

    rng = np.random.default_rng(5)
    H, y = rng.standard_normal((90, 6)), np.arange(90) % 3
    ref = CollapseAccumulator(3).update(H, y).end_first_pass().update(H, y).compute()
    counts = np.bincount(y)
    means = np.stack([H[y == k].mean(0) for k in range(3)])
    ss = np.array([((H[y == k] - means[k]) ** 2).sum() for k in range(3)])
    acc = CollapseAccumulator.from_statistics(counts, means, ss)
    got = acc.end_first_pass().update(H, y).compute()
    for k in ("pfc1", "pfc2", "pfc3", "nc1"):
        np.testing.assert_allclose(got[k], ref[k], rtol=1e-10, atol=1e-12)
    assert acc.unit == 1.0 and set(acc.frozen) >= {"V", "dist2"}
    with pytest.raises(InputError, match="counts must be >= 0"):
        CollapseAccumulator.from_statistics(-counts, means)
    with pytest.raises(InputError, match="shape"):
        CollapseAccumulator.from_statistics(counts[:2], means)
    with pytest.raises(InputError, match="after end_first_pass"):
        CollapseAccumulator(3).frozen  # noqa: B018


def test_statistics_from_counts():
    from ufm.suffstats import SufficientStatistics

    st = SufficientStatistics.from_counts(np.array([3, 2, 4]), 5)
    assert st.N == 9 and st.d == 5 and np.all(st.sums == 0)
    with pytest.raises(InputError, match="counts"):
        SufficientStatistics.from_counts(np.array([3, -1]), 5)


@pytest.mark.parametrize("counts", [[3.5, 3], "ab", [np.nan, 3], [[3, 3]]])
def test_from_statistics_refuses_non_integer_counts(counts):
    from ufm.metrics import CollapseAccumulator

    with pytest.raises(InputError, match="counts"):
        CollapseAccumulator.from_statistics(counts, [[0.0, 1.0], [1.0, 0.0]])


def test_pass2_state_is_read_off_its_declaration():
    # merge, state_dict and its checks iterate PASS2_TENSORS / PASS2_SCALARS: every declared
    # sum is saved, restored and added by merge
    from ufm.metrics import CollapseAccumulator
    from ufm.metrics.accumulator import PASS2_SCALARS, PASS2_TENSORS

    rng = np.random.default_rng(4)
    H, y = rng.standard_normal((40, 3)), np.arange(40) % 4
    a = CollapseAccumulator(4).update(H, y).end_first_pass()
    b = CollapseAccumulator.from_state_dict(a.state_dict())
    a.update(H[:25], y[:25])
    b.update(H[25:], y[25:])
    sd_a, sd_b = a.state_dict(), b.state_dict()
    a.merge(b)
    names = [n for n, _, _ in PASS2_TENSORS] + list(PASS2_SCALARS)
    assert set(names) <= set(a.state_dict())
    for n in names:
        np.testing.assert_allclose(
            np.asarray(a.state_dict()[n], dtype=float),
            np.asarray(sd_a[n], dtype=float) + np.asarray(sd_b[n], dtype=float),
        )
    ref = CollapseAccumulator(4).update(H, y).end_first_pass().update(H, y).compute()
    for k in ("nc1", "pfc3", "cdnv"):
        np.testing.assert_allclose(a.compute()[k], ref[k], rtol=1e-12)


def test_a_state_dict_in_the_old_layout_still_loads():
    # the keys written field by field before the state was declared in PASS1/PASS2 tables
    import torch

    from ufm.metrics import CollapseAccumulator

    rng = np.random.default_rng(6)
    H, y = rng.standard_normal((30, 3)), np.arange(30) % 3
    ref = CollapseAccumulator(3).update(H, y).end_first_pass().update(H, y)
    new = ref.state_dict()
    old = {
        k: new[k]
        for k in ("K", "rank_tol", "phase", "d", "counts", "means", "ss", "W", "b", "S", "ss2")
        + ("n2", "correct", "mismatch", "scale_exp", "maxabs", "counts2", "fp_sum", "fp_sq")
    }
    assert set(new) - set(old) == {"auto_scale"}  # the one key added since
    got = CollapseAccumulator.from_state_dict(old).compute()
    for k, v in ref.compute().items():
        np.testing.assert_allclose(got[k], v, rtol=1e-12, err_msg=k)
    # an older dict without the pass-2 fingerprint loads too
    older = {k: v for k, v in old.items() if k not in ("counts2", "fp_sum", "fp_sq")}
    assert isinstance(CollapseAccumulator.from_state_dict(older).counts2, torch.Tensor)
