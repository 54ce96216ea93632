r"""Collapse metrics: exact, streaming, and never a ``d x d`` matrix.

All metrics follow ``MATH.md`` sections 2-4. Features are samples first, ``H`` of shape
``(N, d)`` with labels ``y`` of shape ``(N,)`` in ``0..K-1`` (or a balanced ``(K, n, d)`` array
with labels implied). Inputs may be numpy arrays or torch tensors on any device and of any
floating dtype; every statistic is accumulated in float64 on the input's device, and results
are Python floats.

Everything is computed from per-class counts, per-class means, per-class sums of squared
deviations, the ``K x K`` Gram matrix ``G = M^T M`` of the centred class means and
``K``-dimensional projections of the samples. The state of a streaming accumulator is therefore
``O(K d + K^2)`` per layer, whatever ``N`` is.

Two passes
----------
Quantities that depend on every sample *and* on the final class means (NCC accuracy, NC1, NC4)
need a second pass over the data once the means are known:

>>> acc = CollapseAccumulator(K=10)
>>> for Hb, yb in batches: acc.update(Hb, yb)   # pass 1: counts, means, scatter
>>> acc.end_first_pass()                         # freeze the class means
>>> for Hb, yb in batches: acc.update(Hb, yb)   # pass 2: NCC, NC1, NC4
>>> acc.compute()

:func:`collapse_metrics` runs both passes over in-memory features in cache-sized chunks.

References
----------
Papyan, Han, Donoho, "Prevalence of neural collapse during the terminal phase of deep learning
training", PNAS 2020. Zhu et al., "A geometric analysis of neural collapse with unconstrained
features", NeurIPS 2021. Galanti et al., "On the role of neural collapse in transfer learning",
ICLR 2022. Wang, Gai, Zhang, "Progressive Feedforward Collapse of ResNet Training".
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from .errors import DegenerateInputError, InputError, PFCWarning, RankWarning
from .threads import thread_policy
from .validate import (
    check_batch_labels,
    check_features,
    check_features_maxabs,
    check_int,
    check_labels,
    check_scalar,
    describe,
    to_tensor,
)

__all__ = [
    "collapse_metrics",
    "pfc1",
    "pfc2",
    "pfc3",
    "ncc_accuracy",
    "nc1",
    "nc2",
    "nc3",
    "nc4",
    "simplex_etf",
    "effective_depth",
    "alignment",
    "relative_position",
    "CollapseAccumulator",
    "LineAccumulator",
]

_F64 = torch.float64
#: Default relative tolerance on the eigenvalues of ``G`` below which a direction of the
#: between-class space counts as absent (NC1's pseudo-inverse).
DEFAULT_RANK_TOL = 1e-10
# tr(Sigma_B) below this multiple of the mean squared class-mean norm is float64 round-off:
# the class means coincide and every ratio with tr(Sigma_B) in the denominator is undefined.
_DEGENERATE_TR_SB = 1e-26
# Rows per chunk: keeps a float64 chunk near L2/L3-cache size so that the several cheap
# passes over a chunk cost little more than reading it once from memory.
_CHUNK_ELEMS = 1 << 18


# --------------------------------------------------------------------------------------------
# input handling
# --------------------------------------------------------------------------------------------
def _features_labels(
    H: Any, y: Any, K: int | None, name: str = "H"
) -> tuple[torch.Tensor, torch.Tensor, int, float]:
    """Validate ``(H, y)``; a ``(K, n, d)`` array with ``y=None`` is balanced with implied labels.

    Returns the features as ``(N, d)``, the labels, ``K`` and ``max |H|``.
    """
    if K is not None:
        K = check_int(K, "K", low=2)
    if y is None:
        Ht, mx = check_features_maxabs(H, name, ndim=3) if _ndim(H) == 3 else (None, 0.0)
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


def _ndim(x: Any) -> int:
    return x.ndim if hasattr(x, "ndim") else np.ndim(x)


def _chunk_rows(n_rows: int, d: int, K: int) -> int:
    # at least 4K rows, so that the O(K d) per-chunk merge stays small against the chunk itself;
    # with several threads (the thread policy grants them only to large work) chunks grow so
    # that each operation is large enough to be split between the threads
    threads = torch.get_num_threads()
    elems = _CHUNK_ELEMS if threads <= 1 else _CHUNK_ELEMS * 4 * threads
    return max(1, min(n_rows, max(4 * K, elems // max(d, 1))))


def _chunks(n_rows: int, d: int, K: int) -> Iterable[slice]:
    step = _chunk_rows(n_rows, d, K)
    for start in range(0, n_rows, step):
        yield slice(start, min(start + step, n_rows))


def _classifier(
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
    Wt = Wt.to(device=device, dtype=_F64)
    if b is None:
        return Wt, None
    bt = to_tensor(b, "b").to(device=device, dtype=_F64)
    if tuple(bt.shape) != (K,):
        raise InputError(f"b must have shape (K,) = ({K},), got {describe(b)}")
    if not bool(torch.isfinite(bt).all()):
        raise InputError("b contains non-finite values (NaN or inf)")
    return Wt, bt


# --------------------------------------------------------------------------------------------
# statistics -> metrics
# --------------------------------------------------------------------------------------------
def _between(counts: torch.Tensor, means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred class means ``C = (mu_k - mu_G)_k`` (K, d) and their Gram ``G = C C^T`` (K, K)."""
    w = counts.to(_F64) / counts.sum()
    mu_g = w @ means
    C = means - mu_g
    return C, C @ C.T


