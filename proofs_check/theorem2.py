r"""Theorem 2: PFC2 decreases on a neighbourhood of ``t = 1`` along :math:`M(t) = (1-t)M_0 + tM^*`.

With :math:`G(t) = M(t)^\top M(t) = A_0 + A_1 t + A_2 t^2` (``K x K``, quadratic in ``t``),
:math:`E = (I_K - \tfrac1K 11^\top)/\sqrt{K-1}` and :math:`\|E\|_F = 1`,

.. math::

    \mathrm{PFC2}(t)^2 = 2 - \frac{2}{\sqrt{K-1}} \frac{s(t)}{\sqrt{n(t)}}, \qquad
    s(t) = \langle G(t), I_K - \tfrac1K 11^\top\rangle,\quad n(t) = \|G(t)\|_F^2,

so PFC2 decreases exactly where :math:`Q(t) = 2 s'(t) n(t) - s(t) n'(t) > 0` (``Q`` has degree
at most 5; ``n > 0`` is checked). The sign of ``Q`` is decided exactly (Sturm sequence over the
rationals, coefficients computed exactly from the float64 means), which certifies the largest
interval ``(t0, 1]`` on which PFC2 decreases.

Transport cost, per direction. Shrinking the transport along the same direction,
:math:`M_0' = M^* + s(M_0 - M^*)`, traces the same segment restricted to ``[1 - s, 1]``. So each
direction :math:`M_0 - M^*` has a *critical relative cost*
:math:`\rho_c = \rho\,(1 - t_0^{ext})` (with :math:`\rho = \|M_0 - M^*\|_F/\|M^*\|_F` and
:math:`t_0^{ext} \le 0` the left end of the certified run of ``Q > 0`` on the line extended
beyond ``M_0``): PFC2 is monotone on all of ``[0, 1]`` iff :math:`\rho \le \rho_c`, and for
larger costs the certified interval has length :math:`\rho_c / \rho`. This is an exact
computation (the same Sturm certificate on the extended interval ``[1 - rho_max/rho, 1]``), not
a bisection over sampled scales; ``rho_c >= rho_max`` is reported as censored (``inf``).

The assumption "small transport cost" is therefore **per direction**: every direction has
:math:`\rho_c > 0` (that is the certified neighbourhood of ``t = 1``), but there is no uniform
threshold. A start that is a slightly rotated simplex ETF plus small noise
(:func:`proofs_check.instances.near_etf_means_instance`; e.g. ``K = 4``, ``d = 5``, noise
``1e-3``) has PFC2 (nearly) zero at both ends, so PFC2 rises first and :math:`\rho_c` is of the
order of the rotation's own cost, which tends to 0 with the rotation angle. The report gives
the distribution of :math:`\rho_c` over the sampled directions (random directions and
near-ETF starts), never a single threshold: the smallest sampled failing cost only reflects the
sample.

Centring is unweighted (balanced classes), as for an ETF.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from fractions import Fraction
from typing import Any

import numpy as np

from ufm.errors import InputError
from ufm.metrics import pfc2
from ufm.status import Status
from ufm.validate import check_features, check_scalar

from .certify import Poly, certify_sign, isolate_roots, poly_add, poly_deriv, poly_mul, poly_trim
from .common import CheckResult, Tally, draw_instances
from .instances import (
    MeansInstance,
    near_etf_means_instance,
    random_means_instance,
)

__all__ = [
    "pfc2_line_polynomials",
    "pfc2_closed_form",
    "analyze_means_line",
    "check_theorem2",
]

CLAIM = (
    "PFC2 decreases on a neighbourhood (t0, 1] of t = 1 along M(t) = (1-t) M0 + t M*; "
    "per direction M0 - M*, on all of [0, 1] iff the relative transport cost is at most that "
    "direction's critical cost rho_c > 0 (no uniform threshold: rho_c -> 0 for near-ETF starts)"
)

#: Quantiles reported for the critical costs (0 and 1 are the min and max).
RHO_QUANTILES = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0)

_Mat = list[list[Fraction]]


def _frac_centred(A: np.ndarray) -> _Mat:
    F = [[Fraction(float(v)) for v in r] for r in A]
    K, d = len(F), len(F[0])
    mean = [sum(F[k][j] for k in range(K)) / K for j in range(d)]
    return [[F[k][j] - mean[j] for j in range(d)] for k in range(K)]


def _gram(A: _Mat, B: _Mat) -> _Mat:
    return [[sum(x * y for x, y in zip(a, b, strict=True)) for b in B] for a in A]


def _inner(A: _Mat, B: _Mat) -> Fraction:
    return sum(x * y for ra, rb in zip(A, B, strict=True) for x, y in zip(ra, rb, strict=True))


def pfc2_line_polynomials(means0: Any, means_star: Any) -> tuple[Poly, Poly, Poly, bool]:
    r"""Exact polynomials ``s(t)``, ``n(t)`` and ``Q(t) = 2 s' n - s n'`` of the PFC2 line.

    .. math::

        G(t) = (1-t)^2 G_0 + t(1-t)(C + C^\top) + t^2 G^*,\quad
        s = \langle G, I - \tfrac1K 11^\top\rangle,\quad n = \|G\|_F^2,

    with ``G_0 = M_0 M_0^T``, ``C = M_0 M^{*T}``, ``G^* = M^* M^{*T}`` (rows centred, exact).

    Parameters
    ----------
    means0, means_star : array of shape (K, d)
        Start and end class means (rows; centred here without weights).

    Returns
    -------
    s, n, Q : tuple of Fraction
        Coefficients in increasing degree.
    exact_etf : bool
        Whether ``G^*`` is exactly proportional to ``I - 11^T/K`` (an exact ETF end point).
    """
    A, B = _check_pair(means0, means_star)
    M0, Ms = _frac_centred(A), _frac_centred(B)
    K = len(M0)
    G0, C, Gs = _gram(M0, M0), _gram(M0, Ms), _gram(Ms, Ms)
    S = [[C[i][j] + C[j][i] for j in range(K)] for i in range(K)]
    A0 = G0
    A1 = [[-2 * G0[i][j] + S[i][j] for j in range(K)] for i in range(K)]
    A2 = [[G0[i][j] - S[i][j] + Gs[i][j] for j in range(K)] for i in range(K)]
    P = [[(1 if i == j else 0) - Fraction(1, K) for j in range(K)] for i in range(K)]
    As = (A0, A1, A2)
    s = poly_trim([_inner(Aj, P) for Aj in As])
    ncoef = [Fraction(0)] * 5
    for j in range(3):
        for k in range(3):
            ncoef[j + k] += _inner(As[j], As[k])
    n = poly_trim(ncoef)
    Q = poly_add(
        poly_mul(poly_trim([2]), poly_mul(poly_deriv(s), n)),
        poly_mul(poly_trim([-1]), poly_mul(s, poly_deriv(n))),
    )
    diag = Gs[0][0]
    exact_etf = diag > 0 and all(
        Gs[i][j] == (diag if i == j else -diag / (K - 1)) for i in range(K) for j in range(K)
    )
    return s, n, Q, exact_etf


def pfc2_closed_form(t: Any, s: Poly, n: Poly, K: int) -> np.ndarray:
    r"""PFC2 along the line from its polynomials: :math:`\sqrt{2 - 2 s/(\sqrt{K-1}\sqrt{n})}`."""
    t = np.asarray(t, dtype=float)
    sv = np.polynomial.polynomial.polyval(t, [float(c) for c in s] or [0.0])
    nv = np.polynomial.polynomial.polyval(t, [float(c) for c in n] or [0.0])
    return np.sqrt(np.maximum(0.0, 2.0 - 2.0 * sv / (math.sqrt(K - 1) * np.sqrt(nv))))


def _check_pair(means0: Any, means_star: Any) -> tuple[np.ndarray, np.ndarray]:
    import torch

    A = check_features(means0, "means0").detach().cpu().to(torch.float64).numpy()
    B = check_features(means_star, "means_star").detach().cpu().to(torch.float64).numpy()
    if A.shape != B.shape:
        raise InputError(
            f"means0 has shape {A.shape} but means_star has shape {B.shape}; "
            "both are (K, d) class-mean rows"
        )
    if A.shape[0] < 2:
        raise InputError(f"need K >= 2 class means, got K={A.shape[0]}")
    return A, B


def _etf_distance(B: np.ndarray) -> float:
    Ms = B - B.mean(axis=0)
    G = Ms @ Ms.T
    nG = np.linalg.norm(G)
    if nG == 0:
        return math.inf
    K = G.shape[0]
    return float(np.linalg.norm(G / nG - (np.eye(K) - 1.0 / K) / math.sqrt(K - 1)))


def analyze_means_line(
    means0: Any,
    means_star: Any,
    *,
    etf_tol: float = 1e-8,
    end_tol: float = 1e-9,
    rho_max: float = 100.0,
    crosscheck: bool = True,
    xtol: float = 1e-6,
) -> dict[str, Any]:
    """Check Theorem 2 on one pair of class-mean matrices; return a JSON-friendly record.

    Keys: ``status`` (``"confirmed"``, ``"violation"``, ``"outside"`` + ``reason``), ``rho``
    (relative transport cost), ``t0`` (certified: PFC2 decreases on ``[t0, 1]``),
    ``interval`` (``1 - t0``), ``monotone_on_0_1``, ``rho_crit`` (critical relative cost of
    this direction; ``inf`` when at least ``rho_max``), ``certificate``.

    When the end point is an ETF only up to rounding (``G*`` not exactly proportional to
    ``I - 11^T/K``), PFC2's minimum may sit a rounding distance before ``t = 1``; the
    certificate then covers ``[., 1 - end_tol]``.
    """
    etf_tol = check_scalar(etf_tol, "etf_tol")
    end_tol = check_scalar(end_tol, "end_tol", high=0.5)
    rho_max = check_scalar(rho_max, "rho_max", low=0.0, low_inclusive=False)
    A, B = _check_pair(means0, means_star)
    K, d = A.shape
    rec: dict[str, Any] = {"K": K, "d": d}
    if d < K - 1:
        return {**rec, "status": Status.OUTSIDE, "reason": "d < K-1 (no simplex ETF in R^d)"}
    if K == 2:
        # two centred means are always antipodal: G is proportional to I - 11^T/2
        return {**rec, "status": Status.OUTSIDE, "reason": "K = 2 (PFC2 is identically 0)"}
    dist = _etf_distance(B)
    rec["etf_distance"] = dist
    if dist > etf_tol:
        return {**rec, "status": Status.OUTSIDE, "reason": "end point is not a simplex ETF"}
    Ms = B - B.mean(axis=0)
    M0 = A - A.mean(axis=0)
    cost = float(np.linalg.norm(M0 - Ms))
    rho = cost / float(np.linalg.norm(Ms))
    rec.update(transport_cost=cost, rho=rho)
    if cost == 0.0:
        return {**rec, "status": Status.OUTSIDE, "reason": "zero transport (M0 = M*)"}
    s, n, Q, exact_etf = pfc2_line_polynomials(A, B)
    rec["exact_etf"] = exact_etf
    hi = Fraction(1) if exact_etf else 1 - Fraction(end_tol)
    # extend the line beyond M0 (t < 0) to reach relative cost rho_max, but stop at a zero of G
    t_min = min(Fraction(0), 1 - Fraction(rho_max) / Fraction(rho))
    n_roots = isolate_roots(n, t_min, 1)
    if any(r.hi >= 0 for r in n_roots):
        return {
            **rec,
            "status": Status.OUTSIDE,
            "reason": "class means coincide on the line (G(t) = 0)",
        }
    if n_roots:
        t_min = n_roots[-1].hi
    if not Q:
        return {
            **rec,
            "status": Status.OUTSIDE,
            "reason": "zero transport (PFC2 constant: M0 ~ M*)",
        }
    cert_full = certify_sign(Q, t_min, hi)
    cert01 = certify_sign(Q, 0, hi)
    t0 = cert01.trailing_run(+1)
    t0_ext = cert_full.trailing_run(+1)
    rec["certificate"] = {"roots": cert01.roots, "pieces": cert01.pieces, "hi": float(hi)}
    if crosscheck:
        ts = np.array([0.0, 0.25, 0.5, 0.75])
        closed = pfc2_closed_form(ts, s, n, K)
        direct = np.array([_metric_pfc2(A, B, float(t)) for t in ts])
        err = float(np.max(np.abs(closed - direct) / (1.0 + np.abs(direct))))
        rec["crosscheck_err"] = err
    problems = []
    if t0 is None:
        problems.append("PFC2 does not decrease just left of t = 1")
        rec["interval"] = 0.0
    else:
        rec["t0"] = float(t0)
        rec["interval"] = 1.0 - float(t0)
        rec["monotone_on_0_1"] = t0 == 0
        # trailing_run returns the float of the interval's lower end when the run covers it
        # all; compare with that float, not with the exact t_min (rounding would make a
        # censored direction look like rho_c ~ rho_max)
        if t0_ext is not None and t0_ext > cert_full.lo:
            rec["rho_crit"] = rho * (1.0 - float(t0_ext))
        else:
            rec["rho_crit"] = math.inf
    if crosscheck and not rec["crosscheck_err"] <= xtol:
        problems.append(f"closed form differs from ufm.metrics.pfc2 ({rec['crosscheck_err']:.2e})")
    rec["status"] = Status.VIOLATION if problems else Status.CONFIRMED
    if problems:
        rec["problems"] = problems
    return rec


def _metric_pfc2(A: np.ndarray, B: np.ndarray, t: float) -> float:

    means = (1.0 - t) * A + t * B
    K, d = means.shape
    z = np.zeros(d)
    z[0] = 0.5  # a within-class spread that leaves the class means unchanged (exactly)
    H = np.concatenate([means + z, means - z])
    return pfc2(H, np.tile(np.arange(K), 2), K=K)


def rho_crit_distribution(
    crits: Iterable[float], *, rho_max: float = 100.0, quantiles: tuple[float, ...] = RHO_QUANTILES
) -> dict[str, Any]:
    """Summary of per-direction critical costs: count, censored count, quantiles, min, max.

    Censored values (``inf``: the critical cost is at least ``rho_max``) take part in the
    quantiles as ``+inf`` (reported as ``None`` in JSON, ``>= rho_max`` in the table).
    Quantiles use ``method="inverted_cdf"``: each is one of the sampled critical costs.
    """
    c = np.asarray(list(crits), dtype=float)
    out: dict[str, Any] = {"n": int(c.size), "n_censored": int(np.sum(~np.isfinite(c)))}
    out["rho_max"] = rho_max
    if c.size == 0:
        return out
    out["min"] = float(np.min(c))
    out["max"] = float(np.max(c))
    out["quantiles"] = {
        f"{q:g}": float(np.quantile(c, q, method="inverted_cdf")) for q in quantiles
    }
    return out


def _check_rho_grid(rho_grid: Any, rho_max: float) -> tuple[float, ...]:
    """The relative costs of the cost map: a non-empty sequence of finite ``0 < rho <= rho_max``.

    A cost ``rho <= 0`` made ``min(1, rho_c / rho)`` negative, reported as a negative
    "certified interval"; a cost above ``rho_max`` compares with ``rho_c`` censored at
    ``rho_max``, so its fraction would be wrong.
    """
    if isinstance(rho_grid, str | bytes) or not hasattr(rho_grid, "__iter__"):
        raise InputError(
            f"rho_grid must be a sequence of relative costs 0 < rho <= rho_max, got "
            f"{rho_grid!r}; e.g. rho_grid=(0.1, 1.0, 10.0)"
        )
    out = tuple(
        check_scalar(r, f"rho_grid[{i}]", low=0.0, low_inclusive=False, high=rho_max)
        for i, r in enumerate(rho_grid)
    )
    if not out:
        raise InputError("rho_grid is empty; pass at least one relative cost, e.g. (1.0,)")
    if len(out) > 10_000:
        raise InputError(f"rho_grid has {len(out):,} costs; at most 10,000 are reported")
    return out


def check_theorem2(
    instances: int | Iterable[MeansInstance] = 100,
    *,
    seed: int | None = 0,
    degenerate_rate: float = 0.1,
    near_etf_rate: float = 0.25,
    etf_tol: float = 1e-8,
    end_tol: float = 1e-9,
    rho_max: float = 100.0,
    rho_grid: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0, 10.0),
    crosscheck: bool = True,
    progress: bool = False,
) -> CheckResult:
    r"""Check Theorem 2 on random (or given) instances; report the per-direction critical costs.

    .. math::

        \exists\, t_0 < 1:\ \frac{d}{dt}\mathrm{PFC2}(M(t)) < 0 \ \text{on } (t_0, 1),
        \qquad \rho_c(M_0 - M^*) = \sup\{\rho' : \text{monotone on } [0, 1]
        \text{ at relative cost } \rho' \text{ along } M_0 - M^*\},

    both certified exactly per instance. Instances not monotone on all of ``[0, 1]`` are
    reported (kind ``"global_monotonicity_fails"``, not a violation: the assumption is a small
    cost *per direction*). ``details["rho_crit"]`` is the distribution of the per-direction
    critical costs ``rho_c`` (count, censored count, min, max, quantiles), overall and by
    instance family (``"random"`` directions and ``"near_etf"`` starts);
    ``details["cost_map"]`` gives, for each relative cost in ``rho_grid``, the fraction of the
    sampled directions whose ``rho_c`` is at least that cost (monotone on ``[0, 1]`` there) and
    the median certified interval ``min(1, rho_c / rho)``. There is no single threshold cost:
    the near-ETF family has ``rho_c`` of the order of its rotation's cost.

    Parameters
    ----------
    instances : int or iterable of MeansInstance
        A number of random instances (drawn from ``seed``) or the instances.
    seed : int, optional
        Seed of the random instances.
    degenerate_rate : float
        Fraction of random instances built degenerate on purpose.
    near_etf_rate : float
        Fraction of the other random instances drawn from the near-ETF family
        (:func:`~proofs_check.instances.near_etf_means_instance`); the rest are random
        directions (:func:`~proofs_check.instances.random_means_instance`).
    etf_tol, end_tol, rho_max : float
        See :func:`analyze_means_line`.
    rho_grid : tuple of float
        Relative transport costs of the map: finite, ``0 < rho <= rho_max``, at least one.
    crosscheck : bool
        Compare the closed form with :func:`ufm.metrics.pfc2`.
    progress : bool
        Show a tqdm progress bar.

    Returns
    -------
    CheckResult
        ``worst_margin``: the shortest certified interval ``1 - t0``.
    """
    degenerate_rate = check_scalar(degenerate_rate, "degenerate_rate", high=1.0)
    near_etf_rate = check_scalar(near_etf_rate, "near_etf_rate", high=1.0)
    rho_max = check_scalar(rho_max, "rho_max", low=0.0, low_inclusive=False)
    rho_grid = _check_rho_grid(rho_grid, rho_max)
    tally = Tally("theorem2", CLAIM, "length 1 - t0 of the certified monotone interval", seed)
    items = draw(instances, seed, degenerate_rate, near_etf_rate)
    crits: list[float] = []
    by_family: dict[str, list[float]] = {}
    n_not_mono: dict[str, int] = {}
    max_err = 0.0
    for inst in tally.over(items, progress):
        rec = analyze_means_line(
            inst.means0,
            inst.means_star,
            etf_tol=etf_tol,
            end_tol=end_tol,
            rho_max=rho_max,
            crosscheck=crosscheck,
        )
        family = str(inst.tag.get("family", "given"))
        small = {k: rec[k] for k in ("K", "d", "rho", "t0", "rho_crit") if k in rec}
        status = tally.record(rec, **small, family=family)
        if status is Status.OUTSIDE:
            continue
        max_err = max(max_err, rec.get("crosscheck_err", 0.0))
        tally.margin(rec["interval"])
        if status is Status.VIOLATION:
            continue
        crits.append(rec["rho_crit"])
        by_family.setdefault(family, []).append(rec["rho_crit"])
        if not rec["monotone_on_0_1"]:
            n_not_mono[family] = n_not_mono.get(family, 0) + 1
            tally.example("global_monotonicity_fails", **small, family=family)
    cost_map = []
    c = np.array(crits, dtype=float)
    for r in rho_grid:
        if len(c) == 0:
            break
        cost_map.append(
            {
                "rho": r,
                "fraction_monotone_on_0_1": float(np.mean(c >= r)),
                "median_interval": float(np.median(np.minimum(1.0, c / r))),
                "min_interval": float(np.min(np.minimum(1.0, c / r))),
            }
        )
    tally.details.update(
        rho_crit=rho_crit_distribution(crits, rho_max=rho_max),
        rho_crit_by_family={
            f: rho_crit_distribution(v, rho_max=rho_max) for f, v in sorted(by_family.items())
        },
        cost_map=cost_map,
        n_not_monotone_on_0_1=sum(n_not_mono.values()),
        n_not_monotone_by_family=n_not_mono,
        max_crosscheck_err=max_err,
    )
    return tally.result()


def draw(
    instances: int | Iterable[MeansInstance], seed: int | None, rate: float, near_rate: float
) -> list[MeansInstance]:
    """The instances of Theorem 2: ``instances`` random ones (``rate`` degenerate, ``near_rate``
    of the others near-ETF starts), or those given."""

    def one(rng: np.random.Generator, deg: str | None) -> MeansInstance:
        if deg is None and rng.random() < near_rate:
            return near_etf_means_instance(rng)
        return random_means_instance(rng, degenerate=deg)

    return draw_instances(
        instances,
        seed=seed,
        theorem=2,
        rate=rate,
        draw=one,
        kind=MeansInstance,
    )
