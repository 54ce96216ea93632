"""The built-in solver methods on one :class:`ufm.engine.core.Problem` (:func:`run_method`).

Each is declared (name, losses, budget, options) in :mod:`ufm.engine.registry`, which names the
runner defined here; :func:`run_method` runs any registered method, built-in or not.

``"suffstats"`` (MSE)
    Features eliminated in closed form; trust-region Newton-CG on ``(W, b)`` from the
    sufficient statistics of the data (:func:`ufm.engine.statistics.solve_statistics`), with a
    second-order check that escapes saddles.
``"lbfgs"`` / ``"lbfgs-h"``
    MSE: ``(W, b)`` eliminated in closed form (ridge regression, MATH.md sec. 5), quasi-Newton on
    ``H`` alone with the envelope-theorem gradient. CE (``"lbfgs"``): joint quasi-Newton on
    ``(W, b, H)``. Both backends run the same L-BFGS (:func:`ufm.engine.lbfgs.lbfgs`, memory 5),
    on the tensor's device for torch. It replaced scipy's L-BFGS-B for numpy because it took half
    the time on the benchmark problem and gives the same iterates on both backends; the tests
    check that its optima agree with :func:`scipy.optimize.minimize`.
``"gd"``
    Plain gradient descent on all variables with a fixed step in balanced coordinates
    ``(W, b, H / sqrt(N))``, i.e. each ``h_i`` moves along the gradient of its own (un-averaged)
    sample term while ``W`` and ``b`` move along the gradient of the average.

All stop on the gradient norm in balanced coordinates,
``sqrt(||grad_W f||^2 + ||grad_b f||^2 + N ||grad_H f||^2)`` (see :mod:`ufm.engine.core`), and
count ``max_iter`` in iterations. The gradient flow is not a solver method: it is a trajectory
over a time horizon, :func:`mufm.gradient_flow`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..errors import SolverError
from ..result import Deferred
from ..status import Status
from ..suffstats import SufficientStatistics
from .core import NP, TORCH, Problem
from .lbfgs import lbfgs
from .options import LBFGS_MEMORY, Backend
from .statistics import ReducedObjective, solve_statistics

__all__ = [
    "Raw",
    "run_method",
    "run_suffstats",
    "run_lbfgs",
    "run_gd",
    "initial_point",
    "second_order_status",
    "Progress",
]


@dataclass
class Raw:
    W: Any
    b: Any
    H: Any
    status: Status
    n_iter: int
    history_f: list[float] = field(default_factory=list)
    history_g: list[float] = field(default_factory=list)
    step: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # (objective, gradient norm) of the reduced MSE problem (method="suffstats"): exact by the
    # envelope theorem, and free of the cancellation in lam * (h - x) at large lam
    reduced: tuple[float, float] | None = None
    # collapse metrics of (H, y, W, b) computed while H was formed (method="suffstats", numpy
    # float64); None: build_result computes them from H
    metrics: dict[str, float] | None = None


class Progress:
    """tqdm bar (verbose=True) that shows the gradient norm; a no-op otherwise."""

    def __init__(self, verbose: bool, total: int | None, desc: str):
        self.bar = None
        if verbose:
            from tqdm.auto import tqdm  # optional at import time: only verbose runs need it

            self.bar = tqdm(total=total, desc=desc, unit="it", leave=True)

    def update(self, n: int, f: float, gn: float) -> None:
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(f=f"{f:.10g}", grad=f"{gn:.2e}", refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def run_method(
    pb: Problem,
    method: Any,
    start: tuple[Any, Any, Any],
    *,
    max_iter: int,
    tol: float,
    verbose: bool,
    seed: int = 0,
    init: str = "normal",
    options: dict[str, Any] | None = None,
) -> Raw:
    """Run ``method`` (a :class:`ufm.engine.registry.Method`) from ``start = (W0, b0, H0)``.

    This module does not import the registry (the registry names the runners below and imports
    this module when a built-in method first runs), so the two form no cycle.

    ``options`` are the method's own, validated options (:meth:`Method.check_options`). For a
    ``first_order`` method, a start that is already stationary (``H = X, W = 0`` on data whose
    class means coincide, or all-zero data) is a saddle or a maximum in general: when the
    method reports convergence after 0 iterations, it is restarted once from the start plus a
    seeded perturbation, and an MSE result then passes the second-order check of the reduced
    objective (:func:`second_order_status`).
    """
    bar = Progress(verbose, max_iter, f"{method.name} ({pb.p.loss})")
    kw = dict(max_iter=max_iter, tol=tol, seed=seed, init=init, progress=bar, **(options or {}))
    try:
        raw = method.run(pb, start, **kw)
        if not method.first_order:
            return raw
        if raw.status is Status.CONVERGED and raw.n_iter == 0:
            W0, b0, H0 = start
            rng = np.random.default_rng([seed, 1])
            eps = 1e-3
            W1 = W0 + pb.ops.from_numpy(eps * rng.standard_normal((pb.K, pb.d)), pb.like)
            H1 = H0 + pb.ops.from_numpy(eps * rng.standard_normal((pb.N, pb.d)), pb.like)
            raw = method.run(pb, (W1, b0, H1), **kw)
        if raw.status is Status.CONVERGED and pb.p.loss == "mse":
            raw.status = second_order_status(pb, raw.W, raw.b, seed)
        return raw
    finally:
        bar.close()


def statistics_of(pb: Problem):
    """:class:`ufm.suffstats.SufficientStatistics` of the problem's data (counts only for UFM)."""
    if pb.X is None or pb.p.lam == 0:
        y = pb.ops.to_numpy(pb.y) if pb.ops is TORCH else np.asarray(pb.y)
        return SufficientStatistics.from_counts(np.bincount(y, minlength=pb.K), pb.d)
    st = SufficientStatistics(pb.K)
    return st.update(pb.X, pb.y)


