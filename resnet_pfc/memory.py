"""Refuse, before any allocation, a model whose training state cannot fit in memory.

On Linux a too-large allocation is rarely refused: memory is promised lazily, and the kernel
later kills the process (or a neighbour) when the pages are touched. So the size of a model is
measured first, on torch's ``meta`` device (shapes only, no memory), and compared with the
memory available.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from ufm.errors import InputError

__all__ = [
    "available_memory",
]

#: Copies of the parameters a training run holds at once: the weights, their gradients, the
#: SGD momentum, and the state dict copied into each checkpoint.
PARAMETER_COPIES = 4


def available_memory() -> int | None:
    """Bytes available to new allocations (``MemAvailable`` of ``/proc/meminfo``; ``None``
    where it is unknown, e.g. not on Linux)."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_model_fits(build: Callable[[], Any], dtype: torch.dtype, *, sizes: str, fix: str) -> int:
    """Count the parameters of ``build()`` on the meta device; refuse when training it needs
    more memory than is available.

    Parameters
    ----------
    build : callable
        Builds the model (called under ``torch.device("meta")``).
    dtype : torch.dtype
        The parameter dtype of the run.
    sizes : str
        The options that set the size (for the message), e.g. ``"width=64, blocks=8"``.
    fix : str
        What to do (for the message), e.g. ``"use a smaller --width or --blocks"``.

    Returns
    -------
    int
        The number of parameters.

    Raises
    ------
    InputError
        ``PARAMETER_COPIES x parameters x bytes`` exceeds the available memory.
    """
    with torch.device("meta"):
        probe = build()
    n = int(sum(p.numel() for p in probe.parameters()))
    need = n * (torch.finfo(dtype).bits // 8) * PARAMETER_COPIES
    avail = available_memory()
    if avail is not None and need > avail:
        raise InputError(
            f"the model has {n:,} parameters: training it needs about {need / 2**30:.1f} GiB "
            f"but {avail / 2**30:.1f} GiB of memory is available ({sizes}); {fix}"
        )
    return n
