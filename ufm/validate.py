"""Input validation shared by the whole toolkit.

Every check raises :class:`ufm.errors.InputError` (or a subclass) with a message that names the
argument, shows the value and says what to do.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import numpy as np

from .errors import DegenerateInputError, InputError
from .lazy import is_tensor, torch

_NATIVE = "<" if sys.byteorder == "little" else ">"

__all__ = [
    "check_merge_partner",
    "is_torch",
    "to_tensor",
    "check_features",
    "check_features_maxabs",
    "check_labels",
    "check_scalar",
    "check_int",
    "describe",
    "all_finite",
    "finite_maxabs",
    "check_batch_labels",
]


def is_torch(x: Any) -> bool:
    return is_tensor(x)


def describe(x: Any) -> str:
    """A short description of a value for error messages."""
    if isinstance(x, np.ndarray) or is_tensor(x):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


def to_tensor(x: Any, name: str, *, device: torch.device | str | None = None) -> torch.Tensor:
    """Convert an array-like to a torch tensor without copying where possible."""
    if is_tensor(x):
        t = x.detach()
    else:
        try:
            arr = np.asarray(x)
        except Exception as exc:  # pragma: no cover - exotic inputs
            raise InputError(f"{name} must be array-like, got {describe(x)}") from exc
        if arr.dtype == object:
            raise InputError(
                f"{name} must be a numeric array, got an object array ({describe(x)}); "
                "pass a regular numpy array or torch tensor"
            )
        if arr.dtype.kind not in "biufc":
            raise InputError(
                f"{name} must be a numeric array, got dtype {arr.dtype} ({describe(x)}); "
                "map string or date labels to integers 0..K-1 first, e.g. with "
                "np.unique(y, return_inverse=True)[1]"
            )
        if arr.dtype.byteorder not in "=|" and arr.dtype.byteorder != _NATIVE:
            arr = arr.astype(arr.dtype.newbyteorder("="))
        try:
            t = torch.from_numpy(np.ascontiguousarray(arr))
        except TypeError as exc:
            raise InputError(
                f"{name} has dtype {arr.dtype}, which torch cannot hold; convert it to "
                "float64 (features) or int64 (labels)"
            ) from exc
    if device is not None:
        t = t.to(device)
    return t


def check_features(H: Any, name: str = "H", *, ndim: int = 2) -> torch.Tensor:
    """Validate a feature matrix and return it as a floating torch tensor (same device)."""
    return check_features_maxabs(H, name, ndim=ndim)[0]


def check_features_maxabs(H: Any, name: str = "H", *, ndim: int = 2) -> tuple[torch.Tensor, float]:
    """:func:`check_features` that also returns ``max |H|`` (from the same single pass)."""
    t = to_tensor(H, name)
    if t.dtype == torch.bool or t.is_complex():
        raise InputError(f"{name} must be a real floating array, got {describe(H)}")
    if not t.is_floating_point():
        t = t.to(torch.float64)
    if t.ndim != ndim:
        shape = "(N, d)" if ndim == 2 else "(K, n, d)"
        raise InputError(
            f"{name} must have shape {shape} (samples first), got shape {tuple(t.shape)}; "
            + ("reshape with H.reshape(len(H), -1) to flatten conv features" if ndim == 2 else "")
        )
    if t.numel() == 0:
        raise InputError(f"{name} is empty (shape {tuple(t.shape)}); pass at least one sample")
    return t, finite_maxabs(t, name)


def finite_maxabs(t: torch.Tensor, name: str = "H") -> float:
    """``max |t|`` in one pass (no copy); raises :class:`InputError` on NaN or inf.

    The minimum and maximum propagate NaN and inf, so one reduction both checks finiteness and
    gives the scale the metrics normalise by.
    """
    if t.numel() == 0:
        return 0.0
    lo, hi = torch.aminmax(t)
    lo_f, hi_f = float(lo), float(hi)
    if not (math.isfinite(lo_f) and math.isfinite(hi_f)):
        bad = int((~torch.isfinite(t)).sum())
        raise InputError(
            f"{name} contains {bad} non-finite value(s) (NaN or inf); "
            "remove or fix those samples before measuring"
        )
    return max(-lo_f, hi_f)


def all_finite(t: torch.Tensor) -> bool:
    """True when every entry is finite; one fast reduction, exact check only on suspicion."""
    # NaN and inf propagate through a sum, so a finite sum proves finiteness; a non-finite sum
    # may also be an overflow of large finite values, which the elementwise test sorts out.
    if bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


def check_labels(
    y: Any, n: int, *, K: int | None = None, name: str = "y", device: Any = None
) -> tuple[torch.Tensor, int]:
    """Validate integer labels ``0..K-1`` of length ``n``; return (labels int64, K).

    ``K`` defaults to ``max(y) + 1``. Every class ``0..K-1`` must have at least one sample and
    ``K >= 2``.
    """
    if K is not None:
        K = check_int(K, "K", low=2)
    t = to_tensor(y, name)
    if t.ndim != 1:
        raise InputError(f"{name} must be a 1-d array of integer labels, got {describe(y)}")
    if t.shape[0] != n:
        raise InputError(
            f"{name} has {t.shape[0]} labels but the features have {n} rows; "
            "pass one label per sample (samples first)"
        )
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not bool((t == torch.round(t)).all()):
            raise InputError(
                f"{name} must hold integer class labels 0..K-1, got non-integer values "
                f"({describe(y)}); convert with y.astype(int) after checking them"
            )
    elif t.dtype == torch.bool or t.is_complex():
        raise InputError(f"{name} must hold integer class labels 0..K-1, got {describe(y)}")
    if t.shape[0] == 0:
        raise InputError(f"{name} is empty; pass at least one label per class (K >= 2 classes)")
    t = t.to(torch.int64)
    if device is not None:
        t = t.to(device)
    lo, hi = int(t.min()), int(t.max())
    if lo < 0:
        raise InputError(f"{name} has label {lo} < 0; labels must be 0..K-1")
    if K is None:
        if hi + 1 > n:
            # every class needs a sample, so more classes than samples cannot be valid (and a
            # huge label must not allocate a huge count vector)
            raise DegenerateInputError(
                f"{name} has label {hi} but only {n} samples, so some of the classes "
                f"0..{hi} have no sample; relabel classes to 0..K-1 without gaps"
            )
        K = hi + 1
    elif hi >= K:
        raise InputError(f"{name} has label {hi} but K={K}; labels must be 0..K-1 (or raise K)")
    if K > n:
        raise DegenerateInputError(
            f"K={K} classes but only {n} samples in {name}: every class needs at least one"
        )
    if K < 2:
        raise DegenerateInputError(
            f"collapse needs at least K=2 classes, got K={K} (labels of {name} are all {lo})"
        )
    counts = torch.bincount(t, minlength=K)
    empty = torch.nonzero(counts == 0).flatten().tolist()
    if empty:
        raise DegenerateInputError(
            f"class(es) {empty[:10]} of 0..{K - 1} have no sample in {name}; "
            "relabel classes to 0..K-1 without gaps, or pass K explicitly only if every class occurs"
        )
    return t, K


def check_batch_labels(y: Any, n: int, K: int, name: str = "y") -> torch.Tensor:
    """Labels of one batch of a streaming accumulator: ``(n,)`` integers in ``0..K-1``.

    Unlike :func:`check_labels`, a batch need not contain every class.
    """
    t = to_tensor(y, name)
    if t.ndim != 1 or t.shape[0] != n:
        raise InputError(f"{name} must have shape ({n},) to match H, got {describe(y)}")
    if t.dtype == torch.bool or t.is_complex():
        raise InputError(f"{name} must hold integer class labels 0..K-1, got {describe(y)}")
    if t.is_floating_point() and not bool((t == torch.round(t)).all()):
        raise InputError(
            f"{name} must hold integer class labels 0..K-1, got non-integer values ({describe(y)})"
        )
    t = t.to(torch.int64)
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= K):
        raise InputError(
            f"{name} has labels outside 0..K-1 = 0..{K - 1} (min {int(t.min())}, "
            f"max {int(t.max())}); check K or the labels"
        )
    return t


def check_scalar(
    value: Any,
    name: str,
    *,
    low: float | None = 0.0,
    low_inclusive: bool = True,
    high: float | None = None,
) -> float:
    """A finite real scalar in a range; returns it as float.

    Strings and booleans are refused even though ``float()`` accepts them: ``lam="0.1"`` or
    ``lam=True`` is a mistake to report, not to guess at.
    """
    if isinstance(value, str | bytes | bool | np.bool_):
        raise InputError(f"{name} must be a real number, got {describe(value)}")
    try:
        v = float(value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be a real number, got {describe(value)}") from exc
    if not math.isfinite(v):
        raise InputError(f"{name} must be finite, got {v}")
    if low is not None and (v < low or (v == low and not low_inclusive)):
        rel = ">=" if low_inclusive else ">"
        raise InputError(f"{name} must be {rel} {low}, got {v}")
    if high is not None and v > high:
        raise InputError(f"{name} must be <= {high}, got {v}")
    return v


def check_int(value: Any, name: str, *, low: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise InputError(f"{name} must be an integer, got {describe(value)}")
    v = int(value)
    if low is not None and v < low:
        raise InputError(f"{name} must be >= {low}, got {v}")
    return v


def check_merge_partner(this: Any, other: Any, size: str = "K") -> bool:
    """Check the argument of an accumulator's ``merge``; ``True`` when ``other`` holds data.

    ``other`` must be an instance of ``this``'s class with the same ``size`` attribute (the
    number of classes).

    Raises
    ------
    InputError
        Another type, or another ``size``.
    """
    cls = type(this).__name__
    if not isinstance(other, type(this)) or getattr(other, size) != getattr(this, size):
        raise InputError(f"merge() needs a {cls} with the same {size}, got {describe(other)}")
    return getattr(other, "d", None) is not None