def second_order_status(pb: Problem, W: Any, b: Any, seed: int) -> Status:
    """``Status.CONVERGED``, or ``Status.SADDLE`` when the reduced MSE objective has negative curvature."""
    p = pb.p
    red = ReducedObjective(statistics_of(pb), p.lam, p.lam_w, p.lam_h, p.lam_b, p.bias)
    Wn = pb.ops.to_numpy(W).astype(np.float64)
    z = Wn.ravel()
    if p.bias:
        z = np.concatenate([z, pb.ops.to_numpy(b).astype(np.float64)])
    lam_min, _ = red.min_curvature(z, seed)
    if lam_min < -1e-7 * max(1.0, abs(red.f(z))):
        return Status.SADDLE
    return Status.CONVERGED


def run_suffstats(pb, start, *, max_iter, tol, seed, init, progress) -> Raw:
    """Method ``"suffstats"``: trust-region Newton on ``(W, b)`` from the statistics (MSE)."""
    W0, b0, _ = start
    p = pb.p
    st = statistics_of(pb)
    kw = {}
    if init == "normal" or pb.X is None or p.lam == 0:
        kw = {"W0": pb.ops.to_numpy(W0), "b0": pb.ops.to_numpy(b0)}
    sol = solve_statistics(
        st,
        lam=p.lam,
        lam_w=p.lam_w,
        lam_h=p.lam_h,
        lam_b=p.lam_b,
        bias=p.bias,
        tol=tol,
        max_iter=max_iter,
        seed=seed,
        **kw,
    )
    progress.update(sol.n_iter, sol.objective, sol.grad_norm)
    W = pb.ops.from_numpy(sol.W, pb.like)
    b = pb.ops.from_numpy(sol.b, pb.like)
    metrics = None
    fused = (
        pb.ops is not TORCH
        and pb.X is not None
        and p.lam != 0
        and isinstance(pb.X, np.ndarray)
        and pb.X.dtype == np.float64
    )
    if fused:
        # one pass over X gives every collapse metric of H* (class means from the statistics)
        # without writing H*; H* itself is formed when the result's H is first read
        Xn, yn = pb.X, np.asarray(pb.y)
        metrics = sol.feature_metrics(Xn, yn, st, sol.W, sol.b if p.bias else None)
        H = Deferred(lambda: sol.features(Xn, yn, check=st))
    else:
        H = sol.features(pb.X if p.lam != 0 else None, pb.y)
    if pb.ops is TORCH:
        H = H.to(dtype=pb.like.dtype, device=pb.like.device)
    hf = list(sol.history["objective"])
    hg = list(sol.history["grad_norm"])
    raw = Raw(W, b, H, Status(sol.status), sol.n_iter, hf, hg)
    raw.extra = {"n_escapes": sol.n_escapes, "min_eig": sol.min_eig}
    raw.reduced = (sol.objective, sol.grad_norm)
    raw.metrics = metrics
    return raw


