"""The one limited-memory BFGS minimiser of the toolkit, on flat arrays, Euclidean or on a manifold.

Used by every L-BFGS solve: ``ufm.solve``/``mufm.solve`` (numpy or torch, the whole iteration
on the tensor's device), the deep UFM and the LayerNorm UFM. Two-loop recursion (Nocedal and
Wright 2006, Alg. 7.4) with a strong-Wolfe line search (Alg. 3.5/3.6, safeguarded cubic
interpolation).

**Manifold hooks.** With ``manifold`` (an object with ``project(x, v)``, the orthogonal
projection of ``v`` onto the tangent space at ``x``, and ``retract(z)``, the map of an ambient
point ``z = x + t d`` back onto the manifold) the iteration is Riemannian L-BFGS for the metric
of the flat coordinates (Absil, Mahony, Sepulchre 2008; Huang, Gallivan, Absil 2015): the
gradient is projected (the Riemannian gradient of an embedded submanifold), the two-loop
direction is projected onto the tangent space, a trial point is ``retract(x + t d)``, its slope
is taken along the projected direction (vector transport by projection), and the curvature
pairs are the ambient differences of points and of projected gradients. ``manifold=None`` is the
Euclidean case (both hooks the identity) and runs exactly the iteration it ran before.

The Armijo test is relaxed by a few units of rounding in ``f``
(``f(x + t d) <= f(x) + c1 t g.d + eps |f(x)|``, in the spirit of Hager and Zhang's approximate
Wolfe conditions): close to a minimiser the decrease ``||g||^2 / (2 L)`` falls below the
resolution of ``f`` while the gradient, which is still accurate, keeps guiding the search.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..status import Status
from .core import Ops

__all__ = [
    "lbfgs",
]


@dataclass
class LBFGSOutput:
    x: Any
    f: float
    g: Any
    grad_norm: float
    n_iter: int
    n_eval: int
    status: Status  # CONVERGED | MAX_ITER | STALLED
    history_f: list[float] = field(default_factory=list)
    history_g: list[float] = field(default_factory=list)


def _cubic_min(a: float, fa: float, da: float, b: float, fb: float, db: float) -> float:
    """Minimiser of the cubic through two points with slopes, safeguarded to inside [a, b]."""
    lo, hi = min(a, b), max(a, b)
    width = hi - lo
    try:
        d1 = da + db - 3.0 * (fa - fb) / (a - b)
        d2sq = d1 * d1 - da * db
        if d2sq >= 0.0:
            d2 = math.copysign(math.sqrt(d2sq), b - a)
            t = b - (b - a) * (db + d2 - d1) / (db - da + 2.0 * d2)
            if math.isfinite(t) and lo + 0.1 * width <= t <= hi - 0.1 * width:
                return t
    except ZeroDivisionError:
        pass
    return 0.5 * (a + b)


def _line_search(
    phi: Callable[[float], tuple[float, Any, float]],
    f0: float,
    gd0: float,
    t: float,
    eps_f: float,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_ls: int = 40,
) -> tuple[float, float, Any, float] | None:
    """Strong-Wolfe step along a descent direction; returns (t, f, g, g.d) or None."""
    t_prev, f_prev, g_prev, gd_prev = 0.0, f0, None, gd0

    def armijo_fails(tt: float, ff: float) -> bool:
        return not math.isfinite(ff) or ff > f0 + c1 * tt * gd0 + eps_f

    def zoom(lo, flo, glo, gdlo, hi, fhi, gdhi):
        for _ in range(max_ls):
            if math.isfinite(fhi):
                tt = _cubic_min(lo, flo, gdlo, hi, fhi, gdhi)
            else:
                tt = 0.5 * (lo + hi)
            ff, gg, gd = phi(tt)
            if armijo_fails(tt, ff) or ff > flo + eps_f:
                hi, fhi, gdhi = tt, ff, gd
            else:
                if abs(gd) <= -c2 * gd0:
                    return tt, ff, gg, gd
                if gd * (hi - lo) >= 0:
                    hi, fhi, gdhi = lo, flo, gdlo
                lo, flo, glo, gdlo = tt, ff, gg, gd
            if abs(hi - lo) <= 1e-16 * max(1.0, abs(lo)):
                break
        if lo > 0 and glo is not None:
            return lo, flo, glo, gdlo
        return None

    for i in range(max_ls):
        ft, gt, gdt = phi(t)
        if armijo_fails(t, ft) or (i > 0 and ft > f_prev + eps_f):
            return zoom(t_prev, f_prev, g_prev, gd_prev, t, ft, gdt)
        if abs(gdt) <= -c2 * gd0:
            return t, ft, gt, gdt
        if gdt >= 0:
            return zoom(t, ft, gt, gdt, t_prev, f_prev, gd_prev)
        t_prev, f_prev, g_prev, gd_prev = t, ft, gt, gdt
        t = 2.0 * t
    return None


def lbfgs(
    fg: Callable[[Any], tuple[float, Any]],
    x0: Any,
    ops: Ops,
    *,
    max_iter: int,
    tol: float,
    memory: int = 20,
    eps_f: float = 1e-15,
    callback: Callable[[int, float, float], None] | None = None,
    manifold: Any = None,
) -> LBFGSOutput:
    """Minimise ``f`` from ``x0`` until ``||grad f||_2 <= tol`` or ``max_iter`` iterations.

    Parameters
    ----------
    fg : callable
        ``x -> (f(x), grad f(x))`` on flat arrays of the same kind as ``x0``.
    x0 : 1-d array (numpy or torch)
        Start.
    ops : Ops
        Backend namespace (dot products).
    max_iter, tol : int, float
        Iteration budget and gradient-norm tolerance.
    memory : int
        Number of curvature pairs kept.
    eps_f : float
        Relative slack of the Armijo test (a few units of rounding of ``f``).
    callback : callable, optional
        ``callback(iteration, f, grad_norm)`` after each iteration.
    manifold : object, optional
        Manifold hooks ``project(x, v)`` and ``retract(z)`` (see the module docstring); ``x0``
        must lie on the manifold. ``None``: Euclidean.

    Returns
    -------
    LBFGSOutput
        Final point and status: ``Status.CONVERGED``, ``MAX_ITER`` or ``STALLED`` (the line
        search found no acceptable step: the precision limit of the arithmetic).
    """
    proj = None if manifold is None else manifold.project
    step = None if manifold is None else manifold.retract
    x = x0
    f, g = fg(x)
    if proj is not None:
        g = proj(x, g)
    n_eval = 1
    gn = math.sqrt(ops.dot(g, g))
    S: deque = deque(maxlen=memory)
    hist_f, hist_g = [f], [gn]
    status = Status.MAX_ITER
    it = 0
    while True:
        if not math.isfinite(f) or gn <= tol:
            status = Status.CONVERGED if gn <= tol else Status.STALLED
            break
        if it >= max_iter:
            status = Status.MAX_ITER
            break
        # two-loop recursion for d = -H_k g
        q = -g  # a fresh array, updated in place below: d = -H_k g
        alphas = []
        for s, yv, rho in reversed(S):
            a = rho * ops.dot(s, q)
            alphas.append(a)
            ops.axpy(-a, yv, q)
        if S:
            s, yv, _ = S[-1]
            q *= ops.dot(s, yv) / ops.dot(yv, yv)
        for (s, yv, rho), a in zip(S, reversed(alphas), strict=True):
            beta = rho * ops.dot(yv, q)
            ops.axpy(a - beta, s, q)
        d = q if proj is None else proj(x, q)
        gd = ops.dot(g, d)
        if not gd < 0:
            S.clear()
            d = -g
            gd = -gn * gn
        t0 = 1.0 if S else min(1.0, 1.0 / gn)

        def phi(t: float, d=d, x=x):
            nonlocal n_eval
            n_eval += 1
            if step is None:
                ft, gt = fg(x + t * d)
                return ft, gt, ops.dot(gt, d)
            xt = step(x + t * d)
            ft, gt = fg(xt)
            gt = proj(xt, gt)
            return ft, gt, ops.dot(gt, proj(xt, d))

        ls = _line_search(phi, f, gd, t0, eps_f * max(abs(f), 1e-300))
        if ls is None:
            if S:  # retry once along steepest descent with fresh memory
                S.clear()
                continue
            status = Status.STALLED
            break
        t, f_new, g_new, _ = ls
        x_new = x + t * d if step is None else step(x + t * d)
        s = t * d if step is None else x_new - x
        yv = g_new - g
        sy = ops.dot(s, yv)
        if sy > 1e-12 * math.sqrt(ops.dot(s, s) * ops.dot(yv, yv)):
            S.append((s, yv, 1.0 / sy))
        x = x_new
        f, g = f_new, g_new
        gn = math.sqrt(ops.dot(g, g))
        it += 1
        hist_f.append(f)
        hist_g.append(gn)
        if callback is not None:
            callback(it, f, gn)
    return LBFGSOutput(x, f, g, gn, it, n_eval, status, hist_f, hist_g)
