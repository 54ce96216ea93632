"""Options of a solve: defaults, backend resolution and per-method validation.

Everything :func:`ufm.solve` and :func:`mufm.solve` decide before the first iteration lives
here: the default coefficients, tolerances and budgets, the numpy/torch :class:`Backend`, the
coefficient checks (:func:`check_params`), the iteration budget (:func:`resolve_max_iter`) and
the scale guard of the methods that work in unscaled coordinates. What a method is (its losses,
budget and own options) is declared once, in :mod:`ufm.engine.registry`.

``max_iter`` means iterations for every method: Newton iterations (``suffstats``), quasi-Newton
iterations (``lbfgs``, ``lbfgs-h``; each may evaluate the objective a few times in its line
search) and gradient steps (``gd``; a step rejected by the safeguard is not an iteration).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import BackendError, InputError
from ..lazy import is_tensor, torch
from ..losses import check_loss
from ..validate import check_int, check_scalar, describe
from .core import NP, TORCH, Ops, Params
from .registry import Method, methods

__all__ = [
    "DEFAULT_LAM_W",
    "DEFAULT_LAM_H",
    "DEFAULT_LAM_B",
    "Backend",
    "resolve_backend",
    "check_params",
]

DEFAULT_LAM_W = 5e-4
DEFAULT_LAM_H = 5e-4
DEFAULT_LAM_B = 5e-4
#: Default tolerance by working precision (the dtype's name: torch loads on first use).
DEFAULT_TOL = {"float64": 1e-8, "float32": 1e-4}
LBFGS_MEMORY = 5


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
            if is_tensor(a):
                a = a.detach().cpu().numpy()
            return np.asarray(a, dtype=np.float64)
        return torch.as_tensor(a).to(dtype=self.dtype, device=self.device)

    def labels(self, y: torch.Tensor) -> Any:
        if self.name == "numpy":
            return y.cpu().numpy()
        return y.to(self.device)


def resolve_backend(
    backend: str | None,
    device: Any,
    dtype: Any,
    *,
    input_is_torch: bool,
    input_dtype: Any = None,
    input_device: Any = None,
) -> Backend:
    """Pick numpy or torch from the input type or the explicit arguments.

    The torch backend runs on ``device`` when given, else on the device of a torch input
    (``input_device``: a CUDA tensor is solved on its GPU), else on the CPU.

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
        on_input = input_is_torch and input_device is not None
        dev = torch.device(input_device) if on_input else torch.device("cpu")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(
            f"device={device!r} was requested but torch.cuda.is_available() is False "
            "(no CUDA device or no CUDA build of torch); use device='cpu' or backend='numpy'"
        )
    if dev.type not in ("cpu", "cuda"):
        raise BackendError(f"device {str(dev)!r} is not supported; use 'cpu' or 'cuda'")
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
        return DEFAULT_TOL[str(be.dtype).removeprefix("torch.")]
    return check_scalar(tol, "tol", low=0.0, low_inclusive=False)


def resolve_max_iter(max_iter: int | None, method: Method, loss: str = "mse") -> int:
    """``max_iter=None`` picks the method's default budget for ``loss``."""
    if max_iter is None:
        return method.default_max_iter(loss)
    return check_int(max_iter, "max_iter", low=1)


#: Largest classifier penalty (lam_w at unit data scale, lam_b) the solvers accept.
PENALTY_LIMIT = 1e10


