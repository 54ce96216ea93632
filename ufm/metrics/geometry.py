"""Geometry across layers: the simplex ETF, alignment of features with the data, Galanti et
al.'s effective depth and the relative position of layers."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ..errors import DegenerateInputError, InputError
from ..lazy import torch
from ..threads import thread_policy
from ..validate import (
    check_features,
    check_int,
    check_scalar,
    check_seed,
)

#: Largest array (entries) that :func:`simplex_etf` builds: 2**30 float64 entries = 8 GiB.
_MAX_ENTRIES = 2**30


@thread_policy("H")
def alignment(H: Any, X: Any) -> float:
    r"""Alignment of features with the data, :math:`\langle H, X\rangle_F / (\|H\|_F \|X\|_F)` (Fig. 5)."""
    from .inputs import array_ndim  # loads torch: kept off effective_depth's light path

    Ht = check_features(H, "H", ndim=array_ndim(H) if array_ndim(H) in (2, 3) else 2).to(
        torch.float64
    )
    Xt = check_features(X, "X", ndim=array_ndim(X) if array_ndim(X) in (2, 3) else 2).to(
        torch.float64
    )
    if Ht.shape != Xt.shape:
        raise InputError(
            f"H and X must have the same shape, got {tuple(Ht.shape)} and {tuple(Xt.shape)}"
        )
    Xt = Xt.to(Ht.device)
    # The cosine is scale-free: divide by the largest entries first so that the norms neither
    # underflow (entries ~ 1e-200) nor overflow (entries ~ 1e200).
    mh, mx = (
        float(Ht.abs().max()) if Ht.numel() else 0.0,
        float(Xt.abs().max()) if Xt.numel() else 0.0,
    )
    if mh == 0.0 or mx == 0.0:
        raise DegenerateInputError("alignment is undefined when H or X is all zeros")
    Ht, Xt = Ht / mh, Xt / mx
    nh, nx = torch.linalg.norm(Ht), torch.linalg.norm(Xt)
    return float((Ht * Xt).sum() / (nh * nx))


def simplex_etf(K: int, d: int, *, seed: int | None = None, scale: float = 1.0) -> np.ndarray:
    r"""A randomly rotated simplex equiangular tight frame, as rows.

    .. math:: M^* = \sqrt{\tfrac{K}{K-1}}\, P\, (I_K - \tfrac1K 11^\top)

    returned transposed: row ``k`` is the centred class mean of class ``k``. Rows have norm
    ``scale``, pairwise cosine ``-1/(K-1)`` and sum to zero. Built from an orthonormal basis of
    the ``(K-1)``-dimensional subspace orthogonal to ``1`` and a random isometry into
    ``R^d``, so any ``d >= K - 1`` works.

    Parameters
    ----------
    K : int
        Number of classes, ``>= 2``.
    d : int
        Feature dimension, ``>= K - 1``.
    seed : int, optional
        Seed of the random rotation (``None``: fresh randomness).
    scale : float
        Norm of each vector (``> 0``).

    Returns
    -------
    ndarray of shape (K, d)

    Raises
    ------
    InputError
        ``K < 2``, ``d < K - 1``, a non-positive ``scale`` or a negative ``seed``.
    """
    K = check_int(K, "K", low=2)
    d = check_int(d, "d", low=1)
    scale = check_scalar(scale, "scale", low=0.0, low_inclusive=False)
    if d < K - 1:
        raise InputError(
            f"a simplex ETF of K={K} vectors needs d >= K-1 = {K - 1} dimensions, got d={d}"
        )
    if seed is not None:
        seed = check_seed(seed)
    if K * max(K, d) > _MAX_ENTRIES:
        raise InputError(
            f"simplex_etf(K={K}, d={d}) would build arrays of {K * max(K, d):.3g} float64 entries "
            f"(about {K * max(K, d) * 8 / 2**30:.3g} GiB), above the limit of {_MAX_ENTRIES:.3g}; "
            "use a smaller K or d"
        )
    rng = np.random.default_rng(seed)
    # orthonormal basis of 1^perp in R^K: the last K-1 columns of a QR of [1, random]
    A = np.concatenate([np.ones((K, 1)), rng.standard_normal((K, K - 1))], axis=1)
    Q, _ = np.linalg.qr(A)
    Q = Q[:, 1:]
    R, _ = np.linalg.qr(rng.standard_normal((d, K - 1)))  # (d, K-1), orthonormal columns
    return scale * math.sqrt(K / (K - 1)) * (Q @ R.T)


@thread_policy("layers")
def effective_depth(
    layers: Sequence[Any], y: Any = None, *, epsilon: float = 0.01, K: int | None = None
) -> int | None:
    r"""Galanti et al.'s epsilon-effective depth: the first layer whose NCC error is at most epsilon.

    Parameters
    ----------
    layers : sequence of arrays of shape (N, d_l), or of floats
        The features of layers ``0..L``; or, with ``y=None``, their NCC errors (PFC3) directly.
    y : array of shape (N,), optional
        Labels shared by all layers.
    epsilon : float
        Threshold on ``1 - ncc_accuracy``, in ``[0, 1]``.

    Returns
    -------
    int or None
        The smallest index ``l`` with ``1 - ncc_accuracy(H_l) <= epsilon``; ``None`` if no layer
        qualifies.
    """
    epsilon = check_scalar(epsilon, "epsilon", low=0.0, high=1.0)
    layers = _layer_list(layers)
    if len(layers) == 0:
        raise InputError("layers is empty; pass the features (or NCC errors) of layers 0..L")
    if y is None:
        errs = [
            check_scalar(e, f"layers[{i}] (an NCC error)", low=0.0, high=1.0)
            for i, e in enumerate(layers)
        ]
    else:
        from .batch import pfc3  # loads torch and numba: kept off the path of given errors

        errs = [pfc3(H, y, K=K) for H in layers]
    for i, e in enumerate(errs):
        if e <= epsilon:
            return i
    return None


@thread_policy("layers")
def relative_position(layers: Sequence[Any], *, mode: str = "index") -> np.ndarray:
    r"""Relative position of layers ``0..L`` (Fig. 3).

    ``mode="index"``: ``l / L``. ``mode="distance"``: ``||H_l - H_0||_F / ||H_L - H_0||_F``, which
    equals ``t`` exactly on the straight line ``H_l = (1-t) H_0 + t H_L``.
    """
    layers = _layer_list(layers)
    L = len(layers) - 1
    if L < 1:
        raise InputError(f"relative_position needs at least 2 layers, got {len(layers)}")
    if mode == "index":
        return np.arange(L + 1, dtype=float) / L
    if mode != "distance":
        raise InputError(f"mode must be 'index' or 'distance', got {mode!r}")
    H0 = check_features(layers[0], "layers[0]").to(torch.float64)
    dists = []
    for i, Hl in enumerate(layers):
        Ht = check_features(Hl, f"layers[{i}]").to(device=H0.device, dtype=torch.float64)
        if Ht.shape != H0.shape:
            raise InputError(
                "mode='distance' needs layers of one shape, got "
                f"{tuple(H0.shape)} and {tuple(Ht.shape)} at layer {i}; use mode='index'"
            )
        D = Ht - H0
        # ||D|| = m ||D / m|| with m the largest entry: no under/overflow of the squares.
        m = float(D.abs().max()) if D.numel() else 0.0
        dists.append((m, float(torch.linalg.norm(D / m)) if m > 0 else 0.0))
    m_last, n_last = dists[-1]
    if m_last == 0.0:
        raise DegenerateInputError("the last layer equals the first: distances are undefined")
    return np.asarray([(m / m_last) * (n / n_last) for m, n in dists])


def _layer_list(layers: Any) -> list[Any]:
    """The layers as a list (any iterable of arrays), or an :class:`InputError`."""
    if isinstance(layers, str | bytes) or not isinstance(layers, Iterable):
        raise InputError(
            f"layers must be a sequence of arrays (one per layer), got {type(layers).__name__}"
        )
    return list(layers)
