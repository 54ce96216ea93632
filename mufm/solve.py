"""Solve the multilayer unconstrained feature model (MUFM): features anchored to data."""

from __future__ import annotations

from typing import Any

import torch

from ufm import _solvers as S
from ufm._core import Problem
from ufm.errors import InputError
from ufm.result import SolveResult
from ufm.threads import thread_policy
from ufm.validate import check_features, check_int, check_labels, describe, is_torch, to_tensor

__all__ = ["solve", "SolveResult", "DEFAULT_LAM"]

DEFAULT_LAM = 0.1


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
    lam_w: float = S.DEFAULT_LAM_W,
    lam_h: float = 0.0,
    lam_b: float = S.DEFAULT_LAM_B,
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
        Integer labels ``0..K-1`` for 2-d ``X``.
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
    method : {None, "suffstats", "lbfgs", "lbfgs-h", "gd", "flow"}
        ``None`` (default): ``"suffstats"`` for MSE, ``"lbfgs"`` for cross entropy.
        ``"suffstats"`` (MSE): one pass builds class counts, per-class sums and the second
        moment of ``X`` (:class:`ufm.suffstats.SufficientStatistics`); trust-region Newton-CG
        on the reduced objective in ``(W, b)`` (cost independent of ``N``) from the ridge fit
        at ``H = X``, a second-order check that escapes saddles, and one more pass for ``H``.
        Data with RMS norm above ``2^10`` are rescaled exactly by a power of two.
        ``"lbfgs-h"`` (the former MSE default; also ``"lbfgs"`` for MSE): ``(W, b)``
        eliminated in closed form and L-BFGS on ``H`` started at ``H = X``; ``"lbfgs"`` for CE:
        joint L-BFGS from ``H = X``, ``W = 0``, ``b = 0``. ``"gd"``: the paper's plain
        fixed-step gradient descent on all variables from a seeded standard-normal
        ``(W, b, H)``. ``"flow"``: gradient flow of the full objective from the same start,
        integrated by an adaptive ODE solver (``result.trajectory``; small problems). The
        first-order methods refuse coefficients above 1e50 or data scales outside
        ``[1e-50, 1e50]`` up front, restart once from a seeded perturbation when their start
        is stationary, and report ``"saddle"`` when an MSE result fails the second-order check.
    backend, device, dtype, max_iter, tol, seed, verbose, step
        As in :func:`ufm.solve` (``tol`` is on the balanced-coordinate gradient norm; default
        1e-8 in float64, 1e-4 in float32).
    init : {"data", "normal"}, optional
        Starting point: ``"data"`` is ``H = X``, ``W = 0``, ``b = 0``; ``"normal"`` a seeded
        standard-normal ``(W, b, H)`` (the paper's). Default: ``"data"`` for ``lbfgs``,
        ``"normal"`` for ``gd`` and ``flow``. The MUFM is non-convex and can have strict local
        minima that are not global (seen with clustered data, where gradient descent from
        ``"normal"`` lands in one for some seeds); ``mufm.certify`` bounds the gap.

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
    Xt, yt, K = prepare_data(X, y)
    N, d = Xt.shape
    be = S.resolve_backend(backend, device, dtype, input_is_torch=is_torch(X), input_dtype=Xt.dtype)
    method = S.resolve_method(method, loss)
    params = S.check_params(
        lam=lam, lam_w=lam_w, lam_h=lam_h, lam_b=lam_b, loss=loss, bias=bias, method=method
    )
    S.check_first_order_scale(method, params, Xt)
    tol_v = S.resolve_tol(tol, be)
    max_iter_v = S.resolve_max_iter(max_iter, method, params.loss)
    seed = check_int(seed, "seed", low=0)
    Xb = be.asarray(Xt)
    y_b = be.labels(yt)
    pb = Problem(be.ops, y_b, K, d, Xb, params, be.like())
    if init is None:
        init = "data" if method in ("suffstats", "lbfgs", "lbfgs-h") else "normal"
    if init == "data":
        W0, b0, H0 = pb.ops.zeros((K, d), pb.like), pb.ops.zeros((K,), pb.like), Xb
    elif init == "normal":
        W0, b0, H0 = S.initial_point(pb, seed, be)
    else:
        raise InputError(f"init must be 'data', 'normal' or None, got {describe(init)}")
    raw = S.run_method(
        pb,
        method,
        W0,
        b0,
        H0,
        max_iter=max_iter_v,
        tol=tol_v,
        verbose=verbose,
        step=step,
        seed=seed,
        init=init,
    )
    opts = {
        "model": "mufm",
        "K": K,
        "N": N,
        "d": d,
        "lam": params.lam,
        "lam_w": params.lam_w,
        "lam_h": params.lam_h,
        "lam_b": params.lam_b,
        "loss": loss,
        "bias": params.bias,
        "method": method,
        "backend": be.name,
        "device": None if be.device is None else str(be.device),
        "dtype": str(be.dtype).replace("torch.", ""),
        "max_iter": max_iter_v,
        "tol": tol_v,
        "seed": seed,
        "init": init,
    }
    if init == "normal":
        opts["init"] = "normal: standard normal (W, b, H) from numpy.random.default_rng(seed)"
    return S.build_result(
        pb, raw, y_out=y_b, X_out=Xb, method=method, be=be, params=opts, tol=tol_v
    )
