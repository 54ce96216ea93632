"""The (M)UFM objective of MATH.md section 5, evaluated on given variables (public as ``ufm.objective``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import InputError
from ..losses import check_loss
from ..validate import check_features, check_scalar, describe, is_torch, to_tensor
from .core import NP, TORCH, Params, Problem

__all__ = ["objective"]


def _labels_in_range(y: Any, N: int, K: int) -> torch.Tensor:
    t = to_tensor(y, "y")
    if t.ndim != 1 or t.shape[0] != N:
        raise InputError(
            f"y must have shape ({N},) (one label per row of H), got {describe(y)}; "
            "pass one integer label per sample"
        )
    if t.is_floating_point():
        if not bool(torch.isfinite(t).all()) or not bool((t == torch.round(t)).all()):
            raise InputError(f"y must hold integer labels 0..K-1, got {describe(y)}")
    elif t.dtype == torch.bool or t.is_complex():
        raise InputError(f"y must hold integer labels 0..K-1, got {describe(y)}")
    t = t.to(torch.int64)
    if int(t.min()) < 0 or int(t.max()) >= K:
        raise InputError(
            f"y has labels in [{int(t.min())}, {int(t.max())}] but W has K={K} rows; "
            "labels must be 0..K-1"
        )
    return t


def objective(
    W: Any,
    b: Any,
    H: Any,
    y: Any,
    *,
    X: Any = None,
    lam: float = 0.0,
    lam_w: float,
    lam_h: float = 0.0,
    lam_b: float = 0.0,
    loss: str = "mse",
) -> float:
    """Value of the unified UFM / MUFM objective.

    .. math::

        f(W, b, H) = \\frac1N \\sum_{i=1}^N \\Big[\\ell(W h_i + b, y_i)
        + \\frac{\\lambda_H}{2}\\|h_i\\|^2 + \\frac{\\lambda}{2}\\|h_i - x_i\\|^2\\Big]
        + \\frac{\\lambda_W}{2}\\|W\\|_F^2 + \\frac{\\lambda_b}{2}\\|b\\|^2,

    with :math:`\\ell(z, y) = \\tfrac12\\|z - e_y\\|^2` (``loss="mse"``) or
    :math:`\\ell(z, y) = \\log\\sum_k e^{z_k} - z_y` (``loss="ce"``). Every sample term is averaged
    over ``N`` (MATH.md convention), so the optimum does not drift with ``N``.

    Parameters
    ----------
    W : array of shape (K, d)
        Classifier.
    b : array of shape (K,) or None
        Bias; ``None`` means no bias (then ``lam_b`` is ignored).
    H : array of shape (N, d)
        Features, one row per sample.
    y : array of shape (N,)
        Integer labels ``0..K-1``.
    X : array of shape (N, d), optional
        Data for the MUFM anchor term; needed when ``lam > 0``.
    lam, lam_w, lam_h, lam_b : float
        Non-negative coefficients (``lam_w`` is required).
    loss : {"mse", "ce"}
        Loss.

    Returns
    -------
    float
        The objective, computed in float64 (numpy, or torch on the inputs' device).

    Raises
    ------
    InputError
        Wrong shapes, non-finite values, labels outside ``0..K-1``, negative or non-finite
        coefficients, an unknown loss, or ``lam > 0`` without ``X``.

    References
    ----------
    Wang, Gai, Zhang, "Progressive Feedforward Collapse of ResNet Training", eq. 2 and 12-13;
    Zhu et al., "A Geometric Analysis of Neural Collapse with Unconstrained Features", 2021.
    """
    lam = check_scalar(lam, "lam")
    lam_w = check_scalar(lam_w, "lam_w")
    lam_h = check_scalar(lam_h, "lam_h")
    lam_b = check_scalar(lam_b, "lam_b")
    loss = check_loss(loss)
    use_torch = any(is_torch(a) for a in (W, b, H, X))
    Wt = check_features(W, "W")
    Ht = check_features(H, "H")
    K, d = Wt.shape
    N = Ht.shape[0]
    if Ht.shape[1] != d:
        raise InputError(
            f"H has {Ht.shape[1]} columns but W has {d}: H must be (N, d) and W (K, d)"
        )
    yt = _labels_in_range(y, N, K)
    bt = None
    if b is not None:
        bt = check_features(b, "b", ndim=1) if to_tensor(b, "b").ndim == 1 else None
        if bt is None or bt.shape[0] != K:
            raise InputError(f"b must have shape ({K},) to match W, got {describe(b)}")
    Xt = None
    if X is not None:
        Xt = check_features(X, "X")
        if tuple(Xt.shape) != (N, d):
            raise InputError(f"X must have the shape of H, ({N}, {d}), got {describe(X)}")
    elif lam > 0:
        raise InputError(f"lam={lam} > 0 needs the data X (shape ({N}, {d}))")

    device = Ht.device
    if use_torch:
        ops = TORCH

        def conv(t):
            return None if t is None else t.to(dtype=torch.float64, device=device)

        yv = yt.to(device)
    else:
        ops = NP

        def conv(t):
            return None if t is None else t.cpu().numpy().astype(np.float64, copy=False)

        yv = yt.numpy()
    Wc, Hc, bc, Xc = conv(Wt), conv(Ht), conv(bt), conv(Xt)
    params = Params(lam if Xc is not None else 0.0, lam_w, lam_h, lam_b, loss, bc is not None)
    pb = Problem(ops, yv, K, d, Xc, params, Hc)
    f, *_ = pb.full(Wc, bc, Hc, need_grad=False)
    return float(f)
