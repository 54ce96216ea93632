"""The one solve pipeline behind :func:`ufm.solve` and :func:`mufm.solve`.

The two front ends only validate their inputs (labels and ``d`` for the UFM; data and labels
for the MUFM) and pick the backend; :func:`solve_problem` does the rest: method and coefficient
checks, per-method options, defaults, the starting point, :func:`ufm.engine.methods.run_method`,
the final evaluation and the :class:`~ufm.result.SolveResult` (:func:`build_result`).
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from ..errors import ConvergenceWarning, DegenerateInputError, InputError, RankWarning, SolverError
from ..metrics import collapse_metrics
from ..metrics.gram import unscale
from ..result import Deferred, SolveResult
from ..status import Status
from ..validate import check_scalar, check_seed, describe
from .core import Params, Problem
from .methods import Raw, initial_point, run_method
from .options import (
    Backend,
    check_first_order_scale,
    check_params,
    max_abs,
    resolve_max_iter,
    resolve_tol,
)
from .registry import Method, get_method, methods

#: Most free variables ((N + K) x d) the UFM allocates for itself (2^27: 1 GiB in float64).
FREE_FEATURE_LIMIT = 2**27

__all__ = [
    "solve_problem",
    "build_result",
    "INITS",
]


def _names() -> tuple[str, ...]:
    return tuple(m.name for m in methods())


#: Starting points: ``"data"`` is ``H = X, W = 0, b = 0`` (MUFM only); ``"normal"`` a seeded
#: standard-normal ``(W, b, H)`` from ``numpy.random.default_rng(seed)``.
INITS = ("data", "normal")
_NORMAL = "normal: standard normal (W, b, H) from numpy.random.default_rng(seed)"


def solve_problem(
    *,
    model: str,
    y: Any,
    K: int,
    d: int,
    X: Any,
    be: Backend,
    lam: float,
    lam_w: float,
    lam_h: float,
    lam_b: float,
    loss: str,
    bias: bool,
    method: str | Method | None,
    max_iter: int | None,
    tol: float | None,
    seed: int,
    verbose: bool,
    step: float | None,
    init: str | None,
    stacklevel: int = 2,
) -> SolveResult:
    """Solve one validated (M)UFM instance; the shared body of both ``solve`` front ends.

    Parameters
    ----------
    model : {"ufm", "mufm"}
        Recorded in ``result.params["model"]``; ``"ufm"`` has ``X = None`` and ``lam = 0``.
    y : torch.Tensor of shape (N,)
        Validated labels ``0..K-1``.
    K, d : int
        Classes and feature dimension.
    X : torch.Tensor of shape (N, d) or None
        Validated data (MUFM), or None (UFM).
    be : Backend
        From :func:`ufm.engine.options.resolve_backend`.
    lam, lam_w, lam_h, lam_b, loss, bias, method, max_iter, tol, seed, verbose, step, init
        As in :func:`mufm.solve`; validated here (``method`` a registered name or
        :class:`~ufm.engine.registry.Method`, ``None`` for the loss's default; ``step`` only for
        a method that declares it; ``init`` ``"data"`` only with data).
    stacklevel : int
        As for :func:`warnings.warn`, counted from :func:`solve_problem` (1): the front ends
        pass the level of their user's frame.

    Returns
    -------
    SolveResult
    """
    meth = get_method(method, loss)
    raw = Params(lam, lam_w, lam_h, lam_b, loss, bias)
    params = check_params(raw, method=meth, scale=None if X is None else lambda: max_abs(X))
    options = meth.check_options(step=step)
    if X is None and d < K and not (params.bias and params.lam_b == 0 and params.loss == "mse"):
        warnings.warn(
            f"d={d} = K-1: the centred class means can still form a simplex ETF, but with "
            f"loss={loss!r}, bias={bias}, lam_b={lam_b} the optimum's class means want K={K} "
            "dimensions, so it is rank-limited and need not be a simplex ETF; use d >= K",
            RankWarning,
            stacklevel=stacklevel,
        )
    n_samples = int(y.shape[0]) if hasattr(y, "shape") else len(y)
    if X is None and (n_samples + K) * d > FREE_FEATURE_LIMIT:
        # the UFM allocates H (N x d) and W (K x d) itself; its optimum for d >= K is the same
        # for every d up to a rotation, so a huge d only costs memory and time
        gib = (n_samples + K) * d * 8 / 2**30
        raise InputError(
            f"d={d} with N={n_samples}, K={K}: the UFM would hold (N + K) x d = "
            f"{(n_samples + K) * d:.3g} free variables ({gib:.3g} GiB in float64); its optimum "
            f"does not depend on d once d >= K, so solve with d={K} (or embed that solution)"
        )
    a = problem_scale(X, params)
    X_user = X
    if a != 1.0:
        # the exactly equivalent, well-scaled problem: solved there, mapped back below
        X = None if X is None else X / a
        params = Params(
            params.lam * a * a, params.lam_w / a / a, params.lam_h * a * a, params.lam_b,
            params.loss, params.bias,
        )  # fmt: skip
    check_first_order_scale(meth, params, X)
    tol_v = resolve_tol(tol, be)
    max_iter_v = resolve_max_iter(max_iter, meth, params.loss)
    seed = check_seed(seed)
    if init is None:
        init = "data" if X is not None and meth.data_start else "normal"
    if init not in INITS or (init == "data" and X is None):
        allowed = "'data', 'normal' or None" if X is not None else "'normal' (no data) or None"
        raise InputError(f"init must be {allowed}, got {describe(init)}")
    Xb = None if X is None else be.asarray(X)
    y_b = be.labels(y)
    pb = Problem(be.ops, y_b, K, d, Xb, params, be.like())
    if init == "data":
        W0, b0, H0 = pb.ops.zeros((K, d), pb.like), pb.ops.zeros((K,), pb.like), Xb
    else:
        W0, b0, H0 = initial_point(pb, seed, be)
    raw = run_method(
        pb, meth, (W0, b0, H0), max_iter=max_iter_v, tol=tol_v, verbose=verbose, seed=seed,
        init=init, options=options,
    )  # fmt: skip
    if a != 1.0:
        raw = unscale_raw(pb, raw, a)
        Xb = None if X_user is None else be.asarray(X_user)
    opts: dict[str, Any] = {"model": model, "K": K}
    if X is not None:
        opts["N"] = int(y.shape[0])
    opts |= {
        "d": d,
        "lam": check_scalar(lam, "lam"),
        "lam_w": check_scalar(lam_w, "lam_w"),
        "lam_h": check_scalar(lam_h, "lam_h"),
        "lam_b": params.lam_b,
        "loss": loss,
        "bias": params.bias,
        "method": meth.name,
        "backend": be.name,
        "device": None if be.device is None else str(be.device),
        "dtype": str(be.dtype).replace("torch.", ""),
        "max_iter": max_iter_v,
        "tol": tol_v,
        "seed": seed,
        "init": _NORMAL if init == "normal" else init,
        "scale": a,
    }
    return build_result(
        pb, raw, y_out=y_b, X_out=Xb, method=meth.name, backend=be.name, params=opts, tol=tol_v,
        stacklevel=stacklevel + 1,
    )  # fmt: skip


#: Problems whose natural scale (:func:`problem_scale`) lies outside ``[2^-SCALE_SLACK,
#: 2^SCALE_SLACK]`` are solved rescaled; closer to 1 they are solved as given.
SCALE_SLACK = 8


def problem_scale(X: Any, params: Params) -> float:
    r"""The power of two ``a`` by which a solve divides its data (1.0: solved as given).

    The (M)UFM is scale-equivariant: ``X / a`` with ``lam a^2``, ``lam_h a^2``, ``lam_w / a^2``
    (``lam_b`` unchanged) is the same problem, ``H = a H'``, ``W = W' / a``, equal objective.
    Every method solves the problem at its natural scale

    .. math::

        s = \max\Big(\sqrt{\operatorname{mean}_i \|x_i\|^2},\;
            \big(\lambda_W / (\lambda + \lambda_H)\big)^{1/4}\Big)

    (the data's RMS sample norm, or the scale at which the weight and feature penalties are
    equal when that is larger, as for the UFM without data), rounded to a power of two so the
    rescaling is exact; problems with ``s`` in ``[2^-8, 2^8]`` are solved as given. So
    ``solve(X a, lam / a^2, lam_w a^2)`` runs the same arithmetic as ``solve(X, lam, lam_w)``
    for every power of two ``a`` whose rescaled coefficients are representable, and gives
    ``H a``, ``W / a``. No rescaling (1.0) where the rescaled coefficients would leave
    float64's normal range.
    """
    exps = []
    if X is not None:
        Xn = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
        amax = float(np.max(np.abs(Xn))) if Xn.size else 0.0
        if amax > 0 and math.isfinite(amax):
            with np.errstate(under="ignore"):
                ms = float(np.mean(np.sum(np.square(Xn.astype(np.float64) / amax), axis=1)))
            if ms > 0:
                exps.append(math.log2(amax) + 0.5 * math.log2(ms))
    mu = params.lam + params.lam_h
    if mu > 0 and params.lam_w > 0:
        exps.append((math.log2(params.lam_w) - math.log2(mu)) / 4)
    if not exps:
        return 1.0
    e = round(max(exps))
    if abs(e) <= SCALE_SLACK:
        return 1.0
    if abs(e) > 1000:
        return 1.0
    a = math.ldexp(1.0, e)
    scaled = ((params.lam, params.lam * a * a), (params.lam_h, params.lam_h * a * a))
    scaled += ((params.lam_w, params.lam_w / a / a),)
    if any(v != 0 and not (2.0**-1022 <= w < math.inf) for v, w in scaled):
        return 1.0
    return math.ldexp(1.0, e)


def unscale_raw(pb: Problem, raw: Raw, a: float) -> Raw:
    """Map a solution of the problem rescaled by ``a`` back (``W / a``, ``H a``).

    The objective and gradient norm are those of the rescaled problem (the objective is
    invariant; the gradient norm, compared with ``tol``, is measured where the problem is well
    scaled); the two scale-dependent metrics ``tr_sigma_w`` and ``tr_sigma_b`` are multiplied
    by ``a^2``.
    """
    if raw.reduced is None:
        f, gW, gb, gH = pb.full(raw.W, raw.b, raw.H)
        raw.reduced = (float(f), float(pb.grad_norm(gW, gb if pb.p.bias else None, gH)))
    raw.W = raw.W / a
    H = raw.H
    raw.H = Deferred(lambda: H.fn() * a) if isinstance(H, Deferred) else H * a
    if raw.metrics is not None:
        m = dict(raw.metrics)
        for k in ("tr_sigma_w", "tr_sigma_b"):
            if k in m:
                m[k] = unscale(m[k], round(2 * math.log2(a)), k)
        raw.metrics = m
    return raw


def warn_if_not_converged(
    status: Status,
    method: str,
    grad_norm: float,
    tol: float,
    n_iter: int,
    stacklevel: int = 2,
    loss: str | None = None,
) -> None:
    """Warn (:class:`~ufm.errors.ConvergenceWarning`) with a hint unless ``status`` is converged.

    The hint comes from the registry: the default method for ``loss`` (when another method ran
    out of iterations), the method's own ``max_iter_hint``, and the methods that escape saddles.
    """
    if status is Status.CONVERGED:
        return
    meth = get_method(method) if isinstance(method, str) and method in _names() else None
    default = None
    if loss is not None:
        default = next((m.name for m in methods() if loss in m.default_for), None)
    faster = [default] if default is not None and default != method else []
    escape = [f"method={m.name!r} ({', '.join(m.losses)})" for m in methods() if m.escapes_saddles]
    hint = {
        "max_iter": "raise max_iter"
        + "".join(f", or use method={n!r}" for n in faster[:1])
        + (meth.max_iter_hint if meth is not None else ""),
        "saddle": "the point is stationary but has negative curvature (a saddle); use "
        + " or ".join(escape)
        + ", which checks curvature and escapes saddles, or another seed",
        "stalled": "the arithmetic's precision limit was reached; raise tol (float32: about 1e-4)",
    }.get(status, "check the problem")
    warnings.warn(
        f"method={method!r} stopped with status {status.value!r} after {n_iter} iterations: gradient "
        f"norm {grad_norm:.3e} > tol={tol:.3e}; {hint}",
        ConvergenceWarning,
        stacklevel=stacklevel,
    )


def build_result(
    pb: Problem | None,
    raw: Raw,
    *,
    y_out: Any,
    X_out: Any,
    method: str,
    backend: str,
    params: dict[str, Any],
    tol: float,
    stacklevel: int = 2,
    bias: bool | None = None,
) -> SolveResult:
    """Evaluate the final point and assemble a :class:`ufm.result.SolveResult`.

    The one result builder of the engine's solves: the free-feature (M)UFM (``pb`` its
    :class:`~ufm.engine.core.Problem`) and the LayerNorm UFM, a problem variant that passes
    ``pb=None`` with its final objective and Riemannian gradient norm in ``raw.reduced`` and
    ``bias``. It refuses a non-finite objective, reports a converged status whose final
    gradient exceeds ``tol`` as stalled, warns on non-convergence and computes the metrics.
    """
    if bias is None:
        bias = pb.p.bias
    if raw.reduced is not None:
        f, gn = raw.reduced
    else:
        f, gW, gb, gH = pb.full(raw.W, raw.b, raw.H)
        gn = pb.grad_norm(gW, gb if pb.p.bias else None, gH)
    if not math.isfinite(f):
        raise SolverError(
            f"method={method!r} produced a non-finite objective; the coefficients "
            f"{params} may make the problem unbounded"
        )
    status = Status(raw.status)
    if status is Status.CONVERGED and gn > tol * (1 + 1e-3) + 1e-14:
        # The solver's own criterion passed on a slightly different quantity (e.g. the
        # reduced gradient); the final full gradient is the one reported.
        status = Status.STALLED
    loss = None if pb is None else pb.p.loss
    warn_if_not_converged(status, method, gn, tol, raw.n_iter, stacklevel=stacklevel + 1, loss=loss)
    if raw.metrics is not None:
        metrics = dict(raw.metrics)
    else:
        metrics = _metrics(raw.H, y_out, raw.W, raw.b if bias else None)
    history = {
        "objective": np.asarray(raw.history_f, dtype=np.float64),
        "grad_norm": np.asarray(raw.history_g, dtype=np.float64),
    }
    params = dict(params)
    if raw.step is not None:
        params["step"] = raw.step
    params.update(raw.extra)
    return SolveResult(
        W=raw.W,
        b=raw.b,
        H=raw.H,
        y=y_out,
        X=X_out,
        objective=float(f),
        grad_norm=float(gn),
        status=status,
        converged=status is Status.CONVERGED,
        n_iter=int(raw.n_iter),
        history=history,
        metrics=metrics,
        method=method,
        backend=backend,
        params=params,
    )


def _metrics(H: Any, y: Any, W: Any, b: Any) -> dict[str, float]:
    try:
        return dict(collapse_metrics(H, y, W, b))
    except DegenerateInputError:
        return {}
