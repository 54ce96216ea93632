"""Solve the multilayer unconstrained feature model (MUFM): features anchored to data."""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch

from ufm.engine.options import DEFAULT_LAM_B, DEFAULT_LAM_W, resolve_backend
from ufm.engine.pipeline import solve_problem
from ufm.errors import InputError, ScaleWarning
from ufm.result import SolveResult, with_classes
from ufm.threads import thread_policy
from ufm.validate import (
    check_features,
    check_labels,
    check_scalar,
    describe,
    encode_labels,
    is_torch,
    to_tensor,
)

__all__ = [
    "solve",
    "SolveResult",
    "DEFAULT_LAM",
    "data_scale",
]

DEFAULT_LAM = 0.1
#: Values of ``solve(..., scale=)``: coefficients as given, or relative to the data's RMS row norm.
SCALES = ("none", "rms")
#: ``scale="none"`` warns (:class:`ufm.errors.ScaleWarning`) when the data's squared RMS row norm
#: is outside ``[1 / SCALE_WARN_RATIO, SCALE_WARN_RATIO]``: the coefficients then act like
#: coefficients 1000 times larger or smaller on unit-scale data.
SCALE_WARN_RATIO = 1e3


def data_scale(X: Any) -> float:
    r"""The RMS row norm :math:`s = \|X\|_F / \sqrt N` of data ``X`` of shape (N, d).

    Computed after dividing by ``max |X|`` so that it neither overflows nor underflows; 1.0 for
    all-zero or empty data.
    """
    Xt = to_tensor(X, "X").detach().to(dtype=torch.float64)
    if Xt.numel() == 0:
        return 1.0
    m = float(Xt.abs().max())
    if m == 0.0 or not math.isfinite(m):
        return 1.0
    N = Xt.shape[0] if Xt.ndim == 2 else Xt.shape[0] * Xt.shape[1]
    return m * float(torch.linalg.norm(Xt / m)) / float(N) ** 0.5


