r"""Theorem 4: the MUFM minimiser is not collapsed, yet more collapsed than the data for large ``lam``.

Claims checked (MSE loss, ``W`` and ``b`` eliminated in closed form; MATH.md sections 5 and 7):

1. **Non-collapse.** If ``tr Sigma_W(X) > 0`` then ``PFC1(H*) > 0``. (At a stationary point,
   :math:`(\lambda I + W^\top W)(h_i - \mu_{y_i}) = \lambda (x_i - \mu^X_{y_i})`, so the
   within-class deviations are a non-singular image of the data's.)
2. **Threshold.** There is ``lam_0`` with ``PFC1(H*(lam)) < PFC1(X)`` for all ``lam > lam_0``.
   Checked on a dense log grid (default ``[1e-5, 1e4]``, 4 points per decade, 37 solves per
   instance): the *observed* ``lam_0`` is the largest grid ``lam`` where the inequality fails
   (it then holds at every larger grid point), and ``0`` ("below the grid") when it holds at
   every grid point. Observed so far: ``lam_0 = 0`` on every sampled instance (the MUFM optimum
   is one implicit Euler step of the gradient flow of claim 3, and the within-class deviations
   are contracted for every ``lam``: :math:`\Delta H = \lambda(\lambda I + W^\top W)^{-1}
   \Delta X`). A grid says nothing between or beyond its points: the report gives the grid.
3. **Gradient flow** :math:`\dot H = -\nabla F(H)`, ``H(0) = X`` (paper eq. 21): ``tr Sigma_W``
   does not increase (always: :math:`\tfrac{d}{dt}\operatorname{tr}\Sigma_W =
   -\tfrac{2}{N^2}\sum_i \|W(h_i - \mu_{y_i})\|^2`); ``tr Sigma_B`` does not decrease. The latter
   is derived here for balanced classes with an unpenalised bias (``lam_b = 0``), where
   :math:`\tfrac{d}{dt}\operatorname{tr}\Sigma_B \propto \operatorname{tr}S - \operatorname{tr}S^2
   \ge 0` with :math:`S = M^\top(\Sigma_W + \Sigma_B + \lambda_W I)^{-1}M/K`; otherwise
   (penalised or no bias) a decrease is reported as an empirical failure, not a violation.
4. **Empirical claim** (paper Sec. IV-B): for ``lam`` above ``lam_0`` *all* PFC metrics of the
   solution are below the data's. Failures are reported (``"empirical_failure"``), never
   violations.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy.integrate import solve_ivp

import mufm
from ufm.errors import ConvergenceWarning, DegenerateInputError, InputError
from ufm.metrics import collapse_metrics
from ufm.registry import PFC
from ufm.status import Status
from ufm.threads import threads
from ufm.validate import check_features, check_int, check_labels, check_scalar

from .common import CheckResult, Tally
from .instances import MUFMInstance
from .theorem3 import draw, solve_reduced

__all__ = [
    "reduced_mse_flow",
    "lam_grid",
    "observed_lam0",
    "analyze_mufm",
    "check_theorem4",
]

CLAIM = (
    "non-collapsed X => PFC1(H*) > 0; PFC1(H*(lam)) < PFC1(X) for lam > lam_0; along the "
    "gradient flow tr Sigma_W decreases and tr Sigma_B increases"
)


def _ridge(H: np.ndarray, Y: np.ndarray, lam_w: float, lam_b: float, bias: bool):
    N, d = H.shape
    if bias:
        Ht = np.concatenate([H, np.ones((N, 1))], axis=1)
        reg = np.diag(np.r_[np.full(d, N * lam_w), N * lam_b])
    else:
        Ht, reg = H, N * lam_w * np.eye(d)
    Wb = np.linalg.solve(Ht.T @ Ht + reg, Ht.T @ Y).T
    return (Wb[:, :d], Wb[:, d]) if bias else (Wb, np.zeros(Y.shape[1]))


def _traces(H: np.ndarray, y: np.ndarray, K: int) -> tuple[float, float]:
    N = H.shape[0]
    mu = np.stack([H[y == k].mean(axis=0) for k in range(K)])
    counts = np.bincount(y, minlength=K)
    muG = counts @ mu / N
    return float(((H - mu[y]) ** 2).sum()) / N, float(((mu - muG) ** 2).sum()) / K


def reduced_mse_flow(
    X: np.ndarray,
    y: np.ndarray,
    *,
    lam_w: float,
    lam_b: float = 0.0,
    bias: bool = True,
    t_max: float | None = None,
    n_eval: int = 40,
    rtol: float = 1e-10,
) -> dict[str, np.ndarray]:
    r"""Gradient flow of the reduced MSE objective (independent reference; small problems).

    .. math::

        \dot H = -N \nabla F(H) = -(H W^\top + 1 b^\top - Y) W, \qquad
        [W\ b] = Y^\top \tilde H (\tilde H^\top \tilde H + N\,\mathrm{diag}(\lambda_W I, \lambda_b))^{-1},

    integrated with ``scipy.integrate.solve_ivp`` (DOP853) from ``H(0) = X`` to ``t_max``
    (default 10). Time is per sample (the factor ``N``, MATH.md section 5: the MUFM optimum is
    one implicit Euler step of this flow with step ``1/lam``).

    Returns
    -------
    dict
        ``ts (T,)``, ``Hs (T, N, d)``, ``tr_sigma_w (T,)``, ``tr_sigma_b (T,)``.
    """
    Xt = check_features(X, "X")
    yt, K = check_labels(y, Xt.shape[0])
    X, y = Xt.cpu().numpy().astype(np.float64), yt.cpu().numpy()
    N, d = X.shape
    lam_w = check_scalar(lam_w, "lam_w", low=0.0, low_inclusive=False)
    lam_b = check_scalar(lam_b, "lam_b")
    rtol = check_scalar(rtol, "rtol", low=1e-14, high=1e-3)
    n_eval = check_int(n_eval, "n_eval", low=2)
    if n_eval * N * d > 2**27 or n_eval > 100_000:
        raise InputError(
            f"n_eval={n_eval:,} output times of H ({N} x {d}) are too many (at most 100,000 "
            "and 2**27 values in all); use fewer"
        )
    Y = np.zeros((N, K))
    Y[np.arange(N), y] = 1.0
    t_max = check_scalar(
        10.0 if t_max is None else t_max, "t_max", low=0.0, low_inclusive=False, high=1e8
    )

    def rhs(_t: float, z: np.ndarray) -> np.ndarray:
        H = z.reshape(N, d)
        W, b = _ridge(H, Y, lam_w, lam_b, bias)
        return (-(H @ W.T + b - Y) @ W).ravel()

    ts = np.linspace(0.0, t_max, n_eval)
    sol = solve_ivp(
        rhs,
        (0.0, t_max),
        X.ravel(),
        method="DOP853",
        t_eval=ts,
        rtol=rtol,
        atol=rtol * max(1.0, float(np.abs(X).max())),
    )
    Hs = sol.y.T.reshape(-1, N, d)
    tw, tb = zip(*(_traces(H, y, K) for H in Hs), strict=True)
    return {"ts": sol.t, "Hs": Hs, "tr_sigma_w": np.array(tw), "tr_sigma_b": np.array(tb)}


def _solve_metrics(inst: MUFMInstance, lam: float, tol: float, max_iter: int) -> dict[str, Any]:
    res = solve_reduced(inst, lam, tol=tol, max_iter=max_iter, loss="mse")
    m = dict(res.metrics)
    m["converged"] = bool(res.converged)
    m["status"] = res.status
    m["W"] = np.asarray(res.W, dtype=float)
    m["H"] = np.asarray(res.H, dtype=float)
    return m


#: Most points of the ``lam_0`` grid (the default has 37).
MAX_GRID = 1_000


def lam_grid(lam_min: float = 1e-5, lam_max: float = 1e4, per_decade: int = 4) -> np.ndarray:
    """The log grid of the ``lam_0`` search: ``per_decade`` points per decade, both ends included.

    Raises
    ------
    InputError
        ``lam_min <= 0``, ``lam_max <= lam_min`` or ``per_decade < 1``.
    """
    lam_min = check_scalar(lam_min, "lam_min", low=0.0, low_inclusive=False)
    lam_max = check_scalar(lam_max, "lam_max", low=lam_min, low_inclusive=False)
    if (
        isinstance(per_decade, bool)
        or not isinstance(per_decade, int | float | np.integer | np.floating)
        or not math.isfinite(per_decade)
        or int(per_decade) != per_decade
        or per_decade < 1
    ):
        raise InputError(f"per_decade must be an integer >= 1, got {per_decade!r}")
    # the difference of the logarithms: the ratio lam_max / lam_min may overflow
    n = int(math.ceil(round((math.log10(lam_max) - math.log10(lam_min)) * per_decade, 9))) + 1
    if n > MAX_GRID:
        # one MUFM solve per grid point and instance: a huge grid runs for days
        raise InputError(
            f"the lam grid [{lam_min:g}, {lam_max:g}] at {per_decade} per decade has {n:,} "
            f"points, above {MAX_GRID:,} (one solve each); narrow the range or lower per_decade"
        )
    return np.logspace(math.log10(lam_min), math.log10(lam_max), n)


def observed_lam0(lams: Any, holds: Any) -> float | None:
    """The observed threshold on a grid from the outcome of ``PFC1(H*(lam)) < PFC1(X)``.

    Returns ``0.0`` when the inequality holds at every grid point ("below the grid"), the
    largest grid ``lam`` where it fails when it holds at every larger grid point, and ``None``
    when it fails at the largest grid point (no threshold inside the grid).
    """
    lams = np.asarray(lams, dtype=float)
    holds = np.asarray(holds, dtype=bool)
    if lams.shape != holds.shape or lams.ndim != 1 or lams.size == 0:
        raise InputError(
            f"lams and holds must be 1-D of the same nonzero length, got {lams.shape} and "
            f"{holds.shape}"
        )
    order = np.argsort(lams)
    lams, holds = lams[order], holds[order]
    if holds.all():
        return 0.0
    if not holds[-1]:
        return None
    return float(lams[np.flatnonzero(~holds)[-1]])


def threshold_lambda(
    inst: MUFMInstance,
    pfc1_x: float,
    *,
    lams: Any = None,
    tol: float = 1e-10,
    max_iter: int = 3000,
    cache: dict[float, dict[str, Any]] | None = None,
) -> tuple[float | None, dict[float, dict[str, Any]]]:
    """Observed ``lam_0`` of one instance on the grid ``lams`` (default :func:`lam_grid`).

    Solves the MUFM (:func:`mufm.solve`, MSE) at every grid point and applies
    :func:`observed_lam0`. Returns ``(lam_0, evaluations)`` keyed by ``lam``.
    """
    cache = {} if cache is None else cache
    grid = lam_grid() if lams is None else np.asarray(lams, dtype=float)
    holds = []
    for lam in grid:
        lam = float(lam)
        if lam not in cache:
            cache[lam] = _solve_metrics(inst, lam, tol, max_iter)
        holds.append(cache[lam]["pfc1"] < pfc1_x)
    return observed_lam0(grid, holds), cache


def analyze_mufm(
    inst: MUFMInstance,
    *,
    lam_min: float = 1e-5,
    lam_max: float = 1e4,
    per_decade: int = 4,
    tol: float = 1e-10,
    flow: bool = True,
    flow_rtol: float = 1e-10,
    mono_tol: float = 1e-7,
) -> dict[str, Any]:
    """Check Theorem 4 on one MUFM instance (MSE); return a JSON-friendly record.

    Keys include ``lam0`` (observed threshold on the grid :func:`lam_grid`; ``0.0`` when
    ``PFC1(H*(lam)) < PFC1(X)`` at every grid point, ``None`` when it fails at ``lam_max``),
    ``grid`` (``lo``, ``hi``, ``n``), ``grid_failures`` (the grid ``lam`` where the inequality
    fails), ``pfc1_ratio_max`` (largest ``PFC1(H*)/PFC1(X)`` over the grid) and the
    gradient-flow checks.
    """

    if inst.loss != "mse":
        raise InputError(f"Theorem 4 is stated for the MSE loss, got loss={inst.loss!r}")
    grid = lam_grid(lam_min, lam_max, per_decade)
    X, y = inst.flat()
    K = inst.K
    rec: dict[str, Any] = {
        "K": K,
        "N": X.shape[0],
        "d": X.shape[1],
        "lam_w": inst.lam_w,
        "lam_b": inst.lam_b,
        "bias": inst.bias,
        "grid": {"lo": float(grid[0]), "hi": float(grid[-1]), "n": int(grid.size)},
    }
    try:
        mx = collapse_metrics(X, y, K=K)
    except DegenerateInputError as exc:
        return {**rec, "status": Status.OUTSIDE, "reason": f"degenerate data: {exc}"[:80]}
    if mx["tr_sigma_w"] == 0.0:
        return {**rec, "status": Status.OUTSIDE, "reason": "collapsed data (tr Sigma_W(X) = 0)"}
    data = {k: mx[k] for k in PFC}
    rec["data"] = data
    problems: list[str] = []
    empirical: list[dict[str, Any]] = []
    ties: dict[str, int] = {}
    rec["ties"] = ties
    lam0, evals = threshold_lambda(inst, data["pfc1"], lams=grid, tol=tol)
    pf = np.array([evals[float(g)]["pfc1"] for g in grid])
    rec["grid_failures"] = [float(g) for g, v in zip(grid, pf, strict=True) if not v < data["pfc1"]]
    rec["pfc1_ratio_max"] = float(np.max(pf) / data["pfc1"])
    rec["n_not_converged"] = sum(not evals[float(g)]["converged"] for g in grid)
    # 1. non-collapse at every grid lam
    min_pfc1 = float(np.min(pf))
    rec["min_pfc1_solution"] = min_pfc1
    if not min_pfc1 > 0:
        problems.append("PFC1(H*) = 0 although X is not collapsed")
    top = evals[float(grid[-1])]
    if lam0 is None:
        rec["lam0"] = None
        if top["converged"]:
            problems.append(f"PFC1(H*(lam)) >= PFC1(X) at lam_max={grid[-1]:g}")
        else:
            rec["inconclusive"] = f"solver {top['status']} at lam_max"
    else:
        rec["lam0"] = lam0
        # 4. the empirical claim at the grid points above the observed threshold
        above = [float(g) for g in grid if g > lam0]
        for key in PFC[1:]:  # PFC2 and PFC3; PFC1 is the theorem itself
            bad = []
            for lam in above:
                m = evals[lam]
                if data[key] <= 1e-12 and m[key] <= 1e-12:
                    # both already at 0 (perfect NCC; PFC2 of K = 2 classes is always 0):
                    # "below" cannot hold, a tie rather than a failure
                    ties[key] = ties.get(key, 0) + 1
                    continue
                if not m[key] < data[key]:
                    bad.append(lam)
            if bad:
                empirical.append(
                    {
                        "metric": key,
                        "n_grid_points": len(bad),
                        "of": len(above),
                        "lam_lo": min(bad),
                        "lam_hi": max(bad),
                        "data": data[key],
                        "solution_at_lam_hi": evals[max(bad)][key],
                    }
                )
        rec["pfc_solution_at_lam_max"] = {k: top[k] for k in PFC}
    # 3. gradient flow
    if flow:
        fl = _flow(X, y, inst, flow_rtol)
        tw, tb = np.asarray(fl["tr_sigma_w"]), np.asarray(fl["tr_sigma_b"])
        dw = float(np.max(np.diff(tw)) / tw[0]) if len(tw) > 1 else 0.0
        db = float(np.min(np.diff(tb)) / tb[0]) if len(tb) > 1 else 0.0
        rec.update(
            flow_source=fl["source"],
            flow_max_rel_increase_trsw=dw,
            flow_max_rel_decrease_trsb=-db,
            flow_trsw=(float(tw[0]), float(tw[-1])),
            flow_trsb=(float(tb[0]), float(tb[-1])),
        )
        if "crosscheck_err" in fl:
            rec["flow_crosscheck_err"] = fl["crosscheck_err"]
        if dw > mono_tol:
            problems.append(f"tr Sigma_W increases along the flow (rel. {dw:.2e})")
        if -db > mono_tol:
            if inst.bias and inst.lam_b == 0.0:
                problems.append(f"tr Sigma_B decreases along the flow (rel. {-db:.2e})")
            else:
                empirical.append(
                    {
                        "flow": "tr_sigma_b decreases",
                        "rel": -db,
                        "lam_b": inst.lam_b,
                        "bias": inst.bias,
                    }
                )
    rec["empirical_failures"] = empirical
    if problems:
        rec["status"], rec["problems"] = Status.VIOLATION, problems
    elif "inconclusive" in rec:
        rec["status"], rec["reason"] = Status.INCONCLUSIVE, rec["inconclusive"]
    else:
        rec["status"] = Status.CONFIRMED
        if lam0 is not None:
            rec["margin"] = (data["pfc1"] - top["pfc1"]) / data["pfc1"]
    return rec


def _flow(
    X: np.ndarray, y: np.ndarray, inst: MUFMInstance, rtol: float, t_max: float = 10.0
) -> dict[str, Any]:
    import importlib.util

    ref = reduced_mse_flow(
        X, y, lam_w=inst.lam_w, lam_b=inst.lam_b, bias=inst.bias, t_max=t_max, rtol=rtol
    )
    out: dict[str, Any] = {**ref, "source": "proofs_check.reduced_mse_flow"}
    if importlib.util.find_spec("mufm.flow") is None:
        return out

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        lib = mufm.gradient_flow(
            X,
            y,
            lam_w=inst.lam_w,
            lam_b=inst.lam_b,
            bias=inst.bias,
            t_max=t_max,
            n_eval=len(ref["ts"]),
            rtol=rtol,
        )
    tw = np.asarray(lib.tr_sigma_w, dtype=float)
    tb = np.asarray(lib.tr_sigma_b, dtype=float)
    out = {
        "ts": np.asarray(lib.ts),
        "tr_sigma_w": tw,
        "tr_sigma_b": tb,
        "source": "mufm.gradient_flow",
    }
    if len(tw) == len(ref["tr_sigma_w"]):
        out["crosscheck_err"] = float(
            max(
                np.max(np.abs(tw - ref["tr_sigma_w"])) / ref["tr_sigma_w"][0],
                np.max(np.abs(tb - ref["tr_sigma_b"])) / ref["tr_sigma_b"][0],
            )
        )
    return out


def check_theorem4(
    instances: int | Iterable[MUFMInstance] = 10,
    *,
    seed: int | None = 0,
    degenerate_rate: float = 0.1,
    lam_min: float = 1e-5,
    lam_max: float = 1e4,
    per_decade: int = 4,
    flow: bool = True,
    progress: bool = False,
) -> CheckResult:
    r"""Check Theorem 4 (and Lemma 1, and the paper's empirical claim) on MUFM instances.

    .. math::

        \operatorname{tr}\Sigma_W(X) > 0 \implies \mathrm{PFC1}(H^\star) > 0, \qquad
        \exists \lambda_0\ \forall \lambda > \lambda_0:\
        \mathrm{PFC1}(H^\star(\lambda)) < \mathrm{PFC1}(X).

    Parameters
    ----------
    instances : int or iterable of MUFMInstance
        Number of random instances (MSE, drawn from ``seed``) or the instances.
    seed : int, optional
    degenerate_rate : float
        Fraction of random instances with collapsed data (outside the assumptions).
    lam_min, lam_max, per_decade : float, float, int
        The log grid of the ``lam_0`` search (:func:`lam_grid`; default 37 points over
        ``[1e-5, 1e4]``).
    flow : bool
        Also check the gradient-flow monotonicity (Lemma 1).
    progress : bool

    Returns
    -------
    CheckResult
        ``worst_margin``: smallest relative gap ``(PFC1(X) - PFC1(H*(lam_max))) / PFC1(X)``.
        ``details``: ``lam0_per_instance`` (the observed ``lam_0`` of every instance inside
        the assumptions, ``0`` = below the grid), ``lam0_counts`` (how many instances have
        each value), ``lam0_grid``, ``max_pfc1_ratio`` (largest ``PFC1(H*)/PFC1(X)`` over
        every grid point and instance), empirical-claim failures (instances per metric).
    """
    degenerate_rate = check_scalar(degenerate_rate, "degenerate_rate", high=1.0)
    grid = lam_grid(lam_min, lam_max, per_decade)
    tally = Tally("theorem4", CLAIM, "(PFC1(X) - PFC1(H*(lam_max))) / PFC1(X)", seed)
    items = draw(instances, seed, degenerate_rate, 4)
    lam0s: list[float | None] = []
    emp_counts: dict[str, int] = {}
    tie_counts: dict[str, int] = {}
    flow_err = 0.0
    ratio_max = 0.0
    with threads(1):  # small dense problems: one thread (the toolkit's policy, scoped)
        for inst in tally.over(items, progress):
            rec = analyze_mufm(
                inst, lam_min=lam_min, lam_max=lam_max, per_decade=per_decade, flow=flow
            )
            small = {k: rec.get(k) for k in ("K", "N", "d", "lam_w", "lam_b", "lam0")}
            status = tally.record(rec, **small)
            if status is Status.OUTSIDE:
                continue
            ratio_max = max(ratio_max, rec.get("pfc1_ratio_max", 0.0))
            lam0s.append(rec.get("lam0"))
            flow_err = max(flow_err, rec.get("flow_crosscheck_err", 0.0))
            for k, v in rec.get("ties", {}).items():
                tie_counts[k] = tie_counts.get(k, 0) + v
            for f in rec["empirical_failures"]:
                key = f.get("metric") or f.get("flow")
                emp_counts[key] = emp_counts.get(key, 0) + 1
                tally.example("empirical_failure", **small, **f)
            if status is Status.CONFIRMED:
                tally.margin(rec.get("margin"))
    counts: dict[str, int] = {}
    for v in lam0s:
        key = (
            "not found (fails at lam_max)"
            if v is None
            else ("0 (below grid)" if v == 0 else f"{v:.3g}")
        )
        counts[key] = counts.get(key, 0) + 1
    tally.details.update(
        lam0_grid={
            "lo": float(grid[0]),
            "hi": float(grid[-1]),
            "n": int(grid.size),
            "per_decade": int(per_decade),
        },
        lam0_per_instance=lam0s,
        lam0_counts=counts,
        lam0_max=max((v for v in lam0s if v is not None), default=None),
        max_pfc1_ratio=ratio_max if lam0s else None,
        empirical_failures=emp_counts,
        empirical_ties=tie_counts,
        max_flow_crosscheck_err=flow_err,
    )
    return tally.result()
