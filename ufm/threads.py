r"""Thread policy: how many CPU threads each public entry point uses.

BLAS (OpenBLAS, MKL) and torch start one thread per core by default. For small problems the
threads cost far more than they save: their wake-up and synchronisation dominate operations on
arrays of a few thousand elements, and on a machine whose cores are busy with other work the
spinning threads fight the other jobs. Measured on the 2-core development machine, idle:
``mufm.solve`` on ``K=10, n=100, d=64`` ran 3.2 s with the default two OpenBLAS threads and
0.07 s with one. Every public entry point of the toolkit (metrics and accumulators, ``solve``,
``certify``, the ResNet measurement) therefore picks its thread count from the size of its work,
sets it for the duration of the call, and restores the previous settings afterwards.

The policy (``"auto"``, the default)
------------------------------------
With ``work`` the entry point's estimate of the elements touched per operation (``N d`` for
features ``(N, d)``):

.. math::

    n_\text{threads} = \begin{cases} 1 & \text{work} < \texttt{SMALL\_WORK} \\
    \min(n_\text{configured}, n_\text{free}) & \text{otherwise} \end{cases}

where ``n_configured`` is the thread count in effect when the call starts (torch's
``get_num_threads`` and each BLAS library's own count: the policy only ever *lowers* them, so
``OMP_NUM_THREADS=1`` or a user's ``torch.set_num_threads`` stay respected) and ``n_free`` is
the number of cores not busy with other processes: the number of usable cores minus the 1-minute
load average, less this process's own share of that load (tracked as an exponential average of
its CPU time with the kernel's 60 s time constant), or minus the number of other tasks runnable
at the moment of the call when that is smaller (the average lags a minute behind a machine
whose other jobs have just ended). On a machine shared with other jobs this keeps one thread;
on an idle machine large work gets every core.

Overrides, strongest first
--------------------------
- ``with ufm.threads(n): ...`` for a block of code (per thread / async context);
- ``ufm.set_threads(n)`` for the whole process (``None`` restores the default);
- the environment variable ``PFC_THREADS``, read at each call.

``n`` may be a positive integer (exactly that many threads for BLAS and torch), ``"auto"``
(the policy above) or ``"inherit"`` (leave the process's settings alone: the toolkit does not
touch thread counts at all).

Nested calls (``solve`` computing metrics, ``certify`` calling ``solve``) keep the outermost
call's choice, at no cost. The settings of BLAS and torch are process-wide: two Python threads
that enter toolkit calls concurrently may see each other's choice (never a wrong result, only
a different speed).

>>> import ufm
>>> ufm.set_threads(1)              # every toolkit call single-threaded    # doctest: +SKIP
>>> with ufm.threads(4):            # this block with four threads          # doctest: +SKIP
...     ufm.collapse_metrics(H, y)                                          # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import inspect
import math
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from .errors import InputError

__all__ = [
    "set_threads",
    "get_threads",
    "threads",
    "thread_policy",
    "choose_threads",
    "SMALL_WORK",
    "ENV_VAR",
    "MAX_THREADS",
    "check_thread_count",
]

#: Environment variable read at each call: a positive integer, ``auto`` or ``inherit``.
ENV_VAR = "PFC_THREADS"
#: Work (elements touched per operation) below which a call runs single-threaded. Calibrated on
#: the development machine (docs/benchmarks.md, "Thread policy").
SMALL_WORK = 4_000_000

_F = TypeVar("_F", bound=Callable[..., Any])
_R = TypeVar("_R")
_AUTO, _INHERIT = "auto", "inherit"

_global_setting: int | str | None = None
_ctx_setting: contextvars.ContextVar[int | str | None] = contextvars.ContextVar(
    "pfc_threads", default=None
)
_local = threading.local()  # .depth: nesting depth of thread_policy calls in this thread


# --------------------------------------------------------------------------------------------
# public overrides
# --------------------------------------------------------------------------------------------
def _check_setting(n: Any, name: str) -> int | str | None:
    if n is None:
        return None
    if isinstance(n, str):
        s = n.strip().lower()
        if s in (_AUTO, _INHERIT):
            return s
        try:
            n = int(s)
        except ValueError:
            raise InputError(
                f"{name} must be a positive integer, 'auto' or 'inherit', got {n!r}"
            ) from None
    if isinstance(n, bool) or not isinstance(n, int) and not hasattr(n, "__index__"):
        raise InputError(f"{name} must be a positive integer, 'auto' or 'inherit', got {n!r}")
    return check_thread_count(n, name)


def check_thread_count(n: Any, name: str = "threads") -> int:
    """A thread count ``1 <= n <= MAX_THREADS`` (4 x the usable cores), as ``int``.

    The one bound of every thread count the toolkit takes (``ufm.set_threads``,
    ``ufm.threads``, ``PFC_THREADS``, the ``--threads`` options of the command lines): far more
    threads than cores only slow a call down, and thousands crash OpenBLAS and OpenMP (2048
    segfaulted).

    Parameters
    ----------
    n : int
        The requested count.
    name : str
        The argument's name, for the message.

    Raises
    ------
    InputError
        ``n`` not an integer, below 1 or above :data:`MAX_THREADS`.
    """
    if isinstance(n, bool) or not hasattr(n, "__index__"):
        raise InputError(f"{name} must be a positive integer, got {n!r}")
    n = int(n)
    if n < 1:
        raise InputError(
            f"{name} must be >= 1, got {n}; use 'auto' for the size-based default or "
            "'inherit' to leave thread settings alone"
        )
    if n > MAX_THREADS:
        raise InputError(
            f"{name} must be <= {MAX_THREADS} (4 x the {_CORES} usable core(s)), got {n}; "
            "more threads than cores only slow the work down (thousands crash BLAS): pass at "
            f"most {_CORES}, or 'auto'"
        )
    return n


def set_threads(n: int | str | None) -> None:
    """Set the thread count of every toolkit call for this process.

    Parameters
    ----------
    n : int, "auto", "inherit" or None
        A positive integer: exactly ``n`` threads for BLAS and torch during each call.
        ``"auto"`` or ``None``: the size- and load-based default (``None`` also lets the
        ``PFC_THREADS`` environment variable decide again). ``"inherit"``: never touch the
        process's thread settings.

    Raises
    ------
    InputError
        ``n`` is not one of the above.
    """
    global _global_setting
    _global_setting = _check_setting(n, "n")


def get_threads() -> int | str:
    """The setting in force here: an integer, ``"auto"`` or ``"inherit"``."""
    for s in (_ctx_setting.get(), _global_setting):
        if s is not None:
            return s
    env = os.environ.get(ENV_VAR)
    if env is not None and env.strip():
        return _check_setting(env, f"the environment variable {ENV_VAR}")  # type: ignore[return-value]
    return _AUTO


@contextlib.contextmanager
def threads(n: int | str | None) -> Iterator[None]:
    """Use ``n`` threads (or ``"auto"``/``"inherit"``) for toolkit calls inside the block.

    Parameters
    ----------
    n : int, "auto", "inherit" or None
        As in :func:`set_threads`; ``None`` leaves the outer setting in force.
    """
    new = _check_setting(n, "n")
    token = _ctx_setting.set(new if new is not None else _ctx_setting.get())
    try:
        yield
    finally:
        _ctx_setting.reset(token)


# --------------------------------------------------------------------------------------------
# the automatic choice
# --------------------------------------------------------------------------------------------
def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


_CORES = _usable_cores()
#: Usable cores of this process (its CPU affinity), counted once at import.
CORES = _CORES
#: Most threads any toolkit setting accepts: 4 x the usable cores (see :func:`check_thread_count`).
MAX_THREADS = 4 * _CORES
_LOAD_TAU = 60.0  # seconds: the kernel's 1-minute load average time constant


class _OwnLoad:
    """Exponential average of this process's CPU use, to subtract it from the load average."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.wall = time.monotonic()
        t = os.times()
        self.cpu = t.user + t.system
        age = _process_age()
        # the process's past CPU use, decayed as the kernel decays it
        self.ema = (self.cpu / age) * (1.0 - math.exp(-age / _LOAD_TAU)) if age > 0 else 0.0

    def update(self) -> float:
        with self.lock:
            now = time.monotonic()
            t = os.times()
            cpu = t.user + t.system
            dt = now - self.wall
            if dt > 1e-3:
                a = 1.0 - math.exp(-dt / _LOAD_TAU)
                self.ema += a * ((cpu - self.cpu) / dt - self.ema)
                self.wall, self.cpu = now, cpu
            return self.ema