def _check_tr_sb(G: torch.Tensor, means: torch.Tensor, counts: torch.Tensor, tr_sw: float) -> float:
    """``tr Sigma_B``, or :class:`DegenerateInputError` when it is round-off.

    The class means carry a round-off of about ``eps |h|`` each, so ``tr Sigma_B`` is compared
    with the features' mean squared norm ``E ||h||^2 = tr Sigma_W + sum_k (n_k/N) ||mu_k||^2``
    (not with the class means alone, which vanish together with ``tr Sigma_B`` when the class
    means were subtracted from the data).
    """
    K = G.shape[0]
    tr_sb = float(torch.trace(G)) / K
    w = counts.to(_F64) / counts.sum()
    second_moment = tr_sw + float(w @ (means * means).sum(1))
    if not tr_sb > _DEGENERATE_TR_SB * second_moment or not second_moment > 0:
        raise DegenerateInputError(
            "all class means coincide to float64 round-off (tr Sigma_B / E||h||^2 = "
            f"{tr_sb / second_moment if second_moment > 0 else 0.0:.3g}), so PFC1, PFC2, NC1 and "
            "NC2 are undefined; check that the labels belong to these features, that the class "
            "means were not subtracted and that the layer is not constant"
        )
    return tr_sb


def _unscale(value: float, exp2: int, name: str) -> float:
    """``value * 2**exp2``, with a warning where the result leaves float64's range."""
    try:
        out = math.ldexp(value, exp2)
    except OverflowError:
        out = math.inf
    if (out == math.inf or (out == 0.0 and value != 0.0)) and math.isfinite(value):
        warnings.warn(
            f"{name} = {value:.6g} x 2**{exp2} is outside float64's range and is reported as "
            f"{out}; the scale-free metrics (pfc1, pfc2, nc1, ...) are unaffected. Rescale the "
            "features to read it",
            PFCWarning,
            stacklevel=4,
        )
    return out


def _pfc2_from_gram(G: torch.Tensor) -> float:
    K = G.shape[0]
    etf = (torch.eye(K, dtype=_F64, device=G.device) - 1.0 / K) / math.sqrt(K - 1)
    return float(torch.linalg.norm(G / torch.linalg.norm(G) - etf))


def _nc2_from_gram(G: torch.Tensor) -> tuple[float, float]:
    K = G.shape[0]
    norms = torch.sqrt(torch.clamp(torch.diagonal(G), min=0.0))
    equinorm = float(norms.std(unbiased=False) / norms.mean())
    # a zero-norm centred mean has no direction: its cosines are taken as 0
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    cos = G / safe[:, None] / safe[None, :]
    off = ~torch.eye(K, dtype=torch.bool, device=G.device)
    equiangular = float((cos[off] + 1.0 / (K - 1)).abs().mean())
    return equinorm, equiangular


def _gram_pinv_sq(G: torch.Tensor, rank_tol: float, *, warn: bool = True) -> torch.Tensor:
    """``V diag(g^-2) V^T`` over the eigenvalues of ``G`` above ``rank_tol * max(g)``."""
    K = G.shape[0]
    g, V = torch.linalg.eigh(G)
    keep = g > rank_tol * g.max()
    r = int(keep.sum())
    if warn and r < K - 1:
        warnings.warn(
            f"Sigma_B has numerical rank {r} < K-1 = {K - 1} (eigenvalues of G below "
            f"rank_tol={rank_tol:g} x max); this happens when d < K-1 or class means are "
            "(nearly) coincident or collinear. NC1 uses the pseudo-inverse on the range of "
            "Sigma_B and ignores within-class variation outside it.",
            RankWarning,
            stacklevel=4,
        )
    Vk = V[:, keep]
    return (Vk / g[keep] ** 2) @ Vk.T


def _nc3(W: torch.Tensor, C: torch.Tensor) -> float:
    # W rows and C rows are both class-indexed, so W^T/||W|| - M/||M|| in the d x K layout
    # is the transpose of this K x d difference.
    return float(((W / torch.linalg.norm(W) - C / torch.linalg.norm(C)) ** 2).sum())


