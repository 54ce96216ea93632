"""Atomic files and training checkpoints.

Every file of a run directory is written atomically: the content goes to a temporary file in the
same directory, is flushed and ``fsync``-ed, and then ``os.replace`` puts it in place. A reader
(or a run killed at any instant, even by ``SIGKILL``) therefore sees either the old or the new
complete file, never a torn one.

A checkpoint (:func:`save_checkpoint`) is one ``torch.save`` file holding the model, optimiser
and scheduler states, the RNG states (Python, NumPy, torch), the epoch, the config and every
metric row written so far, so that a resumed run rewrites the CSV files exactly.
"""

from __future__ import annotations

import io
import os
import random
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np
import torch

from ufm import _io
from ufm.errors import CheckpointError

__all__ = [
    "atomic_write",
    "atomic_write_text",
    "atomic_write_bytes",
    "save_checkpoint",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "CHECKPOINT_FORMAT",
]

#: Version of the checkpoint layout; bumped on incompatible changes.
CHECKPOINT_FORMAT = 1


def atomic_write(path: str | os.PathLike[str], write: Callable[[IO[bytes]], None]) -> Path:
    """Call ``write(f)`` on a temporary binary file next to ``path``, then move it into place.

    Raises
    ------
    CheckpointError
        If the file or its directory cannot be written.
    """
    try:
        return _io.atomic_write(path, write)
    except OSError as exc:
        raise CheckpointError(f"cannot write {path}: {exc}; check the --out folder") from exc


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda f: f.write(data))


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def rng_state() -> dict[str, Any]:
    """The states of Python's, NumPy's and torch's (CPU and, if used, CUDA) generators."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),  # noqa: NPY002 - the global state is what we restore
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore the generators saved by :func:`rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])  # noqa: NPY002
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | os.PathLike[str], state: dict[str, Any]) -> Path:
    """Save a checkpoint dict atomically (adds ``format``)."""
    payload = {"format": CHECKPOINT_FORMAT, **state}
    buf = io.BytesIO()
    torch.save(payload, buf)
    return atomic_write_bytes(path, buf.getvalue())


def load_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint`.

    Raises
    ------
    CheckpointError
        If the file is missing, unreadable, or of another format version.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; start without --resume")
    try:
        # The checkpoint holds RNG states (tuples, numpy arrays), so it is not weights-only;
        # load only checkpoints you wrote yourself.
        state = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(
            f"checkpoint {path} cannot be read ({type(exc).__name__}: {exc}); delete it to "
            "start over"
        ) from exc
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"checkpoint {path} has format {state.get('format') if isinstance(state, dict) else '?'}"
            f", expected {CHECKPOINT_FORMAT}; it was written by another version"
        )
    return state
