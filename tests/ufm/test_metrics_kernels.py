"""ufm.metrics.kernels: the fused numba loops against direct numpy references, and the metrics
computed with and without them."""

from __future__ import annotations

import importlib
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import ufm
from ufm.errors import InputError
from ufm.metrics import CollapseAccumulator, collapse_metrics, kernels

pytestmark = pytest.mark.skipif(not kernels.available(), reason="numba is not installed")

TOL = {np.float32: 1e-12, np.float64: 1e-12}


@pytest.fixture
def torch_path():
    """Run a block with the kernels switched off, restoring the default afterwards."""
    kernels.set_enabled(False)
    yield
    kernels.set_enabled(None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_class_sums_matches_add_at(dtype):
    rng = np.random.default_rng(0)
    K, n, d = 4, 37, 9
    H = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, K, n).astype(np.int64)
    sums, counts = np.ones((K, d)), np.arange(K, dtype=np.int64)  # added to, not overwritten
    kernels.class_sums(H, y, 0.25, sums, counts)
    ref = np.ones((K, d))
    np.add.at(ref, y, 0.25 * H.astype(np.float64))
    np.testing.assert_allclose(sums, ref, rtol=TOL[dtype], atol=1e-15)
    np.testing.assert_array_equal(counts, np.arange(K) + np.bincount(y, minlength=K))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("n", [1, 4, 7, 20])
def test_project_matches_direct(dtype, n):
    """Every row count (the kernel tiles rows in fours) and a padded column block."""
    rng = np.random.default_rng(n)
    K, d, c = 3, 11, 8
    H = rng.standard_normal((n, d)).astype(dtype)
    y = rng.integers(0, K, n).astype(np.int64)
    means = rng.standard_normal((K, d))
    VT = np.zeros((c, d))
    VT[:6] = rng.standard_normal((6, d))
    Q, sq = np.full((n, c), np.nan), np.full(n, np.nan)
    kernels.project(H, y, 2.0, means, VT, Q, sq)
    dev = means[y] - 2.0 * H.astype(np.float64)
    np.testing.assert_allclose(Q, dev @ VT.T, rtol=1e-13, atol=1e-14)
    np.testing.assert_array_equal(Q[:, 6:], 0.0)
    np.testing.assert_allclose(sq, (dev * dev).sum(1), rtol=1e-14)


def test_kernels_reject_bad_arrays():
    H = np.zeros((4, 3), np.float32)
    y = np.zeros(4, np.int64)
    with pytest.raises(InputError, match="C-contiguous"):
        kernels.class_sums(H.T, y, 1.0, np.zeros((2, 4)), np.zeros(2, np.int64))
    with pytest.raises(InputError, match="y must be int64"):
        kernels.class_sums(H, y.astype(np.int32), 1.0, np.zeros((2, 3)), np.zeros(2, np.int64))
    with pytest.raises(InputError, match="sums must be"):
        kernels.class_sums(H, y, 1.0, np.zeros((2, 3), np.float32), np.zeros(2, np.int64))
    with pytest.raises(InputError, match="counts must be"):
        kernels.class_sums(H, y, 1.0, np.zeros((2, 3)), np.zeros(3, np.int64))
    for bad in (np.array([0, 1, 2, 0]), np.array([0, -1, 0, 0])):
        with pytest.raises(InputError, match="y must lie in 0..1"):
            kernels.class_sums(H, bad, 1.0, np.zeros((2, 3)), np.zeros(2, np.int64))
        with pytest.raises(InputError, match="y must lie in 0..1"):
            kernels.project(
                H, bad, 1.0, np.zeros((2, 3)), np.zeros((4, 3)), np.zeros((4, 4)), np.zeros(4)
            )
    Q, sq = np.zeros((4, 4)), np.zeros(4)
    with pytest.raises(InputError, match="means must be"):
        kernels.project(H, y, 1.0, np.zeros((2, 5)), np.zeros((4, 3)), Q, sq)
    with pytest.raises(InputError, match="VT must have"):
        kernels.project(H, y, 1.0, np.zeros((2, 3)), np.zeros((3, 3)), Q[:, :3].copy(), sq)
    with pytest.raises(InputError, match="Q must be"):
        kernels.project(H, y, 1.0, np.zeros((2, 3)), np.zeros((4, 3)), np.zeros((4, 8)), sq)
    with pytest.raises(InputError, match="sqnorm must be"):
        kernels.project(H, y, 1.0, np.zeros((2, 3)), np.zeros((4, 3)), Q, np.zeros(3))
    with pytest.raises(InputError, match="flag must be"):
        kernels.set_enabled("yes")