# --------------------------------------------------------------------------------------------
# the streaming accumulator
# --------------------------------------------------------------------------------------------
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

    def __init__(self, K: int, *, W: Any = None, b: Any = None, rank_tol: float = DEFAULT_RANK_TOL):
        self.K = check_int(K, "K", low=2)
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
        self._auto_scale = True
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

    # -- state --------------------------------------------------------------------------------
    def _init_state(self, d: int, device: torch.device) -> None:
        self.d, self.device = d, device
        self.counts = torch.zeros(self.K, dtype=torch.int64, device=device)
        self.means = torch.zeros(self.K, d, dtype=_F64, device=device)
        self.ss = torch.zeros(self.K, dtype=_F64, device=device)
        self.W, self.b = _classifier(self._W_in, self._b_in, self.K, d, device)

    @property
    def _s(self) -> float:
        return math.ldexp(1.0, -self.scale_exp)

    def _rescale_to(self, e: int) -> None:
        """Express the pass-1 state in units of ``2**e`` (exact up to underflow)."""
        if e == self.scale_exp:
            return
        f = math.ldexp(1.0, self.scale_exp - e)
        self.means = self.means * f
        self.ss = self.ss * (f * f)
        self.scale_exp = e

    def _batch(self, H: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor]:
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
                self._rescale_to(math.frexp(mx)[1])
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
        Ht, yt = self._batch(H, y)
        return self._feed(Ht, yt)

    def _feed(self, Ht: torch.Tensor, yt: torch.Tensor) -> CollapseAccumulator:
        """Add validated features and labels (on the state's device)."""
        n, d = Ht.shape
        step = _chunk_rows(n, d, self.K)
        # two private float64 work buffers, reused by every chunk (no allocation per chunk)
        buf = torch.empty(min(step, n), d, dtype=_F64, device=Ht.device)
        buf2 = torch.empty_like(buf) if self.phase == 2 else None
        s = self._s
        for start in range(0, n, step):
            stop = min(start + step, n)
            Hc, yc = Ht[start:stop], yt[start:stop]
            if self.phase == 1:
                self._update1(torch.mul(Hc, s, out=buf[: stop - start]), yc)
            else:
                self._update2(Hc, yc, buf2[: stop - start])
        return self

    def _update1(self, Hc: torch.Tensor, yc: torch.Tensor) -> None:
        nb = torch.bincount(yc, minlength=self.K)
        sums = torch.zeros_like(self.means).index_add_(0, yc, Hc)
        mb = sums / torch.clamp(nb.to(_F64), min=1.0)[:, None]
        ssb = torch.zeros_like(self.ss)
        if self._track_ss:
            dev = Hc.sub_(mb[yc])  # Hc is a private float64 chunk
            ssb.index_add_(0, yc, torch.linalg.vector_norm(dev, dim=1) ** 2)
        self._merge1(nb, mb, ssb)

    def _merge1(self, nb: torch.Tensor, mb: torch.Tensor, ssb: torch.Tensor) -> None:
        na = self.counts
        n = na + nb
        nf = torch.clamp(n.to(_F64), min=1.0)
        delta = mb - self.means
        self.means = self.means + delta * (nb.to(_F64) / nf)[:, None]
        self.ss = self.ss + ssb + (delta * delta).sum(1) * (na.to(_F64) * nb.to(_F64) / nf)
        self.counts = n

    def _update2(self, Hc: torch.Tensor, yc: torch.Tensor, buf: torch.Tensor) -> None:
        # Everything is expressed through the deviations from the frozen class means, so no
        # large ||h||^2 terms cancel: ||h - mu_k||^2 = ||dev||^2 + 2 dev.(c_y - c_k) + ||c_y - c_k||^2.
        # nd = mu_y - s h = -dev, in two fused passes over a cache-sized buffer (gather, then
        # subtract the scaled chunk with on-the-fly conversion to float64).
        f = self._frozen
        K = self.K
        nd = torch.index_select(self.means, 0, yc, out=buf)
        torch.sub(nd, Hc, alpha=self._s, out=nd)
        self.ss2.index_add_(0, yc, torch.linalg.vector_norm(nd, dim=1) ** 2)
        Q = nd @ f["V"]  # (B, 2K+1) or (B, K+1): -[M^T dev, u.dev, (W dev)]
        P = -Q[:, :K]
        self.S += P.T @ P
        fp = Q[:, : K + 1]
        self.fp_sum.index_add_(0, yc, fp)
        self.fp_sq.index_add_(0, yc, fp * fp)
        self.counts2 += torch.bincount(yc, minlength=K)
        score = 2.0 * (P.gather(1, yc[:, None]) - P) + f["dist2"][yc]
        pred = torch.argmin(score, dim=1)
        self.correct += int((pred == yc).sum())
        if self.W is not None:
            logits = f["logit_means"][yc] - Q[:, K + 1 :]
            self.mismatch += int((torch.argmax(logits, dim=1) != pred).sum())
        self.n2 += int(yc.numel())

    @thread_policy()
    def end_first_pass(self) -> CollapseAccumulator:
        """Freeze the class means; later :meth:`update` calls feed pass 2."""
        if self.phase != 1:
            raise InputError("end_first_pass() was already called; the means are frozen")
        self._require_data()
        empty = torch.nonzero(self.counts == 0).flatten().tolist()
        if empty:
            raise DegenerateInputError(
                f"class(es) {empty[:10]} of 0..{self.K - 1} received no sample in pass 1; "
                "every class needs at least one sample (or use a smaller K)"
            )
        self._freeze()
        self.phase = 2
        return self

    def _freeze(self) -> None:
        K, d = self.K, self.d
        C, _ = _between(self.counts, self.means)
        diff = self.means[:, None, :] - self.means[None, :, :]  # K x K x d, small
        # a fixed (seeded) random unit direction for the fingerprint
        g = torch.Generator().manual_seed(20240917 + d)
        u = torch.randn(d, 1, generator=g, dtype=_F64).to(self.device)
        cols = [C.T, u / torch.linalg.norm(u)]
        if self.W is not None:
            cols.append(self.W.T)
        self._frozen = {
            "V": torch.cat(cols, dim=1).contiguous(),
            "dist2": (diff * diff).sum(-1),  # ||mu_j - mu_k||^2, computed directly
        }
        if self.W is not None:
            lm = self.means @ self.W.T
            self._frozen["logit_means"] = lm + self._s * self.b if self.b is not None else lm
        self.S = torch.zeros(K, K, dtype=_F64, device=self.device)
        self.ss2 = torch.zeros(K, dtype=_F64, device=self.device)
        self.counts2 = torch.zeros(K, dtype=torch.int64, device=self.device)
        self.fp_sum = torch.zeros(K, K + 1, dtype=_F64, device=self.device)
        self.fp_sq = torch.zeros(K, K + 1, dtype=_F64, device=self.device)

    def _require_data(self) -> None:
        if self.counts is None or int(self.counts.sum()) == 0:
            raise InputError("the accumulator has seen no data; call update(H, y) first")

    def _check_pass2(self) -> None:
        """Raise unless pass 2 saw the data whose class means pass 1 froze."""
        if not torch.equal(self.counts2, self.counts):
            bad = torch.nonzero(self.counts2 != self.counts).flatten().tolist()
            raise InputError(
                f"pass 2 saw per-class counts {self.counts2[bad[:5]].tolist()} for class(es) "
                f"{bad[:5]} but pass 1 saw {self.counts[bad[:5]].tolist()}: feed the same data "
                "(same samples and labels, any order and batching) in both passes"
            )
        n = self.counts.to(_F64)[:, None]
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
        if not isinstance(other, CollapseAccumulator) or other.K != self.K:
            raise InputError("merge() needs a CollapseAccumulator with the same K")
        if other.counts is None:
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
                other.counts.to(self.device),
                other.means.to(self.device) * f,
                other.ss.to(self.device) * (f * f),
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
            self.S += other.S.to(self.device)
            self.ss2 += other.ss2.to(self.device)
            self.counts2 += other.counts2.to(self.device)
            self.fp_sum += other.fp_sum.to(self.device)
            self.fp_sq += other.fp_sq.to(self.device)
            self.correct += other.correct
            self.mismatch += other.mismatch
            self.n2 += other.n2
        return self

    _STATE_KEYS = ("K", "rank_tol", "phase", "d", "counts", "means", "ss", "W", "b")

    def state_dict(self) -> dict[str, Any]:
        """A picklable snapshot (tensors on CPU)."""

        def cpu(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.detach().cpu().clone()

        return {
            "K": self.K,
            "rank_tol": self.rank_tol,
            "phase": self.phase,
            "d": self.d,
            "counts": cpu(self.counts),
            "means": cpu(self.means),
            "ss": cpu(self.ss),
            "W": cpu(self.W),
            "b": cpu(self.b),
            "S": cpu(self.S),
            "ss2": cpu(self.ss2),
            "n2": self.n2,
            "correct": self.correct,
            "mismatch": self.mismatch,
            "scale_exp": self.scale_exp,
            "maxabs": self.maxabs,
            "counts2": cpu(self.counts2),
            "fp_sum": cpu(self.fp_sum),
            "fp_sq": cpu(self.fp_sq),
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
        acc = cls(sd["K"], W=sd["W"], b=sd["b"], rank_tol=sd["rank_tol"])
        if sd["phase"] not in (1, 2):
            raise InputError(f"state dict key 'phase' must be 1 or 2, got {describe(sd['phase'])}")
        if sd["counts"] is None:
            return acc
        d = check_int(sd["d"], "state dict key 'd'", low=1)
        K = acc.K
        shapes = {"counts": (K,), "means": (K, d), "ss": (K,)}
        if sd["phase"] == 2:
            missing2 = [k for k in ("S", "ss2", "n2", "correct", "mismatch") if k not in sd]
            if missing2:
                raise InputError(f"state dict of a pass-2 accumulator lacks key(s) {missing2}")
            shapes.update({"S": (K, K), "ss2": (K,)})
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
        dev = torch.device(device) if device is not None else torch.device("cpu")
        acc._init_state(d, dev)
        acc.counts = sd["counts"].to(dev, torch.int64)
        acc.means, acc.ss = (sd[k].to(dev, _F64) for k in ("means", "ss"))
        acc.scale_exp = int(sd.get("scale_exp", 0))
        acc.maxabs = float(sd.get("maxabs", math.inf))
        if sd["phase"] == 2:
            acc.end_first_pass()
            acc.S, acc.ss2 = sd["S"].to(dev, _F64), sd["ss2"].to(dev, _F64)
            acc.n2, acc.correct, acc.mismatch = (
                check_int(sd[k], f"state dict key {k!r}", low=0)
                for k in ("n2", "correct", "mismatch")
            )
            if sd.get("counts2") is not None:
                acc.counts2 = sd["counts2"].to(dev, torch.int64)
                acc.fp_sum = sd["fp_sum"].to(dev, _F64)
                acc.fp_sq = sd["fp_sq"].to(dev, _F64)
            else:  # an older state dict without the fingerprint: trust its counts
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
        self._require_data()
        K = self.K
        if self.phase == 1:
            head = torch.tensor([float(self.scale_exp), self.maxabs], dtype=_F64)
            flat = torch.cat(
                [head.to(self.device), self.counts.to(_F64), self.means.flatten(), self.ss]
            )
            parts = [torch.empty_like(flat) for _ in range(dist.get_world_size(group))]
            dist.all_gather(parts, flat, group=group)
            d = self.d
            e = max(int(p[0]) for p in parts)
            self.counts = torch.zeros_like(self.counts)
            self.means = torch.zeros_like(self.means)
            self.ss = torch.zeros_like(self.ss)
            self.scale_exp = e
            self.maxabs = max(float(p[1]) for p in parts)
            for p in parts:
                f = math.ldexp(1.0, int(p[0]) - e)
                q = p[2:]
                self._merge1(
                    q[:K].round().to(torch.int64),
                    q[K : K + K * d].view(K, d) * f,
                    q[K + K * d :] * (f * f),
                )
        else:
            flat = torch.cat(
                [
                    self.S.flatten(),
                    self.ss2,
                    self.counts2.to(_F64),
                    self.fp_sum.flatten(),
                    self.fp_sq.flatten(),
                    torch.tensor(
                        [self.correct, self.mismatch, self.n2], dtype=_F64, device=self.device
                    ),
                ]
            )
            dist.all_reduce(flat, group=group)
            o = 0
            self.S = flat[o : o + K * K].view(K, K).clone()
            o += K * K
            self.ss2 = flat[o : o + K].clone()
            o += K
            self.counts2 = flat[o : o + K].round().to(torch.int64)
            o += K
            self.fp_sum = flat[o : o + K * (K + 1)].view(K, K + 1).clone()
            o += K * (K + 1)
            self.fp_sq = flat[o : o + K * (K + 1)].view(K, K + 1).clone()
            o += K * (K + 1)
            self.correct, self.mismatch, self.n2 = (int(round(float(v))) for v in flat[o:])
        return self

    # -- results --------------------------------------------------------------------------
    @property
    def n(self) -> int:
        return 0 if self.counts is None else int(self.counts.sum())

    def class_means(self) -> np.ndarray:
        """The class means, shape (K, d), float64 numpy."""
        self._require_data()
        return (self.means * math.ldexp(1.0, self.scale_exp)).cpu().numpy()

    @thread_policy()
    def compute(self) -> dict[str, float]:
        """The metrics available so far (pass-2 keys appear after a complete second pass).

        Returns
        -------
        dict
            ``tr_sigma_w, tr_sigma_b, pfc1, pfc2, nc2_equinorm, nc2_equiangular`` (+ ``nc3``
            with a classifier) after pass 1; ``ncc_accuracy, pfc3, nc1`` (+ ``nc4``) after pass 2.
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
        self._require_data()
        empty = torch.nonzero(self.counts == 0).flatten().tolist()
        if empty:
            raise DegenerateInputError(
                f"class(es) {empty[:10]} of 0..{self.K - 1} have no sample; every class needs "
                "at least one (relabel to 0..K-1 without gaps, or use a smaller K)"
            )
        N = self.n
        C, G = _between(self.counts, self.means)
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
        tr_sb = _check_tr_sb(G, self.means, self.counts, tr_sw)
        out = {
            "tr_sigma_w": _unscale(tr_sw, 2 * self.scale_exp, "tr_sigma_w"),
            "tr_sigma_b": _unscale(tr_sb, 2 * self.scale_exp, "tr_sigma_b"),
            "pfc1": tr_sw / tr_sb,
            "pfc2": _pfc2_from_gram(G),
        }
        out["nc2_equinorm"], out["nc2_equiangular"] = _nc2_from_gram(G)
        if self.W is not None:
            out["nc3"] = _nc3(self.W, C)
        if second:
            acc = self.correct / N
            out["ncc_accuracy"] = acc
            out["pfc3"] = 1.0 - acc
            Gp2 = _gram_pinv_sq(G, self.rank_tol)
            out["nc1"] = float((Gp2 * self.S).sum()) / N
            if self.W is not None:
                out["nc4"] = self.mismatch / N
        return out


# --------------------------------------------------------------------------------------------
# batch functions
# --------------------------------------------------------------------------------------------
def _accumulate(
    H: Any,
    y: Any,
    K: int | None,
    W: Any = None,
    b: Any = None,
    *,
    second: bool = True,
    rank_tol: float = DEFAULT_RANK_TOL,
) -> CollapseAccumulator:
    Ht, yt, K, mx = _features_labels(H, y, K)
    acc = CollapseAccumulator(K, W=W, b=b, rank_tol=rank_tol)
    acc._track_ss = not second
    acc._init_state(Ht.shape[1], Ht.device)
    acc._scale_for(mx)
    acc._feed(Ht, yt)
    if second:
        acc.end_first_pass()
        acc._feed(Ht, yt)
    return acc


@thread_policy("H")
def collapse_metrics(
    H: Any,
    y: Any = None,
    W: Any = None,
    b: Any = None,
    *,
    K: int | None = None,
    rank_tol: float = DEFAULT_RANK_TOL,
) -> dict[str, float]:
    r"""All collapse metrics of one layer's features.

    .. math::

        \mathrm{PFC1} = \frac{\operatorname{tr}\Sigma_W}{\operatorname{tr}\Sigma_B},\quad
        \mathrm{PFC2} = \Big\| \frac{G}{\|G\|_F} - \frac{I_K - \frac1K 11^\top}{\sqrt{K-1}}\Big\|_F,
        \quad \mathrm{NC1} = \tfrac1K \operatorname{tr}(\Sigma_W \Sigma_B^+),

    ``PFC3 = 1 - ncc_accuracy``, NC2 (equinorm, equiangularity), and with a classifier NC3
    (self-duality) and NC4 (classifier vs NCC disagreement). See MATH.md section 3.

    Parameters
    ----------
    H : array of shape (N, d) or (K, n, d)
        Features, numpy or torch (any device, any float dtype); accumulated in float64.
    y : array of shape (N,), optional
        Integer labels ``0..K-1``; omit for a balanced ``(K, n, d)`` array.
    W : array of shape (K, d), optional
        Classifier weights (adds ``nc3`` and ``nc4``).
    b : array of shape (K,), optional
        Classifier bias (for ``nc4``).
    K : int, optional
        Number of classes; defaults to ``max(y) + 1``. Every class must occur.
    rank_tol : float
        Relative cut-off on the eigenvalues of ``G`` for NC1's pseudo-inverse.

    Returns
    -------
    dict of str to float
        ``pfc1, pfc2, pfc3, ncc_accuracy, nc1, nc2_equinorm, nc2_equiangular, tr_sigma_w,
        tr_sigma_b`` and, with ``W``, ``nc3, nc4``.

    Raises
    ------
    InputError
        Mismatched lengths, non-integer labels or labels outside ``0..K-1``, non-finite
        features, a wrong ``W``/``b`` shape.
    DegenerateInputError
        ``K < 2``, a class without samples, or all class means equal.

    Warns
    -----
    RankWarning
        When ``Sigma_B`` has rank below ``K - 1`` (NC1 then uses the pseudo-inverse on its range).
    """
    return _accumulate(H, y, K, W, b, rank_tol=rank_tol).compute()


@thread_policy("H")
def pfc1(H: Any, y: Any = None, *, K: int | None = None) -> float:
    r"""Variability collapse :math:`\operatorname{tr}\Sigma_W / \operatorname{tr}\Sigma_B` (PFC paper eq. 7)."""
    return _accumulate(H, y, K, second=False).compute()["pfc1"]


@thread_policy("H")
def pfc2(H: Any, y: Any = None, *, K: int | None = None) -> float:
    r"""Distance of the centred class-mean Gram to the simplex ETF (PFC paper eq. 8).

    .. math:: \| G/\|G\|_F - (I_K - 11^\top/K)/\sqrt{K-1} \|_F,\quad G = M^\top M.
    """
    return _accumulate(H, y, K, second=False).compute()["pfc2"]


@thread_policy("H")
def ncc_accuracy(H: Any, y: Any = None, *, K: int | None = None) -> float:
    r"""Accuracy of the nearest-class-centre rule :math:`\arg\min_k \|h_i - \mu_k\|` (own means)."""
    return _accumulate(H, y, K).compute()["ncc_accuracy"]


@thread_policy("H")
def pfc3(H: Any, y: Any = None, *, K: int | None = None) -> float:
    """``1 - ncc_accuracy``: the NCC error, so that all three PFC metrics decrease under collapse."""
    return _accumulate(H, y, K).compute()["pfc3"]


@thread_policy("H")
def nc1(
    H: Any, y: Any = None, *, K: int | None = None, rank_tol: float = DEFAULT_RANK_TOL
) -> float:
    r"""Papyan's NC1, :math:`\tfrac1K \operatorname{tr}(\Sigma_W \Sigma_B^+)`, exactly via the K x K route.

    With :math:`G = M^\top M = V \operatorname{diag}(g) V^\top` (eigenvalues above
    ``rank_tol * max(g)`` kept), :math:`\Sigma_B^+ = K M V \operatorname{diag}(g^{-2}) V^\top M^\top`,
    so NC1 :math:`= \tfrac1N \sum_i \|\operatorname{diag}(g^{-1}) V^\top P_i\|^2` with
    :math:`P_i = M^\top(h_i - \mu_{y_i})`.
    """
    return _accumulate(H, y, K, rank_tol=rank_tol).compute()["nc1"]


@thread_policy("H")
def nc2(H: Any, y: Any = None, *, K: int | None = None) -> tuple[float, float]:
    r"""NC2 as ``(equinorm, equiangularity)``.

    equinorm is std/mean (population std) of :math:`\|\mu_k - \mu_G\|`; equiangularity is the mean
    over :math:`k \ne k'` of :math:`|\cos(\mu_k - \mu_G, \mu_{k'} - \mu_G) + 1/(K-1)|`.
    """
    m = _accumulate(H, y, K, second=False).compute()
    return m["nc2_equinorm"], m["nc2_equiangular"]


@thread_policy("H")
def nc3(W: Any, H: Any, y: Any = None, *, K: int | None = None) -> float:
    r"""Self-duality :math:`\| W^\top/\|W\|_F - M/\|M\|_F \|_F^2` (between 0 and 4)."""
    return _accumulate(H, y, K, W, second=False).compute()["nc3"]


@thread_policy("H")
def nc4(H: Any, y: Any, W: Any, b: Any = None, *, K: int | None = None) -> float:
    r"""Fraction of samples where :math:`\arg\max_k (W h_i + b)_k` differs from the NCC prediction."""
    return _accumulate(H, y, K, W, b).compute()["nc4"]


@thread_policy("H")
def alignment(H: Any, X: Any) -> float:
    r"""Alignment of features with the data, :math:`\langle H, X\rangle_F / (\|H\|_F \|X\|_F)` (Fig. 5)."""
    Ht = check_features(H, "H", ndim=_ndim(H) if _ndim(H) in (2, 3) else 2).to(_F64)
    Xt = check_features(X, "X", ndim=_ndim(X) if _ndim(X) in (2, 3) else 2).to(_F64)
    if Ht.shape != Xt.shape:
        raise InputError(
            f"H and X must have the same shape, got {tuple(Ht.shape)} and {tuple(Xt.shape)}"
        )
    Xt = Xt.to(Ht.device)
    nh, nx = torch.linalg.norm(Ht), torch.linalg.norm(Xt)
    if float(nh) == 0.0 or float(nx) == 0.0:
        raise DegenerateInputError("alignment is undefined when H or X is all zeros")
    return float((Ht * Xt).sum() / (nh * nx))


def simplex_etf(K: int, d: int, *, seed: int | None = None, scale: float = 1.0) -> np.ndarray:
    r"""A randomly rotated simplex equiangular tight frame, as rows.

    .. math:: M^* = \sqrt{\tfrac{K}{K-1}}\, P\, (I_K - \tfrac1K 11^\top)

    returned transposed: row ``k`` is the centred class mean of class ``k``. Rows have norm
    ``scale``, pairwise cosine ``-1/(K-1)`` and sum to zero. Built from an orthonormal basis of
    the ``(K-1)``-dimensional subspace orthogonal to ``1`` and a random isometry into
    ``R^d``, so any ``d >= K - 1`` works.

    Parameters
    ----------
    K : int
        Number of classes, ``>= 2``.
    d : int
        Feature dimension, ``>= K - 1``.
    seed : int, optional
        Seed of the random rotation (``None``: fresh randomness).
    scale : float
        Norm of each vector (``> 0``).

    Returns
    -------
    ndarray of shape (K, d)

    Raises
    ------
    InputError
        ``K < 2``, ``d < K - 1`` or a non-positive ``scale``.
    """
    K = check_int(K, "K", low=2)
    d = check_int(d, "d", low=1)
    scale = check_scalar(scale, "scale", low=0.0, low_inclusive=False)
    if d < K - 1:
        raise InputError(
            f"a simplex ETF of K={K} vectors needs d >= K-1 = {K - 1} dimensions, got d={d}"
        )
    rng = np.random.default_rng(seed)
    # orthonormal basis of 1^perp in R^K: the last K-1 columns of a QR of [1, random]
    A = np.concatenate([np.ones((K, 1)), rng.standard_normal((K, K - 1))], axis=1)
    Q, _ = np.linalg.qr(A)
    Q = Q[:, 1:]
    R, _ = np.linalg.qr(rng.standard_normal((d, K - 1)))  # (d, K-1), orthonormal columns
    return scale * math.sqrt(K / (K - 1)) * (Q @ R.T)


@thread_policy("layers")
def effective_depth(
    layers: Sequence[Any], y: Any = None, *, epsilon: float = 0.01, K: int | None = None
) -> int | None:
    r"""Galanti et al.'s epsilon-effective depth: the first layer whose NCC error is at most epsilon.

    Parameters
    ----------
    layers : sequence of arrays of shape (N, d_l), or of floats
        The features of layers ``0..L``; or, with ``y=None``, their NCC errors (PFC3) directly.
    y : array of shape (N,), optional
        Labels shared by all layers.
    epsilon : float
        Threshold on ``1 - ncc_accuracy``, in ``[0, 1]``.

    Returns
    -------
    int or None
        The smallest index ``l`` with ``1 - ncc_accuracy(H_l) <= epsilon``; ``None`` if no layer
        qualifies.
    """
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, high=1.0)
    if len(layers) == 0:
        raise InputError("layers is empty; pass the features (or NCC errors) of layers 0..L")
    if y is None:
        errs = [
            check_scalar(e, f"layers[{i}] (an NCC error)", low=0.0, high=1.0)
            for i, e in enumerate(layers)
        ]
    else:
        errs = [pfc3(H, y, K=K) for H in layers]
    for i, e in enumerate(errs):
        if e <= epsilon:
            return i
    return None


@thread_policy("layers")
def relative_position(layers: Sequence[Any], *, mode: str = "index") -> np.ndarray:
    r"""Relative position of layers ``0..L`` (Fig. 3).

    ``mode="index"``: ``l / L``. ``mode="distance"``: ``||H_l - H_0||_F / ||H_L - H_0||_F``, which
    equals ``t`` exactly on the straight line ``H_l = (1-t) H_0 + t H_L``.
    """
    L = len(layers) - 1
    if L < 1:
        raise InputError(f"relative_position needs at least 2 layers, got {len(layers)}")
    if mode == "index":
        return np.arange(L + 1, dtype=float) / L
    if mode != "distance":
        raise InputError(f"mode must be 'index' or 'distance', got {mode!r}")
    H0 = check_features(layers[0], "layers[0]").to(_F64)
    dists = []
    for i, Hl in enumerate(layers):
        Ht = check_features(Hl, f"layers[{i}]").to(device=H0.device, dtype=_F64)
        if Ht.shape != H0.shape:
            raise InputError(
                "mode='distance' needs layers of one shape, got "
                f"{tuple(H0.shape)} and {tuple(Ht.shape)} at layer {i}; use mode='index'"
            )
        dists.append(float(torch.linalg.norm(Ht - H0)))
    if dists[-1] == 0.0:
        raise DegenerateInputError("the last layer equals the first: distances are undefined")
    return np.asarray(dists) / dists[-1]


# --------------------------------------------------------------------------------------------
# metrics along the straight line between two layers
# --------------------------------------------------------------------------------------------
class LineAccumulator:
    r"""Metrics of the features :math:`(1-t) A + t B` for every ``t``, streamed from two layers.

    Class means are linear in ``t`` and the within-class scatter is a quadratic,

    .. math::

        s_k(t) = (1-t)^2 s^A_k + 2t(1-t) c_k + t^2 s^B_k,\quad
        c_k = \sum_{y_i=k} \langle a_i - \mu^A_k, b_i - \mu^B_k\rangle,

    so pass 1 keeps the statistics of ``A`` and ``B`` and the cross terms ``c_k`` (Chan-merged),
    ``O(K (d_A + d_B))`` memory, and PFC1, PFC2 and NC2 follow for any ``t``
    (MATH.md section 7). NCC accuracy, PFC3 and NC1 depend on every sample: an optional pass 2
    evaluates them on the grid ``ts`` given at construction.

    Parameters
    ----------
    K : int
        Number of classes.
    ts : sequence of float, optional
        Grid for pass 2 and the default grid of :meth:`compute`; default 11 points on [0, 1].
    rank_tol : float
        As in :func:`collapse_metrics`.
    """

    def __init__(
        self, K: int, ts: Sequence[float] | None = None, *, rank_tol: float = DEFAULT_RANK_TOL
    ):
        self.K = check_int(K, "K", low=2)
        ts = np.linspace(0.0, 1.0, 11) if ts is None else np.asarray(ts, dtype=float)
        if ts.ndim != 1 or ts.size == 0 or not np.all(np.isfinite(ts)):
            raise InputError(f"ts must be a non-empty 1-d sequence of finite floats, got {ts!r}")
        self.ts = ts
        # the line mixes two layers' statistics linearly, so both keep the features' own units
        self.A = CollapseAccumulator(K, rank_tol=rank_tol)
        self.B = CollapseAccumulator(K, rank_tol=rank_tol)
        self.A._auto_scale = self.B._auto_scale = False
        self.cross: torch.Tensor | None = None
        self.rank_tol = rank_tol
        self.phase = 1
        self._lines: list[CollapseAccumulator] = []

    @thread_policy("A")
    def update(self, A: Any, B: Any, y: Any) -> LineAccumulator:
        """Add a batch of the two layers on the same samples (``A (B, d)``, ``B (B, d)``)."""
        At = check_features(A, "A")
        Bt = check_features(B, "B")
        if At.shape != Bt.shape:
            raise InputError(
                f"A and B must have the same shape (one layer width along the line), got "
                f"{tuple(At.shape)} and {tuple(Bt.shape)}"
            )
        if self.phase == 2:
            for t, acc in zip(self.ts, self._lines, strict=True):
                acc.update((1.0 - t) * At.to(_F64) + t * Bt.to(_F64), y)
            return self
        At64, yt = self.A._batch(At, y)
        Bt64, _ = self.B._batch(Bt, y)
        if self.cross is None:
            self.cross = torch.zeros(self.K, dtype=_F64, device=self.A.device)
        for sl in _chunks(At64.shape[0], At64.shape[1], self.K):
            a, b, yc = At64[sl].to(_F64), Bt64[sl].to(_F64), yt[sl]
            nb = torch.bincount(yc, minlength=self.K)
            cnt = torch.clamp(nb.to(_F64), min=1.0)[:, None]
            ma = torch.zeros_like(self.A.means).index_add_(0, yc, a) / cnt
            mb = torch.zeros_like(self.B.means).index_add_(0, yc, b) / cnt
            da, db = a - ma[yc], b - mb[yc]
            cb = torch.zeros_like(self.cross).index_add_(0, yc, (da * db).sum(1))
            na = self.A.counts
            n = torch.clamp((na + nb).to(_F64), min=1.0)
            dA, dB = ma - self.A.means, mb - self.B.means
            self.cross = self.cross + cb + (dA * dB).sum(1) * (na.to(_F64) * nb.to(_F64) / n)
            self.A._merge1(nb, ma, torch.zeros_like(cb).index_add_(0, yc, (da * da).sum(1)))
            self.B._merge1(nb, mb, torch.zeros_like(cb).index_add_(0, yc, (db * db).sum(1)))
        return self

    def _at(self, t: float) -> CollapseAccumulator:
        """A phase-1 accumulator holding the exact statistics of (1-t) A + t B."""
        acc = CollapseAccumulator(self.K, rank_tol=self.rank_tol)
        acc._auto_scale = False
        acc._init_state(self.A.d, self.A.device)
        acc.counts = self.A.counts.clone()
        acc.means = (1.0 - t) * self.A.means + t * self.B.means
        acc.ss = (1.0 - t) ** 2 * self.A.ss + 2.0 * t * (1.0 - t) * self.cross + t**2 * self.B.ss
        acc.ss = torch.clamp(acc.ss, min=0.0)
        return acc

    @thread_policy()
    def end_first_pass(self) -> LineAccumulator:
        """Freeze the statistics; later :meth:`update` calls feed pass 2 on the grid ``ts``."""
        if self.phase != 1:
            raise InputError("end_first_pass() was already called")
        self.A._require_data()
        self._lines = [self._at(float(t)).end_first_pass() for t in self.ts]
        self.phase = 2
        return self

    @thread_policy()
    def merge(self, other: LineAccumulator) -> LineAccumulator:
        """Combine another shard (same phase) into this one."""
        if not isinstance(other, LineAccumulator) or other.K != self.K:
            raise InputError("merge() needs a LineAccumulator with the same K")
        if self.phase != other.phase:
            raise InputError("cannot merge line accumulators in different passes")
        if self.phase == 2:
            for a, b in zip(self._lines, other._lines, strict=True):
                a.merge(b)
            return self
        if other.cross is None:
            return self
        if self.cross is None:
            self.A.merge(other.A)
            self.B.merge(other.B)
            self.cross = other.cross.clone()
            return self
        na, nb = self.A.counts, other.A.counts
        n = torch.clamp((na + nb).to(_F64), min=1.0)
        dA = other.A.means - self.A.means
        dB = other.B.means - self.B.means
        self.cross = self.cross + other.cross + (dA * dB).sum(1) * (na.to(_F64) * nb.to(_F64) / n)
        self.A.merge(other.A)
        self.B.merge(other.B)
        return self

    @thread_policy()
    def all_reduce(self, group: Any = None) -> LineAccumulator:
        """Merge across the processes of a ``torch.distributed`` group (in rank order)."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise InputError("all_reduce() needs an initialised torch.distributed process group")
        if self.phase == 2:
            for acc in self._lines:
                acc.all_reduce(group)
            return self
        K, d = self.K, self.A.d
        flat = torch.cat(
            [
                self.A.counts.to(_F64),
                self.A.means.flatten(),
                self.A.ss,
                self.B.means.flatten(),
                self.B.ss,
                self.cross,
            ]
        )
        parts = [torch.empty_like(flat) for _ in range(dist.get_world_size(group))]
        dist.all_gather(parts, flat, group=group)
        merged = None
        for p in parts:
            shard = LineAccumulator(K, self.ts, rank_tol=self.rank_tol)
            o = 0
            counts = p[o : o + K].round().to(torch.int64)
            o += K
            for acc in (shard.A, shard.B):
                acc._init_state(d, self.A.device)
                acc.counts = counts.clone()
                acc.means = p[o : o + K * d].view(K, d).clone()
                o += K * d
                acc.ss = p[o : o + K].clone()
                o += K
            shard.cross = p[o : o + K].clone()
            merged = shard if merged is None else merged.merge(shard)
        self.A, self.B, self.cross = merged.A, merged.B, merged.cross
        return self

    @thread_policy()
    def compute(self, ts: Sequence[float] | None = None) -> dict[str, np.ndarray]:
        """Metrics along the line.

        Parameters
        ----------
        ts : sequence of float, optional
            Where to evaluate; default the grid given at construction. Pass-2 metrics
            (``ncc_accuracy, pfc3, nc1``) are included only on that grid, after pass 2.

        Returns
        -------
        dict of str to ndarray
            ``t`` and, per ``t``, ``tr_sigma_w, tr_sigma_b, pfc1, pfc2, nc2_equinorm,
            nc2_equiangular`` (+ ``ncc_accuracy, pfc3, nc1``).
        """
        self.A._require_data()
        grid = self.ts if ts is None else np.asarray(ts, dtype=float)
        rows = [self._at(float(t)).compute() for t in grid]
        out = {"t": grid.copy()}
        for key in rows[0]:
            out[key] = np.array([r[key] for r in rows])
        if self.phase == 2 and grid.shape == self.ts.shape and np.array_equal(grid, self.ts):
            second = [acc.compute() for acc in self._lines]
            for key in ("ncc_accuracy", "pfc3", "nc1"):
                if key in second[0]:
                    out[key] = np.array([r[key] for r in second])
        return out