def _process_age() -> float:
    try:
        with open("/proc/self/stat") as f:
            start_ticks = float(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError, AttributeError):  # pragma: no cover - non-Linux
        return 0.0


_own = _OwnLoad()


def _runnable_now() -> int | None:
    """Tasks runnable at this instant, this thread included (``/proc/loadavg``'s 4th field)."""
    try:
        with open("/proc/loadavg") as f:
            return int(f.read().split()[3].split("/")[0])
    except (OSError, ValueError, IndexError):  # pragma: no cover - non-Linux
        return None


def _own_runnable() -> int:
    """Threads of this process runnable at this instant (this one included; at least 1).

    Worker threads of torch's and BLAS's OpenMP pools spin for a while after each parallel
    region, so they show as runnable in ``/proc/loadavg`` although they are this process's.
    """
    n = 0
    try:
        for tid in os.listdir("/proc/self/task"):
            try:
                with open(f"/proc/self/task/{tid}/stat") as f:
                    n += f.read().rsplit(")", 1)[1].split()[0] == "R"
            except (OSError, IndexError):  # the thread ended meanwhile
                continue
    except OSError:  # pragma: no cover - non-Linux
        return 1
    return max(n, 1)


def free_cores() -> int:
    """Cores not busy with other processes.

    The busy count is the 1-minute load average less this process's own share, or the number
    of other processes' tasks runnable at this instant when that is smaller: the average lags
    about a minute behind a machine whose other jobs have just finished, while a job that is
    computing now is runnable now.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # pragma: no cover - no load average
        return _CORES
    others = max(0.0, load - _own.update())
    now = _runnable_now()
    if now is not None:
        others = min(others, float(max(now - _own_runnable(), 0)))
    return int(min(_CORES, max(1, math.floor(_CORES - others + 0.5))))


def choose_threads(work: float, configured: int | None = None) -> int:
    """The thread count the ``"auto"`` policy gives for ``work`` elements per operation.

    Parameters
    ----------
    work : float
        The entry point's size estimate (``N d`` for features ``(N, d)``).
    configured : int, optional
        The count in effect (default: torch's current ``get_num_threads()``); never exceeded.
    """
    if configured is None:
        configured = torch_threads() or _CORES
    if work < SMALL_WORK or configured <= 1:
        return 1
    return max(1, min(configured, free_cores()))


# --------------------------------------------------------------------------------------------
# applying a count: torch and BLAS (threadpoolctl), cached
# --------------------------------------------------------------------------------------------
def torch_threads() -> int | None:
    """torch's current thread count, or ``None`` while torch is not imported (never imports it)."""
    torch = sys.modules.get("torch")
    return torch.get_num_threads() if torch is not None else None


_controller: Any = None
_controller_key = -1


def _blas_libs() -> list[Any]:
    """threadpoolctl's BLAS controllers, rebuilt only when new modules were imported."""
    global _controller, _controller_key
    key = len(sys.modules)
    if _controller is None or key != _controller_key:
        try:
            from threadpoolctl import ThreadpoolController

            _controller = ThreadpoolController()
        except Exception:  # pragma: no cover - threadpoolctl missing or broken
            _controller = None
        _controller_key = key
    if _controller is None:  # pragma: no cover
        return []
    return [lc for lc in _controller.lib_controllers if lc.user_api == "blas"]


@contextlib.contextmanager
def thread_scope(n: int | None, *, only_lower: bool = False) -> Iterator[None]:
    """Run the block with ``n`` threads in torch and every loaded BLAS; restore afterwards.

    ``only_lower=True`` never raises a library's count (the ``"auto"`` policy). ``n=None`` does
    nothing.
    """
    if n is None:
        yield
        return
    torch = sys.modules.get("torch")
    restore: list[tuple[Any, int]] = []
    t_old = None
    try:
        if torch is not None:
            cur = torch.get_num_threads()
            if cur != n and not (only_lower and n > cur):
                t_old = cur
                torch.set_num_threads(n)
        for lc in _blas_libs():
            cur = lc.num_threads
            if cur != n and not (only_lower and n > cur):
                lc.set_num_threads(n)
                restore.append((lc, cur))
        yield
    finally:
        for lc, cur in reversed(restore):
            lc.set_num_threads(cur)
        if t_old is not None:
            torch.set_num_threads(t_old)


# --------------------------------------------------------------------------------------------
# the decorator entry points use
# --------------------------------------------------------------------------------------------
def _size(x: Any) -> float:
    """Elements of an array-like (numpy, torch, nested lists), an int as itself, else 0."""
    if x is None or isinstance(x, bool):
        return 0.0
    if isinstance(x, int | float):
        return float(x) if x > 0 else 0.0
    n = getattr(x, "size", None)
    if isinstance(n, int):  # numpy
        return float(n)
    numel = getattr(x, "numel", None)
    if callable(numel):  # torch
        try:
            return float(numel())
        except Exception:  # pragma: no cover
            return 0.0
    if isinstance(x, list | tuple):
        return float(len(x)) * (_size(x[0]) if len(x) and isinstance(x[0], list | tuple) else 1)
    return 0.0


def _model_work(model: Any) -> float:
    """A network's work per forward pass of a 256-sample batch (its parameter count x 256)."""
    params = getattr(model, "parameters", None)
    if not callable(params):
        return 0.0
    try:
        return 256.0 * float(sum(p.numel() for p in params()))
    except Exception:  # pragma: no cover
        return 0.0


def thread_policy(
    *names: str, model: str | None = None, cap: float | None = None
) -> Callable[[_F], _F]:
    """Decorate a public entry point: its calls run under the thread policy.

    Parameters
    ----------
    *names : str
        Arguments whose sizes multiply to the call's work: an array counts its elements, an
        integer itself (``thread_policy("y", "d")`` for ``N d``; ``thread_policy("H")`` for an
        ``(N, d)`` array). Missing or ``None`` arguments count as 1.
    model : str, optional
        An ``nn.Module`` argument whose parameter count (x 256 samples) is the work.
    cap : float, optional
        Upper bound of the work per operation, for entry points that stream their input in
        chunks of at most ``cap`` elements.

    Notes
    -----
    The cost of a call that changes nothing is a few microseconds; one that changes the
    counts adds the set and the restore (measured in docs/benchmarks.md, "Thread policy").
    """

    def deco(fn: _F) -> _F:
        sig = inspect.signature(fn)
        params = list(sig.parameters)

        def work_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
            if model is not None:
                i = params.index(model)
                m = kwargs[model] if model in kwargs else (args[i] if i < len(args) else None)
                return _model_work(m)
            w = 1.0
            for nm in names:
                i = params.index(nm)
                v = kwargs[nm] if nm in kwargs else (args[i] if i < len(args) else None)
                s = _size(v)
                w *= s if s > 0 else 1.0
            return w if cap is None else min(w, cap)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            depth = getattr(_local, "depth", 0)
            if depth:
                _local.depth = depth + 1
                try:
                    return fn(*args, **kwargs)
                finally:
                    _local.depth = depth
            setting = get_threads()
            if setting == _INHERIT:
                n, lower = None, False
            elif setting == _AUTO:
                n, lower = choose_threads(work_of(args, kwargs)), True
            else:
                n, lower = int(setting), False
            _local.depth = 1
            try:
                with thread_scope(n, only_lower=lower):
                    return fn(*args, **kwargs)
            finally:
                _local.depth = 0

        wrapper.__wrapped_thread_policy__ = True  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return deco
