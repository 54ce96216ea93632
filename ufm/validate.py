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
    "check_labels",
    "encode_labels",
    "check_scalar",
    "check_int",
    "check_seed",
    "describe",
    "is_real_numeric",
    "SEED_MAX",
]

#: The largest seed accepted anywhere (NumPy's legacy ``np.random.seed``, which training
#: seeds, takes ``0 .. 2**32 - 1``).
SEED_MAX = 2**32 - 1


def is_torch(x: Any) -> bool:
    return is_tensor(x)


def describe(x: Any) -> str:
    """A short description of a value for error messages."""
    if isinstance(x, np.ndarray) or is_tensor(x):
        return f"{type(x).__name__} of shape {tuple(x.shape)} and dtype {x.dtype}"
    r = repr(x)
    return r if len(r) <= 60 else r[:57] + "..."


def is_real_numeric(x: Any) -> bool:
    """Whether ``x`` holds real numbers: a tensor, array or sequence (read as numpy reads it)
    of integer or float dtype. Boolean, complex, string and object data are not (converting
    them to float64 would read booleans as 0/1, parse strings and drop imaginary parts with
    only a warning), nor is a bare ``str``, ``bytes`` or ``bool``."""
    if isinstance(x, str | bytes | bool):
        return False
    if is_tensor(x):
        return not (x.dtype == torch.bool or x.is_complex())
    try:
        return np.asarray(x).dtype.kind in "iuf"
    except (TypeError, ValueError):  # ragged or otherwise not an array
        return False


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
        if arr.dtype.kind == "u" and arr.dtype.itemsize >= 4:
            # torch's uint32/uint64 lack most operations (min, max, bincount): int64 holds
            # every value below 2**63, float64 the rest (so a huge label is reported as such)
            big = arr.size and arr.dtype.itemsize == 8 and int(arr.max()) >= 2**63
            arr = arr.astype(np.float64 if big else np.int64)
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
        _check_label_range(t, name, n if K is None else K)  # inf, nan and huge, as given
        if not bool(torch.isfinite(t).all()) or not bool((t == torch.round(t)).all()):
            raise InputError(
                f"{name} must hold integer class labels 0..K-1, got non-integer values "
                f"({describe(y)}); convert with y.astype(int) after checking them"
            )
    elif t.dtype == torch.bool or t.is_complex():
        raise InputError(f"{name} must hold integer class labels 0..K-1, got {describe(y)}")
    if t.shape[0] == 0:
        raise InputError(f"{name} is empty; pass at least one label per class (K >= 2 classes)")
    _check_label_range(t, name, n if K is None else K)
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


def _label_str(v: Any) -> str:
    """A label as the caller gave it (``1e+20``, ``inf``, ``18446744073709551615``)."""
    v = v.item() if hasattr(v, "item") else v
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return str(int(v))
    return str(v)


def _check_label_range(t: torch.Tensor, name: str, limit: int) -> None:
    """Refuse labels outside ``0..limit-1`` *before* the cast to int64, which wraps huge
    values (``1e20`` was reported as ``-9223372036854775808``); the message shows the value
    as given."""
    if t.numel() == 0 or t.dtype == torch.int64:
        return
    lo, hi = t.min(), t.max()
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()):
            bad = t[~torch.isfinite(t)][0]
            raise InputError(
                f"{name} has label {_label_str(bad)}; labels must be finite integers 0..K-1"
            )
    # only values the cast would mangle; the usual checks after the cast report the rest
    if float(lo) <= -(2**53):
        raise InputError(f"{name} has label {_label_str(lo)} < 0; labels must be 0..K-1")
    if float(hi) >= 2**53:
        raise InputError(
            f"{name} has label {_label_str(hi)}, outside 0..{limit - 1}; labels must be "
            "0..K-1 (every class present)"
        )


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
    _check_label_range(t, name, K)
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


