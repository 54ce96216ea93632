"""Solver engine shared by :func:`ufm.solve` and :func:`mufm.solve` (private).

Three methods on one :class:`ufm._core.Problem`:

``"lbfgs"``
    MSE: ``(W, b)`` eliminated in closed form (ridge regression, MATH.md sec. 5), quasi-Newton on
    ``H`` alone with the envelope-theorem gradient. CE: joint quasi-Newton on ``(W, b, H)``.
    Both backends run the same L-BFGS (:func:`ufm._lbfgs.lbfgs`, memory 5), on the
    tensor's device for torch. It replaced scipy's L-BFGS-B for numpy because it took half the
    time on the benchmark problem (the bound-constrained compact update costs more than the
    objective there) and gives the same iterates on both backends; the tests check that its
    optima agree with :func:`scipy.optimize.minimize`.
``"gd"``
    Plain gradient descent on all variables with a fixed step in balanced coordinates
    ``(W, b, H / sqrt(N))``, i.e. each ``h_i`` moves along the gradient of its own (un-averaged)
    sample term while ``W`` and ``b`` move along the gradient of the average.
``"flow"``
    The gradient flow ``dv/dt = -grad f(v)`` of the full objective in the same coordinates,
    integrated by :func:`scipy.integrate.solve_ivp` (LSODA) until the gradient norm is below
    ``tol``; the trajectory of ``H`` is returned.

All three stop on the gradient norm in balanced coordinates,
``sqrt(||grad_W f||^2 + ||grad_b f||^2 + N ||grad_H f||^2)`` (see :mod:`ufm._core`).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.integrate
import torch

from ._core import NP, TORCH, Ops, Params, Problem
from ._lbfgs import lbfgs
from .errors import BackendError, ConvergenceWarning, InputError, SolverError
from .validate import check_int, check_scalar, describe

__all__ = [
    "DEFAULT_LAM_W",
    "DEFAULT_LAM_H",
    "DEFAULT_LAM_B",
    "DEFAULT_MAX_ITER",
    "METHODS",
    "Backend",
    "resolve_backend",
    "resolve_tol",
    "resolve_max_iter",
    "check_params",
    "run_method",
]

DEFAULT_LAM_W = 5e-4
DEFAULT_LAM_H = 5e-4
DEFAULT_LAM_B = 5e-4
DEFAULT_TOL = {torch.float64: 1e-8, torch.float32: 1e-4}
LBFGS_MEMORY = 5
DEFAULT_MAX_ITER = {
    "suffstats": 1_000,
    "lbfgs": 10_000,
    "lbfgs-h": 10_000,
    "gd": 100_000,
    "flow": 200_000,
}
#: Plain gradient descent on cross entropy needs up to ~5e5 iterations on the reference
#: catalogue (its rate is linear with a poor condition number), so its default budget is larger.
DEFAULT_MAX_ITER_GD_CE = 1_000_000
METHODS = ("suffstats", "lbfgs", "lbfgs-h", "gd", "flow")
MSE_ONLY = ("suffstats", "lbfgs-h")
LOSSES = ("mse", "ce")


@dataclass(frozen=True)
class Backend:
    """Where and in which precision the computation runs."""

    ops: Ops
    name: str  # "numpy" | "torch"
    device: torch.device | None
    dtype: torch.dtype

    def like(self) -> Any:
        """An empty array with the backend's dtype and device (template for allocations)."""
        if self.name == "numpy":
            return np.empty(0, dtype=np.float64)
        return torch.empty(0, dtype=self.dtype, device=self.device)

    def asarray(self, a: Any) -> Any:
        """Convert an array (numpy or torch) to this backend."""
        if self.name == "numpy":
            if isinstance(a, torch.Tensor):
                a = a.detach().cpu().numpy()
            return np.asarray(a, dtype=np.float64)
        return torch.as_tensor(a).to(dtype=self.dtype, device=self.device)

    def labels(self, y: torch.Tensor) -> Any:
        if self.name == "numpy":
            return y.cpu().numpy()
        return y.to(self.device)


