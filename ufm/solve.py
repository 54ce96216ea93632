"""Solve the unconstrained feature model (UFM): free features, no data."""

from __future__ import annotations

from typing import Any

from .engine.options import DEFAULT_LAM_B, DEFAULT_LAM_H, DEFAULT_LAM_W, resolve_backend
from .engine.pipeline import solve_problem
from .errors import InputError
from .layernorm import solve_layernorm
from .result import SolveResult, with_classes
from .threads import thread_policy
from .validate import check_int, check_labels, describe, encode_labels, is_torch

__all__ = ["solve", "SolveResult"]


@thread_policy("y", "d")
def solve(
    y: Any,
    *,
    d: int,
    lam_w: float = DEFAULT_LAM_W,
    lam_h: float | None = None,
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
    features: str = "free",
    affine: bool = False,
    lam_affine: float | None = None,
) -> SolveResult:
    """Minimise the UFM objective over ``W``, ``b`` and free features ``H``.

    .. math::

        \\min_{W, b, H}\\ \\frac1N \\sum_{i=1}^N \\Big[\\ell(W h_i + b, y_i)
        + \\frac{\\lambda_H}{2}\\|h_i\\|^2\\Big]
        + \\frac{\\lambda_W}{2}\\|W\\|_F^2 + \\frac{\\lambda_b}{2}\\|b\\|^2

    (MATH.md sec. 5 with ``lam = 0``; PFC paper eq. 2; Zhu et al. 2021). For small penalties its
    global minimisers are collapsed: every ``h_i`` equals its class mean and the centred class
    means form a simplex ETF (PFC1 = PFC2 = 0).

    Parameters
    ----------
    y : array of shape (N,)
        Class labels, any hashable values (integers with gaps, strings, booleans, ...; ``K >= 2``
        distinct ones). They are mapped to ``0..K-1`` in sorted order like scikit-learn's
        ``LabelEncoder`` (order of first appearance when they cannot be compared); the result
        holds the codes in ``result.y`` and the labels in ``result.classes``. Class sizes follow
        from them and may differ (imbalanced UFM). A torch tensor selects the torch backend.
    d : int
        Feature dimension, ``d >= K - 1``.
    lam_w, lam_h, lam_b : float
        Penalties on ``W`` (> 0), ``H`` (> 0: without it the infimum is not attained) and ``b``
        (>= 0; 0 leaves the bias unpenalised, allowed for MSE only). Defaults ``5e-4`` each, the
        weight decay of Zhu et al. (2021). ``lam_h`` (default ``None`` = ``5e-4``) must stay
        unset with ``features="layernorm"``.
    loss : {"mse", "ce"}
        ``"mse"``: :math:`\\tfrac12\\|z - e_y\\|^2`; ``"ce"``: cross entropy.
    bias : bool
        Whether the classifier has a bias (``b`` is returned as zeros otherwise).
    method : {None, "suffstats", "lbfgs", "lbfgs-h", "gd"} or a registered name
        The built-in methods, or any method added to :mod:`ufm.engine.registry` (which declares
        each method's losses, default budget and options, and lists them in error messages).
        ``None`` (default): ``"suffstats"`` for MSE, ``"lbfgs"`` for cross entropy.
        ``"suffstats"`` (MSE): ``H`` eliminated in closed form, trust-region Newton-CG on
        ``(W, b)`` from the class counts (:mod:`ufm.engine.statistics`), then a second-order check
        that escapes saddles. ``"lbfgs"``: MSE with ``(W, b)`` eliminated and L-BFGS on ``H``
        (same as ``"lbfgs-h"``); CE joint L-BFGS on ``(W, b, H)``. ``"gd"``: plain fixed-step
        gradient descent on all variables (the paper's baseline). All start from a seeded
        standard-normal ``(W, b, H)``; a first-order method whose start is already stationary
        is restarted once from a seeded perturbation, and its MSE results pass a second-order
        check (status ``Status.SADDLE`` if it fails). The methods live in
        :mod:`ufm.engine.methods`; the gradient flow is :func:`mufm.gradient_flow`.
    backend : {"numpy", "torch"}, optional
        Default: torch if ``y`` is a tensor or ``device`` is not the CPU, numpy otherwise.
    device : str or torch.device, optional
        ``"cpu"`` or ``"cuda"`` (torch backend). Default: the device of a torch input (a CUDA
        tensor is solved on its GPU), else the CPU.
    max_iter : int, optional
        Iteration budget, in iterations for every method: Newton iterations (``suffstats``,
        default 1,000), quasi-Newton iterations (``lbfgs``, ``lbfgs-h``, default 10,000; a
        line search may evaluate the objective a few times per iteration) or gradient steps
        (``gd``: default 100,000 for MSE, 1,000,000 for cross entropy, whose linear rate needs
        up to ~5e5 iterations on the reference catalogue).
    tol : float, optional
        Tolerance on the gradient norm in balanced coordinates,
        :math:`\\sqrt{\\|\\nabla_W f\\|_F^2 + \\|\\nabla_b f\\|^2 + N\\|\\nabla_H f\\|_F^2}`
        (each ``h_i`` counted with its per-sample scale, so the value does not drift with ``N``).
        Default ``1e-8`` in float64, ``1e-4`` in float32. When ``(lam_w / lam_h)^(1/4)`` is
        outside ``[2^-8, 2^8]`` the exactly equivalent problem ``lam_w / a^2``, ``lam_h a^2``
        (``a`` that power of two, ``result.params["scale"]``) is solved and mapped back
        (``H a``, ``W / a``; scale-equivariance); ``tol`` then applies to it.
    seed : int
        Seed of the standard-normal initialisation.
    verbose : bool
        Show a tqdm progress bar.
    dtype : float32 or float64, optional
        Working precision of the torch backend (default float64); numpy always uses float64.
    features : {"free", "layernorm"}
        ``"free"`` (default): the UFM above. ``"layernorm"``: features constrained to
        LayerNorm's image (each ``h_i`` has mean 0 across coordinates and norm ``sqrt(d)``),
        solved on the manifold by :func:`ufm.layernorm.solve_layernorm` (its docstring and
        ``docs/layernorm_ufm.md`` give the model; ``method="lbfgs"``, numpy only).
    affine, lam_affine : bool, float
        LayerNorm's learnable scale and shift and their weight decay (``features="layernorm"``
        only; see :func:`ufm.layernorm.solve_layernorm`).
    step : float, optional
        Step of ``method="gd"`` in balanced coordinates (an error with any other method);
        default ``1/L`` with ``L`` a curvature bound at the start. Halved (for good) whenever a
        step would increase the objective.

    Returns
    -------
    SolveResult
        With ``X = None``; arrays numpy or torch according to the backend; ``classes`` the
        label of each class (``classes[result.y]`` is the input ``y``).

    Raises
    ------
    InputError
        Bad labels, ``K < 2`` (:class:`~ufm.errors.DegenerateInputError`), ``d < K - 1``, negative
        or non-finite coefficients, ``lam_w = 0`` or ``lam_h = 0``, unknown options, ``step``
        with a method other than ``"gd"``.
    BackendError
        ``device="cuda"`` without a CUDA device.

    Warns
    -----
    RankWarning
        ``d = K - 1``: a simplex ETF still fits (centred), but the bias-free or penalised-bias
        MSE optimum, whose class means want ``K`` dimensions (an orthogonal frame), is
        rank-limited and need not be an ETF.
    ConvergenceWarning
        The method stopped before reaching ``tol`` (see ``result.status``, a
        :class:`~ufm.Status`).

    References
    ----------
    Zhu et al., "A Geometric Analysis of Neural Collapse with Unconstrained Features", NeurIPS
    2021; Wang, Gai, Zhang, "Progressive Feedforward Collapse of ResNet Training".

    Examples
    --------
    >>> import numpy as np
    >>> from ufm import solve
    >>> res = solve(np.repeat(np.arange(4), 5), d=8)
    >>> res.converged, res.metrics["pfc1"] < 1e-8, res.metrics["pfc2"] < 1e-4
    (True, True, True)
    """
    y_codes, classes = encode_labels(y, "y")
    if features != "free":
        if features != "layernorm":
            raise InputError(f"features must be 'free' or 'layernorm', got {describe(features)}")
        if step is not None:
            raise InputError(
                "step applies to method='gd' of the free-feature UFM only; "
                "features='layernorm' chooses its own steps"
            )
        res = solve_layernorm(
            y_codes, d=d, loss=loss, lam_w=lam_w, lam_b=lam_b, lam_h=lam_h, bias=bias, affine=affine,
            lam_affine=lam_affine, method=method, backend=backend, device=device, dtype=dtype,
            max_iter=max_iter, tol=tol, seed=seed, verbose=verbose,
        )  # fmt: skip
        return with_classes(res, classes)
    if affine or lam_affine is not None:
        raise InputError("affine and lam_affine apply to features='layernorm' only")
    lam_h = DEFAULT_LAM_H if lam_h is None else lam_h
    d = check_int(d, "d", low=1)
    be = resolve_backend(
        backend, device, dtype, input_is_torch=is_torch(y), input_device=getattr(y, "device", None)
    )
    yt, K = check_labels(y_codes, int(y_codes.shape[0]))
    if d < K - 1:
        raise InputError(
            f"d={d} < K-1={K - 1}: K class means cannot form a simplex ETF in fewer than K-1 "
            f"dimensions, so the UFM has no collapsed optimum; use d >= {K - 1} (d >= {K} for "
            "the bias-free MSE optimum)"
        )
    res = solve_problem(
        model="ufm", y=yt, K=K, d=d, X=None, be=be, lam=0.0, lam_w=lam_w, lam_h=lam_h,
        lam_b=lam_b, loss=loss, bias=bias, method=method, max_iter=max_iter, tol=tol, seed=seed,
        verbose=verbose, step=step, init=None, stacklevel=4,
    )  # fmt: skip
    return with_classes(res, classes)
