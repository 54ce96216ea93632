"""Backend-neutral value and gradient of the (M)UFM objective.

One implementation serves numpy and torch: every array operation that differs between the two
libraries goes through a small namespace object (:data:`NP` or :data:`TORCH`). The objective is
MATH.md section 5,

.. math::

    f(W, b, H) = \\frac1N \\sum_i \\Big[\\ell(W h_i + b, y_i) + \\frac{\\lambda_H}{2}\\|h_i\\|^2
    + \\frac{\\lambda}{2}\\|h_i - x_i\\|^2\\Big] + \\frac{\\lambda_W}{2}\\|W\\|_F^2
    + \\frac{\\lambda_b}{2}\\|b\\|^2 .

The solvers work in *balanced coordinates* ``(W, b, U = H / sqrt(N))``: every sample term carries
a factor ``1/N``, so in these coordinates the curvature of the ``H`` block is of the same order
as that of the ``W`` block and the Euclidean gradient norm,
``sqrt(||grad_W f||^2 + ||grad_b f||^2 + N ||grad_H f||^2)``, does not drift with ``N``.
That norm is what every solver compares with ``tol``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.linalg
import scipy.special
from scipy.linalg.blas import daxpy as _daxpy

from ..lazy import torch

__all__ = ["Ops", "NP", "TORCH", "Params", "Problem"]


class Ops:
    """The handful of array operations whose spelling differs between numpy and torch."""

    name = "abstract"

    def logsumexp(self, Z: Any) -> Any:  # row-wise, shape (N,)
        raise NotImplementedError

    def softmax(self, Z: Any) -> Any:  # row-wise
        raise NotImplementedError

    def solve_spd(self, A: Any, B: Any) -> Any:  # A^{-1} B for symmetric positive definite A
        raise NotImplementedError

    def eye(self, n: int, like: Any) -> Any:
        raise NotImplementedError

    def ones(self, n: int, like: Any) -> Any:
        raise NotImplementedError

    def zeros(self, shape: tuple[int, ...], like: Any) -> Any:
        raise NotImplementedError

    def onehot(self, y: Any, K: int, like: Any) -> Any:
        raise NotImplementedError

    def sumsq(self, A: Any) -> float:
        raise NotImplementedError

    def dot(self, a: Any, b: Any) -> float:
        raise NotImplementedError

    def axpy(self, a: float, x: Any, y: Any) -> Any:  # y += a x in place on 1-d arrays
        raise NotImplementedError

    def cat(self, parts: list[Any]) -> Any:
        raise NotImplementedError

    def append_col(self, A: Any, col: Any) -> Any:  # [A, col] for A (N, m), col (N,)
        raise NotImplementedError

    def bordered(self, M: Any, v: Any, c: float) -> Any:  # [[M, v], [v^T, c]]
        raise NotImplementedError

    def isfinite(self, A: Any) -> bool:
        raise NotImplementedError

    def standard_normal(self, shape: tuple[int, ...], gen: Any, like: Any) -> Any:
        raise NotImplementedError

    def to_numpy(self, A: Any) -> np.ndarray:
        raise NotImplementedError

    def from_numpy(self, a: np.ndarray, like: Any) -> Any:
        raise NotImplementedError


class _NumpyOps(Ops):
    name = "numpy"

    def logsumexp(self, Z):
        return scipy.special.logsumexp(Z, axis=1)

    def softmax(self, Z):
        return scipy.special.softmax(Z, axis=1)

    def solve_spd(self, A, B):
        return scipy.linalg.cho_solve(scipy.linalg.cho_factor(A, lower=True), B)

    def eye(self, n, like):
        return np.eye(n, dtype=like.dtype)

    def ones(self, n, like):
        return np.ones(n, dtype=like.dtype)

    def zeros(self, shape, like):
        return np.zeros(shape, dtype=like.dtype)

    def onehot(self, y, K, like):
        out = np.zeros((len(y), K), dtype=like.dtype)
        out[np.arange(len(y)), y] = 1.0
        return out

    def sumsq(self, A):
        a = np.ravel(A)
        return float(a @ a)

    def dot(self, a, b):
        return float(np.ravel(a) @ np.ravel(b))

    def axpy(self, a, x, y):
        if y.dtype == np.float64 and x.dtype == np.float64:
            return _daxpy(x, y, a=a)  # in place, no temporary (y is a contiguous 1-d array)
        y += a * x
        return y

    def cat(self, parts):
        return np.concatenate([np.ravel(p) for p in parts])

    def append_col(self, A, col):
        return np.concatenate([A, col[:, None]], axis=1)

    def bordered(self, M, v, c):
        return np.block([[M, v[:, None]], [v[None, :], np.full((1, 1), c, dtype=M.dtype)]])

    def isfinite(self, A):
        return bool(np.isfinite(A).all())

    def standard_normal(self, shape, gen, like):
        return gen.standard_normal(shape).astype(like.dtype, copy=False)

    def to_numpy(self, A):
        return np.asarray(A)

    def from_numpy(self, a, like):
        return np.asarray(a, dtype=like.dtype)


class _TorchOps(Ops):
    name = "torch"

    def logsumexp(self, Z):
        return torch.logsumexp(Z, dim=1)

    def softmax(self, Z):
        return torch.softmax(Z, dim=1)

    def solve_spd(self, A, B):
        L = torch.linalg.cholesky(A)
        return torch.cholesky_solve(B, L)

    def eye(self, n, like):
        return torch.eye(n, dtype=like.dtype, device=like.device)

    def ones(self, n, like):
        return torch.ones(n, dtype=like.dtype, device=like.device)

    def zeros(self, shape, like):
        return torch.zeros(shape, dtype=like.dtype, device=like.device)

    def onehot(self, y, K, like):
        return torch.nn.functional.one_hot(y, K).to(dtype=like.dtype, device=like.device)

    def sumsq(self, A):
        a = A.reshape(-1)
        return float(a @ a)

    def dot(self, a, b):
        return float(a.reshape(-1) @ b.reshape(-1))

    def axpy(self, a, x, y):
        return y.add_(x, alpha=a)

    def cat(self, parts):
        return torch.cat([p.reshape(-1) for p in parts])

    def append_col(self, A, col):
        return torch.cat([A, col[:, None]], dim=1)

    def bordered(self, M, v, c):
        top = torch.cat([M, v[:, None]], dim=1)
        corner = torch.full((1, 1), c, dtype=M.dtype, device=M.device)
        return torch.cat([top, torch.cat([v[None, :], corner], dim=1)], dim=0)

    def isfinite(self, A):
        return bool(torch.isfinite(A).all())

    def standard_normal(self, shape, gen, like):
        # Draw on the CPU from a seeded numpy generator so that numpy and torch backends start
        # from the same point for the same seed.
        a = gen.standard_normal(shape)
        return torch.as_tensor(a, dtype=like.dtype, device=like.device)

    def to_numpy(self, A):
        return A.detach().cpu().numpy()

    def from_numpy(self, a, like):
        return torch.as_tensor(a, dtype=like.dtype, device=like.device)


NP: Ops = _NumpyOps()
TORCH: Ops = _TorchOps()


@dataclass(frozen=True)
class Params:
    """Penalty coefficients and model options of MATH.md section 5."""

    lam: float
    lam_w: float
    lam_h: float
    lam_b: float
    loss: str  # "mse" or "ce"
    bias: bool


class Problem:
    """One (M)UFM instance: labels, optional data, coefficients, and a backend.

    Parameters
    ----------
    ops : Ops
        :data:`NP` or :data:`TORCH`.
    y : array of shape (N,)
        Integer labels ``0..K-1`` (numpy int array or torch int64 tensor on the device).
    K : int
        Number of classes.
    d : int
        Feature dimension.
    X : array of shape (N, d) or None
        Data anchoring the features (MUFM); ``None`` for the UFM.
    params : Params
        Coefficients.
    like : array
        A floating array whose dtype and device the computation uses.
    weights : array of shape (N,), optional
        Per-sample weights summing to 1 (numpy backend): every sample average becomes the
        weighted sum (``None``: ``1/N`` each, the (M)UFM). The LayerNorm UFM's class phase
        (:mod:`ufm.layernorm`) solves one feature per class with weight ``n_k / N``.
    """

    def __init__(
        self,
        ops: Ops,
        y: Any,
        K: int,
        d: int,
        X: Any,
        params: Params,
        like: Any,
        weights: Any = None,
    ):
        self.ops = ops
        self.w = weights
        self.y = y
        self.K = int(K)
        self.d = int(d)
        self.N = int(y.shape[0])
        self.X = X
        self.p = params
        self.like = like
        self.sqrtN = math.sqrt(self.N)

    @functools.cached_property
    def Y(self) -> Any:
        """One-hot labels ``(N, K)``: formed only by the methods that use them (not
        ``suffstats``, for which it would be the largest array of the solve)."""
        return self.ops.onehot(self.y, self.K, self.like)

    # ------------------------------------------------------------------ full objective
    def logits(self, W: Any, b: Any, H: Any) -> Any:
        Z = H @ W.T
        if self.p.bias:
            Z = Z + b
        return Z

    def loss_and_dZ(self, Z: Any, need_grad: bool = True) -> tuple[float, Any]:
        """Mean loss over samples and its gradient with respect to the logits ``Z``."""
        N, w = self.N, self.w
        if w is not None:
            return self._weighted_loss(Z, need_grad)
        if self.p.loss == "mse":
            R = Z - self.Y
            val = 0.5 * self.ops.sumsq(R) / N
            return val, (R / N if need_grad else None)
        lse = self.ops.logsumexp(Z)
        picked = (Z * self.Y).sum(1)
        val = float((lse - picked).sum()) / N
        if not need_grad:
            return val, None
        return val, (self.ops.softmax(Z) - self.Y) / N

    def _weighted_loss(self, Z: Any, need_grad: bool) -> tuple[float, Any]:
        w = self.w
        if self.p.loss == "mse":
            R = Z - self.Y
            return 0.5 * float(w @ (R * R).sum(1)), (R * w[:, None] if need_grad else None)
        val = float(w @ (self.ops.logsumexp(Z) - (Z * self.Y).sum(1)))
        return val, ((self.ops.softmax(Z) - self.Y) * w[:, None] if need_grad else None)

    def feature_penalty(self, H: Any) -> tuple[float, Any]:
        """``(1/N) sum_i [(lam_h/2)||h_i||^2 + (lam/2)||h_i - x_i||^2]`` and its H-gradient."""
        p, N = self.p, self.N
        val = 0.0
        grad = None
        if self.w is not None and (p.lam_h > 0 or p.lam > 0):
            w = self.w[:, None]
            D = p.lam_h * H
            val = 0.5 * p.lam_h * float(np.sum(w * H * H))
            if p.lam > 0:
                D = D + p.lam * (H - self.X)
                val += 0.5 * p.lam * float(np.sum(w * (H - self.X) ** 2))
            return val, D * w
        if p.lam_h > 0:
            val += 0.5 * p.lam_h * self.ops.sumsq(H) / N
            grad = (p.lam_h / N) * H
        if p.lam > 0:
            D = H - self.X
            val += 0.5 * p.lam * self.ops.sumsq(D) / N
            g2 = (p.lam / N) * D
            grad = g2 if grad is None else grad + g2
        if grad is None:
            grad = self.ops.zeros(tuple(H.shape), self.like)
        return val, grad

    def full(self, W: Any, b: Any, H: Any, need_grad: bool = True):
        """Value and gradients ``(f, grad_W, grad_b, grad_H)`` of the full objective."""
        p = self.p
        Z = self.logits(W, b, H)
        val, dZ = self.loss_and_dZ(Z, need_grad)
        pen, gHp = self.feature_penalty(H)
        val += pen + 0.5 * p.lam_w * self.ops.sumsq(W)
        if p.bias:
            val += 0.5 * p.lam_b * self.ops.sumsq(b)
        if not need_grad:
            return val, None, None, None
        gW = dZ.T @ H + p.lam_w * W
        gb = (dZ.sum(0) + p.lam_b * b) if p.bias else None
        gH = dZ @ W + gHp
        return val, gW, gb, gH

    def grad_norm(self, gW: Any, gb: Any, gH: Any) -> float:
        """Gradient norm in balanced coordinates (the convergence criterion)."""
        s = self.N * self.ops.sumsq(gH)
        if gW is not None:
            s += self.ops.sumsq(gW)
        if gb is not None:
            s += self.ops.sumsq(gb)
        return math.sqrt(s)

    # ------------------------------------------------------------------ closed-form (W, b)
    def ridge(self, H: Any) -> tuple[Any, Any]:
        """The minimising ``(W, b)`` of the MSE objective for fixed ``H`` (MATH.md sec. 5).

        ``[W b] = Y^T H~ (H~^T H~ + N diag(lam_w I, lam_b))^{-1}``. An unpenalised bias is
        eliminated by centring; a penalised one is folded into the ridge by appending the
        column ``sqrt(lam_w/lam_b) 1``. The ``(d+1) x (d+1)`` primal system is used when
        ``d + 1 <= N``, otherwise the ``N x N`` dual (push-through identity).
        """
        if self.w is not None:
            return self._ridge_weighted(H)
        ops, p, N, Y = self.ops, self.p, self.N, self.Y
        reg = N * p.lam_w
        s = math.sqrt(p.lam_w / p.lam_b) if (p.bias and p.lam_b > 0) else 0.0
        if p.bias and p.lam_b == 0:
            hbar = H.mean(0)
            ybar = Y.mean(0)
            A, T = H - hbar, Y - ybar
        else:
            A, T = H, Y
        if A.shape[1] + (1 if s else 0) <= N:
            G = A.T @ A + reg * ops.eye(A.shape[1], self.like)
            R = A.T @ T  # (m, K)
            if s:
                # bordered system of the column s 1 appended to H, without copying H
                colsum = s * H.sum(0)
                G = ops.bordered(G, colsum, s * s * N + reg)
                R = ops.cat([R, (s * Y.sum(0))[None, :]]).reshape(G.shape[0], self.K)
            Theta_T = ops.solve_spd(G, R)  # (m, K)
        else:
            if s:
                A = ops.append_col(H, s * ops.ones(N, self.like))
            G = A @ A.T + reg * ops.eye(N, self.like)
            Theta_T = A.T @ ops.solve_spd(G, T)
        if p.bias and p.lam_b == 0:
            W = Theta_T.T
            b = ybar - W @ hbar
        elif p.bias:
            W = Theta_T[: self.d].T
            b = s * Theta_T[self.d]
        else:
            W = Theta_T.T
            b = ops.zeros((self.K,), self.like)
        return W, b

    def _ridge_weighted(self, H: Any) -> tuple[Any, Any]:
        """:meth:`ridge` with sample weights (numpy): rows scaled by ``sqrt(w_i)``, penalties
        ``lam_w`` and ``lam_b`` (the bias as a column of ones; ``lam_b = 0`` is fine, the
        weights sum to 1); the primal system when ``d + 1 <= N``, else the dual."""
        p, N, d = self.p, self.N, self.d
        sw = np.sqrt(self.w)[:, None]
        A = np.hstack([H, np.ones((N, 1))]) if p.bias else H
        reg = np.r_[np.full(d, p.lam_w), p.lam_b] if p.bias else np.full(d, p.lam_w)
        A, T = A * sw, self.Y * sw
        if A.shape[1] <= N or not np.all(reg > 0):
            Theta_T = np.linalg.solve(A.T @ A + np.diag(reg), A.T @ T)
        else:  # (A^T A + R)^{-1} A^T = R^{-1} A^T (A R^{-1} A^T + I)^{-1}
            Ad = A / reg
            Theta_T = Ad.T @ np.linalg.solve(A @ Ad.T + np.eye(N), T)
        if p.bias:
            return Theta_T[:d].T, Theta_T[d]
        return Theta_T.T, np.zeros(self.K)

    def reduced(self, H: Any, need_grad: bool = True):
        """MSE objective with ``(W, b)`` eliminated: ``(F(H), grad_H F, W, b)``.

        By the envelope theorem the gradient is the partial gradient in ``H`` at the optimal
        ``(W, b)``.
        """
        W, b = self.ridge(H)
        val, _, _, gH = self.full(W, b, H, need_grad)
        return val, gH, W, b

    # ------------------------------------------------------------------ packing
    def pack(self, W: Any, b: Any, H: Any) -> Any:
        """Flatten ``(W, b, H)`` into balanced coordinates ``(W, b, H / sqrt(N))``."""
        parts = [W]
        if self.p.bias:
            parts.append(b)
        parts.append(H / self.sqrtN)
        return self.ops.cat(parts)

    def unpack(self, v: Any) -> tuple[Any, Any, Any]:
        K, d = self.K, self.d
        i = K * d
        W = v[:i].reshape(K, d)
        if self.p.bias:
            b = v[i : i + K]
            i += K
        else:
            b = self.ops.zeros((K,), self.like)
        H = v[i:].reshape(self.N, d) * self.sqrtN
        return W, b, H

    def pack_grad(self, gW: Any, gb: Any, gH: Any) -> Any:
        parts = [gW]
        if self.p.bias:
            parts.append(gb)
        parts.append(gH * self.sqrtN)
        return self.ops.cat(parts)

    def fg_joint(self, v: Any) -> tuple[float, Any]:
        """Objective and gradient in balanced coordinates over all variables."""
        W, b, H = self.unpack(v)
        f, gW, gb, gH = self.full(W, b, H)
        return f, self.pack_grad(gW, gb, gH)

    def fg_reduced(self, u: Any) -> tuple[float, Any]:
        """Reduced MSE objective and gradient in ``u = H / sqrt(N)`` (flattened)."""
        H = u.reshape(self.N, self.d) * self.sqrtN
        f, gH, _, _ = self.reduced(H)
        return f, (gH * self.sqrtN).reshape(-1)
