"""The streaming, mergeable collapse accumulator of one layer (two passes, ``O(K d + K^2)``
state), with its serialisation and ``torch.distributed`` all-reduce.

One class: its pass-1/pass-2 updates, merge, state dict and all-reduce share one state
layout; other modules start it from data or statistics through its public constructors
(:meth:`CollapseAccumulator.from_batch`, :meth:`CollapseAccumulator.from_statistics`).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

import numpy as np
import torch

from ..errors import DegenerateInputError, InputError
from ..registry import METRICS
from ..rowblocks import map_row_blocks
from ..threads import thread_policy
from ..validate import (
    check_batch_labels,
    check_features_maxabs,
    check_int,
    check_merge_partner,
    check_scalar,
    check_stat_size,
    describe,
    is_real_numeric,
)
from . import kernels
from .gram import (
    ClassStats,
    between,
    check_tr_sb,
    gram_pinv_sq,
    nc3_from_means,
    unscale,
)
from .inputs import (
    DEFAULT_RANK_TOL,
    F64,
    check_classifier,
    chunk_rows,
    features_labels,
)

#: The pass-1 state, declared once: per-class counts, means and sums of squared deviations
#: (Chan's parallel update merges them, :func:`chan_merge`, in this order); the zeroed state,
#: the change of units, the merge of shards, the state dict, its shape and value checks and
#: all-reduce's packing read this table. Each entry: name, shape (of ``K`` and ``d``) and kind
#: (as for :data:`PASS2_TENSORS`).
PASS1_TENSORS: tuple[tuple[str, Any, str], ...] = (
    ("counts", lambda K, d: (K,), "count"),
    ("means", lambda K, d: (K, d), "sum"),
    ("ss", lambda K, d: (K,), "squares"),
)
#: The power of the feature unit in which each kind of pass-1 state is held: counts carry no
#: unit, means one, sums of squares two (so a change of units by ``f`` multiplies by ``f**p``).
UNIT_POWER: dict[str, int] = {"count": 0, "sum": 1, "squares": 2}


def in_units(t: torch.Tensor, kind: str, f: float) -> torch.Tensor:
    """Pass-1 state of ``kind`` expressed in units ``f`` times smaller (``f`` a power of two, so
    exact up to underflow): multiplied by ``f`` once per power (``(ss * f) * f``, not
    ``ss * (f * f)``: ``f * f`` overflows to inf for scales below ``2**-511``)."""
    for _ in range(UNIT_POWER[kind]):
        t = t * f
    return t


#: The pass-2 state, declared once: sums over the pass-2 samples, so :meth:`~CollapseAccumulator.merge`
#: and :meth:`~CollapseAccumulator.all_reduce` add them, :meth:`~CollapseAccumulator.state_dict`
#: saves them and the state-dict checks validate them from this table. Each entry: name, shape
#: (of ``K`` and the fingerprint width ``m = K + 1``), and kind (``"count"``: non-negative
#: integers; ``"sum"``: finite reals; ``"squares"``: finite and non-negative).
PASS2_TENSORS: tuple[tuple[str, Any, str], ...] = (
    ("S", lambda K, m: (K, K), "sum"),  # sum of NC1's projected deviation products
    ("ss2", lambda K, m: (K,), "squares"),  # scatter about the frozen means, per class
    ("counts2", lambda K, m: (K,), "count"),  # fingerprint: pass-2 samples per class
    ("fp_sum", lambda K, m: (K, m), "sum"),  # fingerprint: projected deviation sums
    ("fp_sq", lambda K, m: (K, m), "squares"),  # fingerprint: their squares
)
#: Integer pass-2 sums (samples, NCC-correct samples, classifier disagreements).
PASS2_SCALARS: tuple[str, ...] = ("n2", "correct", "mismatch")
#: The entries of :data:`PASS2_TENSORS` that an older state dict may lack (the fingerprint was
#: added later): such a state dict loads and trusts its counts; the others are required.
PASS2_OPTIONAL: tuple[str, ...] = ("counts2", "fp_sum", "fp_sq")

#: Marks a :data:`SETTINGS` entry that every state dict holds.
REQUIRED = object()
#: The settings saved in the state dict beside the tensors of :data:`PASS1_TENSORS`,
#: :data:`PASS2_TENSORS` and :data:`PASS2_SCALARS`, declared once: key, attribute, and the
#: value assumed for a state dict written before the key was saved (:data:`REQUIRED`: none,
#: a state dict without it is refused). Tensors among them (``W``, ``b``) are saved on the CPU.
SETTINGS: tuple[tuple[str, str, Any], ...] = (
    ("K", "K", REQUIRED),
    ("rank_tol", "rank_tol", REQUIRED),
    ("phase", "phase", REQUIRED),
    ("d", "d", REQUIRED),
    ("W", "W", REQUIRED),
    ("b", "b", REQUIRED),
    ("scale_exp", "scale_exp", 0),
    ("maxabs", "maxabs", math.inf),
    ("auto_scale", "_auto_scale", True),  # older state dicts came from the default
)


def cross_merge(
    cross: torch.Tensor,
    cb: torch.Tensor,
    na: torch.Tensor,
    nb: torch.Tensor,
    dA: torch.Tensor,
    dB: torch.Tensor,
) -> torch.Tensor:
    r"""Cross terms of two disjoint sets of samples combined (the bilinear form of Chan's update).

    With ``n = n_a + n_b`` and the differences of the two sets' class means ``dA`` (layer A)
    and ``dB`` (layer B), :math:`c = c_a + c_b + \langle dA_k, dB_k\rangle n_a n_b / n`.
    Shapes ``(K,)`` (``cross``, ``cb``, counts) and ``(K, d)``; float64. With ``dA = dB`` it is
    the within-class scatter of :func:`chan_merge`; :class:`~ufm.metrics.LineAccumulator` merges
    the cross terms of two layers with it.
    """
    n = torch.clamp((na + nb).to(F64), min=1.0)
    return cross + cb + (dA * dB).sum(1) * (na.to(F64) * nb.to(F64) / n)


def chan_merge(
    na: torch.Tensor,
    ma: torch.Tensor,
    ssa: torch.Tensor,
    nb: torch.Tensor,
    mb: torch.Tensor,
    ssb: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Combine per-class (counts, means, within-class scatter) of two disjoint sets of samples.

    The pairwise update of Chan, Golub and LeVeque: with ``n = n_a + n_b`` and
    ``delta = m_b - m_a``, ``m = m_a + delta n_b / n`` and
    ``ss = ss_a + ss_b + ||delta||^2 n_a n_b / n``; classes empty on both sides keep mean 0.
    Shapes ``(K,)``, ``(K, d)``, ``(K,)``; float64 means and scatter.
    """
    n = na + nb
    nf = torch.clamp(n.to(F64), min=1.0)
    delta = mb - ma
    m = ma + delta * (nb.to(F64) / nf)[:, None]
    return n, m, cross_merge(ssa, ssb, na, nb, delta, delta)


def _native(Ht: torch.Tensor, yt: torch.Tensor) -> bool:
    """Whether a batch goes through :mod:`ufm.metrics.kernels` (CPU, float32/64, contiguous)."""
    return (
        Ht.device.type == "cpu"
        and Ht.dtype in (torch.float32, torch.float64)
        and Ht.is_contiguous()
        and not Ht.requires_grad
        and yt.dtype == torch.int64
        and yt.is_contiguous()
        and kernels.use_for(Ht.numel())
    )


def _pad_rows(A: torch.Tensor, m: int) -> np.ndarray:
    """``A`` as a C-contiguous float64 array with zero rows appended up to a multiple of ``m``."""
    r = -(-A.shape[0] // m) * m
    out = np.zeros((r, A.shape[1]))
    out[: A.shape[0]] = A.cpu().numpy()
    return out


#: Smallest internal scale exponent (:meth:`CollapseAccumulator._scale_for`).
_MIN_SCALE_EXP = -1020


class CollapseAccumulator:
    r"""Streaming, mergeable collapse statistics of one layer.

    Pass 1 accumulates, per class ``k``, the count ``n_k``, the mean ``mu_k`` and the sum of
    squared deviations ``s_k = \sum_{y_i=k} \|h_i - \mu_k\|^2``. Batches are merged with Chan et
    al.'s pairwise update

    .. math::

        n = n_a + n_b, \quad \mu = \mu_a + \tfrac{n_b}{n}(\mu_b - \mu_a), \quad
        s = s_a + s_b + \tfrac{n_a n_b}{n}\|\mu_b - \mu_a\|^2,

    where each batch's own ``s_b`` is computed about the batch's own class means, so no
    ``E[h^2] - E[h]^2`` cancellation occurs. Pass 2 (after :meth:`end_first_pass`) accumulates,
    with the final means, the nearest-class-centre hits, the ``K x K`` matrix
    ``S = sum_i P_i P_i^T`` with ``P_i = M^T (h_i - mu_{y_i})`` (for NC1) and, with a classifier,
    the NC4 disagreements.

    Parameters
    ----------
    K : int
        Number of classes (``>= 2``).
    W : array of shape (K, d), optional
        Classifier weights for NC3 and NC4.
    b : array of shape (K,), optional
        Classifier bias for NC4.
    rank_tol : float
        Relative eigenvalue cut-off of ``G`` for NC1's pseudo-inverse.

    Notes
    -----
    State lives in float64 on the device of the first batch. Shards are combined with
    :meth:`merge` (same phase) or across processes with :meth:`all_reduce`. Unbalanced classes are
    allowed: every formula of MATH.md section 2 is defined for them.
    """

    def __init__(
        self,
        K: int,
        *,
        W: Any = None,
        b: Any = None,
        rank_tol: float = DEFAULT_RANK_TOL,
        auto_scale: bool = True,
    ):
        self.K = check_int(K, "K", low=2)
        check_stat_size(self.K, 1, "the class counts")
        self.rank_tol = check_scalar(rank_tol, "rank_tol", low=0.0, low_inclusive=False, high=1.0)
        self._W_in, self._b_in = W, b
        self.W: torch.Tensor | None = None
        self.b: torch.Tensor | None = None
        self.d: int | None = None
        self.device: torch.device | None = None
        self.phase = 1
        self.counts: torch.Tensor | None = None  # (K,) int64
        self.means: torch.Tensor | None = None  # (K, d) float64, in units of 2**scale_exp
        self.ss: torch.Tensor | None = None  # (K,) float64, in units of 4**scale_exp
        # Internal scale: the state holds the statistics of H * 2**-scale_exp, with scale_exp the
        # binary exponent of max |H| over pass 1, so that squares neither overflow nor underflow
        # for features anywhere in float64's range; multiplying by a power of two is exact.
        self.scale_exp = 0
        self.maxabs = 0.0  # max |h| over pass 1, original units
        # auto_scale=False keeps the features' own units (for accumulators whose statistics are
        # combined linearly with another's, as LineAccumulator does)
        self._auto_scale = bool(auto_scale)
        # pass 2
        self.n2 = 0
        self.correct = 0
        self.mismatch = 0
        self.S: torch.Tensor | None = None  # (K, K)
        self.ss2: torch.Tensor | None = None  # (K,) scatter about the final means
        # pass-2 fingerprint: per-class counts, and per-class sums (and sums of squares) of the
        # deviations h - mu_y projected on the K centred means and one fixed random direction.
        # The sums vanish (to round-off) exactly when pass 2 sees the data whose means pass 1
        # froze.
        self.counts2: torch.Tensor | None = None  # (K,) int64
        self.fp_sum: torch.Tensor | None = None  # (K, K + 1)
        self.fp_sq: torch.Tensor | None = None  # (K, K + 1)
        self._frozen: dict[str, torch.Tensor] = {}
        # pass 1 may skip the scatter when a second pass is certain (it recomputes it exactly)
        self._track_ss = True

    # -- constructors from data or statistics -------------------------------------------------
    @classmethod
    def from_batch(
        cls,
        H: Any,
        y: Any,
        K: int | None = None,
        *,
        W: Any = None,
        b: Any = None,
        second: bool = True,
        rank_tol: float = DEFAULT_RANK_TOL,
    ) -> CollapseAccumulator:
        """Both passes over one in-memory batch ``H (N, d)``, ``y (N,)`` (``second=False``: pass
        1 only, tracking the scatter); what :func:`ufm.collapse_metrics` computes from."""
        Ht, yt, K, mx = features_labels(H, y, K)
        acc = cls(K, W=W, b=b, rank_tol=rank_tol)
        acc._track_ss = not second
        acc._init_state(Ht.shape[1], Ht.device)
        acc._scale_for(mx)
        acc._feed(Ht, yt)
        if second:
            acc.end_first_pass()
            acc._feed(Ht, yt)
        return acc

    @classmethod
    def from_statistics(
        cls,
        counts: Any,
        means: Any,
        ss: Any = None,
        *,
        W: Any = None,
        b: Any = None,
        rank_tol: float = DEFAULT_RANK_TOL,
        scale_exp: int = 0,
        maxabs: float = math.inf,
        auto_scale: bool = False,
        device: Any = None,
    ) -> CollapseAccumulator:
        """A pass-1 accumulator that starts from given first-pass statistics.

        Parameters
        ----------
        counts : array of int, shape (K,)
            Samples per class (every class at least one before :meth:`end_first_pass`).
        means : array of shape (K, d)
            Class means, in units of ``2**scale_exp`` (the state holds the statistics of
            ``H * 2**-scale_exp``).
        ss : array of shape (K,), optional
            Per-class sums of squared deviations from the class means (same units, squared);
            ``None``: not tracked (a second pass recomputes the scatter exactly).
        W, b, rank_tol
            As for the constructor.
        scale_exp : int
            Binary exponent of the units of ``means`` and ``ss``.
        maxabs : float
            ``max |h|`` of the data, original units (``inf``: no range check in pass 2).
        auto_scale : bool
            Whether later batches may rescale the state (see the constructor).
        device : torch.device, optional
            Device of the state (default: that of ``means`` when a tensor, else the CPU).

        Returns
        -------
        CollapseAccumulator
            In pass 1: more batches may be added with :meth:`update`, or the means frozen with
            :meth:`end_first_pass` for a second pass. Used by :class:`LineAccumulator`, its
            all-reduce and the statistics solver's one-pass metrics.

        Raises
        ------
        InputError
            Shapes that do not fit ``K`` classes, negative counts or sums of squares,
            non-finite means.
        """
        try:
            mt = means if isinstance(means, torch.Tensor) else torch.as_tensor(np.asarray(means))
            cn = counts.cpu().numpy() if isinstance(counts, torch.Tensor) else np.asarray(counts)
            if (
                cn.dtype.kind not in "iuf"
                or not np.all(np.isfinite(cn))
                or np.any(cn != np.round(cn))
            ):
                raise TypeError("not integral")
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(
                f"from_statistics needs integer counts (K,) and real means (K, d), got counts "
                f"{describe(counts)} and means {describe(means)}"
            ) from exc
        if mt.dtype.is_complex or mt.dtype == torch.bool:
            raise InputError(f"means must be real, got {describe(means)}")
        dev = torch.device(device) if device is not None else mt.device
        mt = mt.to(device=dev, dtype=F64)
        ct = torch.as_tensor(cn.astype(np.int64)).to(device=dev)
        if mt.ndim != 2 or ct.shape != (mt.shape[0],):
            raise InputError(
                f"means must have shape (K, d) and counts shape (K,), got {tuple(mt.shape)} and "
                f"{tuple(ct.shape)}"
            )
        if bool((ct < 0).any()) or not bool(torch.isfinite(mt).all()):
            raise InputError("counts must be >= 0 and means finite")
        acc = cls(int(mt.shape[0]), W=W, b=b, rank_tol=rank_tol, auto_scale=auto_scale)
        acc._init_state(int(mt.shape[1]), dev)
        acc.counts, acc.means = ct.clone(), mt.clone()
        if ss is None:
            acc._track_ss = False
        else:
            st = torch.as_tensor(ss).to(device=dev, dtype=F64)
            if st.shape != ct.shape or bool((st < 0).any()) or not bool(torch.isfinite(st).all()):
                raise InputError("ss must have shape (K,) with finite values >= 0")
            acc.ss = st.clone()
        acc.scale_exp = int(scale_exp)
        acc.maxabs = float(maxabs)
        return acc

    @property
    def unit(self) -> float:
        """``2**-scale_exp``: the state holds the statistics of ``H * unit`` (a power of two)."""
        return self._s

    @property
    def frozen(self) -> Mapping[str, Any]:
        """The pass-2 constants frozen by :meth:`end_first_pass` (read-only): ``V`` (``(d, K +
        1 [+ K])``, the centred class means in state units, a fixed random direction and
        ``W^T`` when given) and ``dist2`` (``(K, K)`` squared distances between class means)."""
        if self.phase != 2:
            raise InputError("frozen constants exist after end_first_pass()")
        return MappingProxyType(self._frozen)

    def merge_first_pass(self, counts: Any, means: Any, ss: Any) -> None:
        """Add a block's first-pass statistics (class counts, means and sums of squared
        deviations, in state units) with Chan's parallel update."""
        self._merge1(counts, means, ss)

    # -- state --------------------------------------------------------------------------------
    def _init_state(self, d: int, device: torch.device) -> None:
        check_stat_size(self.K, d, "the class means")
        self.d, self.device = d, device
        for name, shape, kind in PASS1_TENSORS:
            dtype = torch.int64 if kind == "count" else F64
            setattr(self, name, torch.zeros(shape(self.K, d), dtype=dtype, device=device))
        self.W, self.b = check_classifier(self._W_in, self._b_in, self.K, d, device)

    @property
    def _s(self) -> float:
        return math.ldexp(1.0, -self.scale_exp)

    def _rescale_to(self, e: int) -> None:
        """Express the pass-1 state in units of ``2**e`` (exact up to underflow)."""
        if e == self.scale_exp:
            return
        f = math.ldexp(1.0, self.scale_exp - e)
        # the first batch rescales from 2**0: in_units keeps 0 * inf out of the scatter
        for name, _, kind in PASS1_TENSORS:
            setattr(self, name, in_units(getattr(self, name), kind, f))
        self.scale_exp = e

    def check_batch(self, H: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
        """Check a batch of this layer and take its range into the state's units, as
        :meth:`update` does before it accumulates (an accumulator that feeds its own statistics,
        such as :class:`~ufm.metrics.LineAccumulator`, calls this and then
        :meth:`merge_first_pass`).

        Parameters
        ----------
        H : array-like, shape (B, d)
            Features of the batch.
        y : array-like, shape (B,)
            Labels in ``0..K-1``.

        Returns
        -------
        (torch.Tensor, torch.Tensor)
            ``H`` on the accumulator's device (its dtype kept; multiply by :attr:`unit` for the
            state's units) and the labels as int64 on that device.

        Raises
        ------
        InputError
            Bad features or labels, or a width other than earlier batches'.
        """
        Ht, mx = check_features_maxabs(H, "H")
        if self.d is None:
            self._init_state(Ht.shape[1], Ht.device)
        elif Ht.shape[1] != self.d:
            raise InputError(
                f"H has d={Ht.shape[1]} features per sample but earlier batches had d={self.d}; "
                "feed one layer per accumulator"
            )
        yt = check_batch_labels(y, Ht.shape[0], self.K).to(self.device)
        self._scale_for(mx)
        return Ht.to(self.device), yt

    def _scale_for(self, mx: float) -> None:
        """Track ``max |h|``; rescale the state in pass 1, check the range in pass 2."""
        if self.phase == 1:
            if self._auto_scale and mx > self.maxabs:
                # subnormal features (max |h| < 2**-1022) would need a scale 2**-e beyond
                # float64's range (math.ldexp overflowed): their exponent is clamped, so that
                # they are scaled up by 2**1020 at most (exact, and far from overflow)
                self._rescale_to(max(math.frexp(mx)[1], _MIN_SCALE_EXP))
            self.maxabs = max(self.maxabs, mx)
        elif self._auto_scale and mx > self.maxabs * (1.0 + 1e-6):
            raise InputError(
                f"pass 2 got features with max |h| = {mx:.6g}, larger than the {self.maxabs:.6g} "
                "of all pass-1 data: pass 2 must see the same data as pass 1 (same samples, same "
                "labels, any order)"
            )

    @thread_policy("H")
    def update(self, H: Any, y: Any) -> CollapseAccumulator:
        """Add a batch ``H (B, d)``, ``y (B,)``; pass 1 or pass 2 depending on the phase."""
        Ht, yt = self.check_batch(H, y)
        return self._feed(Ht, yt)

    # chunks per block: the O(K d) pass-1 merge and the O(B K) pass-2 bookkeeping run once per
    # block of this many cache-sized chunks instead of once per chunk (per-chunk Python and
    # merge overhead was ~10-20% of a call at d = 4,096)
    _GROUP = 16
    # with the kernels a group is one kernel call: as large as this many features (one call
    # per ~64 MB of float32) and at most this many rows (its (rows, K + 1) projections)
    _NATIVE_GROUP_ELEMS = 1 << 24
    _NATIVE_GROUP_ROWS = 1 << 16

    def _feed(self, Ht: torch.Tensor, yt: torch.Tensor) -> CollapseAccumulator:
        """Add validated features and labels (on the state's device).

        On the CPU the rows are split into one contiguous block per thread the call was granted
        (:func:`ufm.rowblocks.map_row_blocks`): each block runs the chunk loop below with its own
        buffers and returns partial statistics, merged here in row order. Pass 1's tracked
        within-class scatter (the streaming accumulators of ``update``) stays on one block.
        """
        n, d = Ht.shape
        if self.phase == 1 and self._track_ss:
            self._feed_tracked(Ht, yt)
            return self
        n_threads = 1 if Ht.device.type != "cpu" else None
        if self.phase == 1:
            parts = map_row_blocks(
                n, lambda a, b: self._sums_block(Ht, yt, a, b), width=d, n_threads=n_threads
            )
            zeros = torch.zeros_like(self.ss)
            for nb, mb in parts:
                self._merge1(nb, mb, zeros)
        else:
            parts = map_row_blocks(
                n, lambda a, b: self._pass2_block(Ht, yt, a, b), width=d, n_threads=n_threads
            )
            for part in parts:
                self._add2(part)
        return self

    def _groups(self, a: int, b: int, d: int, native: bool) -> tuple[int, int]:
        """Rows per chunk and per group of rows ``a:b`` (a group: one merge / one bookkeeping)."""
        step = chunk_rows(b - a, d, self.K)
        if native:
            rows = min(self._NATIVE_GROUP_ROWS, self._NATIVE_GROUP_ELEMS // max(d, 1))
            return step, max(step, rows)
        return step, step * self._GROUP

    def _sums_block(
        self, Ht: torch.Tensor, yt: torch.Tensor, a: int, b: int
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Pass 1 (means only) over rows ``a:b``: ``(counts, means)`` of the block, float64.

        Class sums of each group of chunks (one cache-sized chunk at a time, or one fused loop
        over the group with :mod:`ufm.metrics.kernels`), combined across groups by the pairwise
        (Chan) update of the means.
        """
        n, d = b - a, Ht.shape[1]
        native = _native(Ht, yt)
        step, block = self._groups(a, b, d, native)
        buf = None if native else torch.empty(max(min(step, n), 1), d, dtype=F64, device=Ht.device)
        counts = torch.zeros(self.K, dtype=torch.int64, device=Ht.device)
        means = torch.zeros(self.K, d, dtype=F64, device=Ht.device)
        zeros = torch.zeros(self.K, dtype=F64, device=Ht.device)  # scatter is not tracked here
        for b0 in range(a, b, block):
            b1 = min(b0 + block, b)
            sums = torch.zeros_like(means)
            if native:
                nb = torch.zeros(self.K, dtype=torch.int64)
                kernels.class_sums(
                    Ht[b0:b1].numpy(), yt[b0:b1].numpy(), self._s, sums.numpy(), nb.numpy()
                )
            else:
                for start in range(b0, b1, step):
                    stop = min(start + step, b1)
                    Hc = torch.mul(Ht[start:stop], self._s, out=buf[: stop - start])
                    sums.index_add_(0, yt[start:stop], Hc)
                nb = torch.bincount(yt[b0:b1], minlength=self.K)
            mb = sums / torch.clamp(nb.to(F64), min=1.0)[:, None]
            counts, means, _ = chan_merge(counts, means, zeros, nb, mb, zeros)
        return counts, means

    def _pass2_block(self, Ht: torch.Tensor, yt: torch.Tensor, a: int, b: int) -> dict[str, Any]:
        """Pass 2 over rows ``a:b``: the block's partial sums (see :meth:`_stats2`)."""
        n, d = b - a, Ht.shape[1]
        native = _native(Ht, yt)
        step, block = self._groups(a, b, d, native)
        m = max(min(block, n), 1)
        cols = self._frozen["VT"].shape[0]
        # the kernel writes 4-column tiles: its Q has the zero-padded width of VT4
        width = self._frozen["VT4"].shape[0] if native else cols
        qbuf = torch.empty(m, width, dtype=F64, device=Ht.device)
        nbuf = torch.empty(m, dtype=F64, device=Ht.device)
        buf = None if native else torch.empty(min(step, m), d, dtype=F64, device=Ht.device)
        total: dict[str, Any] | None = None
        for b0 in range(a, b, block):
            b1 = min(b0 + block, b)
            if native:
                kernels.project(
                    Ht[b0:b1].numpy(),
                    yt[b0:b1].numpy(),
                    self._s,
                    self.means.numpy(),
                    self._frozen["VT4"],
                    qbuf[: b1 - b0].numpy(),
                    nbuf[: b1 - b0].numpy(),
                )
            else:
                for start in range(b0, b1, step):
                    stop = min(start + step, b1)
                    self._project2(
                        Ht[start:stop],
                        yt[start:stop],
                        buf[: stop - start],
                        qbuf[start - b0 : stop - b0],
                        nbuf[start - b0 : stop - b0],
                    )
            part = self._stats2(qbuf[: b1 - b0, :cols], nbuf[: b1 - b0], yt[b0:b1])
            total = part if total is None else {k: total[k] + v for k, v in part.items()}
        return total if total is not None else {}

    def _feed_tracked(self, Ht: torch.Tensor, yt: torch.Tensor) -> None:
        """Pass 1 with the within-class scatter tracked, chunk by chunk (one block)."""
        n, d = Ht.shape
        if _native(Ht, yt):
            self._feed_tracked_native(Ht, yt)
            return
        step = chunk_rows(n, d, self.K)
        buf = torch.empty(min(step, n), d, dtype=F64, device=Ht.device)
        for start in range(0, n, step):
            stop = min(start + step, n)
            Hc = torch.mul(Ht[start:stop], self._s, out=buf[: stop - start])
            self._update1(Hc, yt[start:stop])

    def _feed_tracked_native(self, Ht: torch.Tensor, yt: torch.Tensor) -> None:
        """:meth:`_feed_tracked` with the kernels: per group, class sums, then the squared
        deviations from the group's own class means (a projection on no directions)."""
        n, d = Ht.shape
        _, block = self._groups(0, n, d, True)
        no_dirs = np.zeros((0, d))
        for b0 in range(0, n, block):
            b1 = min(b0 + block, n)
            Hn, yn = Ht[b0:b1].numpy(), yt[b0:b1].numpy()
            sums = torch.zeros_like(self.means)
            nb = torch.zeros(self.K, dtype=torch.int64)
            kernels.class_sums(Hn, yn, self._s, sums.numpy(), nb.numpy())
            mb = sums / torch.clamp(nb.to(F64), min=1.0)[:, None]
            sq = torch.empty(b1 - b0, dtype=F64)
            kernels.project(
                Hn, yn, self._s, mb.numpy(), no_dirs, np.zeros((b1 - b0, 0)), sq.numpy()
            )
            ssb = torch.zeros_like(self.ss).index_add_(0, yt[b0:b1], sq)
            self._merge1(nb, mb, ssb)

    def _update1(self, Hc: torch.Tensor, yc: torch.Tensor) -> None:
        nb = torch.bincount(yc, minlength=self.K)
        sums = torch.zeros_like(self.means).index_add_(0, yc, Hc)
        mb = sums / torch.clamp(nb.to(F64), min=1.0)[:, None]
        ssb = torch.zeros_like(self.ss)
        if self._track_ss:
            dev = Hc.sub_(mb[yc])  # Hc is a private float64 chunk
            ssb.index_add_(0, yc, torch.linalg.vector_norm(dev, dim=1) ** 2)
        self._merge1(nb, mb, ssb)

    def _merge1(self, nb: torch.Tensor, mb: torch.Tensor, ssb: torch.Tensor) -> None:
        # PASS1_TENSORS lists (count, mean, scatter) in chan_merge's order
        merged = chan_merge(*(getattr(self, n) for n, _, _ in PASS1_TENSORS), nb, mb, ssb)
        for (name, _, _), v in zip(PASS1_TENSORS, merged, strict=True):
            setattr(self, name, v)

    def _project2(
        self,
        Hc: torch.Tensor,
        yc: torch.Tensor,
        buf: torch.Tensor,
        qout: torch.Tensor,
        nout: torch.Tensor,
    ) -> None:
        """One cache-sized chunk of pass 2: deviations, their squared norms and projections."""
        # Everything is expressed through the deviations from the frozen class means, so no
        # large ||h||^2 terms cancel: ||h - mu_k||^2 = ||dev||^2 + 2 dev.(c_y - c_k) + ||c_y - c_k||^2.
        # nd = mu_y - s h = -dev, in two fused passes over the chunk buffer (gather, then
        # subtract the scaled chunk with on-the-fly conversion to float64).
        nd = torch.index_select(self.means, 0, yc, out=buf)
        torch.sub(nd, Hc, alpha=self._s, out=nd)
        torch.linalg.vector_norm(nd, dim=1, out=nout)
        nout.square_()
        # -[M^T dev, u.dev, (W dev)], (B, K+1) or (B, 2K+1). On the CPU through numpy's BLAS
        # (nd @ V: 45 ms per 10,000 rows at d = 4,096 against 55 ms for torch's best layout,
        # V^T nd^T, one thread); elsewhere as V^T nd^T with V^T row-major
        if nd.device.type == "cpu":
            np.matmul(nd.numpy(), self._frozen["V_np"], out=qout.numpy())
        else:
            torch.mm(self._frozen["VT"], nd.T, out=qout.T)

    def _stats2(self, Q: torch.Tensor, sqnorm: torch.Tensor, yc: torch.Tensor) -> dict[str, Any]:
        """Pass-2 partial sums of a group of chunks from its projections ``Q`` and squared norms."""
        f = self._frozen
        K = self.K
        P = -Q[:, :K]
        fp = Q[:, : K + 1]
        score = 2.0 * (P.gather(1, yc[:, None]) - P) + f["dist2"][yc]
        pred = torch.argmin(score, dim=1)
        out: dict[str, Any] = {
            "ss2": torch.zeros_like(self.ss2).index_add_(0, yc, sqnorm),
            "S": P.T @ P,
            "fp_sum": torch.zeros_like(self.fp_sum).index_add_(0, yc, fp),
            "fp_sq": torch.zeros_like(self.fp_sq).index_add_(0, yc, fp * fp),
            "counts2": torch.bincount(yc, minlength=K),
            "correct": int((pred == yc).sum()),
            "mismatch": 0,
            "n2": int(yc.numel()),
        }
        if self.W is not None:
            logits = f["logit_means"][yc] - Q[:, K + 1 :]
            out["mismatch"] = int((torch.argmax(logits, dim=1) != pred).sum())
        return out

    def _add2(self, part: Mapping[str, Any]) -> None:
        """Add a block's pass-2 partial sums (:meth:`_stats2`) to the state, entry by entry of
        :data:`PASS2_TENSORS` (in place; an entry of :data:`PASS2_OPTIONAL` may be absent) and
        :data:`PASS2_SCALARS`."""
        if not part:
            return
        for name, _, _ in PASS2_TENSORS:
            if name in part:
                t = getattr(self, name)
                t += part[name]
        for name in PASS2_SCALARS:
            setattr(self, name, getattr(self, name) + part[name])

    def add_second_pass(self, part: Mapping[str, Any]) -> CollapseAccumulator:
        """Add pass-2 sums computed elsewhere against this accumulator's frozen means.

        The public entry for a second pass that is not fed through :meth:`update` (such as
        :meth:`ufm.engine.statistics.StatsSolution.feature_metrics`, which maps the data in
        closed form): start from frozen means with :meth:`from_statistics`, call
        :meth:`end_first_pass`, read :attr:`frozen` and :attr:`unit`, then add the sums here.

        Parameters
        ----------
        part : mapping of str to tensor or int
            One value per entry of :data:`PASS2_TENSORS` (shapes as declared, in state units)
            and of :data:`PASS2_SCALARS` (ints); the fingerprint entries
            (:data:`PASS2_OPTIONAL`) may be left out, with ``counts2`` then to be given.

        Returns
        -------
        CollapseAccumulator
            ``self``.

        Raises
        ------
        InputError
            Not in pass 2, a required entry missing, or an entry of the wrong shape.
        """
        if self.phase != 2:
            raise InputError("add_second_pass() needs end_first_pass() first")
        needed = [n for n, _, _ in PASS2_TENSORS if n not in PASS2_OPTIONAL[1:]]
        missing = [k for k in (*needed, *PASS2_SCALARS) if k not in part]
        if missing:
            raise InputError(
                f"add_second_pass() needs the entries {missing} of PASS2_TENSORS/PASS2_SCALARS"
            )
        for name, _, _ in PASS2_TENSORS:
            if name in part and tuple(part[name].shape) != tuple(getattr(self, name).shape):
                raise InputError(
                    f"add_second_pass() entry {name!r} must have shape "
                    f"{tuple(getattr(self, name).shape)}, got {describe(part[name])}"
                )
        self._add2(part)
        return self

    @thread_policy()
    def end_first_pass(self) -> CollapseAccumulator:
        """Freeze the class means; later :meth:`update` calls feed pass 2."""
        if self.phase != 1:
            raise InputError("end_first_pass() was already called; the means are frozen")
        self._require_every_class()
        self._freeze()
        self.phase = 2
        return self

    def _freeze(self) -> None:
        K, d = self.K, self.d
        C, _ = between(self.counts, self.means)
        diff = self.means[:, None, :] - self.means[None, :, :]  # K x K x d, small
        # a fixed (seeded) random unit direction for the fingerprint
        g = torch.Generator().manual_seed(20240917 + d)
        u = torch.randn(d, 1, generator=g, dtype=F64).to(self.device)
        cols = [C.T, u / torch.linalg.norm(u)]
        if self.W is not None:
            cols.append(self.W.T)
        V = torch.cat(cols, dim=1).contiguous()
        self._frozen = {
            "V": V,
            "VT": V.T.contiguous(),
            "V_np": V.cpu().numpy() if V.device.type == "cpu" else None,
            # V^T with zero rows up to a multiple of 4, for the kernels' 4 x 4 tiles
            "VT4": _pad_rows(V.T, 4) if V.device.type == "cpu" else None,
            "dist2": (diff * diff).sum(-1),  # ||mu_j - mu_k||^2, computed directly
        }
        if self.W is not None:
            lm = self.means @ self.W.T
            self._frozen["logit_means"] = lm + self._s * self.b if self.b is not None else lm
        for name, shape, kind in PASS2_TENSORS:
            dtype = torch.int64 if kind == "count" else F64
            setattr(self, name, torch.zeros(shape(K, K + 1), dtype=dtype, device=self.device))

    def require_data(self) -> None:
        """Raise unless pass 1 has seen a sample.

        Raises
        ------
        InputError
            The accumulator has seen no data.
        """
        if self.counts is None or int(self.counts.sum()) == 0:
            raise InputError("the accumulator has seen no data; call update(H, y) first")

    def _require_every_class(self) -> None:
        """Raise unless pass 1 saw data, and at least one sample of every class."""
        self.require_data()
        empty = torch.nonzero(self.counts == 0).flatten().tolist()
        if empty:
            raise DegenerateInputError(
                f"class(es) {empty[:10]} of 0..{self.K - 1} received no sample in pass 1; every "
                "class needs at least one (relabel to 0..K-1 without gaps, or use a smaller K)"
            )

    def _check_pass2(self) -> None:
        """Raise unless pass 2 saw the data whose class means pass 1 froze."""
        if not torch.equal(self.counts2, self.counts):
            bad = torch.nonzero(self.counts2 != self.counts).flatten().tolist()
            raise InputError(
                f"pass 2 saw per-class counts {self.counts2[bad[:5]].tolist()} for class(es) "
                f"{bad[:5]} but pass 1 saw {self.counts[bad[:5]].tolist()}: feed the same data "
                "(same samples and labels, any order and batching) in both passes"
            )
        n = self.counts.to(F64)[:, None]
        V = self._frozen["V"][:, : self.K + 1]
        proj_mu = self.means @ V  # (K, K+1): mu_k . v
        # the deviations of one class sum to zero; allow float32-level differences between two
        # forward passes of a network, relative to the size of h . v in that class
        rms = torch.sqrt(self.fp_sq / n + proj_mu * proj_mu)
        tol = 1e-5 * n * rms + 1e-300
        if bool((self.fp_sum.abs() > tol).any()):
            worst = float((self.fp_sum.abs() / tol).max())
            raise InputError(
                "pass 2 saw different data from pass 1: the deviations from the frozen class "
                f"means do not sum to zero within each class ({worst:.3g} x the tolerance); feed "
                "the same samples with the same labels in both passes"
            )

    # -- combining ------------------------------------------------------------------------
    @thread_policy()
    def merge(self, other: CollapseAccumulator) -> CollapseAccumulator:
        """Combine another shard of the same layer into this one (in place; returns self)."""
        if not check_merge_partner(self, other) or other.counts is None:
            return self
        if self.counts is None:
            self._init_state(other.d, other.device)
            self.scale_exp = other.scale_exp
        if other.d != self.d:
            raise InputError(f"cannot merge layers of different width d={self.d} and d={other.d}")
        if self.phase != other.phase:
            raise InputError("cannot merge accumulators in different passes (phase 1 vs 2)")
        if self.phase == 1:
            e = max(self.scale_exp, other.scale_exp)
            self._rescale_to(e)
            f = math.ldexp(1.0, other.scale_exp - e)
            self._merge1(
                *(in_units(getattr(other, n).to(self.device), k, f) for n, _, k in PASS1_TENSORS)
            )
            self.maxabs = max(self.maxabs, other.maxabs)
        else:
            if other.scale_exp != self.scale_exp or not torch.equal(
                self.means, other.means.to(self.device)
            ):
                raise InputError(
                    "pass-2 shards must share the frozen class means of one merged pass 1; "
                    "merge (or all_reduce) pass 1 before end_first_pass()"
                )
            for name, _, _ in PASS2_TENSORS:
                setattr(self, name, getattr(self, name) + getattr(other, name).to(self.device))
            for name in PASS2_SCALARS:
                setattr(self, name, getattr(self, name) + getattr(other, name))
        return self

    #: The keys every state dict holds (older ones included): required settings and pass 1.
    _STATE_KEYS = tuple(k for k, _, v in SETTINGS if v is REQUIRED) + tuple(
        n for n, _, _ in PASS1_TENSORS
    )

    def state_dict(self) -> dict[str, Any]:
        """A picklable snapshot (tensors on CPU)."""

        def cpu(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().cpu().clone()

        def saved(v: Any) -> Any:
            return cpu(v) if isinstance(v, torch.Tensor) else v

        return {
            **{key: saved(getattr(self, attr)) for key, attr, _ in SETTINGS},
            **{name: cpu(getattr(self, name)) for name, _, _ in PASS1_TENSORS},
            **{name: cpu(getattr(self, name)) for name, _, _ in PASS2_TENSORS},
            **{name: getattr(self, name) for name in PASS2_SCALARS},
        }

    @classmethod
    def from_state_dict(cls, sd: dict[str, Any], *, device: Any = None) -> CollapseAccumulator:
        """Rebuild an accumulator from :meth:`state_dict` (optionally on another device).

        Raises
        ------
        InputError
            ``sd`` is not a mapping, lacks keys or holds values of the wrong type or shape.
        """
        if not isinstance(sd, dict):
            raise InputError(
                f"from_state_dict needs the dict returned by state_dict(), got {describe(sd)}"
            )
        missing = [k for k in cls._STATE_KEYS if k not in sd]
        if missing:
            raise InputError(
                f"state dict lacks key(s) {missing}; pass the dict returned by "
                "CollapseAccumulator.state_dict()"
            )
        default = {key: v for key, _, v in SETTINGS}
        auto = sd.get("auto_scale", default["auto_scale"])
        if not isinstance(auto, bool):
            raise InputError(f"state dict key 'auto_scale' must be a bool, got {describe(auto)}")
        acc = cls(sd["K"], W=sd["W"], b=sd["b"], rank_tol=sd["rank_tol"], auto_scale=auto)
        check_phase(sd["phase"])
        if sd["counts"] is None:
            return acc
        d = check_int(sd["d"], "state dict key 'd'", low=1)
        K = acc.K
        shapes = {name: shape(K, d) for name, shape, _ in PASS1_TENSORS}
        if sd["phase"] == 2:
            required2 = [n for n, _, _ in PASS2_TENSORS if n not in PASS2_OPTIONAL]
            missing2 = [k for k in (*required2, *PASS2_SCALARS) if k not in sd]
            if missing2:
                raise InputError(f"state dict of a pass-2 accumulator lacks key(s) {missing2}")
            # the fingerprint's width depends on W (K + 1 or 2K + 1): _check_state_values
            shapes.update(
                {n: shape(K, K + 1) for n, shape, _ in PASS2_TENSORS if n not in PASS2_OPTIONAL}
            )
        bad = [
            k
            for k, shp in shapes.items()
            if not isinstance(sd[k], torch.Tensor) or tuple(sd[k].shape) != shp
        ]
        if bad:
            raise InputError(
                f"state dict key(s) {bad} must be tensors of shape "
                f"{[shapes[k] for k in bad]} for K={K}, d={d}"
            )
        _check_state_values(sd, K)
        dev = torch.device(device) if device is not None else torch.device("cpu")
        acc._init_state(d, dev)
        for name, _, kind in PASS1_TENSORS:
            setattr(acc, name, sd[name].to(dev, torch.int64 if kind == "count" else F64, copy=True))
        acc.scale_exp = check_int(
            sd.get("scale_exp", default["scale_exp"]), "state dict key 'scale_exp'"
        )
        acc.maxabs = _check_maxabs(sd.get("maxabs", default["maxabs"]))
        if sd["phase"] == 2:
            acc.end_first_pass()
            for name in PASS2_SCALARS:
                setattr(acc, name, check_int(sd[name], f"state dict key {name!r}", low=0))
            for k in ("correct", "mismatch"):
                if sd[k] > acc.n2:
                    raise InputError(
                        f"state dict key {k!r} = {sd[k]} exceeds n2 = {acc.n2} (the pass-2 "
                        "samples it counts among): the state dict was altered or corrupted"
                    )
            fingerprint = sd.get(PASS2_OPTIONAL[0]) is not None
            for name, _, kind in PASS2_TENSORS:
                if name not in PASS2_OPTIONAL or fingerprint:
                    dtype = torch.int64 if kind == "count" else F64
                    setattr(acc, name, sd[name].to(dev, dtype, copy=True))  # never the caller's
            if not fingerprint:  # an older state dict without the fingerprint: trust its counts
                acc.counts2 = acc.counts.clone() if acc.n2 == acc.n else acc.counts2
        return acc

    @thread_policy()
    def all_reduce(self, group: Any = None) -> CollapseAccumulator:
        """Merge the shards of every process of a ``torch.distributed`` group, in place.

        Pass-1 statistics are gathered and Chan-merged in rank order, so every rank ends with
        bit-identical means; pass-2 sums are summed. Call it at the end of each pass.
        """
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise InputError("all_reduce() needs an initialised torch.distributed process group")
        self.require_data()
        K = self.K
        if self.phase == 1:
            head = torch.tensor([float(self.scale_exp), self.maxabs], dtype=F64)
            flat = torch.cat(
                [head.to(self.device)]
                + [getattr(self, n).to(F64).flatten() for n, _, _ in PASS1_TENSORS]
            )
            parts = [torch.empty_like(flat) for _ in range(dist.get_world_size(group))]
            dist.all_gather(parts, flat, group=group)
            e = max(int(p[0]) for p in parts)
            for name, _, _ in PASS1_TENSORS:
                setattr(self, name, torch.zeros_like(getattr(self, name)))
            self.scale_exp = e
            self.maxabs = max(float(p[1]) for p in parts)
            for p in parts:  # each rank's state, unpacked by the table, merged in rank order
                f = math.ldexp(1.0, int(p[0]) - e)
                o, shard = 2, []
                for _, shape, kind in PASS1_TENSORS:
                    dims = shape(K, self.d)
                    v = p[o : o + math.prod(dims)].view(dims)
                    o += math.prod(dims)
                    shard.append(
                        v.round().to(torch.int64) if kind == "count" else in_units(v, kind, f)
                    )
                self._merge1(*shard)
        else:
            tensors = [getattr(self, name) for name, _, _ in PASS2_TENSORS]
            scalars = [getattr(self, name) for name in PASS2_SCALARS]
            flat = torch.cat(
                [t.to(F64).flatten() for t in tensors]
                + [torch.tensor(scalars, dtype=F64, device=self.device)]
            )
            dist.all_reduce(flat, group=group)
            o = 0
            for (name, _, kind), t in zip(PASS2_TENSORS, tensors, strict=True):
                v = flat[o : o + t.numel()].view(t.shape)
                setattr(self, name, v.round().to(torch.int64) if kind == "count" else v.clone())
                o += t.numel()
            for name, v in zip(PASS2_SCALARS, flat[o:], strict=True):
                setattr(self, name, int(round(float(v))))
        return self

    # -- results --------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return 0 if self.counts is None else int(self.counts.sum())

    def class_means(self) -> np.ndarray:
        """The class means, shape (K, d), float64 numpy."""
        self.require_data()
        return (self.means * math.ldexp(1.0, self.scale_exp)).cpu().numpy()

    @thread_policy()
    def compute(self) -> dict[str, float]:
        """The metrics available so far (pass-2 keys appear after a complete second pass).

        Returns
        -------
        dict
            ``tr_sigma_w, tr_sigma_b, pfc1, pfc2, nc2_equinorm, nc2_equiangular, cdnv,
            gram_eig_ratio`` (+ ``nc3`` with a classifier) after pass 1; ``ncc_accuracy, pfc3, nc1`` (+ ``nc4``) after pass 2.
            ``tr_sigma_w`` and ``tr_sigma_b`` are in the features' units (``inf`` or ``0`` with
            a warning where they leave float64's range); the other metrics are scale-free and
            computed on internally rescaled statistics.

        Raises
        ------
        DegenerateInputError
            If a class has no sample or all class means coincide (relative to the features'
            magnitude).
        InputError
            If pass 2 saw other data than pass 1 (counts or the fingerprint differ).
        """
        self._require_every_class()
        N = self.n
        C, G = between(self.counts, self.means)
        second = self.phase == 2 and self.n2 > 0
        if second:
            if self.n2 != N:
                raise InputError(
                    f"pass 2 saw {self.n2} samples but pass 1 saw {N}; feed the same data in "
                    "both passes"
                )
            self._check_pass2()
        if not second and not self._track_ss:
            raise InputError("this accumulator skipped the pass-1 scatter; run pass 2 first")
        # after pass 2 the scatter about the final means is exact; pass 1's Chan merge agrees
        # with it to round-off
        tr_sw = float((self.ss2 if second else self.ss).sum()) / N
        tr_sb = check_tr_sb(G, self.means, self.counts, tr_sw)
        out = {
            "tr_sigma_w": unscale(tr_sw, 2 * self.scale_exp, "tr_sigma_w"),
            "tr_sigma_b": unscale(tr_sb, 2 * self.scale_exp, "tr_sigma_b"),
        }
        # every metric the registry gives a formula of the class statistics (ufm/registry.py)
        stats = ClassStats(
            self.counts, self.means, C, G, self.ss2 if second else self.ss, tr_sw, tr_sb,
            self.rank_tol,
        )  # fmt: skip
        for spec in METRICS.values():
            if spec.formula is not None:
                out[spec.name] = spec.compute(stats)
        if self.W is not None:
            out["nc3"] = nc3_from_means(self.W, C)
        if second:
            acc = self.correct / N
            out["ncc_accuracy"] = acc
            out["pfc3"] = 1.0 - acc
            Gp2 = gram_pinv_sq(G, self.rank_tol)
            out["nc1"] = float((Gp2 * self.S).sum()) / N
            if self.W is not None:
                out["nc4"] = self.mismatch / N
        return out


# --------------------------------------------------------------------------------------------


def check_phase(v: Any) -> int:
    """A state dict's ``phase``: the integer 1 or 2 (``True``, ``2.0`` or ``"2"`` refused).

    Raises
    ------
    InputError
        Anything else, naming the key.
    """
    if isinstance(v, bool) or not isinstance(v, int | np.integer) or int(v) not in (1, 2):
        raise InputError(f"state dict key 'phase' must be 1 or 2, got {describe(v)}")
    return int(v)


def _check_maxabs(v: Any) -> float:
    """``maxabs`` of a state dict: a non-negative float (``inf`` in old state dicts)."""
    if isinstance(v, bool) or not isinstance(v, int | float | np.floating | np.integer):
        raise InputError(f"state dict key 'maxabs' must be a number, got {describe(v)}")
    v = float(v)
    if not v >= 0:  # NaN too
        raise InputError(f"state dict key 'maxabs' must be >= 0, got {v}")
    return v


def _check_state_values(sd: dict[str, Any], K: int) -> None:
    """Values of a state dict whose shapes were checked: what the statistics can hold.

    Counts are non-negative integers, sums of squares (scatters) non-negative, every float
    finite, and a pass-2 fingerprint (``counts2``, ``fp_sum``, ``fp_sq``) complete and of
    consistent shapes. A tampered state dict (negative counts or scatter) was accepted and
    gave metrics from impossible statistics.

    Raises
    ------
    InputError
        The first value that no accumulator can hold, by key.
    """

    def bad(key: str, what: str) -> InputError:
        return InputError(
            f"state dict key {key!r} {what}; the state dict was altered or corrupted: "
            "rebuild it from the data (CollapseAccumulator.update) or restore a good copy"
        )

    def counts(key: str) -> None:
        t = sd[key]
        if not is_real_numeric(t):
            raise bad(key, f"must hold integer counts, got dtype {t.dtype}")
        if t.is_floating_point():
            if not bool(torch.isfinite(t).all()) or not bool((t == torch.round(t)).all()):
                raise bad(key, "must hold integer counts, got non-integer values")
        if t.numel() and int(t.min()) < 0:
            raise bad(key, f"must hold counts >= 0, got {int(t.min())}")

    def floats(key: str, nonneg: bool = False) -> None:
        t = sd[key]
        if not is_real_numeric(t):
            raise bad(key, f"must hold real values, got dtype {t.dtype}")
        tf = t.to(F64)
        if not bool(torch.isfinite(tf).all()):
            raise bad(key, "holds NaN or inf")
        if nonneg and tf.numel() and float(tf.min()) < 0:
            raise bad(key, f"is a sum of squares and must be >= 0, got {float(tf.min()):.6g}")

    check = {"count": counts, "sum": floats, "squares": lambda k: floats(k, nonneg=True)}
    for name, _, kind in PASS1_TENSORS:
        check[kind](name)
    if sd["phase"] == 2:
        for name, _, kind in PASS2_TENSORS:  # S, ss2: always present in pass 2
            if name not in PASS2_OPTIONAL:
                check[kind](name)
        fp = [sd.get(k) for k in PASS2_OPTIONAL]
        if any(v is not None for v in fp):
            c2, fs, fq = fp
            ok = all(isinstance(v, torch.Tensor) for v in fp)
            ok = ok and tuple(c2.shape) == (K,) and fs.ndim == 2 and fs.shape[0] == K
            ok = ok and tuple(fq.shape) == tuple(fs.shape) and fs.shape[1] in (K + 1, 2 * K + 1)
            if not ok:
                raise bad(
                    "counts2/fp_sum/fp_sq",
                    f"must be tensors of shapes ({K},), (K, m) and (K, m) with m = K+1 or 2K+1, "
                    f"got {[describe(v) for v in fp]}",
                )
            for name, _, kind in PASS2_TENSORS:  # the fingerprint
                if name in PASS2_OPTIONAL:
                    check[kind](name)
