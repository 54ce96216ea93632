"""The deep UFM's solver: :func:`solve_deep` and its result :class:`DeepSolveResult`."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..engine.core import TORCH
from ..engine.lbfgs import lbfgs
from ..engine.options import DEFAULT_LAM_H, DEFAULT_LAM_W, LBFGS_MEMORY, PENALTY_LIMIT
from ..errors import (
    BackendError,
    ConvergenceWarning,
    DegenerateInputError,
    InputError,
    SolverError,
)
from ..metrics import collapse_metrics
from ..status import Status
from ..validate import check_int, check_scalar, describe, encode_labels
from .model import (
    ACTIVATIONS,
    LOSSES,
    check_choice,
    check_per_layer,
    check_widths,
    deep_linear_optimum,
    forward,
    objective_tensor,
)

__all__ = [
    "INITS",
    "DeepSolveResult",
    "solve_deep",
]

#: Starting points of :func:`solve_deep`.
INITS = ("balanced", "random")
DEFAULT_MAX_ITER = 20_000


@dataclass(frozen=True, repr=False, eq=False)
class DeepSolveResult:
    """Solution of a deep UFM (:func:`solve_deep`); arrays are numpy float64.

    Attributes
    ----------
    W : tuple of L arrays
        ``W[l-1]`` is layer ``l``'s matrix, shape ``(d_l, d_{l-1})`` with ``d_L = K``.
    H : array of shape (N, d_0)
        The free features.
    features : tuple of L arrays
        ``features[0] = H`` and ``features[l] = sigma(features[l-1] @ W[l-1].T)``: the input of
        layer ``l + 1`` (``features[L-1]`` feeds the classifier ``W[L-1]``).
    logits : array of shape (N, K)
        ``features[L-1] @ W[L-1].T``.
    y : array of shape (N,)
        Labels ``0..K-1``; ``classes[y]`` are the caller's labels.
    classes : numpy.ndarray of shape (K,)
        The caller's label of each class.
    objective, grad_norm : float
        Objective at the solution; gradient norm in balanced coordinates
        :math:`\\sqrt{\\sum_l \\|\\nabla_{W_l} f\\|^2 + N \\|\\nabla_H f\\|^2}`.
    status : Status
        ``CONVERGED``, ``MAX_ITER`` or ``STALLED``; ``converged`` is ``status == CONVERGED``.
    n_iter : int
        L-BFGS iterations of the best start.
    history : dict of str to numpy.ndarray
        ``"objective"`` and ``"grad_norm"`` per iteration of the best start.
    metrics : tuple of L dicts
        :func:`ufm.metrics.collapse_metrics` of each ``features[l]`` (the last one with the
        classifier ``W[L-1]``); an empty dict where they are undefined (all-zero features).
    objectives : tuple of float
        Final objective of every start (the best is ``objective``).
    params : dict
        Every option used.
    """

    W: tuple[np.ndarray, ...]
    H: np.ndarray
    features: tuple[np.ndarray, ...]
    logits: np.ndarray
    y: np.ndarray
    classes: np.ndarray
    objective: float
    grad_norm: float
    status: Status
    converged: bool
    n_iter: int
    history: dict[str, np.ndarray]
    metrics: tuple[dict[str, float], ...]
    objectives: tuple[float, ...]
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def L(self) -> int:
        """Number of layers."""
        return len(self.W)

    @property
    def K(self) -> int:
        """Number of classes."""
        return int(self.W[-1].shape[0])

    @property
    def N(self) -> int:
        """Number of samples."""
        return int(self.H.shape[0])

    def __repr__(self) -> str:
        p = self.params
        return (
            f"DeepSolveResult(L={self.L}, K={self.K}, N={self.N}, widths={p.get('widths')}, "
            f"activation={p.get('activation')!r}, loss={p.get('loss')!r}, "
            f"objective={self.objective:.12g}, grad_norm={self.grad_norm:.2e}, "
            f"status={self.status!r}, n_iter={self.n_iter})"
        )


# ------------------------------------------------------------------------------------------------
# solve
# ------------------------------------------------------------------------------------------------
def solve_deep(
    y: Any,
    *,
    L: int,
    d: int | Sequence[int],
    lam_w: float | Sequence[float] = DEFAULT_LAM_W,
    lam_h: float = DEFAULT_LAM_H,
    loss: str = "mse",
    activation: str = "linear",
    starts: int = 1,
    init: str = "balanced",
    max_iter: int | None = None,
    tol: float = 1e-8,
    seed: int = 0,
    device: Any = None,
    verbose: bool = False,
) -> DeepSolveResult:
    """Minimise the deep UFM objective over ``W_1, ..., W_L`` and free features ``H``.

    .. math::

        \\min_{W_1, \\dots, W_L, H}\\ \\frac1N \\sum_{i=1}^N \\Big[\\ell\\big(W_L\\,
        \\sigma(W_{L-1} \\cdots \\sigma(W_1 h_i)), y_i\\big) + \\frac{\\lambda_H}{2}\\|h_i\\|^2\\Big]
        + \\sum_{l=1}^L \\frac{\\lambda_l}{2}\\|W_l\\|_F^2

    (no bias, as in the papers below; ``L = 1`` is ``ufm.solve(..., bias=False)``). Solved by
    the engine's L-BFGS (:func:`ufm.engine.lbfgs.lbfgs`) in float64 on balanced coordinates
    ``(W_1, ..., W_L, H / sqrt(N))`` with torch autograd gradients. The problem is non-convex
    for ``L >= 2`` (the origin is a local minimum): each start draws ``H`` standard normal and
    ``W_l`` normal with variance ``1 / d_{l-1}`` (variance-preserving), and the best of
    ``starts`` starts is returned. No second-order check: a saddle can be reported as converged.

    Parameters
    ----------
    y : array of shape (N,)
        Class labels, any hashable values (mapped to ``0..K-1`` as in :func:`ufm.solve`);
        classes may be imbalanced.
    L : int
        Number of layers (weight matrices), ``>= 1``.
    d : int or sequence of L ints
        ``d_0`` (the free features' dimension) and the hidden widths ``d_1..d_{L-1}``; one int
        for all. The known optima need every width ``>= K``.
    lam_w : float or sequence of L floats
        Weight decay of each layer (> 0, at most ``1e10``); default ``5e-4``.
    lam_h : float
        Feature penalty (> 0, at most ``1e10``); default ``5e-4``.
    loss : {"mse", "ce"}
        ``"mse"``: :math:`\\tfrac12\\|z - e_y\\|^2`; ``"ce"``: cross entropy.
    activation : {"linear", "relu"}
        ``sigma`` between layers (never after the last).
    starts : int
        Number of seeded starts (``>= 1``); the lowest objective wins.
    init : {"balanced", "random"}
        ``"balanced"`` (default): the first start is the balanced factorisation of the target
        logits (the one-hot labels for MSE, with the classes that the linear closed form
        switches off set to zero; ``2 (I - 11^T/K)`` per class for cross entropy)
        through coordinate frames (non-negative, so ReLU passes it unchanged: the deep-collapse
        candidate; with ReLU the hidden matrices get negative off-class entries so that no
        pre-activation sits on the kink), plus a seeded relative perturbation of ``1e-2``
        (``1e-3`` with ReLU); the other starts are
        random. ``"random"``: every start random. With weight decay and ``L >= 2`` a class
        whose logits start near zero can stay there (``a = 0`` is a local minimum of the
        per-class problem, see :func:`deep_linear_optimum`); the balanced start avoids that:
        with a random start a sweep of 40 random deep linear MSE instances ended in such a
        local minimum 6 times.
    max_iter : int, optional
        L-BFGS iterations per start (default 20,000).
    tol : float
        Tolerance on the gradient norm in balanced coordinates (default ``1e-8``).
    seed : int
        Seed of the starts (start ``j`` uses ``numpy.random.default_rng([seed, j])``).
    device : str or torch.device, optional
        Torch device (default CPU).
    verbose : bool
        Print one line per start.

    Returns
    -------
    DeepSolveResult

    Raises
    ------
    InputError
        Bad labels, widths, coefficients or options.
    BackendError
        ``device="cuda"`` without a CUDA device.
    SolverError
        Every start ended at a non-finite objective (coefficients beyond float64's range).

    Warns
    -----
    ConvergenceWarning
        The best start stopped before reaching ``tol`` (see ``result.status``).

    References
    ----------
    Tirer and Bruna (ICML 2022); Dang et al. (ICML 2023); Sukenik, Mondelli, Lampert (NeurIPS
    2023: deep neural collapse is optimal for K = 2 with ReLU; NeurIPS 2024: low-rank solutions
    beat it for K > 2).

    Examples
    --------
    >>> import numpy as np
    >>> res = solve_deep(np.repeat(np.arange(3), 4), L=3, d=4, lam_w=1e-3, lam_h=1e-3)
    >>> opt = deep_linear_optimum([4, 4, 4], L=3, lam_w=1e-3, lam_h=1e-3)
    >>> bool(abs(res.objective - opt.objective) < 1e-8)
    True
    """
    yt, classes = encode_labels(y, "y")
    L = check_int(L, "L", low=1)
    widths = check_widths(d, L)
    # beyond PENALTY_LIMIT the optimum is the origin and the start is 1e10 times above it
    lam = check_per_layer(lam_w, L, "lam_w", positive=True, high=PENALTY_LIMIT)
    lam_h = check_scalar(lam_h, "lam_h", low=0.0, low_inclusive=False, high=PENALTY_LIMIT)
    loss = check_choice(loss, "loss", LOSSES)
    activation = check_choice(activation, "activation", ACTIVATIONS)
    starts = check_int(starts, "starts", low=1)
    init = check_choice(init, "init", INITS)
    max_iter = DEFAULT_MAX_ITER if max_iter is None else check_int(max_iter, "max_iter", low=1)
    tol = check_scalar(tol, "tol", low=0.0, low_inclusive=False)
    seed = check_int(seed, "seed", low=0)
    if not isinstance(verbose, bool):
        raise InputError(f"verbose must be True or False, got {describe(verbose)}")
    dev = _device(device)
    K, N = len(classes), int(yt.shape[0])
    y_np = yt.cpu().numpy()
    dims = (*widths, K)
    yd = yt.to(dev)
    Y = torch.nn.functional.one_hot(yd, K).to(torch.float64)
    sqrtN = math.sqrt(N)
    shapes = [(dims[l + 1], dims[l]) for l in range(L)]
    sizes = [a * b for a, b in shapes]

    def unpack(x):
        Ws, i = [], 0
        for shp, sz in zip(shapes, sizes, strict=True):
            Ws.append(x[i : i + sz].reshape(shp))
            i += sz
        return Ws, x[i:].reshape(N, dims[0]) * sqrtN

    def fg(x):
        x = x.detach().requires_grad_(True)
        Ws, H = unpack(x)
        f = objective_tensor(Ws, H, yd, Y, lam, lam_h, loss, activation)
        (g,) = torch.autograd.grad(f, x)
        return float(f.detach()), g

    best = None
    finals = []
    eps = float(np.finfo(np.float64).eps)
    for j in range(starts):
        rng = np.random.default_rng([seed, j])
        if init == "balanced" and j == 0:
            relu = activation == "relu"
            parts = _balanced_start(y_np, K, dims, lam, lam_h, loss, relu, rng)
        else:
            parts = [rng.standard_normal(s) / math.sqrt(s[1]) for s in shapes]
            parts.append(rng.standard_normal((N, dims[0])))
        parts[-1] = parts[-1] / sqrtN  # H in balanced coordinates
        x0 = torch.as_tensor(np.concatenate([p.ravel() for p in parts]), device=dev)
        out = lbfgs(fg, x0, TORCH, max_iter=max_iter, tol=tol, memory=LBFGS_MEMORY, eps_f=8 * eps)
        finals.append(float(out.f))
        if verbose:
            print(f"solve_deep start {j}: objective {out.f:.12g}, grad {out.grad_norm:.2e}, "
                  f"{out.status.value} after {out.n_iter} iterations")  # fmt: skip
        if best is None or out.f < best.f:
            best = out
    assert best is not None
    if not math.isfinite(best.f):
        raise SolverError(
            f"solve_deep produced a non-finite objective ({best.f}) in every start; the "
            f"coefficients lam_w={lam}, lam_h={lam_h} may be too large for float64"
        )
    status = Status(best.status)
    if status is not Status.CONVERGED:
        hint = {
            Status.MAX_ITER: "raise max_iter or starts",
            Status.STALLED: "the precision limit (or a ReLU kink) stopped the line search; "
            "raise tol, or try more starts",
        }.get(status, "try more starts")
        warnings.warn(
            f"solve_deep stopped with status {status.value!r} after {best.n_iter} iterations: "
            f"gradient norm {best.grad_norm:.3e} > tol={tol:.3e}; {hint}",
            ConvergenceWarning,
            stacklevel=2,
        )
    with torch.no_grad():
        Ws, H = unpack(best.x)
        feats, Z = forward(Ws, H, activation)
    Wn = tuple(w.detach().cpu().numpy().copy() for w in Ws)
    Fn = tuple(f.detach().cpu().numpy().copy() for f in feats)
    metrics = tuple(_metrics(F, y_np, K, Wn[-1] if l == L - 1 else None) for l, F in enumerate(Fn))
    params = {
        "model": "deep_ufm",
        "K": K,
        "L": L,
        "widths": widths,
        "lam_w": lam,
        "lam_h": lam_h,
        "loss": loss,
        "activation": activation,
        "starts": starts,
        "max_iter": max_iter,
        "tol": tol,
        "seed": seed,
        "device": str(dev),
        "dtype": "float64",
        "method": "lbfgs",
        "init": init,
    }
    return DeepSolveResult(
        W=Wn,
        H=Fn[0],
        features=Fn,
        logits=Z.detach().cpu().numpy(),
        y=y_np,
        classes=classes,
        objective=float(best.f),
        grad_norm=float(best.grad_norm),
        status=status,
        converged=status is Status.CONVERGED,
        n_iter=int(best.n_iter),
        history={
            "objective": np.asarray(best.history_f, dtype=np.float64),
            "grad_norm": np.asarray(best.history_g, dtype=np.float64),
        },
        metrics=metrics,
        objectives=tuple(finals),
        params=params,
    )


def _balanced_start(y, K, dims, lam, lam_h, loss, relu, rng) -> list[np.ndarray]:
    """Balanced factors ``[W_1, ..., W_L, H]`` of the target logits, through coordinate frames."""
    N, m = y.shape[0], len(dims)
    counts = np.bincount(y, minlength=K)
    if loss == "mse":
        # the one-hot targets, with the classes that the linear model switches off at zero
        # (a start near s_k = 1 would descend to the spurious a_k > 0 minimum of those)
        on = deep_linear_optimum(counts, L=m - 1, lam_w=lam, lam_h=lam_h).singular_values > 0
        T = np.diag(on.astype(np.float64))
    else:
        T = 2.0 * (np.eye(K) - 1.0 / K)
    # Z = T E (K x N); its SVD through the class-reduced C D^{1/2}
    U, S, Vt = np.linalg.svd(T * np.sqrt(counts), full_matrices=False)
    r = min(K, *dims[:-1])
    U, S, Vt = U[:, :r], S[:r], Vt[:r]
    flip = np.where(Vt.sum(1) < 0, -1.0, 1.0)  # non-negative class features where possible
    U, Vt = U * flip, Vt * flip[:, None]
    V = (Vt / np.sqrt(counts))[:, y].T  # (N, r): right singular vectors of Z
    a = [lam_h / N, *lam]  # penalty of H (as d_0 x N) and of each W_l
    g = math.exp(sum(math.log(v) for v in a) / m)
    beta = [math.sqrt(g / v) for v in a]
    root = S ** (1.0 / m)
    H = np.zeros((N, dims[0]))
    H[:, :r] = beta[0] * V * root
    Ws = []
    for l in range(1, m):
        W = np.zeros((dims[l], dims[l - 1]))
        if l == m - 1:
            W[:, :r] = beta[l] * U * root
        else:
            W[:r, :r] = beta[l] * np.diag(root)
            if relu:
                # negative off-class entries: every off-class pre-activation is then strictly
                # negative, so the start lies in a smooth region (not on the ReLU's kink) and
                # the ReLU still passes the same features
                W[:r, :r] -= 0.1 * beta[l] * root.mean() * (1.0 - np.eye(r))
        Ws.append(W)
    parts = [*Ws, H]
    noise = 1e-3 if relu else 1e-2
    return [p + noise * np.abs(p).max() * rng.standard_normal(p.shape) for p in parts]


def _device(device: Any) -> torch.device:
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InputError(
            f"device must be 'cpu', 'cuda' or a torch.device, got {describe(device)}"
        ) from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BackendError(f"device={device!r} but torch sees no CUDA device; use device='cpu'")
    return dev


def _metrics(F: np.ndarray, y: np.ndarray, K: int, W: Any) -> dict[str, float]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # rank warnings of a collapsed layer are expected
            return dict(collapse_metrics(F, y, W, None, K=K))
    except DegenerateInputError:
        return {}
