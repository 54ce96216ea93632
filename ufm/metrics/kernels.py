"""Fused loops of the two metric passes, compiled by numba, with the torch code as fallback.

Each streaming pass over ``H (N, d)`` is a handful of elementwise steps per chunk: convert to
float64, scale, gather the class means, subtract, square and sum. As separate torch operations
each step reads and writes the whole chunk again, and the Python between them holds the GIL, so
row blocks on two threads gain little. Here each pass is one loop that reads every feature once
and keeps the float64 value in a register: the class sums of pass 1 (:func:`class_sums`) and the
projected deviations and their squared norms of pass 2 (:func:`project`: with so few columns its
4 x 4 register tiles run about twice as fast as a BLAS product of the written-out deviations).
The arithmetic is the same float64 arithmetic as the torch path (only the order of additions
differs), so both paths agree to round-off.

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

__all__ = ["MIN_ELEMS", "available", "use_for", "set_enabled", "class_sums", "project"]

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
    def _project(H, y, s, means, VT, Q, sqnorm):  # pragma: no cover - compiled
        # rows in fours: their deviations go to a small scratch (L1/L2), then a 4 x 4
        # register tile (4 rows x 4 rows of VT) reads each of them once per 4 columns
        n, d = H.shape
        cols = VT.shape[0]
        D = np.zeros((4, d))
        T = np.zeros((4, 4))
        for r0 in range(0, n, 4):
            m = min(4, n - r0)
            for r in range(m):
                c = y[r0 + r]
                acc = 0.0
                for j in range(d):
                    v = means[c, j] - s * np.float64(H[r0 + r, j])
                    D[r, j] = v
                    acc += v * v
                sqnorm[r0 + r] = acc
            for r in range(m, 4):
                D[r, :] = 0.0
            for k0 in range(0, cols, 4):
                a00 = a01 = a02 = a03 = 0.0
                a10 = a11 = a12 = a13 = 0.0
                a20 = a21 = a22 = a23 = 0.0
                a30 = a31 = a32 = a33 = 0.0
                for j in range(d):
                    d0 = D[0, j]
                    d1 = D[1, j]
                    d2 = D[2, j]
                    d3 = D[3, j]
                    v0 = VT[k0, j]
                    v1 = VT[k0 + 1, j]
                    v2 = VT[k0 + 2, j]
                    v3 = VT[k0 + 3, j]
                    a00 += d0 * v0
                    a01 += d0 * v1
                    a02 += d0 * v2
                    a03 += d0 * v3
                    a10 += d1 * v0
                    a11 += d1 * v1
                    a12 += d1 * v2
                    a13 += d1 * v3
                    a20 += d2 * v0
                    a21 += d2 * v1
                    a22 += d2 * v2
                    a23 += d2 * v3
                    a30 += d3 * v0
                    a31 += d3 * v1
                    a32 += d3 * v2
                    a33 += d3 * v3
                T[0, 0], T[0, 1], T[0, 2], T[0, 3] = a00, a01, a02, a03
                T[1, 0], T[1, 1], T[1, 2], T[1, 3] = a10, a11, a12, a13
                T[2, 0], T[2, 1], T[2, 2], T[2, 3] = a20, a21, a22, a23
                T[3, 0], T[3, 1], T[3, 2], T[3, 3] = a30, a31, a32, a33
                for r in range(m):
                    for k in range(4):
                        Q[r0 + r, k0 + k] = T[r, k]

    _kernels = {"class_sums": _class_sums, "project": _project}
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


def _kernel(name: str, H: np.ndarray, y: np.ndarray) -> Any:
    """The compiled kernel ``name`` after checking the inputs every kernel shares."""
    k = _compile()
    if not k:
        raise InputError("numba is not installed: install it or use the torch path")
    if H.dtype not in (np.float32, np.float64) or H.ndim != 2 or not H.flags.c_contiguous:
        raise InputError(f"H must be a C-contiguous float32/float64 (N, d) array, got {H.dtype}")
    if y.dtype != np.int64 or y.shape != H.shape[:1]:
        raise InputError(f"y must be int64 of shape ({H.shape[0]},), got {y.dtype} {y.shape}")
    return k[name]


def _check_out(name: str, arr: np.ndarray, shape: tuple[int, ...], dtype: Any = np.float64) -> None:
    """Raise unless ``arr`` is a C-contiguous array of ``dtype`` and ``shape``."""
    if arr.dtype != dtype or arr.shape != shape or not arr.flags.c_contiguous:
        raise InputError(
            f"{name} must be C-contiguous {np.dtype(dtype).name} of shape {shape}, got "
            f"{arr.dtype} {arr.shape}"
        )


def _check_label_range(y: np.ndarray, K: int) -> None:
    """Raise unless every label indexes a row of the ``K``-row state (the loops do not check)."""
    if y.size and (int(y.min()) < 0 or int(y.max()) >= K):
        raise InputError(
            f"y must lie in 0..{K - 1} (one row of sums/means per class), got labels "
            f"{int(y.min())}..{int(y.max())}"
        )


def class_sums(
    H: np.ndarray, y: np.ndarray, s: float, sums: np.ndarray, counts: np.ndarray
) -> None:
    """Add ``s * h_i`` to ``sums[y_i]`` and 1 to ``counts[y_i]`` for every row, in float64.

    .. math:: \\mathrm{sums}_k \\mathrel{+}= \\sum_{i: y_i = k} s\\, h_i,\\qquad
              \\mathrm{counts}_k \\mathrel{+}= |\\{i: y_i = k\\}|

    Parameters
    ----------
    H : ndarray (n, d), float32 or float64, C-contiguous
    y : ndarray (n,), int64, values in ``0..K-1``
    s : float
        A power of two (the accumulator's scale), so ``s * h`` is exact.
    sums : ndarray (K, d), float64, updated in place
    counts : ndarray (K,), int64, updated in place

    Raises
    ------
    InputError
        Wrong dtype, shape or layout, or the kernels are not available.
    """
    kernel = _kernel("class_sums", H, y)
    _check_out("sums", sums, (len(sums), H.shape[1]))
    _check_label_range(y, len(sums))
    _check_out("counts", counts, (len(sums),), np.int64)
    kernel(H, y, float(s), sums, counts)


def project(
    H: np.ndarray,
    y: np.ndarray,
    s: float,
    means: np.ndarray,
    VT: np.ndarray,
    Q: np.ndarray,
    sqnorm: np.ndarray,
) -> None:
    """Projections of the negated deviations from the class means, and their squared norms.

    .. math:: Q_i = V^\\top (\\mu_{y_i} - s\\, h_i),\\qquad
              \\mathrm{sqnorm}_i = \\|\\mu_{y_i} - s\\, h_i\\|^2

    All in float64; each deviation is formed once per row and never written out.

    Parameters
    ----------
    H, y, s
        As in :func:`class_sums`.
    means : ndarray (K, d), float64, C-contiguous
    VT : ndarray (c, d), float64, C-contiguous, ``c`` a multiple of 4
        The projection directions as rows (pad with zero rows).
    Q : ndarray (n, c), float64, C-contiguous, written
    sqnorm : ndarray (n,), float64, written

    Raises
    ------
    InputError
        Wrong dtype, shape or layout, or the kernels are not available.
    """
    kernel = _kernel("project", H, y)
    n, d = H.shape
    _check_out("means", means, (len(means), d))
    _check_label_range(y, len(means))
    if VT.ndim != 2 or len(VT) % 4:
        raise InputError(f"VT must have a multiple of 4 rows, got shape {VT.shape}")
    _check_out("VT", VT, (len(VT), d))
    _check_out("Q", Q, (n, len(VT)))
    _check_out("sqnorm", sqnorm, (n,))
    kernel(H, y, float(s), means, VT, Q, sqnorm)
