"""Single-threaded BLAS for the many tiny solves of the checks.

On a loaded machine, multi-threaded BLAS on ``10 x 10`` problems spends its time waiting for
threads (measured: a small MUFM solve took 250 ms with default threading, 20 ms with one
thread). The checks therefore limit BLAS/OpenMP pools to one thread while they run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def single_thread_blas() -> Iterator[None]:
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl ships with scikit-learn
        yield
        return
    with threadpool_limits(limits=1):
        yield