def resolve_backend(
    backend: str | None, device: Any, dtype: Any, *, input_is_torch: bool, input_dtype: Any = None
) -> Backend:
    """Pick numpy or torch from the input type or the explicit arguments.

    Raises
    ------
    InputError
        Unknown backend, or a numpy backend asked for a non-CPU device or float32.
    BackendError
        ``device="cuda"`` while torch sees no CUDA device.
    """
    if backend is not None and backend not in ("numpy", "torch"):
        raise InputError(f"backend must be 'numpy', 'torch' or None, got {describe(backend)}")
    dev = None
    if device is not None:
        try:
            dev = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise InputError(
                f"device must be 'cpu', 'cuda', 'cuda:N' or a torch.device, got {describe(device)}"
            ) from exc
    if backend is None:
        backend = (
            "torch" if (input_is_torch or (dev is not None and dev.type != "cpu")) else "numpy"
        )
    if backend == "numpy":
        if dev is not None and dev.type != "cpu":
            raise InputError(
                f"backend='numpy' runs on the CPU only, got device={device!r}; "
                "use backend='torch' for a GPU"
            )
        if dtype is not None and torch.empty(0, dtype=_torch_dtype(dtype)).dtype != torch.float64:
            raise InputError(
                f"backend='numpy' computes in float64 (scipy's L-BFGS-B), got dtype={dtype!r}; "
                "use backend='torch' for float32"
            )
        return Backend(NP, "numpy", None, torch.float64)
    if dev is None:
        dev = torch.device("cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(
            f"device={device!r} was requested but torch.cuda.is_available() is False "
            "(no CUDA device or no CUDA build of torch); use device='cpu' or backend='numpy'"
        )
    if dev.type not in ("cpu", "cuda"):
        raise BackendError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    if dtype is None:
        dt = input_dtype if input_dtype in (torch.float32, torch.float64) else torch.float64
    else:
        dt = _torch_dtype(dtype)
        if dt not in (torch.float32, torch.float64):
            raise InputError(f"dtype must be float32 or float64, got {dtype!r}")
    return Backend(TORCH, "torch", dev, dt)


def _torch_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    try:
        return {"float32": torch.float32, "float64": torch.float64}[np.dtype(dtype).name]
    except (TypeError, KeyError) as exc:
        raise InputError(f"dtype must be float32 or float64, got {dtype!r}") from exc


def resolve_tol(tol: float | None, be: Backend) -> float:
    """``tol=None`` picks 1e-8 in float64 and 1e-4 in float32."""
    if tol is None:
        return DEFAULT_TOL[be.dtype]
    return check_scalar(tol, "tol", low=0.0, low_inclusive=False)


def resolve_method(method: str | None, loss: Any) -> str:
    """``method=None`` picks ``"suffstats"`` for MSE and ``"lbfgs"`` for cross entropy."""
    if method is None:
        return "suffstats" if loss == "mse" else "lbfgs"
    return method


def resolve_max_iter(max_iter: int | None, method: str, loss: str = "mse") -> int:
    if max_iter is None:
        if method == "gd" and loss == "ce":
            return DEFAULT_MAX_ITER_GD_CE
        return DEFAULT_MAX_ITER.get(method, 10_000)
    return check_int(max_iter, "max_iter", low=1)


def check_params(
    *, lam: float, lam_w: float, lam_h: float, lam_b: float, loss: str, bias: bool, method: str
) -> Params:
    """Validate coefficients and options; returns :class:`ufm._core.Params`."""
    lam = check_scalar(lam, "lam")
    lam_w = check_scalar(lam_w, "lam_w", low=0.0, low_inclusive=False)
    lam_h = check_scalar(lam_h, "lam_h")
    lam_b = check_scalar(lam_b, "lam_b")
    if loss not in LOSSES:
        raise InputError(f"loss must be 'mse' or 'ce', got {describe(loss)}")
    if not isinstance(bias, bool | np.bool_):
        raise InputError(f"bias must be True or False, got {describe(bias)}")
    if not isinstance(method, str) or method not in METHODS:
        raise InputError(f"method must be one of {METHODS} or None, got {describe(method)}")
    if method in MSE_ONLY and loss != "mse":
        raise InputError(
            f"method={method!r} eliminates the features in closed form, which needs loss='mse'; "
            "use method='lbfgs' (or None) for loss='ce'"
        )
    if lam + lam_h <= 0:
        raise InputError(
            f"lam + lam_h must be > 0 (got lam={lam}, lam_h={lam_h}): without a feature penalty "
            "the infimum is not attained (H grows while W shrinks); set lam_h > 0 (UFM) or lam > 0"
        )
    if loss == "ce" and bias and lam_b == 0:
        raise InputError(
            "loss='ce' with an unpenalised bias (lam_b=0) has a flat direction b -> b + c 1 and, "
            "for unbalanced classes, may have no minimiser; set lam_b > 0 or bias=False"
        )
    return Params(lam, lam_w, lam_h, lam_b, loss, bool(bias))


#: First-order methods (gd, lbfgs, lbfgs-h, flow) work in unscaled coordinates; beyond these
#: coefficient and data scales their steps overflow or their tolerance is meaningless.
FIRST_ORDER_LIMIT = 1e50


