"""Features and labels from an ``.npz`` file named on the ``pfc`` command line.

Used by ``pfc solve --data FILE`` and ``pfc metrics FILE``: every way the file can be wrong
(unreadable, not an archive, missing or non-numeric arrays, non-integer labels, mismatched
lengths, non-finite values) is an :class:`~ufm.errors.InputError` naming the option and what
to do. Pickled objects are never read.
"""

from __future__ import annotations

import zipfile
import zlib

import numpy as np

from ufm.errors import InputError

__all__ = ["load_npz"]


def _reason(exc: BaseException) -> str:
    """A short reason from a numpy/zipfile error, never numpy's advice to unpickle."""
    text = " ".join(str(exc).split())
    if "pickle" in text:
        return "not an array archive"
    return f"{type(exc).__name__}: {text[:120]}" if text else type(exc).__name__


def load_npz(
    path: str, fkey: str = "H", lkey: str = "y", what: str = "--data"
) -> tuple[np.ndarray, np.ndarray]:
    """Features ``(N, ...)`` flattened to ``(N, d)`` float64 and integer labels ``(N,)`` from an
    .npz file.

    Parameters
    ----------
    path : str
        The ``.npz`` file.
    fkey, lkey : str, default "H" and "y"
        Names of the feature and label arrays in it (options ``--features``, ``--labels``).
    what : str, default "--data"
        How the command line names ``path`` (used in the messages).

    Returns
    -------
    H : array of float64, shape (N, d)
    y : array of int64, shape (N,)

    Raises
    ------
    InputError
        Every way the file can be wrong (the message names the option and what to do).
    """
    how = "pass an .npz file with a feature array and a label array (np.savez(path, H=H, y=y))"
    try:
        with open(path, "rb") as f:
            head = f.read(6)
    except OSError as exc:
        raise InputError(f"{what} {path!r}: cannot read it ({exc.strerror or exc}); {how}") from exc
    if head[:4] != b"PK\x03\x04" and head != b"\x93NUMPY":
        # numpy would try to unpickle anything else and advise allow_pickle: never do that
        kind = "the file is empty" if not head else "not a NumPy .npz archive (no zip header)"
        raise InputError(f"{what} {path!r}: cannot read it: {kind}; {how}")
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise InputError(
            f"{what} {path!r}: cannot read it: damaged or truncated ({_reason(exc)}); write "
            f"it again; {how}"
        ) from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise InputError(
            f"{what} {path!r} holds a single array, not an .npz archive; save features and "
            "labels with np.savez(path, H=H, y=y)"
        )
    arrays = {}
    with data:
        for key, opt in ((fkey, "--features"), (lkey, "--labels")):
            if key not in data.files:
                raise InputError(
                    f"{path!r} has no array {key!r} (it has {sorted(data.files)}); choose with {opt}"
                )
            try:
                arrays[opt] = np.asarray(data[key])
            except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
                if "pickle" in str(exc):
                    # object arrays need pickle, which is never used to read data files
                    raise InputError(
                        f"{opt} {key!r} in {path!r} holds Python objects and cannot be read "
                        "(loading objects could run code from the file); store numeric arrays"
                    ) from exc
                raise InputError(
                    f"{opt} {key!r} in {path!r} cannot be read: the archive is damaged or "
                    f"truncated ({_reason(exc)}); write it again"
                ) from exc
    H, y = arrays["--features"], arrays["--labels"]
    if H.dtype.kind not in "biuf" or H.ndim < 1:
        raise InputError(
            f"--features {fkey!r} in {path!r} must be a real numeric array (N, ...), got dtype "
            f"{H.dtype} and shape {H.shape}"
        )
    if y.ndim != 1 or y.dtype.kind not in "biuf":
        raise InputError(
            f"--labels {lkey!r} in {path!r} must be a 1-D array of integer class labels 0..K-1, "
            f"got dtype {y.dtype} and shape {y.shape}; map names to integers first "
            "(np.unique(y, return_inverse=True)[1])"
        )
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise InputError(
                f"--labels {lkey!r} in {path!r} holds non-integer values; store integer class "
                "labels 0..K-1"
            )
        if y.size and float(np.max(np.abs(y))) >= 2.0**62:
            # beyond int64 the cast would wrap (1e20 became -9223372036854775808)
            raise InputError(
                f"--labels {lkey!r} in {path!r} holds the label {float(np.max(np.abs(y))):g}, "
                "far beyond any class count; store integer class labels 0..K-1"
            )
        y = y.astype(np.int64)
    elif y.dtype == np.uint64 and y.size and int(y.max()) >= 2**62:
        raise InputError(
            f"--labels {lkey!r} in {path!r} holds the label {int(y.max())}, far beyond any "
            "class count; store integer class labels 0..K-1"
        )
    if len(H) != len(y):
        raise InputError(f"{path!r}: {len(H)} feature rows but {len(y)} labels; they must match")
    if len(H) == 0 or H[0].size == 0:
        raise InputError(
            f"--features {fkey!r} in {path!r} has shape {H.shape}: no samples or no features"
        )
    H = np.asarray(H, dtype=np.float64).reshape(len(H), -1)
    bad = int(np.size(H) - np.count_nonzero(np.isfinite(H)))
    if bad:
        raise InputError(
            f"--features {fkey!r} in {path!r} holds {bad} non-finite value(s) (NaN or inf, or "
            "numbers beyond float64); remove or repair those samples"
        )
    return H, y.astype(np.int64)
