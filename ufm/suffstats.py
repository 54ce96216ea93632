r"""MSE UFM / MUFM through sufficient statistics: one pass over the data, then a solve in (W, b).

This module holds the accumulator, :class:`SufficientStatistics`: one pass over ``(X, y)`` builds
the class counts, the per-class sums and the second moment of ``X``, all that the MSE (M)UFM
needs once the features are eliminated in closed form (MATH.md sec. 5). The reduced objective
in ``(W, b)`` and its trust-region solve live in :mod:`ufm.engine.statistics`
(:class:`~ufm.engine.statistics.ReducedObjective`, :func:`~ufm.engine.statistics.solve_statistics`,
:class:`~ufm.engine.statistics.StatsSolution`; ``solve_statistics`` is also ``ufm.solve_statistics``).

Second moment storage: while the accumulator has seen at most ``d`` samples it keeps the rows
themselves (the ``N x N`` Gram route: products with the second moment cost ``O(N d K)`` and
memory ``N d <= d^2``); once ``N > d`` it switches to the dense ``d x d`` matrix (memory
``d^2``, smaller than the rows). Sums are uncentred and accumulated in float64.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.linalg
import torch

from .errors import DegenerateInputError, InputError
from .rowblocks import map_row_blocks
from .threads import thread_policy
from .validate import (
    check_int,
    check_merge_partner,
    check_stat_size,
    describe,
    is_real_numeric,
    to_tensor,
)

__all__ = ["SufficientStatistics", "STATE"]

#: The state of :class:`SufficientStatistics`, declared once: zeroing, :meth:`~SufficientStatistics.update`,
#: :meth:`~SufficientStatistics.merge`, :meth:`~SufficientStatistics.all_reduce`, the state dict
#: and its checks read this table. Each entry: name, shape (of ``K`` and ``d``; ``()`` a scalar)
#: and kind: ``"count"`` (non-negative integers), ``"sum"`` (finite reals), ``"squares"`` (finite,
#: ``>= 0``), all added across batches and shards, or ``"moment"``: the second moment
#: ``sum_i x_i x_i^T``, a dense ``d x d`` matrix or ``None`` while the rows themselves are kept
#: (``N <= d``, ``gram="auto"``: the rule of :meth:`~SufficientStatistics.densify`).
STATE: tuple[tuple[str, Any, str], ...] = (
    ("counts", lambda K, d: (K,), "count"),  # n_k
    ("sums", lambda K, d: (K, d), "sum"),  # sum_{y_i = k} x_i
    ("sq", lambda K, d: (), "squares"),  # sum_i ||x_i||^2
    ("second", lambda K, d: (d, d), "moment"),  # sum_i x_i x_i^T (dense), or None
)
#: The kinds of :data:`STATE` that batches and shards add.
_ADDED = ("count", "sum", "squares")
#: The settings saved in the state dict beside :data:`STATE` (``K``, ``gram``; ``d`` is ``None``
#: before data). The kept rows (``"rows"``, a list of ``(B, d)`` arrays while the second moment
#: is ``None``) are the one entry outside both tables: how they merge and load is the densify
#: rule (:meth:`SufficientStatistics.merge`), a genuine rule rather than a kind.
SETTINGS: tuple[str, ...] = ("K", "gram", "d")


def _np64(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        return a.detach().to(torch.float64).cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _tampered(key: str, what: str) -> InputError:
    return InputError(
        f"state dict key {key!r} {what}; the state dict was altered or corrupted: rebuild the "
        "statistics from the data (SufficientStatistics.update) or restore a good copy"
    )


def _state_counts(v: Any, K: int) -> np.ndarray:
    """Class counts of a state dict: ``(K,)`` non-negative integers (no silent truncation)."""
    try:
        a = np.asarray(v)
    except Exception as exc:
        raise _tampered("counts", f"must be an array of shape ({K},)") from exc
    if a.shape != (K,) or a.dtype.kind not in "iuf":
        raise _tampered("counts", f"must be {K} integer counts, got {describe(v)}")
    if a.dtype.kind == "f" and not (np.isfinite(a).all() and (a == np.round(a)).all()):
        raise _tampered("counts", "must hold integer counts, got non-integer values")
    if a.size and a.min() < 0:
        raise _tampered("counts", f"must hold counts >= 0, got {a.min()}")
    return a.astype(np.int64, copy=True)


def _state_floats(
    v: Any, key: str, shape: tuple[int | None, ...], *, nonneg: bool = False
) -> np.ndarray:
    """A finite float64 copy of a state dict array of the given shape (``None``: any length)."""
    if not is_real_numeric(v):  # before float64 conversion reads it as numbers anyway
        raise _tampered(key, f"must be a real array, got {describe(v)}")
    try:
        a = np.array(v, dtype=np.float64, copy=True)
    except Exception as exc:
        raise _tampered(key, f"must be a real array, got {describe(v)}") from exc
    if a.ndim != len(shape) or any(
        n is not None and m != n for m, n in zip(a.shape, shape, strict=True)
    ):
        want = "(" + ", ".join("B" if n is None else str(n) for n in shape) + ")"
        raise _tampered(key, f"must have shape {want}, got {describe(v)}")
    if not np.isfinite(a).all():
        raise _tampered(key, "holds NaN or inf")
    if nonneg and a.size and a.min() < 0:
        raise _tampered(key, f"is a sum of squares and must be >= 0, got {a.min():.6g}")
    return a


def _zero(dims: tuple[int, ...], kind: str) -> Any:
    """The empty value of a :data:`STATE` entry: integer or float zeros, ``0.0`` for a scalar."""
    if dims == ():
        return 0.0
    return np.zeros(dims, dtype=np.int64 if kind == "count" else np.float64)


def _copy(v: Any) -> Any:
    return v.copy() if isinstance(v, np.ndarray) else v


def _state_entry(v: Any, name: str, dims: tuple[int, ...], kind: str) -> Any:
    """A state dict's value of the :data:`STATE` entry ``name``, checked by its shape and kind
    (the second moment may be ``None``: the rows are kept instead)."""
    if kind == "count":
        return _state_counts(v, dims[0])
    if kind == "moment" and v is None:
        return None
    a = _state_floats(v, name, dims, nonneg=kind == "squares")
    return float(a) if dims == () else a


def _check_second(C: np.ndarray, sq: float) -> None:
    """``sum_i x_i x_i^T``: symmetric, non-negative diagonal, trace ``sq``."""
    scale = max(float(np.abs(C).max()), 1e-300)
    if not np.allclose(C, C.T, rtol=0.0, atol=1e-10 * scale):
        raise _tampered("second", "must be symmetric (it is sum_i x_i x_i^T)")
    if np.diag(C).min() < 0:
        raise _tampered("second", "has a negative diagonal entry (a scatter, must be >= 0)")
    if abs(float(np.trace(C)) - sq) > 1e-8 * max(abs(sq), 1e-300) + 1e-300:
        raise _tampered("sq", f"= {sq:.17g} differs from the trace of 'second'")


def _check_consistent(st: SufficientStatistics) -> None:
    """Cross-checks between counts, sums, the second moment and the kept rows."""
    N = int(st.counts.sum())
    if st.second is not None and st.rows:
        raise _tampered("rows", "must be empty when 'second' holds the second moment")
    if st.second is None:
        n_rows = sum(len(r) for r in st.rows)
        if n_rows != N:
            raise _tampered("rows", f"hold {n_rows} rows but the counts sum to {N}")
        sq = sum(float(np.einsum("ij,ij->", r, r)) for r in st.rows)
        if abs(sq - st.sq) > 1e-8 * max(abs(st.sq), 1e-300) + 1e-300:
            raise _tampered("sq", f"= {st.sq:.17g} differs from the rows' {sq:.17g}")
    empty = st.counts == 0
    if np.any(st.sums[empty] != 0):
        raise _tampered("sums", "is non-zero for a class whose count is 0")
    # Cauchy-Schwarz: sum_k ||s_k||^2 / n_k <= sum_i ||x_i||^2 (the between part of sq)
    n = np.where(empty, 1, st.counts)
    between = float((np.einsum("kd,kd->k", st.sums, st.sums) / n).sum())
    if between > st.sq * (1 + 1e-8) + 1e-300:
        raise _tampered(
            "sq", f"= {st.sq:.6g} is below sum_k ||sums_k||^2 / counts_k = {between:.6g}"
        )


class SufficientStatistics:
    """Streaming sufficient statistics of labelled data for the MSE (M)UFM.

    Holds the class counts ``n_k``, the per-class sums ``sum_{y_i=k} x_i`` (``K x d``), the sum
    of squared norms ``sum_i ||x_i||^2`` and the second moment ``sum_i x_i x_i^T``: as the rows
    themselves while ``N <= d`` (the ``N x N`` Gram route), as a dense ``d x d`` matrix once
    ``N > d``. Everything is float64 on the CPU.

    Parameters
    ----------
    K : int
        Number of classes (labels ``0..K-1``), ``K >= 2``.
    gram : {"auto", "dense"}
        ``"auto"``: rows while ``N <= d``, dense afterwards; ``"dense"``: always ``d x d``.

    Examples
    --------
    >>> import numpy as np
    >>> from ufm import SufficientStatistics, solve_statistics
    >>> rng = np.random.default_rng(0)
    >>> X, y = rng.standard_normal((60, 5)), np.repeat(np.arange(3), 20)
    >>> st = SufficientStatistics(3)
    >>> for i in range(0, 60, 25):
    ...     _ = st.update(X[i : i + 25], y[i : i + 25])
    >>> sol = solve_statistics(st, lam=0.1)
    >>> sol.converged
    True
    """

    def __init__(self, K: int, *, gram: str = "auto"):
        self.K = check_int(K, "K", low=2)
        check_stat_size(self.K, 1, "the class counts")
        if gram not in ("auto", "dense"):
            raise InputError(f"gram must be 'auto' or 'dense', got {describe(gram)}")
        self.gram = gram
        self.d: int | None = None
        self.counts: np.ndarray
        self.sums: np.ndarray | None
        self.sq: float
        self.second: np.ndarray | None  # dense (d, d) sum of x x^T
        for name, shape, kind in STATE:  # what needs d waits for the first batch (_init)
            dims = shape(self.K, None)
            setattr(self, name, None if None in dims or kind == "moment" else _zero(dims, kind))
        self.rows: list[np.ndarray] = []  # kept while N <= d (gram="auto")

    # -- accumulation -----------------------------------------------------------------------
    @property
    def N(self) -> int:
        """Number of samples seen."""
        return int(self.counts.sum())

    @property
    def dense(self) -> bool:
        """Whether the second moment is held as a ``d x d`` matrix."""
        return self.second is not None

    @classmethod
    def from_counts(cls, counts: Any, d: int) -> SufficientStatistics:
        """Statistics of labels alone (the UFM: no data ``X``): class counts in a space of
        dimension ``d``, zero sums.

        Raises
        ------
        InputError
            ``counts`` not a 1-d array of K >= 2 non-negative integers, or ``d < 1``.
        """
        c = np.asarray(counts)
        if c.ndim != 1 or c.shape[0] < 2 or not np.issubdtype(c.dtype, np.integer) or (c < 0).any():
            raise InputError(
                f"counts must be a 1-d array of K >= 2 non-negative integers, got {describe(counts)}"
            )
        st = cls(int(c.shape[0]))
        st._init(check_int(d, "d", low=1))
        st.counts = c.astype(np.int64)
        return st

    def _init(self, d: int) -> None:
        check_stat_size(self.K, d, "the class sums")
        if self.gram == "dense":
            check_stat_size(d, d, "the dense second moment (gram='dense')")
        self.d = d
        for name, shape, kind in STATE:
            if getattr(self, name) is None and (kind != "moment" or self.gram == "dense"):
                setattr(self, name, _zero(shape(self.K, d), kind))

    def _add(self, parts: dict[str, Any]) -> None:
        """Add a batch's or a shard's statistics of the added kinds of :data:`STATE`."""
        for name, _, kind in STATE:
            if kind in _ADDED:
                setattr(self, name, getattr(self, name) + parts[name])

    @thread_policy("X")
    def update(self, X: Any, y: Any) -> SufficientStatistics:
        """Add a batch ``X`` of shape ``(B, d)`` with labels ``y`` of shape ``(B,)``.

        Raises
        ------
        InputError
            Wrong shapes, labels outside ``0..K-1``, non-finite values, or values so large that
            the second moment overflows float64 (rescale the data).
        """
        Xt = to_tensor(X, "X")
        if Xt.ndim != 2 or Xt.dtype == torch.bool or Xt.is_complex():
            raise InputError(
                f"X must be a real array of shape (B, d) (float or integer), got {describe(X)}"
            )
        yt = to_tensor(y, "y")
        if yt.ndim != 1 or yt.shape[0] != Xt.shape[0]:
            raise InputError(
                f"y must have shape ({Xt.shape[0]},) to match X {tuple(Xt.shape)}, got "
                f"{describe(y)}"
            )
        if yt.is_floating_point() or yt.dtype == torch.bool:
            if yt.dtype == torch.bool or not bool(torch.all(yt == torch.round(yt))):
                raise InputError(f"y must hold integer labels 0..{self.K - 1}, got {describe(y)}")
        yt = yt.to(torch.int64)
        if yt.numel() and (int(yt.min()) < 0 or int(yt.max()) >= self.K):
            raise InputError(
                f"labels must lie in 0..{self.K - 1}, got values in {int(yt.min())}.."
                f"{int(yt.max())}"
            )
        if self.d is None:
            self._init(int(Xt.shape[1]))
        if Xt.shape[1] != self.d:
            raise InputError(f"X has d={Xt.shape[1]} columns, earlier batches had d={self.d}")
        if Xt.shape[0] == 0:
            return self
        B = int(Xt.shape[0])
        keep_rows = self.second is None and self.gram == "auto" and self.N + B <= self.d
        if _on_accelerator(Xt) and not keep_rows:
            # data on a GPU stay there: the K x d and d x d moments (float64) are what crosses
            # to the CPU, not X
            Xd = Xt.to(torch.float64)
            yd = yt.to(Xd.device)
            cnt = torch.bincount(yd, minlength=self.K).cpu().numpy()
            sums = torch.zeros((self.K, self.d), dtype=torch.float64, device=Xd.device)
            sums = sums.index_add_(0, yd, Xd).cpu().numpy()
            Gb = (Xd.T @ Xd).cpu().numpy()
            sq = float(np.trace(Gb))
            Xn = None
        else:
            if isinstance(X, np.ndarray) and X.dtype == np.float64:
                Xn = X
            else:
                Xn = Xt.to(torch.float64).cpu().numpy()
            yn = yt.cpu().numpy()
            cnt = np.bincount(yn, minlength=self.K)
            # per-class sums through one-hot products (BLAS) over cache-sized row blocks (no
            # (B, K) array) and the second moment by rank-k updates, in one pass over X
            with np.errstate(all="ignore"):  # non-finite results are checked just below
                if keep_rows:
                    sums, _ = _moments(Xn, yn, self.K, second=False)
                    sq = float(np.einsum("ij,ij->", Xn, Xn))
                else:
                    sums, Gb = _moments(Xn, yn, self.K)
                    sq = float(np.trace(Gb))
        if not (math.isfinite(sq) and np.isfinite(sums).all()):
            raise InputError(
                "X has non-finite values or values too large for float64 second moments "
                f"(sum of squared norms = {sq:.3g}); pass finite data scaled to |x| < 1e150"
            )
        self._add({"counts": cnt, "sums": sums, "sq": sq})
        if keep_rows:
            self.rows.append(np.array(Xn, dtype=np.float64, copy=True))
        else:
            if self.second is None:
                self.densify()
            self.second += Gb
        return self

    def densify(self) -> None:
        """Switch the second moment to the dense ``d x d`` matrix (from the stored rows while
        ``N <= d``); a no-op when it is dense already."""
        if self.second is not None:
            return
        C = np.zeros((self.d, self.d))
        for R in self.rows:
            C += _gram(R)
        self.second, self.rows = C, []

    def merge(self, other: SufficientStatistics) -> SufficientStatistics:
        """Add another shard's statistics into this one (in place; returns self)."""
        if not check_merge_partner(self, other):
            return self
        if self.d is None:
            self._init(other.d)
        if other.d != self.d:
            raise InputError(f"cannot merge statistics of width d={self.d} and d={other.d}")
        self._add({name: getattr(other, name) for name, _, _ in STATE})
        # the second moment: dense + dense, or rows kept while N <= d (the densify rule)
        if other.second is not None:
            if self.second is None:
                self.densify()
            self.second += other.second
        else:
            if self.second is not None:
                for R in other.rows:
                    self.second += _gram(R)
            else:
                self.rows.extend(r.copy() for r in other.rows)
                if self.N > self.d:
                    self.densify()
        return self

    def state_dict(self) -> dict[str, Any]:
        """A picklable snapshot (numpy arrays)."""
        return {
            **{key: getattr(self, key) for key in SETTINGS},
            **{name: _copy(getattr(self, name)) for name, _, _ in STATE},
            "rows": [r.copy() for r in self.rows],
        }

    @classmethod
    def from_state_dict(cls, sd: Any) -> SufficientStatistics:
        """Rebuild from :meth:`state_dict`.

        Raises
        ------
        InputError
            ``sd`` is not a state dict of this class.
        """
        keys = {*SETTINGS, "rows", *(name for name, _, _ in STATE)}
        if not isinstance(sd, dict) or not keys <= set(sd):
            missing = sorted(keys - set(sd)) if isinstance(sd, dict) else sorted(keys)
            raise InputError(
                "from_state_dict() needs the dict returned by SufficientStatistics.state_dict() "
                f"with keys {sorted(keys)}; missing {missing}, got {describe(sd)}"
            )
        st = cls(sd["K"], gram=sd["gram"])
        if sd["d"] is not None:
            st._init(check_int(sd["d"], "state dict key 'd'", low=1))
            K, d = st.K, st.d
            for name, shape, kind in STATE:
                setattr(st, name, _state_entry(sd[name], name, shape(K, d), kind))
            if st.second is not None:
                _check_second(st.second, st.sq)
            elif st.gram == "dense":
                raise _tampered("second", "is None, but gram='dense' keeps the d x d moment")
            rows = sd["rows"]
            if not isinstance(rows, list | tuple):
                raise _tampered("rows", f"must be a list of (B, {d}) arrays, got {describe(rows)}")
            st.rows = [_state_floats(r, f"rows[{i}]", (None, d)) for i, r in enumerate(rows)]
            _check_consistent(st)
        return st

    def all_reduce(self, group: Any = None) -> SufficientStatistics:
        """Sum the statistics of every process of a ``torch.distributed`` group, in place.

        The second moment is densified first (``d x d``); every rank ends with the same sums.

        Raises
        ------
        InputError
            No initialised process group, or a rank without data.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise InputError("all_reduce() needs an initialised torch.distributed process group")
        if self.d is None:
            raise InputError("all_reduce() needs data on every rank (call update() first)")
        if self.second is None:
            self.densify()
        flat = torch.from_numpy(
            np.concatenate(
                [np.ravel(getattr(self, name)).astype(np.float64) for name, _, _ in STATE]
            )
        )
        dist.all_reduce(flat, group=group)
        f = flat.numpy()
        o = 0
        for name, shape, kind in STATE:
            dims = shape(self.K, self.d)
            n = math.prod(dims)
            v = f[o : o + n].reshape(dims)
            o += n
            if kind == "count":
                setattr(self, name, np.rint(v).astype(np.int64))
            else:
                setattr(self, name, float(v) if dims == () else v.copy())
        return self

    # -- what the solver needs -----------------------------------------------------------------
    def check_ready(self) -> None:
        """Raise unless every class has a sample.

        Raises
        ------
        DegenerateInputError
            No data, or a class without samples.
        """
        if self.d is None:
            raise DegenerateInputError("the statistics hold no data; call update(X, y) first")
        empty = np.flatnonzero(self.counts == 0)
        if empty.size:
            raise DegenerateInputError(
                f"classes {empty.tolist()} have no samples; every class 0..{self.K - 1} needs one"
            )

    def second_times(self, V: np.ndarray) -> np.ndarray:
        """``V @ (sum_i x_i x_i^T)`` for ``V`` of shape ``(m, d)``."""
        V = np.asarray(V, dtype=np.float64)
        if self.second is not None:
            return V @ self.second
        out = np.zeros_like(V)
        for R in self.rows:
            out += (V @ R.T) @ R
        return out


def _on_accelerator(X: torch.Tensor) -> bool:
    """Whether ``X`` lives on a GPU (or another non-CPU device): its moments are taken there."""
    return X.device.type != "cpu"


#: Rows per chunk of the fused moment pass (at d = 64, 1 MiB: the chunk stays in L2 between
#: its two readers).
_MOMENT_ROWS = 2048


def _moments(
    X: np.ndarray, y: np.ndarray, K: int, *, second: bool = True
) -> tuple[np.ndarray, np.ndarray | None]:
    """Per-class sums ``(K, d)`` and second moment ``X^T X`` ``(d, d)`` in one pass over ``X``.

    Each row block is read once, while it is in cache, by both a one-hot product (class sums)
    and a symmetric rank-k update (second moment; skipped, ``None``, with ``second=False``);
    the blocks are split between the threads the call was granted
    (:func:`ufm.rowblocks.map_row_blocks`).
    """
    n, d = X.shape

    def block(start: int, stop: int) -> tuple[np.ndarray, np.ndarray | None]:
        step = min(_MOMENT_ROWS, max(stop - start, 1))
        sums = np.zeros((K, d))
        C = np.zeros((d, d), order="F") if second else None
        E = np.zeros((step, K))
        ar = np.arange(step)
        syrk = scipy.linalg.blas.dsyrk
        for a in range(start, stop, step):
            b = min(a + step, stop)
            Xc, Em, yc = X[a:b], E[: b - a], y[a:b]
            Em[ar[: b - a], yc] = 1.0
            sums += Em.T @ Xc
            Em[ar[: b - a], yc] = 0.0
            if second:
                # Xc^T Xc: Xc.T of a C-ordered block is Fortran-ordered, what dsyrk reads
                Xf = Xc.T if Xc.flags.c_contiguous else np.asfortranarray(Xc.T)
                C = syrk(1.0, Xf, beta=1.0, c=C, lower=0, overwrite_c=1)
        return sums, (C if second else None)

    parts = map_row_blocks(n, block, width=d)
    sums = sum(p[0] for p in parts[1:]) + parts[0][0]
    if not second:
        return sums, None
    C = sum(p[1] for p in parts[1:]) + parts[0][1]
    iu = np.triu_indices_from(C, 1)
    C[(iu[1], iu[0])] = C[iu]
    return sums, np.ascontiguousarray(C)


def _gram(X: np.ndarray) -> np.ndarray:
    """``X^T X`` by a symmetric rank-k update (half the flops of a general product)."""
    if X.shape[0] == 0:
        return np.zeros((X.shape[1], X.shape[1]))
    Xf = np.asfortranarray(X.T) if not X.flags.c_contiguous else X.T  # (d, B), Fortran order
    C = scipy.linalg.blas.dsyrk(1.0, Xf, lower=0)
    iu = np.triu_indices_from(C, 1)
    C[(iu[1], iu[0])] = C[iu]
    return C