def run_lbfgs(pb, start, *, max_iter, tol, progress, **_) -> Raw:
    """Methods ``"lbfgs"``, ``"lbfgs-h"``: L-BFGS on ``H`` (MSE, ``(W, b)`` eliminated) or on
    ``(W, b, H)`` jointly (cross entropy)."""
    W0, b0, H0 = start
    reduced = pb.p.loss == "mse"
    fg = pb.fg_reduced if reduced else pb.fg_joint
    x0 = (H0 / pb.sqrtN).reshape(-1) if reduced else pb.pack(W0, b0, H0)
    eps = float(np.finfo(np.float64).eps) if pb.ops is NP else float(torch.finfo(pb.like.dtype).eps)
    out = lbfgs(
        fg,
        x0,
        pb.ops,
        max_iter=max_iter,
        tol=tol,
        memory=LBFGS_MEMORY,
        eps_f=8 * eps,
        callback=lambda it, f, gn: progress.update(1, f, gn),
    )
    x, status, n_iter, hf, hg = out.x, out.status, out.n_iter, out.history_f, out.history_g
    if reduced:
        H = x.reshape(pb.N, pb.d) * pb.sqrtN
        W, b = pb.ridge(H)
    else:
        W, b, H = pb.unpack(x)
    return Raw(W, b, H, Status(status), n_iter, hf, hg)


def default_step(pb: Problem, W: Any, H: Any) -> float:
    """``1 / L`` with ``L`` a curvature bound at the start (balanced coordinates)."""
    ops = pb.ops
    sw = float(np.linalg.norm(ops.to_numpy(W), 2))
    sh = float(np.linalg.norm(ops.to_numpy(H), 2)) / pb.sqrtN
    p = pb.p
    L = (sw + sh + (1.0 if p.bias else 0.0)) ** 2 + p.lam + p.lam_h + p.lam_w + p.lam_b
    return 1.0 / L


def run_gd(pb, start, *, max_iter, tol, progress, step=None, **_) -> Raw:
    """Method ``"gd"``: plain gradient descent with a fixed ``step`` (default
    :func:`default_step`) in balanced coordinates; the step is halved for good when unstable."""
    W0, b0, H0 = start
    v = pb.pack(W0, b0, H0)
    if step is None:
        step = default_step(pb, W0, H0)
    f, g = pb.fg_joint(v)
    gn = math.sqrt(pb.ops.dot(g, g))
    hf, hg = [f], [gn]
    status, it = Status.MAX_ITER, 0
    while it < max_iter:
        if gn <= tol:
            status = Status.CONVERGED
            break
        v_new = v - step * g
        f_new, g_new = pb.fg_joint(v_new)
        if not (math.isfinite(f_new) and f_new <= f + 1e-12 * abs(f)):
            # Safeguard, not a line search: the fixed step was unstable; halve it for good.
            step *= 0.5
            if step < 1e-300:
                raise SolverError("gradient descent cannot make progress (step underflow)")
            continue
        v, f, g = v_new, f_new, g_new
        gn = math.sqrt(pb.ops.dot(g, g))
        it += 1
        hf.append(f)
        hg.append(gn)
        progress.update(1, f, gn)
    else:
        if gn <= tol:
            status = Status.CONVERGED
    W, b, H = pb.unpack(v)
    return Raw(W, b, H, status, it, hf, hg, step=step)


def initial_point(pb: Problem, seed: int, be: Backend, H_start: Any = None):
    """Seeded standard-normal ``(W, b, H)``; ``H_start`` replaces ``H`` when given.

    The draws come from ``numpy.random.default_rng(seed)`` in the order ``W``, ``b``, ``H``, so
    numpy and torch backends start from the same point for the same seed.
    """
    rng = np.random.default_rng(seed)
    like = pb.like
    W = pb.ops.standard_normal((pb.K, pb.d), rng, like)
    b = pb.ops.standard_normal((pb.K,), rng, like)
    H = pb.ops.standard_normal((pb.N, pb.d), rng, like) if H_start is None else H_start
    if not pb.p.bias:
        b = pb.ops.zeros((pb.K,), like)
    return W, b, H
