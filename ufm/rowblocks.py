"""Streaming passes split between threads: :func:`map_row_blocks` and its persistent pool.

The thread *count* comes from the policy of :mod:`ufm.threads` (what the enclosing call was
granted); this module only splits a pass's rows into contiguous blocks and runs them on the
calling thread plus a pool of worker threads, with BLAS and torch held at one thread inside the
blocks. Every streaming pass over rows (the collapse accumulator, the sufficient statistics, the
statistics solver's one-pass metrics) uses it; no other module keeps a thread pool.
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from .errors import InputError
from .threads import CORES, check_thread_count, thread_scope, torch_threads

__all__ = ["map_row_blocks", "MIN_BLOCK_ELEMS", "BLOCKS_PER_THREAD"]

_R = TypeVar("_R")

#: Fewest elements (rows x width) a block of :func:`map_row_blocks` gets: below this a second
#: thread costs more than it saves (2^21: 512 rows at d = 4,096, 32,768 rows at d = 64).
MIN_BLOCK_ELEMS = 1 << 21


def map_row_blocks(
    n_rows: int,
    fn: Callable[[int, int], _R],
    *,
    width: int = 1,
    n_threads: int | None = None,
    min_rows: int | None = None,
) -> list[_R]:
    """Run ``fn(start, stop)`` on contiguous row blocks of ``0..n_rows``, split between threads.

    A streaming pass of small operations per chunk (products with ``K``-wide matrices, row
    gathers) gains nothing from a multi-threaded BLAS, whose threads only split each small
    product; splitting the *rows* between threads does gain. Up to ``BLOCKS_PER_THREAD``
    blocks per thread are taken in turn by the calling thread and ``n_threads - 1`` threads of
    a persistent pool, with torch and every BLAS held at one thread (numpy, BLAS, torch and
    the numba kernels release the GIL); the caller merges the per-block results. The blocks,
    and so the results, depend only on ``n_rows``, the thread count and ``min_rows``, never
    on which thread ran which block.

    Parameters
    ----------
    n_rows : int
        Rows to cover, ``>= 0``.
    fn : callable ``(start, stop) -> R``
        Processes rows ``start:stop`` with its own buffers and returns its partial result.
    width : int
        Elements per row (``d`` for features ``(N, d)``): sets the default ``min_rows``.
    n_threads : int, optional
        Threads to use; default the count the enclosing call was granted by the thread policy
        (torch's current ``get_num_threads()``).
    min_rows : int, optional
        Fewest rows per block; default ``max(64, MIN_BLOCK_ELEMS // width)``. Fewer blocks
        (and threads) are used when ``n_rows`` is small.

    Returns
    -------
    list of R
        One result per block, in row order (a single ``[fn(0, n_rows)]`` when one thread is
        used; then nothing about the thread settings is changed).

    Raises
    ------
    InputError
        ``fn`` not callable, or a count out of range.
    """
    if not callable(fn):
        raise InputError(f"fn must be a callable fn(start, stop), got {type(fn).__name__}")
    n_rows = _check_count(n_rows, "n_rows", 0)
    width = _check_count(width, "width", 1)
    if n_threads is None:
        n_threads = torch_threads() or 1
    n_threads = check_thread_count(n_threads, "n_threads")
    if min_rows is None:
        min_rows = max(64, MIN_BLOCK_ELEMS // width)
    min_rows = _check_count(min_rows, "min_rows", 1)
    n_workers = max(1, min(n_threads, n_rows // min_rows))
    if n_workers == 1:
        return [fn(0, n_rows)]
    # a few blocks per thread, taken from a shared counter: a thread slowed down (by another
    # process, or a busier sibling core) takes fewer blocks instead of holding up the call
    n_blocks = max(n_workers, min(n_workers * BLOCKS_PER_THREAD, n_rows // min_rows))
    bounds = [n_rows * i // n_blocks for i in range(n_blocks + 1)]
    if threading.current_thread().name.startswith(_POOL_PREFIX):
        # already inside a block: run inline, so that nested calls cannot exhaust the pool
        return [fn(bounds[i], bounds[i + 1]) for i in range(n_blocks)]
    results: list[Any] = [None] * n_blocks
    counter = itertools.count()  # next() is atomic under the GIL

    def work() -> None:
        for i in iter(counter.__next__, None):
            if i >= n_blocks:
                return
            results[i] = fn(bounds[i], bounds[i + 1])

    with thread_scope(1):
        # this thread works too, beside n_workers - 1 threads of the persistent pool: no thread
        # is started per call
        futures = [_pool().submit(work) for _ in range(n_workers - 1)]
        try:
            work()
        finally:
            errors = [f.exception() for f in futures]  # wait for every worker, even on error
        for exc in errors:
            if exc is not None:
                raise exc
    return results


#: Blocks per thread in :func:`map_row_blocks` (dynamic balancing between the threads).
BLOCKS_PER_THREAD = 4


_POOL_PREFIX = "pfc-rows"
_pool_lock = threading.Lock()
_pool_ex: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    """The process's worker threads for :func:`map_row_blocks` (started on first use)."""
    global _pool_ex
    with _pool_lock:
        if _pool_ex is None:
            _pool_ex = ThreadPoolExecutor(max(CORES - 1, 1) * 2, thread_name_prefix=_POOL_PREFIX)
        return _pool_ex


def _forget_pool_after_fork() -> None:
    # a forked child inherits the executor but not its threads: work submitted to it would
    # never run, so the child starts a pool of its own on first use
    global _pool_ex, _pool_lock
    _pool_ex, _pool_lock = None, threading.Lock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool_after_fork)


def _check_count(v: Any, name: str, low: int) -> int:
    if isinstance(v, bool) or not hasattr(v, "__index__") or int(v) < low:
        raise InputError(f"{name} must be an integer >= {low}, got {v!r}")
    return int(v)
