"""The L-layer MUFM objective over explicit layers (Theorem 3 made checkable)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from ufm.errors import InputError
from ufm.objective import objective
from ufm.validate import check_features, check_scalar, describe, is_torch

__all__ = ["multilayer_objective"]


def multilayer_objective(
    layers: Sequence[Any],
    y: Any,
    W: Any,
    b: Any = None,
    *,
    lam: float,
    lam_w: float,
    lam_h: float = 0.0,
    lam_b: float = 0.0,
    loss: str = "mse",
) -> float:
    """Objective of the ``L``-layer MUFM with the discretised kinetic transport cost.

    .. math::

        f_L(W, b, H_1, \\dots, H_L) = \\frac1N \\sum_{i=1}^N \\Big[\\ell(W h_i^L + b, y_i)
        + \\frac{\\lambda_H}{2}\\|h_i^L\\|^2
        + \\frac{\\lambda}{2} \\sum_{l=1}^{L} L\\,\\|h_i^l - h_i^{l-1}\\|^2\\Big]
        + \\frac{\\lambda_W}{2}\\|W\\|_F^2 + \\frac{\\lambda_b}{2}\\|b\\|^2,

    with ``h_i^0 = x_i`` (MATH.md sec. 5; time step ``1/L``, Benamou-Brenier). By
    Cauchy-Schwarz the transport term is at least ``(lam/2)(1/N) sum_i ||h_i^L - x_i||^2``, with
    equality iff the layers are equally spaced on the straight line from ``x_i`` to ``h_i^L``
    (Theorem 3), so on ``result.layers(L)`` this equals ``result.objective``.

    Parameters
    ----------
    layers : sequence of L + 1 arrays of shape (N, d)
        ``[H_0 = X, H_1, ..., H_L]``, ``L >= 1``.
    y : array of shape (N,)
        Integer labels ``0..K-1``.
    W : array of shape (K, d)
        Classifier.
    b : array of shape (K,), optional
        Bias; ``None`` for none.
    lam, lam_w, lam_h, lam_b : float
        Non-negative coefficients (``lam`` per sample, independent of ``L``).
    loss : {"mse", "ce"}
        Loss.

    Returns
    -------
    float
        The objective, computed in float64.

    Raises
    ------
    InputError
        Fewer than two layers, layers of different shapes, non-finite values, bad labels or
        coefficients.

    References
    ----------
    Wang, Gai, Zhang, "Progressive Feedforward Collapse of ResNet Training", Theorem 3;
    Benamou and Brenier, Numer. Math. 84 (1999).
    """
    lam = check_scalar(lam, "lam")
    if isinstance(layers, np.ndarray | torch.Tensor) and layers.ndim == 3:
        layers = list(layers)
    if not isinstance(layers, Sequence) or len(layers) < 2:
        raise InputError(
            f"layers must be a sequence [X, H_1, ..., H_L] of at least 2 arrays (L >= 1), got "
            f"{describe(layers)}"
        )
    L = len(layers) - 1
    use_torch = any(is_torch(h) for h in layers)
    mats = [check_features(h, f"layers[{l}]") for l, h in enumerate(layers)]
    shape = tuple(mats[0].shape)
    for l, m in enumerate(mats):
        if tuple(m.shape) != shape:
            raise InputError(
                f"layers[{l}] has shape {tuple(m.shape)} but layers[0] has {shape}; every layer "
                "must be (N, d) on the same samples"
            )
    N = shape[0]
    dev = mats[-1].device
    kinetic = 0.0
    for l in range(1, L + 1):
        D = mats[l].to(dtype=torch.float64, device=dev) - mats[l - 1].to(
            dtype=torch.float64, device=dev
        )
        kinetic += float((D * D).sum())
    last = layers[-1] if use_torch else mats[-1].numpy()
    base = objective(W, b, last, y, lam_w=lam_w, lam_h=lam_h, lam_b=lam_b, loss=loss)
    return base + 0.5 * lam * L * kinetic / N