def check_first_order_scale(method: str, params: Params, X: Any = None) -> None:
    """Refuse, before any iteration, problems too badly scaled for the first-order methods.

    ``method="suffstats"`` rescales the data exactly (by a power of two) and accepts them.

    Raises
    ------
    InputError
        A coefficient above 1e50, or data whose RMS sample norm is outside [1e-50, 1e50].
    """
    if method == "suffstats":
        return
    for name in ("lam", "lam_w", "lam_h", "lam_b"):
        v = getattr(params, name)
        if v > FIRST_ORDER_LIMIT:
            raise InputError(
                f"{name}={v:g} > {FIRST_ORDER_LIMIT:g}: method={method!r} works in unscaled "
                "coordinates and would overflow or crawl at this scale; use "
                "method='suffstats' (MSE; exact internal rescaling) or rescale the problem"
            )
    if X is not None:
        Xn = X.detach().cpu().numpy() if isinstance(X, torch.Tensor) else np.asarray(X)
        amax = float(np.max(np.abs(Xn))) if Xn.size else 0.0
        if amax > 0 and not (1.0 / FIRST_ORDER_LIMIT <= amax <= FIRST_ORDER_LIMIT):
            raise InputError(
                f"X has scale max|x| = {amax:.3g}, outside [1e-50, 1e50]: method={method!r} "
                "works in unscaled coordinates and its tolerance is meaningless at this scale; "
                "use method='suffstats' (MSE; exact internal rescaling) or rescale X and the "
                "coefficients (X * a with lam / a^2, lam_w * a^2 is the same problem)"
            )


# ---------------------------------------------------------------------------------- running
@dataclass
class Raw:
    W: Any
    b: Any
    H: Any
    status: str
    n_iter: int
    history_f: list[float] = field(default_factory=list)
    history_g: list[float] = field(default_factory=list)
    trajectory: tuple[np.ndarray, Any] | None = None
    step: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # (objective, gradient norm) of the reduced MSE problem (method="suffstats"): exact by the
    # envelope theorem, and free of the cancellation in lam * (h - x) at large lam
    reduced: tuple[float, float] | None = None


class _Progress:
    """tqdm bar (verbose=True) that shows the gradient norm; a no-op otherwise."""

    def __init__(self, verbose: bool, total: int | None, desc: str):
        self.bar = None
        if verbose:
            from tqdm.auto import tqdm

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
    method: str,
    W0: Any,
    b0: Any,
    H0: Any,
    *,
    max_iter: int,
    tol: float,
    verbose: bool,
    step: float | None = None,
    seed: int = 0,
    init: str = "normal",
) -> Raw:
    """Run one method from ``(W0, b0, H0)`` (``W0, b0`` unused by the reduced MSE L-BFGS).

    A start that is already stationary (``H = X, W = 0`` on data whose class means coincide,
    or all-zero data) is a saddle or a maximum in general: when a method reports convergence
    after 0 iterations, it is restarted once from the start plus a seeded perturbation. MSE
    results of the first-order methods then pass the second-order check of the reduced
    objective (:func:`second_order_status`).
    """
    # flow counts right-hand-side evaluations but reports once per integration window
    bar = _Progress(verbose, None if method == "flow" else max_iter, f"{method} ({pb.p.loss})")
    try:
        if method == "suffstats":
            return _run_suffstats(pb, W0, b0, max_iter, tol, seed, init, bar)
        raw = _run_first_order(pb, method, W0, b0, H0, max_iter, tol, step, bar)
        if raw.status == "converged" and raw.n_iter == 0:
            rng = np.random.default_rng([seed, 1])
            eps = 1e-3
            W1 = W0 + pb.ops.from_numpy(eps * rng.standard_normal((pb.K, pb.d)), pb.like)
            H1 = H0 + pb.ops.from_numpy(eps * rng.standard_normal((pb.N, pb.d)), pb.like)
            raw = _run_first_order(pb, method, W1, b0, H1, max_iter, tol, step, bar)
        if raw.status == "converged" and pb.p.loss == "mse":
            raw.status = second_order_status(pb, raw.W, raw.b, seed)
        return raw
    finally:
        bar.close()


def _run_first_order(pb, method, W0, b0, H0, max_iter, tol, step, bar) -> Raw:
    if method in ("lbfgs", "lbfgs-h"):
        return _run_lbfgs(pb, W0, b0, H0, max_iter, tol, bar)
    if method == "gd":
        return _run_gd(pb, W0, b0, H0, max_iter, tol, step, bar)
    return _run_flow(pb, W0, b0, H0, max_iter, tol, bar)


