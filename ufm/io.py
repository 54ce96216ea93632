"""File writing shared by the whole toolkit: atomic writes, CSV, PNG, JSON, library versions.

Every writer goes through :func:`atomic_write`: the content goes to a temporary file in the
target's directory, is flushed and ``fsync``-ed, and ``os.replace`` then puts it in place: a
reader, or a process killed at any instant (even by ``SIGKILL``), sees either the old or the new
complete file, never a torn one.

The one CSV format (:func:`csv_text`, :func:`write_csv`): a header row, ``\\n`` line ends,
floats written with ``repr`` (the shortest text that reads back to the same float, ``nan`` and
``inf`` included), ``None`` as an empty cell. The one JSON form (:func:`jsonable`,
:func:`write_json`): numpy scalars and arrays as Python numbers and lists, non-finite floats as
``null``, paths as strings.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import importlib
import io
import json
import math
import os
import platform
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import numpy as np

from .errors import CheckpointError, InputError

__all__ = [
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "csv_text",
    "new_file_mode",
    "open_temp",
    "write_csv",
    "save_png",
    "jsonable",
    "write_json",
    "read_json",
    "versions",
    "LOCK_NAME",
    "run_lock",
]


def new_file_mode() -> int:
    """The permission bits a new file gets under this process's umask (``0o666 & ~umask``).

    :func:`tempfile.mkstemp` creates files readable by their owner only (``0o600``); files the
    toolkit writes get these bits instead, like any file created with ``open(path, "w")``, so
    that a shared group can read a run's results.
    """
    mask = os.umask(0)  # os has no read-only query; set it back at once
    os.umask(mask)
    return 0o666 & ~mask


def open_temp(path: Path) -> tuple[int, str]:
    """A temporary file next to ``path`` (``(fd, name)``, as :func:`tempfile.mkstemp`), with
    the permissions of :func:`new_file_mode`."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, new_file_mode())
    except OSError:  # a file system without modes: keep mkstemp's
        pass
    return fd, tmp


def atomic_write(
    path: str | os.PathLike[str], write: Callable[[IO[Any]], object], *, mode: str = "wb"
) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path`` (``mode`` "wb" or "w"), then
    move it into place. Parent folders are created. ``OSError`` propagates."""
    if mode not in ("wb", "w"):
        raise ValueError(f"mode must be 'wb' or 'w', got {mode!r}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = open_temp(path)
    try:
        with os.fdopen(fd, mode, **({} if mode == "wb" else {"newline": ""})) as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _cell(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float | np.floating):
        return repr(float(v))
    return v


def csv_text(header: Sequence[str], rows: Iterable[Sequence[Any] | Mapping[str, Any]]) -> str:
    """The toolkit's CSV text of ``rows`` under ``header`` (see the module docstring).

    Parameters
    ----------
    header : sequence of str
        Column names.
    rows : iterable of sequences or mappings
        One row each: a sequence of cell values in the order of ``header``, or a mapping from
        column name to value (a column it lacks is an empty cell; keys outside ``header`` are
        left out). Floats (Python or numpy) are written with ``repr`` (exact round trip),
        ``None`` as an empty cell, anything else with ``str``.

    Returns
    -------
    str
        The text, ending with a newline.
    """
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    for r in rows:
        cells = [r.get(c) for c in header] if isinstance(r, Mapping) else r
        w.writerow([_cell(v) for v in cells])
    return buf.getvalue()


def write_csv(
    path: str | os.PathLike[str],
    header: Sequence[str],
    rows: Iterable[Sequence[Any] | Mapping[str, Any]],
) -> Path:
    """Write :func:`csv_text` of ``header`` and ``rows`` to ``path`` atomically; return the path."""
    return atomic_write_text(path, csv_text(header, rows))


def save_png(fig: Any, path: str | os.PathLike[str], *, dpi: int = 110) -> Path:
    """Save a matplotlib figure as PNG to ``path`` atomically and return the path.

    The PNG carries no ``Software`` metadata, so the same figure gives the same bytes under any
    matplotlib version.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure (any object with matplotlib's ``savefig``).
    path : path-like
        Target file; parent folders are created.
    dpi : int, default 110
        Resolution.
    """
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, metadata={"Software": None})
    return atomic_write_bytes(path, buf.getvalue())


def jsonable(x: Any) -> Any:
    """``x`` with every value JSON can hold: the toolkit's one conversion for result files.

    Dicts (keys become strings), lists and tuples (become lists) and numpy arrays (become
    nested lists) are converted recursively; numpy booleans and integers become ``bool`` and
    ``int``; floats (Python, numpy or :class:`fractions.Fraction`) become ``float``, and
    ``None`` when not finite (JSON has no NaN or infinity); paths become strings. Anything
    else is returned unchanged.

    Examples
    --------
    >>> jsonable({"a": np.float64("nan"), 1: (np.int64(2), np.bool_(True))})
    {'a': None, '1': [2, True]}
    """
    if isinstance(x, dict):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, bool | np.bool_):
        return bool(x)
    if isinstance(x, np.integer):
        return int(x)
    if isinstance(x, float | np.floating | Fraction):
        v = float(x)
        return v if math.isfinite(v) else None
    if isinstance(x, Path):
        return str(x)
    return x


def write_json(path: str | os.PathLike[str], obj: Any) -> Path:
    """Write :func:`jsonable` of ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(jsonable(obj), indent=2) + "\n")