def test_switches(torch_path):
    assert not kernels.use_for(kernels.MIN_ELEMS)
    kernels.set_enabled(True)
    assert kernels.use_for(1)
    kernels.set_enabled(None)
    assert kernels.use_for(kernels.MIN_ELEMS) and not kernels.use_for(kernels.MIN_ELEMS - 1)
    code = "from ufm.metrics import kernels; print(kernels.use_for(2**30))"
    env = {"UFM_KERNELS": "0", "PATH": ""}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env=env | {"PYTHONPATH": ":".join(sys.path)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "False"


def _both(fn):
    try:
        kernels.set_enabled(True)
        on = fn()
        kernels.set_enabled(False)
        off = fn()
    finally:
        kernels.set_enabled(None)
    return on, off


@pytest.mark.filterwarnings("ignore::ufm.errors.RankWarning")
@settings(max_examples=30, deadline=None)
@given(
    K=st.integers(2, 5),
    n=st.integers(1, 40),
    d=st.integers(1, 70),
    dtype=st.sampled_from([np.float32, np.float64]),
    scale=st.sampled_from([1e-30, 1e-3, 1.0, 1e3, 1e30]),
    spread=st.sampled_from([1e-6, 1e-2, 1.0]),
    classifier=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_metrics_agree_with_and_without_kernels(K, n, d, dtype, scale, spread, classifier, seed):
    """Every metric, collapsed or not, with or without a classifier, at any scale."""
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(K), rng.integers(0, K, n)])
    H = (rng.standard_normal((K, d))[y] + spread * rng.standard_normal((len(y), d))) * scale
    H = H.astype(dtype)
    W = rng.standard_normal((K, d)) / scale if classifier else None
    b = rng.standard_normal(K) if classifier else None
    on, off = _both(lambda: collapse_metrics(H, y, W, b))
    assert on.keys() == off.keys()
    for k in on:
        np.testing.assert_allclose(on[k], off[k], rtol=1e-9, atol=1e-12, err_msg=k)


def test_metrics_exact_against_float64_reference():
    """Float32 features: the kernels' metrics equal a direct float64 d x d computation."""
    rng = np.random.default_rng(3)
    K, n, d = 4, 300, 40
    y = np.repeat(np.arange(K), n)
    H = (5 * rng.standard_normal((K, d))[y] + 1e-3 * rng.standard_normal((K * n, d))).astype(
        np.float32
    )
    X = H.astype(np.float64)
    mu = np.stack([X[y == k].mean(0) for k in range(K)])
    dev = X - mu[y]
    sw = dev.T @ dev / len(X)
    M = mu - mu.mean(0)
    sb = M.T @ M / K
    nc1 = np.trace(sw @ np.linalg.pinv(sb, rcond=1e-10)) / K
    pfc1 = np.trace(sw) / np.trace(sb)
    kernels.set_enabled(True)
    try:
        got = collapse_metrics(H, y)
    finally:
        kernels.set_enabled(None)
    np.testing.assert_allclose(got["nc1"], nc1, rtol=1e-9)
    np.testing.assert_allclose(got["pfc1"], pfc1, rtol=1e-9)


def test_streaming_accumulator_agrees(torch_path):
    """Batches through update() (both passes) give the same result with the kernels."""
    rng = np.random.default_rng(5)
    K, d = 3, 17
    y = np.tile(np.arange(K), 50)
    H = (rng.standard_normal((K, d))[y] + 0.1 * rng.standard_normal((len(y), d))).astype(np.float32)

    def run():
        acc = CollapseAccumulator(K)
        for p in range(2):
            for s in range(0, len(y), 40):
                acc.update(H[s : s + 40], y[s : s + 40])
            if p == 0:
                acc.end_first_pass()
        return acc.compute()

    off = run()
    kernels.set_enabled(True)
    on = run()
    for k in on:
        np.testing.assert_allclose(on[k], off[k], rtol=1e-10, atol=1e-14, err_msg=k)


def test_threaded_blocks_agree(monkeypatch):
    """Rows split between two threads (map_row_blocks) give the single-thread result.

    Deterministic under load: which thread runs a block depends on scheduling, so the test
    checks the split itself (the row blocks the kernel saw, a function of the row count and the
    thread count only), never which thread picked them up.
    """
    th = importlib.import_module("ufm.rowblocks")
    monkeypatch.setattr(th, "MIN_BLOCK_ELEMS", 64)
    monkeypatch.setattr(kernels, "MIN_ELEMS", 1)
    rng = np.random.default_rng(7)
    K, d = 5, 32
    y = rng.integers(0, K, 4000)
    y[:K] = np.arange(K)
    H = rng.standard_normal((len(y), d)).astype(np.float32) + y[:, None]
    rows: list[int] = []
    real = kernels.project

    def spy(*args):
        rows.append(len(args[0]))
        real(*args)

    monkeypatch.setattr(kernels, "project", spy)
    with ufm.threads(1):
        one = collapse_metrics(H, y)
    rows_one, rows[:] = list(rows), []
    with ufm.threads(2):
        two = collapse_metrics(H, y)
    assert sum(rows) == sum(rows_one)  # every row projected once either way
    assert len(rows) > len(rows_one)  # in more, smaller blocks: the rows were split
    for k in one:
        np.testing.assert_allclose(two[k], one[k], rtol=1e-11, atol=1e-14, err_msg=k)


def test_one_pass_tracked_scatter_agrees(torch_path):
    """Pass 1 alone (scatter tracked batch by batch, Chan-merged) gives the same metrics with
    the kernels, and its within-class scatter equals the direct one."""
    rng = np.random.default_rng(11)
    K, d = 4, 23
    y = np.tile(np.arange(K), 60)
    H = (rng.standard_normal((K, d))[y] + 1e-3 * rng.standard_normal((len(y), d))).astype(
        np.float32
    )

    def run():
        acc = CollapseAccumulator(K)
        for s in range(0, len(y), 50):
            acc.update(H[s : s + 50], y[s : s + 50])
        return acc

    off = run()
    kernels.set_enabled(True)
    on = run()
    X = H.astype(np.float64)
    mu = np.stack([X[y == k].mean(0) for k in range(K)])
    ss = np.array([((X[y == k] - mu[k]) ** 2).sum() for k in range(K)])
    for acc in (on, off):
        got = acc.ss.numpy() / acc._s**2
        np.testing.assert_allclose(got, ss, rtol=1e-10)
    a, b = on.compute(), off.compute()
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-10, atol=1e-14, err_msg=k)
