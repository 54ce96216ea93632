"""The gradient flow of the reduced MSE loss started at the data (PFC paper eq. 21).

The toolkit's one gradient-flow API: a trajectory over a time horizon ``[0, t_max]`` with the
integrator's ``rtol`` (the flow has no minimiser, so it is not a method of :func:`mufm.solve`,
whose methods stop at a gradient tolerance ``tol`` within ``max_iter`` iterations).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.integrate
import torch

from ufm.engine.core import NP, Params, Problem
from ufm.engine.options import DEFAULT_LAM_B, DEFAULT_LAM_W, check_params
from ufm.errors import InputError, SolverError
from ufm.validate import check_int, check_scalar, check_seed, is_torch

from .solve import prepare_data

__all__ = [
    "FlowResult",
    "gradient_flow",
    "MAX_RTOL",
]

#: Most output times of :func:`gradient_flow` (``n_eval=1e8`` ran out of memory).
MAX_EVAL = 100_000
#: Most float64 values the trajectory (``Hs``, ``Ws``, ``bs``) may hold: 2**27 (1 GiB).
MAX_TRAJECTORY = 2**27
#: Loosest integrator tolerance: at ``rtol=1e-3`` the objective already rose by 2e-2
#: (relative) on ``t_max=1000``; at 1e-6 no rise was seen up to ``t_max=1e8``.
MAX_RTOL = 1e-6
MIN_RTOL = 1e-13
#: A rise of the objective between output times above ``RISE_TOL * F(0)`` is refused.
RISE_TOL = 1e-7


@dataclass(frozen=True, repr=False)
class FlowResult:
    """Trajectory of :func:`gradient_flow`.

    Attributes
    ----------
    ts : numpy.ndarray of shape (T,)
        Times ``0 = t_0 < ... < t_max``.
    Hs : array of shape (T, N, d)
        Features ``H(t)`` (numpy, or a float64 CPU tensor when ``X`` was a tensor).
    Ws, bs : arrays of shape (T, K, d) and (T, K)
        The optimal classifier ``(W, b)(H(t))`` at each time.
    objective : numpy.ndarray of shape (T,)
        ``F(H(t))``, non-increasing along the flow.
    tr_sigma_w, tr_sigma_b : numpy.ndarray of shape (T,)
        :math:`\\operatorname{tr}\\Sigma_W` and :math:`\\operatorname{tr}\\Sigma_B` of ``H(t)``
        (MATH.md sec. 2).
    y : numpy.ndarray of shape (N,)
        Labels.
    n_rhs : int
        Right-hand-side evaluations used.
    params : dict
        Options used.
    """

    ts: np.ndarray
    Hs: Any
    Ws: Any
    bs: Any
    objective: np.ndarray
    tr_sigma_w: np.ndarray
    tr_sigma_b: np.ndarray
    y: np.ndarray
    n_rhs: int
    params: dict[str, Any] = field(default_factory=dict)

    def __repr__(self) -> str:
        T, N, d = tuple(self.Hs.shape)
        return (
            f"FlowResult(T={T}, N={N}, d={d}, t_max={self.ts[-1]:g}, "
            f"tr_sigma_w: {self.tr_sigma_w[0]:.4g} -> {self.tr_sigma_w[-1]:.4g}, "
            f"tr_sigma_b: {self.tr_sigma_b[0]:.4g} -> {self.tr_sigma_b[-1]:.4g})"
        )


def _traces(H: np.ndarray, y: np.ndarray, K: int) -> tuple[float, float]:
    counts = np.bincount(y, minlength=K).astype(np.float64)
    sums = np.zeros((K, H.shape[1]))
    np.add.at(sums, y, H)
    mu = sums / counts[:, None]
    within = float(((H - mu[y]) ** 2).sum()) / H.shape[0]
    mu_c = mu - mu.mean(0)
    between = float((mu_c**2).sum()) / K
    return within, between


def gradient_flow(
    X: Any,
    y: Any = None,
    *,
    lam_w: float = DEFAULT_LAM_W,
    lam_b: float = DEFAULT_LAM_B,
    bias: bool = True,
    t_max: float = 10.0,
    n_eval: int = 101,
    rtol: float = 1e-8,
    seed: int = 0,
) -> FlowResult:
    """Integrate the gradient flow of the reduced MSE loss from ``H(0) = X`` (PFC eq. 21).

    .. math::

        \\frac{dH}{dt} = -N\\,\\nabla_H F(H), \\qquad H(0) = X, \\qquad
        F(H) = \\min_{W, b}\\ \\frac1{2N}\\|H W^\\top + \\mathbf 1 b^\\top - Y\\|_F^2
        + \\frac{\\lambda_W}{2}\\|W\\|_F^2 + \\frac{\\lambda_b}{2}\\|b\\|^2 ,

    i.e. :math:`\\dot h_i = W^\\top(e_{y_i} - W h_i - b)` with ``(W, b)`` the ridge solution
    for ``H`` (envelope theorem). Time is per sample (the factor ``N``): then the MUFM
    minimiser with ``lam_h = 0`` satisfies ``H* = X - (1/lam) N grad F(H*)``, one implicit
    Euler step of this flow with step ``1/lam`` (MATH.md sec. 5). Along the flow
    :math:`\\operatorname{tr}\\Sigma_W` decreases and :math:`\\operatorname{tr}\\Sigma_B`
    increases (Theorem 4; Tirer et al. 2023). ``F`` has no minimiser (``H`` may grow while ``W``
    shrinks), so the flow is integrated on ``[0, t_max]``.

    Parameters
    ----------
    X : array of shape (K, n, d) or (N, d)
        Data, as in :func:`mufm.solve`.
    y : array of shape (N,), optional
        Labels for 2-d ``X``.
    lam_w, lam_b : float
        Ridge penalties (``lam_w > 0``; ``lam_b = 0`` leaves the bias unpenalised).
    bias : bool
        Whether the classifier has a bias.
    t_max : float
        End time (> 0, at most 1e8: the flow has long settled by then).
    n_eval : int
        Number of equally spaced output times in ``[0, t_max]``: ``2 <= n_eval <= MAX_EVAL``
        (100,000), and the trajectory at most ``MAX_TRAJECTORY`` float64 values.
    rtol : float
        Relative tolerance of the integrator (DOP853), in ``[1e-13, 1e-6]``;
        ``atol = 1e-3 * rtol``. Looser tolerances let the objective rise.
    seed : int
        Unused (the flow is deterministic); accepted for a uniform signature.

    Returns
    -------
    FlowResult

    Raises
    ------
    InputError
        Bad data, labels, coefficients or options (``n_eval``, ``rtol``, ``t_max`` out of range).
    SolverError
        The integrator failed, or the computed objective rose between output times (by more
        than ``1e-7 F(0)``): the exact flow decreases it, so the trajectory is not trusted.

    References
    ----------
    Wang, Gai, Zhang, "Progressive Feedforward Collapse of ResNet Training", eq. 21 and
    Theorem 4; Tirer, Huang, Niles-Weed, "Perturbation analysis of neural collapse", ICML 2023.
    """
    Xt, yt, K = prepare_data(X, y)
    params = check_params(Params(0.0, lam_w, 1.0, lam_b, "mse", bias))
    params = Params(0.0, params.lam_w, 0.0, params.lam_b, "mse", params.bias)
    # the flow settles on the time scale 1 / (smallest curvature); beyond 1e8 an adaptive
    # integrator only grinds through the stationary tail (t_max=1e300 ran for minutes)
    t_max = check_scalar(t_max, "t_max", low=0.0, low_inclusive=False, high=1e8)
    n_eval = check_int(n_eval, "n_eval", low=2)
    if n_eval > MAX_EVAL:
        raise InputError(
            f"n_eval must be <= {MAX_EVAL:,}, got {n_eval:,}; the trajectory keeps n_eval "
            "copies of H (use fewer output times, e.g. n_eval=1001)"
        )
    # a loose tolerance lets the integrator's error make F rise (rtol=1.0 did), and F must
    # decrease along the flow: tolerances above MAX_RTOL are refused, and a rise is detected
    rtol = check_scalar(rtol, "rtol", low=0.0, low_inclusive=False, high=MAX_RTOL)
    if rtol < MIN_RTOL:
        raise InputError(
            f"rtol must be >= {MIN_RTOL:g} (float64 round-off; smaller stalls the integrator), "
            f"got {rtol:g}"
        )
    check_seed(seed)
    Xn = Xt.detach().cpu().numpy().astype(np.float64)
    yn = yt.cpu().numpy()
    N, d = Xn.shape
    if n_eval * (N * d + K * d + K) > MAX_TRAJECTORY:
        raise InputError(
            f"n_eval={n_eval:,} output times of H ({N} x {d}) would hold "
            f"{n_eval * (N * d + K * d + K):,} float64 values (limit {MAX_TRAJECTORY:,}, 1 GiB); "
            f"use n_eval <= {max(2, MAX_TRAJECTORY // (N * d + K * d + K)):,}"
        )
    pb = Problem(NP, yn, K, d, None, params, Xn)
    n_rhs = 0

    def rhs(t: float, v: np.ndarray) -> np.ndarray:
        nonlocal n_rhs
        n_rhs += 1
        _, gH, _, _ = pb.reduced(v.reshape(N, d))
        return (-N * gH).reshape(-1)

    ts = np.linspace(0.0, t_max, n_eval)
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            sol = scipy.integrate.solve_ivp(
                rhs,
                (0.0, t_max),
                Xn.reshape(-1),
                method="DOP853",
                t_eval=ts,
                rtol=rtol,
                atol=1e-3 * rtol,
            )
    except (ValueError, FloatingPointError, np.linalg.LinAlgError) as exc:
        # data near float64's limit (|X| ~ 1e300) overflow in the ridge solve of the flow
        raise SolverError(
            f"the gradient flow could not be integrated ({exc}); max |X| = "
            f"{float(np.abs(Xn).max()):.3g}: rescale the data (the flow of X / s is that of X "
            "with time and penalties rescaled) or check it"
        ) from exc
    if sol.status != 0:
        raise SolverError(f"the ODE integrator failed: {sol.message}")
    Hs = sol.y.T.reshape(len(ts), N, d)
    Ws, bs, objs, tw, tb = [], [], [], [], []
    for H in Hs:
        f, _, W, b = pb.reduced(H, need_grad=False)
        Ws.append(W)
        bs.append(b)
        objs.append(f)
        w_, b_ = _traces(H, yn, K)
        tw.append(w_)
        tb.append(b_)
    if not all(math.isfinite(f) for f in objs):
        raise SolverError("the gradient flow produced non-finite values")
    rise = float(np.max(np.diff(objs))) if len(objs) > 1 else 0.0
    if rise > RISE_TOL * abs(objs[0]):
        raise SolverError(
            f"the objective rose by {rise:.3g} along the computed trajectory (rtol={rtol:g}), "
            "but it decreases along the exact gradient flow: the integrator's error dominates; "
            "pass a smaller rtol (the default 1e-8) or a smaller t_max"
        )
    Hs_out: Any = Hs
    Ws_out: Any = np.stack(Ws)
    bs_out: Any = np.stack(bs)
    if is_torch(X):
        Hs_out, Ws_out, bs_out = (torch.from_numpy(a) for a in (Hs, Ws_out, bs_out))
    return FlowResult(
        ts=sol.t,
        Hs=Hs_out,
        Ws=Ws_out,
        bs=bs_out,
        objective=np.asarray(objs),
        tr_sigma_w=np.asarray(tw),
        tr_sigma_b=np.asarray(tb),
        y=yn,
        n_rhs=n_rhs,
        params={
            "lam_w": params.lam_w,
            "lam_b": params.lam_b,
            "bias": params.bias,
            "t_max": t_max,
            "n_eval": n_eval,
            "rtol": rtol,
            "integrator": "DOP853",
        },
    )