def read_json(path: str | os.PathLike[str], *, remedy: str = "delete it") -> Any:
    """Read a JSON file (``None`` if it does not exist).

    Parameters
    ----------
    path : path-like
        The file.
    remedy : str, default "delete it"
        What the error message tells the user to do with a damaged file.

    Raises
    ------
    CheckpointError
        The file exists but is not valid JSON (the message names it and ``remedy``).
    """
    p = Path(path)
    if not p.is_file():
        return None
    try:
        return json.loads(p.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CheckpointError(
            f"{str(p)!r} is not valid JSON ({exc}); it was damaged: {remedy}"
        ) from exc


def versions(packages: Sequence[str] = ("numpy",)) -> dict[str, str]:
    """The versions behind a result: Python, the platform, this toolkit and ``packages``.

    Parameters
    ----------
    packages : sequence of str, default ("numpy",)
        Importable module names (``"torch"``, ``"scipy"``, ...); one that cannot be imported
        is left out.

    Returns
    -------
    dict of str to str
        ``python``, ``platform``, ``pfc_toolkit``, then one entry per importable package (its
        ``__version__``, ``"?"`` if it has none), in that order.
    """
    out = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        # the toolkit's version lives in the ufm package (ufm/__init__.py); importlib, since
        # ufm.io is itself part of that package
        "pfc_toolkit": str(getattr(importlib.import_module("ufm"), "__version__", "?")),
    }
    for name in packages:
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        out[name] = str(getattr(mod, "__version__", "?"))
    return out


# ------------------------------------------------------------------------------------------
# one writer per output folder
# ------------------------------------------------------------------------------------------

#: The lock file a command holds in its output folder while it writes there.
LOCK_NAME = ".pfc.lock"


def _process_start(pid: int) -> str:
    """The start time of process ``pid`` (clock ticks since boot, from ``/proc``; ``""`` where
    there is no ``/proc``): with the pid it names one process, even after the pid is reused."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read().decode("ascii", "replace")
        return stat.rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def _alive(pid: int, start: str) -> bool:
    """Whether the process that wrote a lock (``pid``, started at ``start``) still runs."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    except OSError:
        return True  # cannot tell: assume it runs (refusing is the safe side)
    now = _process_start(pid)
    return not (start and now and now != start)


def _lock_text() -> str:
    pid = os.getpid()
    return f"{pid}\n{platform.node()}\n{_process_start(pid)}\n"


def _read_lock(lock: Path) -> tuple[int, str, str] | None:
    """``(pid, host, start)`` of a lock file; ``None`` when it cannot be read or parsed."""
    try:
        lines = lock.read_text(encoding="utf-8", errors="replace").split("\n")
        return int(lines[0]), lines[1] if len(lines) > 1 else "", lines[2] if len(lines) > 2 else ""
    except (OSError, ValueError):
        return None


def _create_lock(lock: Path) -> bool:
    """Create ``lock`` holding this process's pid, atomically; False if it already exists.

    The content is written to a temporary file first and hard-linked to ``lock`` (``link``
    fails when the target exists), so no reader ever sees an empty lock; where the file system
    has no hard links, ``O_CREAT | O_EXCL`` is used instead.
    """
    fd, tmp = open_temp(lock)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(_lock_text())
        try:
            os.link(tmp, lock)
            return True
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise
        try:
            fd2 = os.open(lock, os.O_WRONLY | os.O_CREAT | os.O_EXCL, new_file_mode())
        except FileExistsError:
            return False
        with os.fdopen(fd2, "w") as f:
            f.write(_lock_text())
        return True
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


@contextlib.contextmanager
def run_lock(
    folder: str | os.PathLike[str], *, option: str = "--out", command: str = "this command"
) -> Iterator[Path]:
    """Hold the lock file :data:`LOCK_NAME` of an output folder while writing into it.

    Two processes writing one run (or study) folder would mix their files (one's config with
    the other's metrics). The lock file is created with an exclusive, atomic create and holds
    the writer's pid, host and process start time; it is removed when the block ends (also on
    an error or Ctrl-C). A lock left by a process that no longer runs on this host (killed,
    or the machine restarted) is stale: it is replaced, with nothing lost.

    Parameters
    ----------
    folder : path-like
        The output folder (created, with its parents, when missing).
    option : str, default "--out"
        How the command line names the folder (used in the messages).
    command : str, default "this command"
        The command that takes the lock (used in the messages).

    Yields
    ------
    Path
        The lock file.

    Raises
    ------
    InputError
        ``folder`` exists and is not a folder.
    CheckpointError
        Another running process holds the lock (the message names its pid and what to do).
    """
    root = Path(folder)
    if root.exists() and not root.is_dir():
        raise InputError(f"{option} {str(root)!r} is a file; choose a folder")
    root.mkdir(parents=True, exist_ok=True)
    lock = root / LOCK_NAME
    for _ in range(3):
        if _create_lock(lock):
            break
        owner = _read_lock(lock)
        if owner is None and not lock.exists():
            continue  # released meanwhile
        if owner is not None:
            pid, host, start = owner
            if host == platform.node() and not _alive(pid, start):
                with contextlib.suppress(FileNotFoundError):
                    lock.unlink()  # stale: its writer is gone
                continue
            who = f"process {pid}" + ("" if host == platform.node() else f" on host {host!r}")
        else:
            who = "another process"
        raise CheckpointError(
            f"{option} {str(root)!r} is being written by {who} (lock file {str(lock)!r}); "
            f"two writers would mix their files: wait for it to finish, or choose another "
            f"{option} for {command}. If no such process runs, delete the lock file."
        )
    else:  # pragma: no cover - the lock changed hands three times in a row
        raise CheckpointError(f"{option} {str(root)!r}: could not take the lock {str(lock)!r}")
    mine = _lock_text()
    try:
        yield lock
    finally:
        with contextlib.suppress(OSError):
            if lock.read_text(encoding="utf-8", errors="replace") == mine:
                lock.unlink()
