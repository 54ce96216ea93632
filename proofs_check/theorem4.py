r"""Theorem 4: the MUFM minimiser is not collapsed, yet more collapsed than the data for large ``lam``.

Claims checked (MSE loss, ``W`` and ``b`` eliminated in closed form; MATH.md sections 5 and 7):

1. **Non-collapse.** If ``tr Sigma_W(X) > 0`` then ``PFC1(H*) > 0``. (At a stationary point,
   :math:`(\lambda I + W^\top W)(h_i - \mu_{y_i}) = \lambda (x_i - \mu^X_{y_i})`, so the
   within-class deviations are a non-singular image of the data's.)
2. **Threshold.** There is ``lam_0`` with ``PFC1(H*(lam)) < PFC1(X)`` for all ``lam > lam_0``:
   ``lam_0`` is estimated by bisection in ``log lam`` on ``[lam_min, lam_max]`` and the strict
   inequality is then checked on a grid above the estimate (several crossings are reported and
   the estimate moved up).
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
from tqdm.auto import tqdm

from ufm._validate import check_scalar
from ufm.errors import ConvergenceWarning, DegenerateInputError, InputError

from ._common import CheckResult, Tally
from ._threads import single_thread_blas
from .instances import MUFMInstance
from .theorem3 import _instances

__all__ = ["reduced_mse_flow", "threshold_lambda", "analyze_mufm", "check_theorem4"]

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
    N, d = X.shape
    K = int(y.max()) + 1
    Y = np.zeros((N, K))
    Y[np.arange(N), y] = 1.0
    t_max = float(10.0 if t_max is None else t_max)

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
    import mufm

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        res = mufm.solve(
            inst.X,
            lam=lam,
            lam_w=inst.lam_w,
            lam_b=inst.lam_b,
            lam_h=inst.lam_h,
            loss="mse",
            bias=inst.bias,
            tol=tol,
            max_iter=max_iter,
        )
    m = dict(res.metrics)
    m["converged"] = bool(res.converged)
    m["status"] = res.status
    m["W"] = np.asarray(res.W, dtype=float)
    m["H"] = np.asarray(res.H, dtype=float)
    return m


def threshold_lambda(
    inst: MUFMInstance,
    pfc1_x: float,
    *,
    lam_min: float = 1e-3,
    lam_max: float = 1e3,
    n_bisect: int = 12,
    tol: float = 1e-10,
    max_iter: int = 3000,
    cache: dict[float, dict[str, Any]] | None = None,
) -> tuple[float | None, dict[float, dict[str, Any]]]:
    """Bisection (in ``log lam``) for the smallest ``lam`` with ``PFC1(H*(lam)) < PFC1(X)``.

    Returns ``(lam_0, evaluations)``; ``lam_0`` is the upper end of the final bracket,
    ``lam_min`` when the inequality already holds there, ``None`` when it fails at ``lam_max``.
    """
    cache = {} if cache is None else cache

    def ok(lam: float) -> bool:
        if lam not in cache:
            cache[lam] = _solve_metrics(inst, lam, tol, max_iter)
        return cache[lam]["pfc1"] < pfc1_x

    if not ok(lam_max):
        return None, cache
    if ok(lam_min):
        return lam_min, cache
    lo, hi = math.log(lam_min), math.log(lam_max)
    for _ in range(n_bisect):
        mid = 0.5 * (lo + hi)
        if ok(math.exp(mid)):
            hi = mid
        else:
            lo = mid
    return math.exp(hi), cache


def analyze_mufm(
    inst: MUFMInstance,
    *,
    lam_min: float = 1e-3,
    lam_max: float = 1e3,
    n_bisect: int = 12,
    grid_factors: tuple[float, ...] = (1.5, 3.0, 10.0, 30.0, 100.0),
    tol: float = 1e-10,
    flow: bool = True,
    flow_rtol: float = 1e-10,
    mono_tol: float = 1e-7,
) -> dict[str, Any]:
    """Check Theorem 4 on one MUFM instance (MSE); return a JSON-friendly record."""
    from ufm.metrics import collapse_metrics

    if inst.loss != "mse":
        raise InputError(f"Theorem 4 is stated for the MSE loss, got loss={inst.loss!r}")
    X, y = inst.flat()
    K = inst.K
    rec: dict[str, Any] = {
        "K": K,
        "N": X.shape[0],
        "d": X.shape[1],
        "lam_w": inst.lam_w,
        "lam_b": inst.lam_b,
        "bias": inst.bias,
    }
    try:
        mx = collapse_metrics(X, y, K=K)
    except DegenerateInputError as exc:
        return {**rec, "status": "outside", "reason": f"degenerate data: {exc}"[:80]}
    if mx["tr_sigma_w"] == 0.0:
        return {**rec, "status": "outside", "reason": "collapsed data (tr Sigma_W(X) = 0)"}
    data = {k: mx[k] for k in ("pfc1", "pfc2", "pfc3")}
    rec["data"] = data
    problems: list[str] = []
    empirical: list[dict[str, Any]] = []
    ties: dict[str, int] = {}
    rec["ties"] = ties
    lam0, evals = threshold_lambda(
        inst, data["pfc1"], lam_min=lam_min, lam_max=lam_max, n_bisect=n_bisect, tol=tol
    )
    # 1. non-collapse at every evaluated lam
    min_pfc1 = min(v["pfc1"] for v in evals.values())
    rec["min_pfc1_solution"] = min_pfc1
    if not min_pfc1 > 0:
        problems.append("PFC1(H*) = 0 although X is not collapsed")
    if lam0 is None:
        top = evals[lam_max]
        rec["lam0"] = None
        if top["converged"]:
            problems.append(f"PFC1(H*(lam)) >= PFC1(X) at lam_max={lam_max}")
        else:
            rec["inconclusive"] = f"solver {top['status']} at lam_max"
    else:
        rec["lam0"] = lam0
        # 2. grid above lam_0; move lam_0 up past any later crossing
        grid = sorted({min(lam0 * f, lam_max) for f in grid_factors} | {lam_max})
        fails = []
        for lam in grid:
            if lam not in evals:
                evals[lam] = _solve_metrics(inst, lam, tol, 3000)
            if not evals[lam]["pfc1"] < data["pfc1"]:
                fails.append(lam)
        rec["n_grid_failures"] = len(fails)
        if fails:
            rec["lam0_after_grid"] = max(fails)
        lam_ref = max(fails) if fails else lam0
        # 4. the empirical claim on the grid points above the (final) threshold
        for lam in grid:
            if lam <= lam_ref:
                continue
            m = evals[lam]
            for key in ("pfc2", "pfc3"):
                if data[key] <= 1e-12 and m[key] <= 1e-12:
                    # both already at 0 (perfect NCC; PFC2 of K = 2 classes is always 0):
                    # "below" cannot hold, a tie rather than a failure
                    ties[key] = ties.get(key, 0) + 1
                    continue
                if not m[key] < data[key]:
                    empirical.append(
                        {
                            "lam": lam,
                            "metric": key,
                            "solution": m[key],
                            "data": data[key],
                            "relation": "equal" if m[key] == data[key] else "above",
                        }
                    )
        rec["pfc_solution_at_lam_max"] = {k: evals[lam_max][k] for k in ("pfc1", "pfc2", "pfc3")}
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
        rec["status"], rec["problems"] = "violation", problems
    elif "inconclusive" in rec:
        rec["status"] = "inconclusive"
    else:
        rec["status"] = "confirmed"
        if lam0 is not None:
            rec["margin"] = (data["pfc1"] - evals[lam_max]["pfc1"]) / data["pfc1"]
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
    import mufm

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
    lam_min: float = 1e-3,
    lam_max: float = 1e3,
    n_bisect: int = 12,
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
    lam_min, lam_max, n_bisect : float, float, int
        Search range and bisection steps for ``lam_0``.
    flow : bool
        Also check the gradient-flow monotonicity (Lemma 1).
    progress : bool

    Returns
    -------
    CheckResult
        ``worst_margin``: smallest relative gap ``(PFC1(X) - PFC1(H*(lam_max))) / PFC1(X)``.
        ``details``: the ``lam_0`` estimates, empirical-claim failures by metric.
    """
    degenerate_rate = check_scalar(degenerate_rate, "degenerate_rate", high=1.0)
    tally = Tally("theorem4", CLAIM, "(PFC1(X) - PFC1(H*(lam_max))) / PFC1(X)", seed)
    items = _instances(instances, seed, degenerate_rate, 4)
    lam0s: list[float | None] = []
    emp_counts: dict[str, int] = {}
    tie_counts: dict[str, int] = {}
    flow_err = 0.0
    with single_thread_blas():
        for inst in tqdm(items, desc="theorem 4", disable=not progress, leave=False):
            tally.n_tried += 1
            rec = analyze_mufm(inst, lam_min=lam_min, lam_max=lam_max, n_bisect=n_bisect, flow=flow)
            if rec["status"] == "outside":
                tally.outside[rec["reason"]] += 1
                continue
            tally.n_met += 1
            small = {k: rec.get(k) for k in ("K", "N", "d", "lam_w", "lam_b", "lam0")}
            flow_err = max(flow_err, rec.get("flow_crosscheck_err", 0.0))
            for k, v in rec.get("ties", {}).items():
                tie_counts[k] = tie_counts.get(k, 0) + v
            for f in rec["empirical_failures"]:
                key = f.get("metric") or f.get("flow")
                emp_counts[key] = emp_counts.get(key, 0) + 1
                tally.example("empirical_failure", **small, **f)
            if rec["status"] == "violation":
                tally.n_violations += 1
                tally.example("violation", **small, problems=rec["problems"])
                continue
            if rec["status"] == "inconclusive":
                tally.n_inconclusive += 1
                continue
            tally.n_confirmed += 1
            lam0s.append(rec["lam0"])
            tally.margin(rec.get("margin"))
    finite = [v for v in lam0s if v is not None]
    tally.details.update(
        lam0_min=min(finite, default=None),
        lam0_median=float(np.median(finite)) if finite else None,
        lam0_max=max(finite, default=None),
        lam_range=(lam_min, lam_max),
        empirical_failures=emp_counts,
        empirical_ties=tie_counts,
        max_flow_crosscheck_err=flow_err,
    )
    return tally.result()