def check_seed(value: Any, name: str = "seed", *, allow_none: bool = False) -> int | None:
    """A random seed: a non-negative integer of any size (or ``None`` where allowed).

    Every seed of the toolkit goes to :func:`numpy.random.default_rng` (a
    :class:`numpy.random.SeedSequence`), which takes integers of any size, so ``2**32`` and
    ``2**200`` are valid seeds; negative, fractional, string and boolean seeds are refused the
    same way everywhere (``default_rng(-1)`` raised a bare ``ValueError``, ``"3"`` a
    ``TypeError``, and ``1.5`` was silently truncated by ``int``).

    Parameters
    ----------
    value : int or None
        The seed.
    name : str
        The argument's name, for the message.
    allow_none : bool
        Whether ``None`` (fresh entropy from the operating system) is accepted.

    Returns
    -------
    int or None

    Raises
    ------
    InputError
        Anything else.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool | np.bool_) or not isinstance(value, int | np.integer):
        what = "a non-negative integer" + (" or None" if allow_none else "")
        raise InputError(
            f"{name} must be {what}, got {describe(value)}; pass e.g. {name}=0 "
            "(any integer >= 0 works, 2**32 and beyond included)"
        )
    v = int(value)
    if v < 0:
        raise InputError(f"{name} must be >= 0, got {v}; pass a non-negative integer seed")
    return v


#: Most float64 entries a statistic of ``K x d`` (class means, sums) may hold: 2**30 (8 GiB).
MAX_STAT_ENTRIES = 2**30


def check_stat_size(K: int, d: int = 1, what: str = "the statistics") -> None:
    """Refuse ``K x d`` statistics beyond :data:`MAX_STAT_ENTRIES` with a clear message
    (``K=10**12`` was a raw MemoryError or torch allocator error)."""
    if K * max(d, 1) > MAX_STAT_ENTRIES:
        raise InputError(
            f"K={K:,} classes x d={d:,} features would need {K * max(d, 1):,} float64 entries "
            f"for {what}, above the limit of {MAX_STAT_ENTRIES:,} (8 GiB); check K (the number "
            "of classes) and the feature dimension"
        )


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


def encode_labels(y: Any, name: str = "y") -> tuple[torch.Tensor, np.ndarray]:
    """Map any hashable class labels to ``0..K-1``, like scikit-learn's ``LabelEncoder``.

    The classes are sorted when they can be compared (numbers, strings), otherwise kept in
    the order of their first appearance; class ``k`` is ``classes[k]`` and the codes satisfy
    ``classes[codes] == y``. Integer labels with gaps or negative values, strings, booleans
    and integral floats are all accepted; class sizes may differ (imbalanced data).

    Parameters
    ----------
    y : array-like of shape (N,) or torch.Tensor
        Class labels, one per sample. A torch tensor keeps its device for the codes.
    name : str
        Argument name used in error messages.

    Returns
    -------
    codes : torch.Tensor of shape (N,), int64
        Labels ``0..K-1``.
    classes : numpy.ndarray of shape (K,)
        The original label of each class.

    Raises
    ------
    InputError
        ``y`` not 1-d, empty, complex, holding non-integral or non-finite floats (a regression
        output passed by mistake) or unhashable entries.
    DegenerateInputError
        Fewer than two distinct classes.
    """
    if isinstance(y, torch.Tensor):
        t = y.detach()
        if t.ndim != 1:
            raise InputError(f"{name} must be a 1-d array of class labels, got {describe(y)}")
        if t.shape[0] == 0:
            raise InputError(f"{name} is empty; pass one label per sample (K >= 2 classes)")
        if t.is_complex():
            raise InputError(f"{name} must hold class labels, got complex values ({describe(y)})")
        if t.is_floating_point() and not (
            bool(torch.isfinite(t).all()) and bool((t == torch.round(t)).all())
        ):
            raise InputError(
                f"{name} must hold integer class labels, got non-integer values "
                f"({describe(y)}); convert with y.long() after checking them"
            )
        if not t.is_floating_point() and t.dtype != torch.bool:
            fast = _already_encoded(t.to(torch.int64))
            if fast is not None:
                return _check_classes(fast[0], fast[1], name, y)
        classes_t, codes = torch.unique(t, sorted=True, return_inverse=True)
        classes = classes_t.cpu().numpy()
        if t.is_floating_point():
            classes = classes.astype(np.int64)
        return _check_classes(codes.to(torch.int64), classes, name, y)
    try:
        a = np.asarray(y)
    except Exception as exc:
        raise InputError(f"{name} must be a 1-d array of class labels, got {describe(y)}") from exc
    if a.dtype.kind in "US" and not isinstance(y, np.ndarray):
        # np.asarray turns a list mixing numbers and strings into strings: keep the objects
        a = np.asarray(list(y), dtype=object) if a.ndim == 1 else a
    if a.ndim != 1:
        raise InputError(f"{name} must be a 1-d array of class labels, got {describe(y)}")
    if a.shape[0] == 0:
        raise InputError(f"{name} is empty; pass one label per sample (K >= 2 classes)")
    if a.dtype.kind == "c":
        raise InputError(f"{name} must hold class labels, got complex values ({describe(y)})")
    if a.dtype.kind == "f":
        if not (np.isfinite(a).all() and (a == np.round(a)).all()):
            raise InputError(
                f"{name} must hold integer class labels, got non-integer values "
                f"({describe(y)}); convert with y.astype(int) after checking them"
            )
        a = a.astype(np.int64)
    if a.dtype.kind in "iu":
        fast = _already_encoded(torch.from_numpy(np.ascontiguousarray(a, dtype=np.int64)))
        if fast is not None:
            return _check_classes(fast[0], fast[1], name, y)
    if a.dtype.kind in "biuUSM":
        classes, codes = np.unique(a, return_inverse=True)
    else:  # object (or another exotic dtype): sort when comparable, else first appearance
        try:
            index = {}
            for v in a:
                if isinstance(v, float) and not math.isfinite(v):
                    raise InputError(f"{name} has the label {v!r}; labels must be finite")
                index.setdefault(v, len(index))
        except TypeError as exc:
            raise InputError(
                f"{name} holds an unhashable label ({exc}); pass numbers or strings"
            ) from exc
        keys = list(index)
        try:
            keys = sorted(keys)
        except TypeError:
            pass  # mixed, incomparable types: order of first appearance
        classes = np.empty(len(keys), dtype=object)
        classes[:] = keys
        pos = {k: i for i, k in enumerate(keys)}
        codes = np.fromiter((pos[v] for v in a), dtype=np.int64, count=a.shape[0])
    return _check_classes(
        torch.from_numpy(np.ascontiguousarray(codes, dtype=np.int64)), classes, name, y
    )


def _already_encoded(t: torch.Tensor) -> tuple[torch.Tensor, np.ndarray] | None:
    """``(t, arange(K))`` when the integer labels already are ``0..K-1`` without gaps (the
    common case: one O(N) count instead of a sort), else None."""
    lo, hi = int(t.min()), int(t.max())
    if lo != 0 or hi >= t.shape[0]:
        return None
    if bool((torch.bincount(t, minlength=hi + 1) > 0).all()):
        return t, np.arange(hi + 1)
    return None


def _check_classes(
    codes: torch.Tensor, classes: np.ndarray, name: str, y: Any
) -> tuple[torch.Tensor, np.ndarray]:
    if classes.shape[0] < 2:
        raise DegenerateInputError(
            f"collapse needs at least K=2 classes, got K={classes.shape[0]} "
            f"(every label of {name} is {classes[0]!r})"
        )
    return codes, classes