def check_params(
    raw: Params, *, method: Method | None = None, scale: float | Callable[[], float] | None = None
) -> Params:
    """Validate coefficients and options; returns :class:`ufm.engine.core.Params`.

    ``raw`` holds the coefficients as the user passed them (unchecked): ``lam``, ``lam_w``,
    ``lam_h``, ``lam_b``, ``loss``, ``bias``; ``method`` (a registered
    :class:`~ufm.engine.registry.Method`), when given, must support the loss.

    ``scale`` is the data's scale (``max |x|``, or a function computing it, called only when a
    penalty exceeds the limit; ``None`` without data). ``X * a`` with ``lam_w * a^2``
    and ``lam_h / a^2`` is the same problem as ``X`` (``H = a H'``, ``W = W' / a``), so the
    penalty limit :data:`PENALTY_LIMIT` applies to ``lam_w / scale^2`` and ``lam_b`` (which does
    not scale), and without data (the UFM) to ``sqrt(lam_w lam_h)`` (the penalty of both at the
    scale where they are equal, where the UFM is solved; the geometric mean is invariant); with
    data, ``lam`` and ``lam_h`` need no limit (the statistics solver rescales them exactly).
    """
    lam = check_scalar(raw.lam, "lam")
    lam_w = check_scalar(raw.lam_w, "lam_w", low=0.0, low_inclusive=False)
    lam_h = check_scalar(raw.lam_h, "lam_h")
    lam_b = check_scalar(raw.lam_b, "lam_b")
    loss, bias = raw.loss, raw.bias
    if callable(scale):
        scale = scale() if lam_w > PENALTY_LIMIT else 1.0  # one pass over X only when needed
    # data below unit scale is not penalised further: the solvers handle it as it is (measured)
    s2 = max(float(scale), 1.0) ** 2 if scale is not None and scale < math.inf else 1.0
    limited = [("lam_w", lam_w, lam_w / s2), ("lam_b", lam_b, lam_b)]
    if scale is None:
        # the UFM is solved at the scale where lam_w and lam_h are equal (ufm.engine.pipeline.
        # problem_scale): both become sqrt(lam_w lam_h), the scale-free penalty that is limited
        g = math.sqrt(lam_w) * math.sqrt(max(lam_h, 0.0))
        limited = [("lam_b", lam_b, lam_b)]
        if g > PENALTY_LIMIT:
            raise InputError(
                f"lam_w={lam_w:g} with lam_h={lam_h:g} is too strong: the UFM depends on them "
                f"through sqrt(lam_w * lam_h) = {g:g} > {PENALTY_LIMIT:g} (lam_w a^2, lam_h / a^2 "
                "is the same problem), where W and H are zero to float64 precision; use smaller "
                "lam_w or lam_h (at that limit the solution is already the zero limit)"
            )
    for name, v, eff in limited:
        if eff > PENALTY_LIMIT:
            # measured: lam_w or lam_b of 1e12-1e16 stall or end at a saddle, 1e300 overflows
            raise InputError(
                f"{name}={v:g} is too strong for data of scale {scale or 1.0:g} (effective "
                f"{eff:g} > {PENALTY_LIMIT:g}): the penalised variables are then zero to "
                "float64 precision and the solvers can no longer resolve the other terms; use "
                f"a smaller {name} (at {PENALTY_LIMIT:g} the solution is already the zero limit)"
            )
    loss = check_loss(loss)
    if not isinstance(bias, bool | np.bool_):
        raise InputError(f"bias must be True or False, got {describe(bias)}")
    if method is not None:
        method.check_loss(loss)
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


#: Methods that work in unscaled coordinates (every method but those that rescale exactly,
#: ``Method.rescales``): beyond these coefficient and data scales their steps overflow or their
#: tolerance is meaningless.
FIRST_ORDER_LIMIT = 1e50


def max_abs(X: Any = None) -> float:
    """``max |x|`` of the data (numpy or torch; 1.0 without data or for all-zero data)."""
    if X is None:
        return 1.0
    Xn = X.detach().cpu().numpy() if is_tensor(X) else np.asarray(X)
    amax = float(np.max(np.abs(Xn))) if Xn.size else 0.0
    return amax if amax > 0 and math.isfinite(amax) else 1.0


def check_first_order_scale(method: Method, params: Params, X: Any = None) -> None:
    """Refuse, before any iteration, problems too badly scaled for a method in unscaled coordinates.

    A method that rescales the problem exactly itself (``method.rescales``: ``"suffstats"``,
    by a power of two) accepts them.

    Raises
    ------
    InputError
        A coefficient above 1e50, or data whose RMS sample norm is outside [1e-50, 1e50].
    """
    if method.rescales:
        return
    exact = " or ".join(
        f"method={m.name!r} ({', '.join(m.losses)}; exact internal rescaling)"
        for m in methods()
        if m.rescales
    )
    for name in ("lam", "lam_w", "lam_h", "lam_b"):
        v = getattr(params, name)
        if v > FIRST_ORDER_LIMIT:
            raise InputError(
                f"{name}={v:g} > {FIRST_ORDER_LIMIT:g}: method={method.name!r} works in unscaled "
                f"coordinates and would overflow or crawl at this scale; use {exact} or rescale "
                "the problem"
            )
    if X is not None:
        amax = max_abs(X)
        if not (1.0 / FIRST_ORDER_LIMIT <= amax <= FIRST_ORDER_LIMIT):
            raise InputError(
                f"X has scale max|x| = {amax:.3g}, outside [1e-50, 1e50]: method={method.name!r} "
                "works in unscaled coordinates and its tolerance is meaningless at this scale; "
                f"use {exact} or rescale X and the coefficients (X * a with lam / a^2, "
                "lam_w * a^2 is the same problem)"
            )
