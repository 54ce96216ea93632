"""Fused loops of the two metric passes, compiled by numba, with the torch code as fallback.

Each streaming pass over ``H (N, d)`` is a handful of elementwise steps per chunk: convert to
float64, scale, gather the class means, subtract, square and sum. As separate torch operations
each step reads and writes the whole chunk again, and the Python between them holds the GIL, so
row blocks on two threads gain little. Here each pass is one loop that reads every feature once
and keeps the float64 value in a register: the class sums of pass 1 (:func:`class_sums`) and the
deviations and their squared norms of pass 2 (:func:`deviations`, whose output then goes through
one BLAS product). The arithmetic is the same float64 arithmetic as the torch path (only the
order of the additions in a row's squared norm differs), so both paths agree to round-off.

The kernels are used for CPU features of dtype float32 or float64 when numba is installed, for
batches of at least :data:`MIN_ELEMS` features (:func:`use_for`). Numba's import and the load of
its compiled code add about 0.4 s to the first such call of a process (the first call after an
install also compiles, about 1.5 s; numba caches the result on disk), which only pays off for
large inputs; smaller batches run the torch code and never import numba. ``UFM_KERNELS=0`` in
the environment, or :func:`set_enabled`, switches the kernels off or on for every size.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from ..errors import InputError

__all__ = ["MIN_ELEMS", "available", "use_for", "set_enabled", "class_sums", "deviations"]

#: Fewest features (rows x columns) in a batch for the kernels to be used by default.
MIN_ELEMS = 1 << 20

# reassociation lets LLVM vectorise the squared-norm reduction; no flag assumes finite values
_FASTMATH = {"reassoc", "contract", "nsz"}
_kernels: dict[str, Any] | None = None
_override: bool | None = None


def _compile() -> dict[str, Any]:
    global _kernels
    if _kernels is not None:
        return _kernels
    try:
        import numba
    except ImportError:  # pragma: no cover - numba is a dependency, but stay usable without
        _kernels = {}
        return _kernels

    @numba.njit(nogil=True, fastmath=_FASTMATH, cache=True)
    def _class_sums(H, y, s, sums, counts):  # pragma: no cover - compiled
        n, d = H.shape
        for i in range(n):
            c = y[i]
            counts[c] += 1
            for j in range(d):
                sums[c, j] += s * np.float64(H[i, j])

    @numba.njit(nogil=True, fastmath=_FASTMATH, cache=True)
    def _deviations(H, y, s, means, out, sqnorm):  # pragma: no cover - compiled
        n, d = H.shape
        for i in range(n):
            c = y[i]
            acc = 0.0
            for j in range(d):
                v = means[c, j] - s * np.float64(H[i, j])
                out[i, j] = v
                acc += v * v
            sqnorm[i] = acc

    _kernels = {"class_sums": _class_sums, "deviations": _deviations}
    return _kernels


def available() -> bool:
    """True when numba is importable (the kernels can be compiled)."""
    return bool(_compile())


def use_for(numel: int) -> bool:
    """Whether a batch of ``numel`` CPU features goes through the kernels.

    With :func:`set_enabled` given ``True`` or ``False``: that choice (``True`` still needs
    numba). Otherwise: ``numel >= MIN_ELEMS``, numba installed, and the environment variable
    ``UFM_KERNELS`` not ``0``.
    """
    if _override is not None:
        return _override and available()
    return numel >= MIN_ELEMS and os.environ.get("UFM_KERNELS", "1") != "0" and available()


def set_enabled(flag: bool | None) -> None:
    """Use the kernels for every size (``True``), never (``False``), or by size (``None``).

    Raises
    ------
    InputError
        ``flag`` is not a bool or None.
    """
    global _override
    if flag is not None and not isinstance(flag, bool):
        raise InputError(f"flag must be True, False or None, got {flag!r}")
    _override = flag


def _check(
    H: np.ndarray, y: np.ndarray, rows: int, name: str, arr: np.ndarray, shape: tuple
) -> None:
    if H.dtype not in (np.float32, np.float64) or H.ndim != 2 or not H.flags.c_contiguous:
        raise InputError(f"H must be a C-contiguous float32/float64 (N, d) array, got {H.dtype}")
    if y.dtype != np.int64 or y.shape != (rows,):
        raise InputError(f"y must be int64 of shape ({rows},), got {y.dtype} {y.shape}")
    if arr.dtype != np.float64 or arr.shape != shape or not arr.flags.c_contiguous:
        raise InputError(f"{name} must be C-contiguous float64 of shape {shape}")


def class_sums(
    H: np.ndarray, y: np.ndarray, s: float, sums: np.ndarray, counts: np.ndarray
) -> None:
    """Add ``s * h_i`` to ``sums[y_i]`` and 1 to ``counts[y_i]`` for every row, in float64.

    .. math:: \\mathrm{sums}_k \\mathrel{+}= \\sum_{i: y_i = k} s\\, h_i,\\qquad
              \\mathrm{counts}_k \\mathrel{+}= |\\{i: y_i = k\\}|

    Parameters
    ----------
    H : ndarray (n, d), float32 or float64, C-contiguous
    y : ndarray (n,), int64, values in ``0..K-1`` (not checked here)
    s : float
        A power of two (the accumulator's scale), so ``s * h`` is exact.
    sums : ndarray (K, d), float64, updated in place
    counts : ndarray (K,), int64, updated in place

    Raises
    ------
    InputError
        Wrong dtype, shape or layout, or the kernels are not available.
    """
    k = _compile()
    if not k:
        raise InputError("numba is not installed: install it or use the torch path")
    n = H.shape[0] if H.ndim == 2 else -1
    _check(H, y, n, "sums", sums, (sums.shape[0], H.shape[-1]))
    if counts.dtype != np.int64 or counts.shape != (sums.shape[0],):
        raise InputError(f"counts must be int64 of shape ({sums.shape[0]},)")
    k["class_sums"](H, y, float(s), sums, counts)


def deviations(
    H: np.ndarray,
    y: np.ndarray,
    s: float,
    means: np.ndarray,
    out: np.ndarray,
    sqnorm: np.ndarray,
) -> None:
    """Negated deviations from the class means and their squared norms, in float64.

    .. math:: \\mathrm{out}_i = \\mu_{y_i} - s\\, h_i,\\qquad
              \\mathrm{sqnorm}_i = \\|\\mu_{y_i} - s\\, h_i\\|^2

    Parameters
    ----------
    H : ndarray (n, d), float32 or float64, C-contiguous
    y : ndarray (n,), int64, values in ``0..K-1`` (not checked here)
    s : float
        A power of two (the accumulator's scale).
    means : ndarray (K, d), float64
    out : ndarray (n, d), float64, written
    sqnorm : ndarray (n,), float64, written

    Raises
    ------
    InputError
        Wrong dtype, shape or layout, or the kernels are not available.
    """
    k = _compile()
    if not k:
        raise InputError("numba is not installed: install it or use the torch path")
    n = H.shape[0] if H.ndim == 2 else -1
    _check(H, y, n, "out", out, tuple(H.shape))
    if means.dtype != np.float64 or means.ndim != 2 or means.shape[1] != H.shape[1]:
        raise InputError(f"means must be float64 of shape (K, {H.shape[-1]})")
    if sqnorm.dtype != np.float64 or sqnorm.shape != (n,):
        raise InputError(f"sqnorm must be float64 of shape ({n},)")
    k["deviations"](H, y, float(s), means, out, sqnorm)
