"""Input handling shared by the collapse metrics: validation of features, labels and a
classifier, and cache-sized chunking of the samples."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import torch

from ..errors import DegenerateInputError, InputError
from ..validate import (
    check_features,
    check_features_maxabs,
    check_int,
    check_labels,
    describe,
    to_tensor,
)

F64 = torch.float64
#: Default relative tolerance on the eigenvalues of ``G`` below which a direction of the
#: between-class space counts as absent (NC1's pseudo-inverse).
DEFAULT_RANK_TOL = 1e-10
# tr(Sigma_B) below this multiple of the mean squared class-mean norm is float64 round-off:
# the class means coincide and every ratio with tr(Sigma_B) in the denominator is undefined.
_DEGENERATE_TR_SB = 1e-26
#: Elements per chunk (rows x d): keeps a float64 chunk near L2/L3-cache size so that the
#: several cheap passes over a chunk cost little more than reading it once from memory. Also
#: the chunk of the statistics solver's streaming passes (:mod:`ufm.suffstats`).
CHUNK_ELEMS = 1 << 18


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------
def features_labels(
    H: Any, y: Any, K: int | None, name: str = "H"
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Validate ``(H, y)``; a ``(K, n, d)`` array with ``y=None`` is balanced with implied labels.

    Returns the features as ``(N, d)``, the labels, ``K`` and ``max |H|``.
    """
    if K is not None:
        K = check_int(K, "K", low=2)
    if y is None:
        Ht, mx = check_features_maxabs(H, name, ndim=3) if array_ndim(H) == 3 else (None, 0.0)
        if Ht is None:
            raise InputError(
                f"labels y are required for features {name} of shape {tuple(np.shape(H))}; "
                "pass y of shape (N,), or a balanced array of shape (K, n, d) with y=None"
            )
        Kb, n, d = Ht.shape
        if K is not None and K != Kb:
            raise InputError(f"K={K} does not match the {Kb} classes of {name} (shape (K, n, d))")
        yt = torch.arange(Kb, device=Ht.device).repeat_interleave(n)
        Ht = Ht.reshape(Kb * n, d)
        if Kb < 2:
            raise DegenerateInputError(f"collapse needs at least K=2 classes, got K={Kb}")
        return Ht, yt, Kb, mx
    Ht, mx = check_features_maxabs(H, name)
    yt, K = check_labels(y, Ht.shape[0], K=K, device=Ht.device)
    return Ht, yt, K, mx


def array_ndim(x: Any) -> int:
    """``x.ndim``, or numpy's ``ndim`` of a nested sequence (``-1`` for a ragged one, which the
    feature check then refuses with its message)."""
    if hasattr(x, "ndim"):
        return x.ndim
    try:
        return np.ndim(x)
    except ValueError:  # ragged nested lists
        return -1


def chunk_rows(n_rows: int, d: int, K: int) -> int:
    # at least 4K rows, so that the O(K d) per-chunk merge stays small against the chunk itself;
    # with several threads (the thread policy grants them only to large work) chunks grow so
    # that each operation is large enough to be split between the threads
    threads = torch.get_num_threads()
    elems = CHUNK_ELEMS if threads <= 1 else CHUNK_ELEMS * 4 * threads
    return max(1, min(n_rows, max(4 * K, elems // max(d, 1))))


def chunks(n_rows: int, d: int, K: int) -> Iterable[slice]:
    step = chunk_rows(n_rows, d, K)
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def check_classifier(
    W: Any, b: Any, K: int, d: int, device: torch.device
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    if W is None:
        if b is not None:
            raise InputError("a bias b was given without a classifier W; pass W of shape (K, d)")
        return None, None
    Wt = check_features(W, "W")
    if tuple(Wt.shape) != (K, d):
        raise InputError(
            f"W must have shape (K, d) = ({K}, {d}) (one row per class), got {tuple(Wt.shape)}; "
            "for a torch.nn.Linear classifier pass layer.weight"
        )
    Wt = Wt.to(device=device, dtype=F64)
    if b is None:
        return Wt, None
    bt = to_tensor(b, "b").to(device=device, dtype=F64)
    if tuple(bt.shape) != (K,):
        raise InputError(f"b must have shape (K,) = ({K},), got {describe(b)}")
    if not bool(torch.isfinite(bt).all()):
        raise InputError("b contains non-finite values (NaN or inf)")
    return Wt, bt