def statistics_of(pb: Problem):
    """:class:`ufm.suffstats.SufficientStatistics` of the problem's data (counts only for UFM)."""
    from .suffstats import SufficientStatistics

    st = SufficientStatistics(pb.K)
    if pb.X is None or pb.p.lam == 0:
        st._init(pb.d)
        y = pb.ops.to_numpy(pb.y) if pb.ops is TORCH else np.asarray(pb.y)
        st.counts = np.bincount(y, minlength=pb.K).astype(np.int64)
        return st
    return st.update(pb.X, pb.y)


def second_order_status(pb: Problem, W: Any, b: Any, seed: int) -> str:
    """``"converged"``, or ``"saddle"`` when the reduced MSE objective has negative curvature."""
    from .suffstats import _Reduced

    p = pb.p
    red = _Reduced(statistics_of(pb), p.lam, p.lam_w, p.lam_h, p.lam_b, p.bias)
    Wn = pb.ops.to_numpy(W).astype(np.float64)
    z = Wn.ravel()
    if p.bias:
        z = np.concatenate([z, pb.ops.to_numpy(b).astype(np.float64)])
    lam_min, _ = red.min_curvature(z, seed)
    if lam_min < -1e-7 * max(1.0, abs(red.f(z))):
        return "saddle"
    return "converged"


def _run_suffstats(pb, W0, b0, max_iter, tol, seed, init, bar) -> Raw:
    from .suffstats import solve_statistics

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
    bar.update(sol.n_iter, sol.objective, sol.grad_norm)
    W = pb.ops.from_numpy(sol.W, pb.like)
    b = pb.ops.from_numpy(sol.b, pb.like)
    H = sol.features(pb.X if p.lam != 0 else None, pb.y)
    if pb.ops is TORCH:
        H = H.to(dtype=pb.like.dtype, device=pb.like.device)
    hf = list(sol.history["objective"])
    hg = list(sol.history["grad_norm"])
    raw = Raw(W, b, H, sol.status, sol.n_iter, hf, hg)
    raw.extra = {"n_escapes": sol.n_escapes, "min_eig": sol.min_eig}
    raw.reduced = (sol.objective, sol.grad_norm)
    return raw


def _run_lbfgs(pb, W0, b0, H0, max_iter, tol, bar) -> Raw:
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
        callback=lambda it, f, gn: bar.update(1, f, gn),
    )
    x, status, n_iter, hf, hg = out.x, out.status, out.n_iter, out.history_f, out.history_g
    if reduced:
        H = x.reshape(pb.N, pb.d) * pb.sqrtN
        W, b = pb.ridge(H)
    else:
        W, b, H = pb.unpack(x)
    return Raw(W, b, H, status, n_iter, hf, hg)


def default_step(pb: Problem, W: Any, H: Any) -> float:
    """``1 / L`` with ``L`` a curvature bound at the start (balanced coordinates)."""
    ops = pb.ops
    sw = float(np.linalg.norm(ops.to_numpy(W), 2))
    sh = float(np.linalg.norm(ops.to_numpy(H), 2)) / pb.sqrtN
    p = pb.p
    L = (sw + sh + (1.0 if p.bias else 0.0)) ** 2 + p.lam + p.lam_h + p.lam_w + p.lam_b
    return 1.0 / L


def _run_gd(pb, W0, b0, H0, max_iter, tol, step, bar) -> Raw:
    v = pb.pack(W0, b0, H0)
    if step is None:
        step = default_step(pb, W0, H0)
    else:
        step = check_scalar(step, "step", low=0.0, low_inclusive=False)
    f, g = pb.fg_joint(v)
    gn = math.sqrt(pb.ops.dot(g, g))
    hf, hg = [f], [gn]
    status, it = "max_iter", 0
    while it < max_iter:
        if gn <= tol:
            status = "converged"
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
        bar.update(1, f, gn)
    else:
        if gn <= tol:
            status = "converged"
    W, b, H = pb.unpack(v)
    return Raw(W, b, H, status, it, hf, hg, step=step)


