"""The thread policy: choice by size, scoping and restoring, overrides, nesting, cost."""

from __future__ import annotations

import importlib
import os
import time

import numpy as np
import pytest
import torch
from threadpoolctl import threadpool_info

import ufm
from ufm.errors import InputError

# `ufm.threads` is the context manager; the module is reached through importlib
T = importlib.import_module("ufm.threads")
R = importlib.import_module("ufm.rowblocks")


def blas_threads() -> list[int]:
    return [i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"]


@pytest.fixture(autouse=True)
def _clean(monkeypatch):
    monkeypatch.delenv(T.ENV_VAR, raising=False)
    ufm.set_threads(None)
    before = torch.get_num_threads()
    yield
    ufm.set_threads(None)
    torch.set_num_threads(before)


def recorder():
    seen = {}

    @T.thread_policy("H")
    def probe(H):
        seen["torch"] = torch.get_num_threads()
        seen["blas"] = blas_threads()
        return seen

    return probe


def test_small_work_runs_single_threaded_and_restores():
    torch.set_num_threads(2)
    before_blas = blas_threads()
    seen = recorder()(np.zeros((10, 10)))
    assert seen["torch"] == 1
    assert all(n == 1 for n in seen["blas"])
    assert torch.get_num_threads() == 2
    assert blas_threads() == before_blas


def test_large_work_never_exceeds_configured(monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setattr(T, "free_cores", lambda: 8)
    big = np.broadcast_to(np.zeros(1), (T.SMALL_WORK + 1,))
    seen = recorder()(big)
    assert seen["torch"] == 2  # auto only lowers the count in effect
    torch.set_num_threads(1)
    assert recorder()(big)["torch"] == 1


def test_large_work_on_a_busy_machine_is_single_threaded(monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setattr(T, "free_cores", lambda: 1)
    big = np.broadcast_to(np.zeros(1), (T.SMALL_WORK + 1,))
    assert recorder()(big)["torch"] == 1


def test_choose_threads():
    assert T.choose_threads(10, configured=16) == 1
    assert T.choose_threads(T.SMALL_WORK * 10, configured=1) == 1
    assert 1 <= T.choose_threads(T.SMALL_WORK * 10, configured=16) <= 16


def test_explicit_overrides_and_precedence(monkeypatch):
    torch.set_num_threads(1)
    probe = recorder()
    H = np.zeros((2, 2))
    monkeypatch.setenv(T.ENV_VAR, "3")
    assert ufm.get_threads() == 3
    assert probe(H)["torch"] == 3  # explicit counts are set exactly, even for small work
    ufm.set_threads(2)
    assert probe(H)["torch"] == 2
    with ufm.threads(4):
        assert ufm.get_threads() == 4
        assert probe(H)["torch"] == 4
        with ufm.threads(None):  # None leaves the outer setting
            assert ufm.get_threads() == 4
    assert ufm.get_threads() == 2
    assert torch.get_num_threads() == 1
    ufm.set_threads(None)
    assert ufm.get_threads() == 3  # back to the environment


def test_inherit_leaves_settings_alone():
    torch.set_num_threads(2)
    with ufm.threads("inherit"):
        assert recorder()(np.zeros((2, 2)))["torch"] == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "many", True, [2]])
def test_bad_settings(bad, monkeypatch):
    with pytest.raises(InputError, match="positive integer|>= 1"):
        ufm.set_threads(bad)
    with pytest.raises(InputError):
        with ufm.threads(bad):
            pass
    if isinstance(bad, int | str) and not isinstance(bad, bool):
        monkeypatch.setenv(T.ENV_VAR, str(bad))
        with pytest.raises(InputError, match="PFC_THREADS"):
            ufm.get_threads()


def test_nested_calls_keep_outer_choice_and_exceptions_restore(monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setattr(T, "free_cores", lambda: 2)
    inner_seen = {}

    @T.thread_policy("H")
    def inner(H):
        inner_seen["torch"] = torch.get_num_threads()

    @T.thread_policy("H")
    def outer(H):
        inner(np.broadcast_to(0.0, (T.SMALL_WORK * 2,)))  # alone it would get 2 threads
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        outer(np.zeros(3))  # small: one thread
    assert inner_seen["torch"] == 1
    assert torch.get_num_threads() == 2
    inner(np.broadcast_to(0.0, (T.SMALL_WORK * 2,)))
    assert inner_seen["torch"] == 2


def test_entry_points_are_decorated():
    import mufm

    meas = importlib.import_module("resnet_pfc.measure")
    import ufm.metrics as M

    for fn in (
        ufm.solve,
        ufm.certify,
        mufm.solve,
        mufm.certify,
        meas.measure,
        M.collapse_metrics,
        M.pfc1,
        M.nc1,
        M.CollapseAccumulator.update,
        M.CollapseAccumulator.compute,
        M.LineAccumulator.update,
    ):
        assert getattr(fn, "__wrapped_thread_policy__", False), fn


def test_small_metrics_and_solve_run_single_threaded(monkeypatch):
    seen = []
    real = torch.set_num_threads

    def spy(n):
        seen.append(n)
        real(n)

    torch.set_num_threads(2)
    monkeypatch.setattr(torch, "set_num_threads", spy)
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(3), 10)
    ufm.collapse_metrics(rng.standard_normal((30, 4)) + y[:, None], y)
    assert seen[:1] == [1] and seen[-1] == 2


def test_scope_cost_is_small():
    # the controller is cached: entering and leaving a scope that changes the counts costs
    # microseconds, not the milliseconds of building a threadpoolctl controller
    torch.set_num_threads(2)

    @T.thread_policy("H")
    def noop(H):
        return None

    H = np.zeros((2, 2))
    noop(H)
    n = 2000
    t0 = time.perf_counter()
    for _ in range(n):
        noop(H)
    per_call = (time.perf_counter() - t0) / n
    assert per_call < 1e-3, per_call


def test_map_row_blocks_covers_rows_in_order_and_restores_settings():
    """Blocks are contiguous, cover 0..n once, come back in row order; inside them torch runs
    one thread; afterwards the settings are what they were; an error in a block propagates."""
    seen = []

    def fn(a, b):
        seen.append(torch.get_num_threads())
        return (a, b)

    before = torch.get_num_threads()
    out = R.map_row_blocks(1000, fn, n_threads=3, min_rows=100)
    assert len(out) == 10  # min(3 x BLOCKS_PER_THREAD, 1000 // 100) blocks
    assert out[0][0] == 0 and out[-1][1] == 1000
    assert all(p[1] == q[0] for p, q in zip(out, out[1:], strict=False))
    assert all(b - a >= 100 for a, b in out)
    assert seen == [1] * 10 and torch.get_num_threads() == before
    assert R.map_row_blocks(1000, fn, n_threads=3, min_rows=600) == [(0, 1000)]
    assert R.map_row_blocks(0, fn, n_threads=4) == [(0, 0)]
    assert len(R.map_row_blocks(1000, fn, n_threads=2, min_rows=10)) == 2 * R.BLOCKS_PER_THREAD
    # the default block size is in elements: wide rows split sooner
    assert len(R.map_row_blocks(1000, fn, n_threads=2, width=R.MIN_BLOCK_ELEMS // 100)) > 1
    assert len(R.map_row_blocks(1000, fn, n_threads=2, width=1)) == 1
    for kw, name in (
        ({"n_threads": 0}, "n_threads"),
        ({"width": 0}, "width"),
        ({"min_rows": 1.5}, "min_rows"),
    ):
        with pytest.raises(InputError, match=name):
            R.map_row_blocks(10, fn, **kw)
    with pytest.raises(InputError, match="n_rows"):
        R.map_row_blocks(-1, fn)
    with pytest.raises(InputError, match="callable"):
        R.map_row_blocks(10, "fn")

    def bad(a, b):
        raise ValueError(f"block {a}")

    with pytest.raises(ValueError, match="block"):
        R.map_row_blocks(1000, bad, n_threads=2, min_rows=10)
    assert torch.get_num_threads() == before


def test_map_row_blocks_balances_a_slow_thread():
    """The blocks go to whichever thread is free: a thread held up takes fewer blocks, and
    the results still come back in row order.

    Deterministic (no sleeps): the calling thread's first block waits until the pool thread
    has taken every other block, so the split is 1 + 7 whatever the machine's load.
    """
    import threading

    who = {}
    others_done = threading.Event()
    lock = threading.Lock()

    def fn(a, b):
        name = threading.current_thread().name
        if not name.startswith("pfc-rows"):
            # generous guard only against a deadlock; never reached when the pool works
            assert others_done.wait(timeout=120), "the pool thread took no blocks"
        with lock:
            who[a] = name
            if sum(n.startswith("pfc-rows") for n in who.values()) == 7:
                others_done.set()
        return a

    out = R.map_row_blocks(800, fn, n_threads=2, min_rows=100)
    assert out == sorted(out) and len(out) == 8
    assert sum(not n.startswith("pfc-rows") for n in who.values()) == 1


def test_free_cores_uses_the_smaller_of_lagging_average_and_runnable_now(monkeypatch):
    """A machine whose other job just ended (load average still 1.5, nothing else runnable)
    has every core free; one whose other job is computing now (runnable) does not, whatever
    the average says."""
    monkeypatch.setattr(T, "_CORES", 2)
    monkeypatch.setattr(T._own, "update", lambda: 0.0)
    monkeypatch.setattr(T.os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    monkeypatch.setattr(T, "_own_runnable", lambda: 1)
    monkeypatch.setattr(T, "_runnable_now", lambda: 1)  # only this thread
    assert T.free_cores() == 2
    monkeypatch.setattr(T, "_runnable_now", lambda: 2)  # another task runs now
    assert T.free_cores() == 1
    monkeypatch.setattr(T.os, "getloadavg", lambda: (0.1, 0.1, 0.1))
    monkeypatch.setattr(T, "_runnable_now", lambda: 3)  # just started: the average decides
    assert T.free_cores() == 2
    monkeypatch.setattr(T, "_runnable_now", lambda: None)  # no /proc/loadavg
    monkeypatch.setattr(T.os, "getloadavg", lambda: (1.5, 1.0, 1.0))
    assert T.free_cores() == 1
    assert isinstance(T._runnable_now(), int | None)
    # runnable threads of this process (OpenMP workers still spinning) are not other work
    monkeypatch.setattr(T, "_runnable_now", lambda: 2)
    monkeypatch.setattr(T, "_own_runnable", lambda: 2)
    assert T.free_cores() == 2


def test_own_runnable_counts_this_processes_busy_threads():
    """A thread of this process spinning in numpy (GIL released) is counted as runnable."""
    import threading

    stop = threading.Event()
    a = np.random.default_rng(0).standard_normal((300, 300))

    def spin():
        while not stop.is_set():
            a @ a

    t = threading.Thread(target=spin)
    t.start()
    try:
        seen = max(T._own_runnable() for _ in range(200))
    finally:
        stop.set()
        t.join()
    assert 1 <= T._own_runnable() <= len(os.listdir("/proc/self/task"))
    assert seen >= 2


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_map_row_blocks_works_in_a_forked_child():
    """A child forked after the pool started (e.g. a fork-based DataLoader worker) gets a pool
    of its own instead of waiting forever on the parent's threads, which it does not have."""
    import subprocess
    import sys

    code = (
        "import os, sys, ufm\n"
        "import ufm.rowblocks as R\n"
        "R.map_row_blocks(1000, lambda a, b: a, n_threads=2, min_rows=100)\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    out = R.map_row_blocks(1000, lambda a, b: a, n_threads=2, min_rows=100)\n"
        "    os._exit(0 if len(out) == 8 else 3)\n"
        "sys.exit(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))\n"
    )
    res = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True)
    assert res.returncode == 0, res.stderr.decode()


@pytest.mark.parametrize("excess", [1, 2048, 10**6])
def test_thread_counts_are_bounded(excess, monkeypatch):
    """Thousands of threads segfaulted OpenBLAS (rc 139): every setting is capped at 4 x the
    usable cores with a clear error, and the cap itself is accepted."""
    assert T.MAX_THREADS == 4 * T._CORES
    too_many = T.MAX_THREADS + excess
    with pytest.raises(InputError, match=rf"n must be <= {T.MAX_THREADS}.*got {too_many}"):
        ufm.set_threads(too_many)
    with pytest.raises(InputError, match="<= "):
        with ufm.threads(too_many):
            pass
    with pytest.raises(InputError, match="n_threads must be <="):
        R.map_row_blocks(10, lambda a, b: a, n_threads=too_many)
    monkeypatch.setenv(T.ENV_VAR, str(too_many))
    with pytest.raises(InputError, match=f"PFC_THREADS must be <= {T.MAX_THREADS}"):
        ufm.get_threads()
    monkeypatch.setenv(T.ENV_VAR, str(T.MAX_THREADS))
    assert ufm.get_threads() == T.MAX_THREADS
    ufm.set_threads(T.MAX_THREADS)
    assert ufm.get_threads() == T.MAX_THREADS
    ufm.set_threads(None)
    assert T.check_thread_count(np.int64(1)) == 1
