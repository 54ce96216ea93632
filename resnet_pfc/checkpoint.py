"""Atomic files and training checkpoints.

Every file of a run directory is written atomically: the content goes to a temporary file in the
same directory, is flushed and ``fsync``-ed, and then ``os.replace`` puts it in place. A reader
(or a run killed at any instant, even by ``SIGKILL``) therefore sees either the old or the new
complete file, never a torn one.

A checkpoint (:func:`save_checkpoint`) is one ``torch.save`` file holding the model, optimiser
and scheduler states, the RNG states (Python, NumPy, torch), the epoch, the config and every
metric row written so far, so that a resumed run rewrites the CSV files exactly. Two
generations are kept (``last.pt`` and ``last.prev.pt``): :func:`load_latest_checkpoint` falls
back to the older one, with a warning, when the newer is unreadable.

Trust: checkpoints hold only tensors and plain containers of numbers and strings, and are read
with ``torch.load(weights_only=True)``; a crafted file in a shared run folder is refused
(:class:`~ufm.errors.CheckpointError`) instead of executing code.
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ufm import io as ufm_io
from ufm.errors import CheckpointError, PFCWarning
from ufm.lazy import torch

__all__ = [
    "save_checkpoint",
    "load_checkpoint",
    "load_latest_checkpoint",
    "checkpoint_exists",
    "rng_state",
    "set_rng_state",
]

#: Version of the checkpoint layout; bumped on incompatible changes.
CHECKPOINT_FORMAT = 2
#: Formats :func:`load_checkpoint` reads (1 stored the NumPy RNG state as an array).
_READABLE_FORMATS = (1, 2)


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and, if used, CUDA) generators.

    Every part is a tensor or a plain Python container of numbers and strings, so that the
    checkpoint loads with ``torch.load(weights_only=True)`` (no pickled NumPy objects).
    """
    name, keys, pos, has_gauss, cached = np.random.get_state()  # noqa: NPY002 - global state
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": {
            "name": str(name),
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64).copy()),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached),
        },
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state` (also the format-1 layout)."""
    py = state["python"]
    # Python's state is (version, tuple of ints, gauss_next); a round trip may give lists.
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = state["numpy"]
    if isinstance(npst, dict):
        keys = np.asarray(npst["keys"].numpy() if torch.is_tensor(npst["keys"]) else npst["keys"])
        npst = (
            npst["name"],
            keys.astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    np.random.set_state(npst)  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _plain(x: Any) -> Any:
    """NumPy scalars to Python numbers, recursively (what weights-only loading accepts)."""
    if isinstance(x, dict):
        out = x.copy()  # keeps the type (a scheduler's milestones are a Counter)
        for k, v in x.items():
            out[k] = _plain(v)
        return out
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_plain(v) for v in x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x))
    return x


def previous_path(path: str | os.PathLike[str]) -> Path:
    """Where the previous generation of checkpoint ``path`` is kept (``last.pt`` ->
    ``last.prev.pt``)."""
    path = Path(path)
    return path.with_name(f"{path.stem}.prev{path.suffix}")


def checkpoint_exists(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` or its previous generation exists (as anything: a directory in their
    place is reported by :func:`load_latest_checkpoint`)."""
    path = Path(path)
    return path.exists() or previous_path(path).exists()


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Save a checkpoint dict atomically (adds ``format``), keeping the previous generation.

    The new content is serialised, checked to load back with ``weights_only=True``, and written
    to a temporary file; the current ``path`` (if any) then becomes :func:`previous_path` and the
    temporary file becomes ``path``. A crash at any instant leaves at least one complete
    generation.

    Raises
    ------
    CheckpointError
        If the state holds objects that weights-only loading would refuse, or the file cannot
        be written.
    """
    path = Path(path)
    payload = _plain({"format": CHECKPOINT_FORMAT, **state})
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    try:
        torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as exc:  # a bug of the caller: never write what cannot be read back
        raise CheckpointError(
            f"the checkpoint for {path} holds objects that weights-only loading refuses ({exc})"
        ) from exc
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a directory, not a checkpoint file; move it away or choose another --out"
        )
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = ufm_io.open_temp(path)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            if path.is_file():
                os.replace(path, previous_path(path))
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc}; check the --out folder") from exc
    return path


def _legacy_globals() -> list[Any]:
    """The NumPy types a format-1 checkpoint pickled (the NumPy RNG state's key array)."""
    try:
        from numpy._core.multiarray import _reconstruct
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import _reconstruct  # type: ignore[no-redef]
    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`, never executing code from it.

    The file is read with ``torch.load(weights_only=True)``: only tensors, plain containers,
    numbers and strings (and, for format-1 files, NumPy arrays) are accepted, so a crafted file
    raises :class:`CheckpointError` instead of running code.

    Raises
    ------
    CheckpointError
        If the file is missing, a directory, unreadable, not a checkpoint, or of another
        format version.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a directory, not a checkpoint file; move it away (or delete it) and "
            "resume again"
        )
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; start without --resume")
    try:
        with torch.serialization.safe_globals(_legacy_globals()):
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        why = [ln for ln in lines if "Unsupported" in ln or "WeightsUnpickler error" in ln]
        first = (why or lines or [""])[0]
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {first[:300]}); it is "
            "corrupted, or not a checkpoint of this toolkit (weights-only loading refuses code); "
            "delete it to start over"
        ) from exc
    if not isinstance(state, dict) or state.get("format") not in _READABLE_FORMATS:
        raise CheckpointError(
            f"checkpoint {path} has format {state.get('format') if isinstance(state, dict) else '?'}"
            f", expected {CHECKPOINT_FORMAT}; it was written by another version"
        )
    return state


def load_latest_checkpoint(
    path: str | os.PathLike[str], *, required: tuple[str, ...] = ()
) -> tuple[dict[str, Any], Path]:
    """Load ``path``, or its previous generation when ``path`` is unreadable.

    Parameters
    ----------
    path : path
        The newest generation (e.g. ``checkpoints/last.pt``).
    required : tuple of str
        Keys a usable checkpoint must hold; a generation without them counts as unreadable.

    Returns
    -------
    state : dict
    used : Path
        The file actually loaded.

    Warns
    -----
    PFCWarning
        When the newest generation is unreadable and the previous one is used (one epoch of
        work is redone).

    Raises
    ------
    CheckpointError
        ``path`` is a directory (it would block every later save), or no generation is readable.
    """
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(
            f"{path} is a directory, not a checkpoint file; move it away (the run then resumes "
            f"from {previous_path(path).name} if present) or choose another --out"
        )
    errors = []
    for cand in (path, previous_path(path)):
        try:
            state = load_checkpoint(cand)
            missing = [k for k in required if k not in state]
            if missing:
                raise CheckpointError(f"checkpoint {cand} lacks {missing}; it is incomplete")
        except CheckpointError as exc:
            errors.append(str(exc))
            continue
        if cand != path:
            warnings.warn(
                f"{errors[0]}; resuming from the previous checkpoint {cand} instead (epoch "
                f"{state.get('epoch')})",
                PFCWarning,
                stacklevel=2,
            )
        return state, cand
    raise CheckpointError(
        f"no readable checkpoint in {path.parent}: {' | '.join(errors)}; delete the folder's "
        "checkpoints (or choose another --out) to start over"
    )