def _run_flow(pb, W0, b0, H0, max_iter, tol, bar) -> Raw:
    ops, like = pb.ops, pb.like
    v0 = ops.to_numpy(pb.pack(W0, b0, H0)).astype(np.float64)
    n_h = pb.N * pb.d
    n_rhs = 0

    def H_of(v: np.ndarray) -> np.ndarray:
        return v[-n_h:].reshape(pb.N, pb.d) * pb.sqrtN

    def rhs(t, v):
        nonlocal n_rhs
        n_rhs += 1
        _, g = pb.fg_joint(ops.from_numpy(v, like))
        return -ops.to_numpy(g).astype(np.float64, copy=False)

    def gnorm(v):
        g = rhs(0.0, v)
        return float(np.sqrt(g @ g))

    # The event stops at half the tolerance so that the located root is safely converged.
    def event(t, v):
        return gnorm(v) - 0.5 * tol

    event.terminal = True
    event.direction = -1

    ts, Hs = [0.0], [H_of(v0)]
    hf = [pb.fg_joint(ops.from_numpy(v0, like))[0]]
    hg = [gnorm(v0)]
    v, t0, width = v0, 0.0, 1.0
    status = "converged" if hg[0] <= tol else "max_iter"
    while status != "converged" and n_rhs < max_iter:
        t1 = t0 + width
        sol = scipy.integrate.solve_ivp(
            rhs,
            (t0, t1),
            v,
            method="LSODA",
            rtol=1e-10,
            atol=1e-12,
            t_eval=np.linspace(t0, t1, 5)[1:],
            events=event,
        )
        if sol.status == -1:
            raise SolverError(f"the ODE integrator failed: {sol.message}")
        # solve_ivp returns lists, not arrays, when no t_eval point was reached
        t_out = np.asarray(sol.t, dtype=np.float64).reshape(-1)
        for k in range(t_out.size):
            ts.append(float(t_out[k]))
            Hs.append(H_of(sol.y[:, k]))
        if sol.status == 1 and len(sol.t_events[0]):
            v = sol.y_events[0][0]
            ts.append(float(sol.t_events[0][0]))
            Hs.append(H_of(v))
        else:
            v = sol.y[:, -1]
        f_now = pb.fg_joint(ops.from_numpy(v, like))[0]
        g_now = gnorm(v)
        hf.append(f_now)
        hg.append(g_now)
        bar.update(1, f_now, g_now)
        if g_now <= tol:
            status = "converged"
        t0, width = t1, 2.0 * width
    W, b, H = pb.unpack(ops.from_numpy(v, like))
    Hs_arr = ops.from_numpy(np.stack(Hs), like)
    return Raw(W, b, H, status, n_rhs, hf, hg, trajectory=(np.asarray(ts), Hs_arr))


def warn_if_not_converged(status: str, method: str, grad_norm: float, tol: float, n_iter: int):
    if status == "converged":
        return
    hint = {
        "max_iter": "raise max_iter, or use method='lbfgs'"
        + (
            " (plain gradient descent converges at a linear rate set by the condition number; "
            "on cross entropy it can need 1e5-1e6 iterations)"
            if method == "gd"
            else ""
        ),
        "saddle": "the point is stationary but has negative curvature (a saddle); use "
        "method='suffstats' (MSE), which checks curvature and escapes saddles, or another seed",
        "stalled": "the arithmetic's precision limit was reached; raise tol (float32: about 1e-4)",
    }.get(status, "check the problem")
    warnings.warn(
        f"method={method!r} stopped with status {status!r} after {n_iter} iterations: gradient "
        f"norm {grad_norm:.3e} > tol={tol:.3e}; {hint}",
        ConvergenceWarning,
        stacklevel=4,
    )


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


def build_result(
    pb: Problem,
    raw: Raw,
    *,
    y_out: Any,
    X_out: Any,
    method: str,
    be: Backend,
    params: dict[str, Any],
    tol: float,
):
    """Evaluate the final point and assemble a :class:`ufm.result.SolveResult`."""
    from .result import SolveResult

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
    status = raw.status
    if status == "converged" and gn > tol * (1 + 1e-3) + 1e-14:
        # The solver's own criterion passed on a slightly different quantity (e.g. the
        # reduced gradient); the final full gradient is the one reported.
        status = "stalled"
    warn_if_not_converged(status, method, gn, tol, raw.n_iter)
    metrics = _metrics(raw.H, y_out, raw.W, raw.b if pb.p.bias else None)
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
        converged=status == "converged",
        n_iter=int(raw.n_iter),
        history=history,
        metrics=metrics,
        method=method,
        backend=be.name,
        params=params,
        trajectory=raw.trajectory,
    )


def _metrics(H: Any, y: Any, W: Any, b: Any) -> dict[str, float]:
    try:
        from .metrics import collapse_metrics
    except ImportError:  # pragma: no cover - the metrics module is part of the package
        return {}
    from .errors import DegenerateInputError

    try:
        return dict(collapse_metrics(H, y, W, b))
    except DegenerateInputError:
        return {}
