"""Statistics to metrics: everything computed from the ``K x K`` Gram ``G`` of the centred class
means (MATH.md section 3), shared by the streaming accumulators and the batch functions."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import cached_property

import torch

from ..errors import DegenerateInputError, PFCWarning, RankWarning
from .inputs import (
    F64,
)

# tr(Sigma_B) below this multiple of the mean squared class-mean norm is float64 round-off:
# the class means coincide and every ratio with tr(Sigma_B) in the denominator is undefined.
_DEGENERATE_TR_SB = 1e-26


def between(counts: torch.Tensor, means: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Centred class means ``C = (mu_k - mu_G)_k`` (K, d) and their Gram ``G = C C^T`` (K, K)."""
    w = counts.to(F64) / counts.sum()
    mu_g = w @ means
    C = means - mu_g
    return C, C @ C.T


def check_tr_sb(G: torch.Tensor, means: torch.Tensor, counts: torch.Tensor, tr_sw: float) -> float:
    """``tr Sigma_B``, or :class:`DegenerateInputError` when it is round-off.

    The class means carry a round-off of about ``eps |h|`` each, so ``tr Sigma_B`` is compared
    with the features' mean squared norm ``E ||h||^2 = tr Sigma_W + sum_k (n_k/N) ||mu_k||^2``
    (not with the class means alone, which vanish together with ``tr Sigma_B`` when the class
    means were subtracted from the data).
    """
    K = G.shape[0]
    tr_sb = float(torch.trace(G)) / K
    w = counts.to(F64) / counts.sum()
    second_moment = tr_sw + float(w @ (means * means).sum(1))
    if not tr_sb > _DEGENERATE_TR_SB * second_moment or not second_moment > 0:
        raise DegenerateInputError(
            "all class means coincide to float64 round-off (tr Sigma_B / E||h||^2 = "
            f"{tr_sb / second_moment if second_moment > 0 else 0.0:.3g}), so PFC1, PFC2, NC1 and "
            "NC2 are undefined; check that the labels belong to these features, that the class "
            "means were not subtracted and that the layer is not constant"
        )
    return tr_sb


def unscale(value: float, exp2: int, name: str) -> float:
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


def pfc2_from_gram(G: torch.Tensor) -> float:
    K = G.shape[0]
    etf = (torch.eye(K, dtype=F64, device=G.device) - 1.0 / K) / math.sqrt(K - 1)
    return float(torch.linalg.norm(G / torch.linalg.norm(G) - etf))


def nc2_from_gram(G: torch.Tensor) -> tuple[float, float]:
    K = G.shape[0]
    norms = torch.sqrt(torch.clamp(torch.diagonal(G), min=0.0))
    equinorm = float(norms.std(unbiased=False) / norms.mean())
    # a zero-norm centred mean has no direction: its cosines are taken as 0
    safe = torch.where(norms > 0, norms, torch.ones_like(norms))
    cos = G / safe[:, None] / safe[None, :]
    off = ~torch.eye(K, dtype=torch.bool, device=G.device)
    equiangular = float((cos[off] + 1.0 / (K - 1)).abs().mean())
    return equinorm, equiangular


def gram_pinv_sq(G: torch.Tensor, rank_tol: float, *, warn: bool = True) -> torch.Tensor:
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


def nc3_from_means(W: torch.Tensor, C: torch.Tensor) -> float:
    # W rows and C rows are both class-indexed, so W^T/||W|| - M/||M|| in the d x K layout
    # is the transpose of this K x d difference.
    # Both terms are scale-free: divide by the largest entry first so that ||.|| neither
    # underflows (W ~ 1e-200) nor overflows (W ~ 1e200); a zero W has no direction.
    w_max, c_max = float(W.abs().max()), float(C.abs().max())
    if w_max == 0.0:
        raise DegenerateInputError(
            "W is all zeros, so NC3 (the distance between the directions of W^T and of the "
            "centred class means) is undefined; pass the trained classifier's weights"
        )
    if c_max == 0.0:
        raise DegenerateInputError("all class means coincide, so NC3 is undefined")
    W, C = W / w_max, C / c_max
    return float(((W / torch.linalg.norm(W) - C / torch.linalg.norm(C)) ** 2).sum())


