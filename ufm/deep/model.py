"""The deep UFM's model: its objective and the closed-form optimum of the deep linear MSE model.

Shared by :mod:`ufm.deep.solve` (the solver) and the tests; see :mod:`ufm.deep` for the model.
Also the argument checks that both use.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.optimize
import torch

from ..engine.options import DEFAULT_LAM_H, DEFAULT_LAM_W
from ..errors import InputError
from ..losses import LOSSES
from ..validate import check_int, check_scalar, describe

__all__ = [
    "LOSSES",
    "DeepLinearOptimum",
    "deep_objective",
    "deep_linear_optimum",
    "forward",
]

#: Activations between layers: ``"linear"`` (identity) or ``"relu"``.
ACTIVATIONS = ("linear", "relu")


@dataclass(frozen=True)
class DeepLinearOptimum:
    """Closed-form optimum of the bias-free MSE deep linear UFM (:func:`deep_linear_optimum`).

    Attributes
    ----------
    objective : float
        The global minimum.
    logit_scale : numpy.ndarray of shape (K,)
        ``s_k``: at the optimum every sample of class ``k`` has logits ``s_k e_k`` (0 for a
        class whose logits collapsed to zero, e.g. a minority class at large penalties).
    singular_values : numpy.ndarray of shape (K,)
        ``a_k = s_k sqrt(n_k)``, the singular values of the optimal logit matrix ``Z (K, N)``.
    """

    objective: float
    logit_scale: np.ndarray
    singular_values: np.ndarray


# ------------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------------
def check_per_layer(
    value: Any, L: int, name: str, *, positive: bool, high: float | None = None
) -> tuple[float, ...]:
    if isinstance(value, Sequence | np.ndarray) and not isinstance(value, str | bytes):
        vals = list(value)
        if len(vals) != L:
            raise InputError(
                f"{name} has {len(vals)} entries but L={L}; pass one value per layer or one scalar"
            )
    else:
        vals = [value] * L
    low_incl = not positive
    return tuple(check_scalar(v, name, low=0.0, low_inclusive=low_incl, high=high) for v in vals)


def check_widths(d: Any, L: int) -> tuple[int, ...]:
    if isinstance(d, Sequence | np.ndarray) and not isinstance(d, str | bytes):
        ds = list(d)
        if len(ds) != L:
            raise InputError(
                f"d has {len(ds)} widths but L={L}; pass d_0..d_(L-1) (the free features' "
                "dimension and each hidden width) or one int for all"
            )
    else:
        ds = [d] * L
    return tuple(check_int(v, "d", low=1) for v in ds)


def check_choice(value: Any, name: str, allowed: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in allowed:
        raise InputError(f"{name} must be one of {allowed}, got {describe(value)}")
    return value


# ------------------------------------------------------------------------------------------------
# objective
# ------------------------------------------------------------------------------------------------
def forward(Ws, H, activation):
    feats = [H]
    A = H
    for W in Ws[:-1]:
        A = A @ W.T
        if activation == "relu":
            A = torch.relu(A)
        feats.append(A)
    return feats, A @ Ws[-1].T


def objective_tensor(Ws, H, y, Y, lam_w, lam_h, loss, activation):
    N = H.shape[0]
    _, Z = forward(Ws, H, activation)
    if loss == "mse":
        data = 0.5 * ((Z - Y) ** 2).sum() / N
    else:
        data = (torch.logsumexp(Z, dim=1) - Z.gather(1, y[:, None])[:, 0]).sum() / N
    pen = 0.5 * lam_h * (H**2).sum() / N
    for lam, W in zip(lam_w, Ws, strict=True):
        pen = pen + 0.5 * lam * (W**2).sum()
    return data + pen


def deep_objective(
    W: Sequence[Any],
    H: Any,
    y: Any,
    *,
    lam_w: float | Sequence[float] = DEFAULT_LAM_W,
    lam_h: float = DEFAULT_LAM_H,
    loss: str = "mse",
    activation: str = "linear",
) -> float:
    """The deep UFM objective at ``(W_1, ..., W_L, H)`` (module docstring).

    .. math::

        f = \\frac1N \\sum_i \\Big[\\ell(z_i, y_i) + \\frac{\\lambda_H}{2}\\|h_i\\|^2\\Big]
        + \\sum_l \\frac{\\lambda_l}{2}\\|W_l\\|_F^2, \\qquad
        z_i = W_L \\sigma(W_{L-1} \\cdots \\sigma(W_1 h_i)).

    Parameters
    ----------
    W : sequence of L arrays
        ``W[l-1]`` of shape ``(d_l, d_{l-1})``, the last one ``(K, d_{L-1})``.
    H : array of shape (N, d_0)
    y : array of shape (N,)
        Labels ``0..K-1``.
    lam_w : float or sequence of L floats
        Weight decay of each layer (>= 0).
    lam_h : float
        Feature penalty (>= 0).
    loss : {"mse", "ce"}
    activation : {"linear", "relu"}

    Returns
    -------
    float

    Raises
    ------
    InputError
        Shapes that do not chain, labels outside ``0..K-1``, bad coefficients or options.
    """
    if not isinstance(W, Sequence) or len(W) == 0:
        raise InputError(f"W must be a non-empty sequence of layer matrices, got {describe(W)}")
    L = len(W)
    lam = check_per_layer(lam_w, L, "lam_w", positive=False)
    lam_h = check_scalar(lam_h, "lam_h", low=0.0)
    loss = check_choice(loss, "loss", LOSSES)
    activation = check_choice(activation, "activation", ACTIVATIONS)
    Ws = [torch.as_tensor(np.asarray(w, dtype=np.float64)) for w in W]
    Ht = torch.as_tensor(np.asarray(H, dtype=np.float64))
    if Ht.ndim != 2 or any(w.ndim != 2 for w in Ws):
        raise InputError("H and every W[l] must be 2-d arrays")
    dims = [Ht.shape[1]] + [w.shape[0] for w in Ws]
    for l, w in enumerate(Ws):
        if w.shape[1] != dims[l]:
            raise InputError(
                f"W[{l}] has shape {tuple(w.shape)} but its input has dimension {dims[l]}; "
                "W[l] must be (d_(l+1), d_l) with d_0 = H.shape[1]"
            )
    yt = torch.as_tensor(np.asarray(y)).to(torch.int64)
    K = dims[-1]
    if yt.ndim != 1 or yt.shape[0] != Ht.shape[0]:
        raise InputError(f"y must hold one label per row of H ({Ht.shape[0]}), got {describe(y)}")
    if int(yt.min()) < 0 or int(yt.max()) >= K:
        raise InputError(f"y must hold labels 0..K-1 with K={K} (rows of the last W)")
    Y = torch.nn.functional.one_hot(yt, K).to(torch.float64)
    with torch.no_grad():
        return float(objective_tensor(Ws, Ht, yt, Y, lam, lam_h, loss, activation))


# ------------------------------------------------------------------------------------------------
# closed form
# ------------------------------------------------------------------------------------------------
def _scalar_min(t: float, m: int, Nc: float) -> float:
    """argmin over a >= 0 of (a - t)^2 / 2 + (m/2) Nc a^(2/m) (the per-class problem times N)."""
    if m == 2:
        return max(t - Nc, 0.0)
    p = 1.0 - 2.0 / m

    def g(a: float) -> float:
        return 0.5 * (a - t) ** 2 + 0.5 * m * Nc * a ** (2.0 / m)

    # stationary points solve q(a) = a^p (t - a) = Nc on (0, t); q peaks at a_max
    a_max = t * p / (1.0 + p)
    if a_max**p * (t - a_max) <= Nc:
        return 0.0
    a = scipy.optimize.brentq(lambda a: a**p * (t - a) - Nc, a_max, t, xtol=1e-15, rtol=1e-15)
    return a if g(a) < g(0.0) else 0.0


def deep_linear_optimum(
    counts: Any,
    *,
    L: int,
    lam_w: float | Sequence[float] = DEFAULT_LAM_W,
    lam_h: float = DEFAULT_LAM_H,
) -> DeepLinearOptimum:
    """Global optimum of the bias-free MSE deep linear UFM, balanced or imbalanced.

    With ``m = L + 1`` factors and :math:`c = (\\lambda_H / N \\cdot \\prod_l \\lambda_l)^{1/m}`,
    the least penalty of any factorisation ``Z = W_L \\cdots W_1 H^T`` is
    :math:`\\frac m2 c \\sum_i \\sigma_i(Z)^{2/m}` (AM-GM on balanced factors; needs every width
    ``>= K``). Averaging the columns of ``Z`` within each class lowers both the loss (Jensen)
    and every singular value (a projection), so ``Z = C E`` with one column per class, and with
    ``A = C D^{1/2}``, ``D = diag(n_k)``, the problem is
    :math:`\\min_A \\frac1{2N}\\|A - D^{1/2}\\|_F^2 + \\frac m2 c \\sum_i \\sigma_i(A)^{2/m}`. By von
    Neumann's trace inequality ``A`` is diagonal, and each class solves the scalar problem

    .. math::

        a_k = \\arg\\min_{a \\ge 0}\\ \\frac{1}{2N}(a - \\sqrt{n_k})^2 + \\frac m2 c\\, a^{2/m},

    whose stationary points satisfy :math:`a^{1 - 2/m}(\\sqrt{n_k} - a) = N c` (``L = 1``:
    :math:`a_k = (\\sqrt{n_k} - \\sqrt{N \\lambda_W \\lambda_H})_+`, singular-value
    thresholding). Every sample of class ``k`` then has logits ``(a_k/\\sqrt{n_k}) e_k``: the
    class means of every layer form an orthogonal frame (an ETF once centred, for balanced
    classes); a class with ``a_k = 0`` is collapsed to zero (minority collapse). The same value
    is attained by the ReLU model with non-negative orthogonal frames in every layer (the deep
    neural collapse candidate of Sukenik et al.).

    Parameters
    ----------
    counts : sequence of K ints
        Samples per class (``>= 1`` each, ``K >= 2``).
    L : int
        Number of layers (weight matrices), ``>= 1``.
    lam_w : float or sequence of L floats
        Weight decay of each layer (> 0).
    lam_h : float
        Feature penalty (> 0).

    Returns
    -------
    DeepLinearOptimum

    Raises
    ------
    InputError
        Bad counts, ``L`` or coefficients.

    References
    ----------
    Tirer and Bruna, "Extended unconstrained features model for exploring deep neural
    collapse", ICML 2022; Dang et al., "Neural collapse in deep linear networks: from balanced
    to imbalanced data", ICML 2023; Sukenik, Mondelli, Lampert, "Deep neural collapse is
    provably optimal for the deep unconstrained features model", NeurIPS 2023.
    """
    L = check_int(L, "L", low=1)
    n = np.asarray(counts)
    if n.ndim != 1 or n.size < 2 or n.dtype.kind not in "iu" or (n < 1).any():
        raise InputError(f"counts must be >= 2 positive integers (one per class), got {counts!r}")
    lam = check_per_layer(lam_w, L, "lam_w", positive=True)
    lam_h = check_scalar(lam_h, "lam_h", low=0.0, low_inclusive=False)
    N, m = int(n.sum()), L + 1
    c = math.exp((math.log(lam_h / N) + sum(math.log(v) for v in lam)) / m)
    a = np.array([_scalar_min(math.sqrt(k), m, N * c) for k in n])
    f = float(np.sum((a - np.sqrt(n)) ** 2) / (2 * N) + 0.5 * m * c * np.sum(a ** (2.0 / m)))
    return DeepLinearOptimum(objective=f, logit_scale=a / np.sqrt(n), singular_values=a)
