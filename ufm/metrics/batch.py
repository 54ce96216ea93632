"""Batch collapse metrics of in-memory features: :func:`collapse_metrics` and one function per
metric, each running both passes of a :class:`CollapseAccumulator` over cache-sized chunks."""

from __future__ import annotations

from typing import Any

from ..errors import InputError
from ..threads import thread_policy
from .accumulator import CollapseAccumulator
from .inputs import (
    DEFAULT_RANK_TOL,
)


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
    acc = CollapseAccumulator.from_batch(H, y, K, W=W, b=b, second=second, rank_tol=rank_tol)
    return acc


def _need_W(W: Any, metric: str) -> None:
    if W is None:
        raise InputError(
            f"{metric} needs the classifier weights W of shape (K, d), got None; pass the "
            "trained classifier's weights (e.g. model.fc.weight), or use collapse_metrics(H, y) "
            "for the metrics without a classifier"
        )


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
def nc3(H: Any, y: Any, W: Any, *, K: int | None = None) -> float:
    r"""Self-duality :math:`\| W^\top/\|W\|_F - M/\|M\|_F \|_F^2` (between 0 and 4).

    Arguments in the order of every metric: features ``H``, labels ``y`` (``None`` for a
    balanced ``(K, n, d)`` array), then the classifier weights ``W`` of shape ``(K, d)``.

    Raises
    ------
    InputError
        ``W`` is ``None`` or of the wrong shape, or bad ``H``/``y``.
    DegenerateInputError
        ``W`` is zero or all class means coincide (NC3 undefined).
    """
    _need_W(W, "nc3")
    return _accumulate(H, y, K, W, second=False).compute()["nc3"]


@thread_policy("H")
def nc4(H: Any, y: Any, W: Any, b: Any = None, *, K: int | None = None) -> float:
    r"""Fraction of samples where :math:`\arg\max_k (W h_i + b)_k` differs from the NCC prediction.

    Arguments: features ``H``, labels ``y``, then the classifier ``W`` (``(K, d)``) and bias ``b``.

    Raises
    ------
    InputError
        ``W`` is ``None`` or of the wrong shape, or bad ``H``/``y``/``b``.
    """
    _need_W(W, "nc4")
    return _accumulate(H, y, K, W, b).compute()["nc4"]


@thread_policy("H")
def cdnv(H: Any, y: Any = None, *, K: int | None = None) -> float:
    r"""Class-distance normalised variance (Galanti, Gyorgy, Hutter, ICLR 2022).

    .. math:: \mathrm{CDNV} = \binom{K}{2}^{-1} \sum_{k < k'}
              \frac{V_k + V_{k'}}{2 \|\mu_k - \mu_{k'}\|^2},\qquad
              V_k = \frac{1}{n_k} \sum_{i: y_i = k} \|h_i - \mu_k\|^2.

    Computed from the per-class counts, scatter and the ``K x K`` class-mean Gram (``O(K d)``
    memory). Falls to 0 under variability collapse; unlike NC1 it does not invert
    :math:`\Sigma_B`, so anisotropic class means do not inflate it.
    """
    return _accumulate(H, y, K, second=False).compute()["cdnv"]


@thread_policy("H")
def gram_eig_ratio(
    H: Any, y: Any = None, *, K: int | None = None, rank_tol: float = DEFAULT_RANK_TOL
) -> float:
    r"""Largest over smallest nonzero eigenvalue of the centred class-mean Gram ``G (K, K)``.

    .. math:: \kappa = \lambda_{\max}(G) / \lambda_{\min}^{+}(G),\qquad
              G_{kk'} = (\mu_k - \mu_G)^\top (\mu_{k'} - \mu_G),

    nonzero meaning above ``rank_tol * lambda_max`` (NC1's cut-off). 1 for a simplex ETF; large
    when the class means are anisotropic.
    """
    return _accumulate(H, y, K, second=False, rank_tol=rank_tol).compute()["gram_eig_ratio"]