def cdnv_from_stats(counts: torch.Tensor, ss: torch.Tensor, G: torch.Tensor) -> float:
    r"""Class-distance normalised variance (Galanti et al. 2022) from per-class statistics.

    .. math:: \mathrm{CDNV} = \binom{K}{2}^{-1} \sum_{k < k'}
              \frac{V_k + V_{k'}}{2 \|\mu_k - \mu_{k'}\|^2},\qquad
              V_k = \frac{1}{n_k} \sum_{i: y_i = k} \|h_i - \mu_k\|^2,

    with :math:`\|\mu_k - \mu_{k'}\|^2 = G_{kk} + G_{k'k'} - 2 G_{kk'}` read from the Gram of
    the centred class means (centring cancels in a difference). ``counts (K,)``, ``ss (K,)`` the
    per-class sums of squared deviations and ``G (K, K)`` in the same (rescaled) units: the
    ratio is scale-free. A pair of coinciding class means gives ``inf``.
    """
    K = G.shape[0]
    var = ss / counts.to(F64)
    dg = torch.diagonal(G)
    dist2 = dg[:, None] + dg[None, :] - 2.0 * G
    iu = torch.triu_indices(K, K, offset=1, device=G.device)
    num = (var[:, None] + var[None, :])[iu[0], iu[1]]
    den = 2.0 * torch.clamp(dist2[iu[0], iu[1]], min=0.0)
    ratio = torch.where(den > 0, num / torch.where(den > 0, den, torch.ones_like(den)), math.inf)
    return float(ratio.mean())


def gram_eig_ratio(G: torch.Tensor, rank_tol: float) -> float:
    r"""Largest over smallest nonzero eigenvalue of the centred class-mean Gram ``G (K, K)``.

    Nonzero: above ``rank_tol * max`` (NC1's cut-off). 1 for a simplex ETF (``K - 1`` equal
    eigenvalues); large when the class means are anisotropic (some directions of
    :math:`\Sigma_B` small), which inflates NC1 through :math:`\Sigma_B^+`.
    """
    g = torch.linalg.eigvalsh(G)
    keep = g[g > rank_tol * g.max()]
    return float(keep.max() / keep.min())


@dataclass(frozen=True)
class ClassStats:
    """First-pass statistics of one layer, from which the registered formulas compute their
    metrics (:attr:`ufm.registry.MetricSpec.formula`). Arrays are in the accumulator's internal
    units (a power of two times the features'): every formula must be scale-free.

    Attributes
    ----------
    counts : torch.Tensor of shape (K,)
        Samples per class.
    means : torch.Tensor of shape (K, d)
        Class means.
    C, G : torch.Tensor of shapes (K, d) and (K, K)
        Centred class means and their Gram (:func:`between`).
    ss : torch.Tensor of shape (K,)
        Per-class sums of squared deviations from the class mean.
    tr_sw, tr_sb : float
        Within- and between-class traces (same units).
    rank_tol : float
        The accumulator's relative eigenvalue cut-off.
    """

    counts: torch.Tensor
    means: torch.Tensor
    C: torch.Tensor
    G: torch.Tensor
    ss: torch.Tensor
    tr_sw: float
    tr_sb: float
    rank_tol: float

    @cached_property
    def nc2(self) -> tuple[float, float]:
        """Both parts of NC2 (:func:`nc2_from_gram`), computed once for the two metrics."""
        return nc2_from_gram(self.G)


def pfc1_of(s: ClassStats) -> float:
    """PFC1 = tr(Sigma_W) / tr(Sigma_B)."""
    return s.tr_sw / s.tr_sb


def pfc2_of(s: ClassStats) -> float:
    """PFC2 from the centred class-mean Gram (:func:`pfc2_from_gram`)."""
    return pfc2_from_gram(s.G)


def nc2_equinorm_of(s: ClassStats) -> float:
    """NC2's equinorm part (:func:`nc2_from_gram`)."""
    return s.nc2[0]


def nc2_equiangular_of(s: ClassStats) -> float:
    """NC2's equiangular part (:func:`nc2_from_gram`)."""
    return s.nc2[1]


def cdnv_of(s: ClassStats) -> float:
    """CDNV (:func:`cdnv_from_stats`)."""
    return cdnv_from_stats(s.counts, s.ss, s.G)


def gram_eig_ratio_of(s: ClassStats) -> float:
    """The Gram eigenvalue ratio (:func:`gram_eig_ratio`)."""
    return gram_eig_ratio(s.G, s.rank_tol)