def prepare_data(X: Any, y: Any) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Validate ``X`` (``(K, n, d)`` balanced, or ``(N, d)`` with ``y``); return (X, y, K).

    Raises
    ------
    InputError
        Wrong number of dimensions, non-finite values, ``y`` missing for ``(N, d)`` data or
        given for ``(K, n, d)`` data, label mismatch, ``K < 2``.
    """
    Xt = to_tensor(X, "X")
    if Xt.ndim == 3:
        if y is not None:
            raise InputError(
                f"X has shape {tuple(Xt.shape)} = (K, n, d), whose labels are implied "
                "(y = repeat(arange(K), n)); pass y only with X of shape (N, d)"
            )
        Xt = check_features(Xt, "X", ndim=3)
        K, n, d = Xt.shape
        yt = torch.arange(K).repeat_interleave(n)
        yt, K = check_labels(yt, K * n)
        return Xt.reshape(K * n, d), yt, K
    if Xt.ndim == 2:
        if y is None:
            raise InputError(
                f"X has shape {tuple(Xt.shape)} = (N, d) but no labels were given; pass "
                "solve(X, y, ...) or a balanced X of shape (K, n, d)"
            )
        Xt = check_features(Xt, "X", ndim=2)
        y0 = to_tensor(y, "y")
        if y0.ndim != 1:
            raise InputError(f"y must be a 1-d array of integer labels, got {describe(y)}")
        yt, K = check_labels(y0, int(Xt.shape[0]))
        return Xt, yt, K
    raise InputError(
        f"X must have shape (K, n, d) (balanced, labels implied) or (N, d) with y, got "
        f"{describe(X)}"
    )


@thread_policy("X")
def solve(
    X: Any,
    y: Any = None,
    *,
    lam: float = DEFAULT_LAM,
    lam_w: float = DEFAULT_LAM_W,
    lam_h: float = 0.0,
    lam_b: float = DEFAULT_LAM_B,
    loss: str = "mse",
    bias: bool = True,
    method: str | None = None,
    backend: str | None = None,
    device: Any = None,
    max_iter: int | None = None,
    tol: float | None = None,
    seed: int = 0,
    verbose: bool = False,
    dtype: Any = None,
    step: float | None = None,
    init: str | None = None,
    scale: str = "none",
) -> SolveResult:
    """Minimise the MUFM objective: features tied to the data by a transport cost.

    .. math::

        \\min_{W, b, H}\\ \\frac1N \\sum_{i=1}^N \\Big[\\ell(W h_i + b, y_i)
        + \\frac{\\lambda_H}{2}\\|h_i\\|^2 + \\frac{\\lambda}{2}\\|h_i - x_i\\|^2\\Big]
        + \\frac{\\lambda_W}{2}\\|W\\|_F^2 + \\frac{\\lambda_b}{2}\\|b\\|^2

    (MATH.md sec. 5; PFC paper eq. 12-13). By Theorem 3 this equals the ``L``-layer problem
    with the kinetic transport cost for every ``L``; the intermediate layers are
    ``result.layers(L)``.

    Parameters
    ----------
    X : array of shape (K, n, d) or (N, d)
        Data. ``(K, n, d)``: balanced, labels implied (``y = repeat(arange(K), n)``);
        ``(N, d)``: labels in ``y``. A torch tensor selects the torch backend (and its float
        dtype).
    y : array of shape (N,), optional
        Class labels for 2-d ``X``: any hashable values (integers with gaps, strings, ...),
        mapped to ``0..K-1`` as by :func:`ufm.validate.encode_labels`; ``result.y`` holds the
        codes and ``result.classes`` the label of each class.
    lam : float
        Transport coefficient :math:`\\lambda > 0` (per sample, independent of ``L``); default 0.1.
    lam_w, lam_b : float
        Penalties on ``W`` (> 0) and ``b`` (>= 0; 0 = unpenalised bias, MSE only); default 5e-4.
    lam_h : float
        Penalty on ``H``; default 0 as in the paper.
    loss : {"mse", "ce"}
        Loss (the paper's experiments use MSE).
    bias : bool
        Whether the classifier has a bias.
    method : {None, "suffstats", "lbfgs", "lbfgs-h", "gd"} or a registered name
        The built-in methods, or any method added to :mod:`ufm.engine.registry` (which declares
        each method's losses, default budget and options, and lists them in error messages).
        ``None`` (default): ``"suffstats"`` for MSE, ``"lbfgs"`` for cross entropy.
        ``"suffstats"`` (MSE): one pass builds class counts, per-class sums and the second
        moment of ``X`` (:class:`ufm.suffstats.SufficientStatistics`); trust-region Newton-CG
        on the reduced objective in ``(W, b)`` (cost independent of ``N``) from the ridge fit
        at ``H = X``, a second-order check that escapes saddles, and one more pass for ``H``.
        Every method solves the exactly equivalent problem ``X / a``, ``lam a^2``,
        ``lam_h a^2``, ``lam_w / a^2`` at the problem's natural scale ``a`` (a power of two,
        see :func:`ufm.engine.pipeline.problem_scale`; ``result.params["scale"]``) and maps
        the solution back (``H a``, ``W / a``), so ``solve(X c, lam / c^2, lam_w c^2)`` gives
        the rescaled solution of ``solve(X)`` for every ``c``; ``grad_norm`` and ``tol`` refer
        to the rescaled problem.
        ``"lbfgs-h"`` (also ``"lbfgs"`` for MSE): ``(W, b)`` eliminated in closed form and
        L-BFGS on ``H`` started at ``H = X``; ``"lbfgs"`` for CE: joint L-BFGS from ``H = X``,
        ``W = 0``, ``b = 0``. ``"gd"``: the paper's plain fixed-step gradient descent on all
        variables from a seeded standard-normal ``(W, b, H)``. The first-order methods refuse
        coefficients above 1e50 or data scales outside ``[1e-50, 1e50]`` *after* the rescaling
        described above (so only problems extreme in their scale-free combinations) up
        front, restart once
        from a seeded perturbation when their start is stationary, and report ``"saddle"`` when
        an MSE result fails the second-order check. The trajectory of the gradient flow is
        :func:`mufm.gradient_flow`.
    backend, device, dtype, max_iter, tol, seed, verbose, step
        As in :func:`ufm.solve` (``tol`` is on the balanced-coordinate gradient norm; default
        1e-8 in float64, 1e-4 in float32; ``max_iter`` counts iterations of every method;
        ``step`` is for ``method="gd"`` only).
    init : {"data", "normal"}, optional
        Starting point: ``"data"`` is ``H = X``, ``W = 0``, ``b = 0``; ``"normal"`` a seeded
        standard-normal ``(W, b, H)`` (the paper's). Default: ``"data"`` for ``suffstats``,
        ``lbfgs`` and ``lbfgs-h``, ``"normal"`` for ``gd``. The MUFM is non-convex and can have strict local
        minima that are not global (seen with clustered data, where gradient descent from
        ``"normal"`` lands in one for some seeds); ``mufm.certify`` bounds the gap.

    scale : {"none", "rms"}
        What ``lam``, ``lam_w`` and ``lam_h`` are relative to. ``"none"`` (default): the data as
        given; the effect of a coefficient then depends on the data's scale ``s``, the RMS row
        norm (:func:`data_scale`): the problem on ``X`` equals the problem on ``X / s`` with
        ``lam s^2``, ``lam_h s^2`` and ``lam_w / s^2``, so on raw pixels (``s`` = 62 for the
        digits 0..16) ``lam=0.1`` acts like ``lam=384`` on unit-scale data and ``H`` barely moves
        from ``X``. A :class:`ufm.errors.ScaleWarning` says so, with ``s`` and the coefficients
        to pass, when ``s^2`` is outside ``[1e-3, 1e3]``. ``"rms"``: the coefficients mean what
        they mean on data of RMS row norm 1, whatever the data's scale: the solver gets
        ``lam / s^2``, ``lam_h / s^2`` and ``lam_w s^2`` (``lam_b`` unchanged), whose solution is
        exactly ``s`` times the solution on ``X / s`` (``H = s H'``, ``W = W' / s``, same ``b``
        and logits); ``result`` reports the coefficients applied.

    Returns
    -------
    SolveResult
        ``H`` and ``X`` of shape (N, d) (a 3-d ``X`` is flattened class by class), ``y`` the
        (implied) labels; ``result.layers(L)`` gives the Theorem 3 layers.

    Raises
    ------
    InputError
        Wrong shapes, non-finite ``X``, label mismatch, ``K < 2``, negative or non-finite
        coefficients, ``lam + lam_h = 0``, ``lam_w = 0``, unknown options.
    BackendError
        ``device="cuda"`` without a CUDA device.

    Warns
    -----
    ConvergenceWarning
        The method stopped before reaching ``tol`` (see ``result.status``).
    ScaleWarning
        ``scale="none"`` and the data's scale makes the coefficients act 1000 times stronger or
        weaker than on unit-scale data (see ``scale``).

    References
    ----------
    Wang, Gai, Zhang, "Progressive Feedforward Collapse of ResNet Training", Sec. III-IV.

    Examples
    --------
    >>> import numpy as np
    >>> from mufm import solve
    >>> X = np.random.default_rng(0).standard_normal((3, 4, 5))
    >>> res = solve(X, lam=0.1)
    >>> res.converged, res.H.shape, len(res.layers(4))
    (True, (12, 5), 5)
    """
    codes, classes = y, None
    if y is not None and (X.ndim if is_torch(X) else np.ndim(X)) == 2:  # (K, n, d) implies them
        codes, classes = encode_labels(y, "y")
    Xt, yt, K = prepare_data(X, codes)
    classes = np.arange(K) if classes is None else classes
    d = int(Xt.shape[1])
    lam, lam_w, lam_h = _scaled_coefficients(Xt, scale, lam, lam_w, lam_h)
    be = resolve_backend(
        backend, device, dtype, input_is_torch=is_torch(X), input_dtype=Xt.dtype,
        input_device=Xt.device,
    )  # fmt: skip
    res = solve_problem(
        model="mufm", y=yt, K=K, d=d, X=Xt, be=be, lam=lam, lam_w=lam_w, lam_h=lam_h,
        lam_b=lam_b, loss=loss, bias=bias, method=method, max_iter=max_iter, tol=tol, seed=seed,
        verbose=verbose, step=step, init=init, stacklevel=4,
    )  # fmt: skip
    return with_classes(res, classes)


def _scaled_coefficients(
    Xt: torch.Tensor, scale: Any, lam: Any, lam_w: Any, lam_h: Any
) -> tuple[Any, Any, Any]:
    """The coefficients for the solver under ``scale`` (a warning for ``"none"`` at odd scales).

    Values that are not finite non-negative scalars pass through unchanged, for the solver's
    own checks to report.
    """
    if not isinstance(scale, str) or scale not in SCALES:
        raise InputError(
            f"scale must be one of {SCALES} ('none': coefficients as given; 'rms': relative to "
            f"the data's RMS row norm), got {describe(scale)}"
        )
    try:
        vals = [check_scalar(v, n) for v, n in ((lam, "lam"), (lam_w, "lam_w"), (lam_h, "lam_h"))]
    except InputError:
        return lam, lam_w, lam_h
    s = data_scale(Xt)
    # log10 of s^2: s^2 itself under- or overflows for data near the float range's ends
    e2 = 2.0 * math.log10(s)
    if scale == "rms":
        out = (_times(vals[0], -e2), _times(vals[1], e2), _times(vals[2], -e2))
        if not all(
            math.isfinite(v) and (v > 0) == (v0 > 0) for v, v0 in zip(out, vals, strict=True)
        ):
            raise InputError(
                f"scale='rms' cannot rescale the coefficients for data whose RMS row norm is "
                f"{s:.3g} (lam, lam_w, lam_h would become {out[0]:g}, {out[1]:g}, {out[2]:g}); "
                "divide X by a constant near that norm first (the solution scales with it)"
            )
        return out
    if abs(e2) > math.log10(SCALE_WARN_RATIO) and vals[0] > 0:
        warnings.warn(
            f"the data's RMS row norm is {s:.3g}: lam={vals[0]:g} acts like "
            f"lam={_sci(vals[0], e2)} on unit-scale data (lam_w={vals[1]:g} like "
            f"{_sci(vals[1], -e2)}), so H {'barely moves from X' if e2 > 0 else 'is barely tied to X'}; "
            f"pass scale='rms' to make the coefficients relative to the data's scale, or "
            f"lam={_sci(vals[0], -e2)}, lam_w={_sci(vals[1], e2)} for their unit-scale meaning",
            ScaleWarning,
            stacklevel=4,
        )
    return lam, lam_w, lam_h


def _times(v: float, e: float) -> float:
    """``v * 10**e`` without overflow in the intermediate power (inf or 0 when the result is)."""
    if v == 0.0:
        return 0.0
    try:
        return math.copysign(10.0 ** (math.log10(abs(v)) + e), v)
    except OverflowError:
        return math.copysign(math.inf, v)


def _sci(v: float, e: float) -> str:
    """``v * 10**e`` as text, also beyond the float range (``1.6e-420``)."""
    if v == 0.0:
        return "0"
    x = math.log10(abs(v)) + e
    if -300.0 < x < 300.0:
        return f"{math.copysign(10.0**x, v):.3g}"
    k = math.floor(x)
    m = 10.0 ** (x - k)
    if m >= 9.995:  # rounding to 3 digits carries into the exponent
        m, k = m / 10.0, k + 1
    return f"{'-' if v < 0 else ''}{m:.3g}e{k:+d}"
