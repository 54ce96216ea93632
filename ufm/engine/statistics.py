r"""The reduced MSE objective in (W, b) and its trust-region solve (``method="suffstats"``).

The statistics themselves (one pass over the data) are accumulated by
:class:`ufm.suffstats.SufficientStatistics`; this module holds what is solved from them.

For the MSE loss the features have a closed form given the classifier (MATH.md sec. 5, "MSE: H in
closed form, sufficient statistics"). With :math:`\mu = \lambda + \lambda_H > 0` and
:math:`\tilde x_i = (\lambda/\mu) x_i`, the minimising feature of sample :math:`i` is

.. math::

    h_i = (W^\top W + \mu I_d)^{-1}\big(W^\top (e_{y_i} - b) + \mu \tilde x_i\big),

and eliminating every :math:`h_i` leaves a problem in :math:`(W, b)` alone,

.. math::

    f(W, b) = \tfrac12 \operatorname{tr}\big[(I_K + W W^\top/\mu)^{-1} S(W, b)\big] + c_X
              + \tfrac{\lambda_W}{2}\|W\|_F^2 + \tfrac{\lambda_b}{2}\|b\|^2,

with :math:`S = \frac1N\sum_i r_i r_i^\top`, :math:`r_i = e_{y_i} - b - W\tilde x_i` and
:math:`c_X = \frac{\lambda}{2}(1 - \lambda/\mu)\frac1N\sum_i\|x_i\|^2`. Write
:math:`Z = [W\ b]` (shape ``(K, d+1)``), :math:`\hat x_i = (\tilde x_i, 1)`,
:math:`C_a = \frac1N\sum_i \hat x_i\hat x_i^\top`, :math:`P_a = \frac1N\sum_i e_{y_i}\hat x_i^\top`
and :math:`\Pi = \operatorname{diag}(n_k/N)`. Then :math:`S = \Pi - Z P_a^\top - P_a Z^\top +
Z C_a Z^\top`, which needs only the class counts, the per-class sums of :math:`x`, and the second
moment :math:`\sum_i x_i x_i^\top`: nothing grows with ``N`` after one pass. With
:math:`A = I + W W^\top/\mu`, :math:`B = A^{-1}` and :math:`J = Z C_a - P_a`:

.. math::

    \nabla_Z f = B J + \big[-\tfrac1\mu B S B W,\ 0\big] + [\lambda_W W,\ \lambda_b b],

and along a direction :math:`D = [V\ c]`, with :math:`dA = (V W^\top + W V^\top)/\mu`,
:math:`dB = -B\,dA\,B`, :math:`dS = D J^\top + J D^\top` and
:math:`T = B S B W`,

.. math::

    \nabla^2 f[D] = dB\,J + B D C_a
        - \tfrac1\mu\big[dB\,S B W + B\,dS\,B W + B S\,dB\,W + B S B V,\ 0\big]
        + [\lambda_W V,\ \lambda_b c].

Each evaluation is a few ``K x K`` solves and one product with the ``d x d`` second moment
(``O(K d^2)``). The reduced problem (``K d + K`` variables) is solved by scipy's trust-region
Newton-CG (``trust-ncg``, exact Hessian-vector products); the problem is non-convex, so every
solution passes a second-order check (smallest Hessian eigenvalue) and a saddle is escaped along
its negative-curvature direction (e.g. ``W = 0`` when every class has the same mean).

A sweep over ``lam`` reuses one pass: the statistics of :math:`\tilde x = (\lambda/\mu)x` are
those of ``x`` scaled by ``lam/mu`` (first moments) and its square (second moment).

The optimal features are an affine map of ``x`` per class,
:math:`h_i = a_{y_i} + G x_i` with :math:`G = \frac{\lambda}{\mu}(I - W^\top(WW^\top+\mu I)^{-1}W)`,
so :meth:`StatsSolution.features` produces them in one streaming pass and
:meth:`StatsSolution.class_metrics` gives PFC1 and PFC2 of ``H*`` from the statistics alone.
:meth:`StatsSolution.feature_metrics` (what ``mufm.solve`` uses for float64 numpy data) runs
the second pass of the collapse metrics against class means taken from the statistics
(:math:`\mu_k(H) = a_k + G m_k`) on each chunk of ``H*`` formed in a chunk-sized buffer, so
every metric costs one pass over ``X`` and the ``N x d`` array is never written;
``mufm.solve`` forms it only when ``result.H`` is first read. Both passes split their rows
between the threads the call was granted (:func:`ufm.rowblocks.map_row_blocks`).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.linalg
import scipy.optimize
import scipy.sparse.linalg
import torch

from ..errors import DegenerateInputError, InputError
from ..metrics.inputs import CHUNK_ELEMS
from ..rowblocks import map_row_blocks
from ..status import Status
from ..suffstats import SufficientStatistics
from ..threads import thread_policy
from ..validate import check_int, check_scalar, check_seed, describe, to_tensor

__all__ = [
    "StatsSolution",
    "ReducedObjective",
    "solve_statistics",
    "rescale_factor",
]

#: Newton methods accepted by :func:`solve_statistics`.
NEWTON_METHODS = ("trust-ncg", "trust-krylov")
#: Largest number of variables for which the Hessian of the second-order check is formed densely.
_DENSE_HESS = 200


def _start_array(v: Any, name: str, shape: tuple[int, ...]) -> np.ndarray:
    """An explicit start ``W0``/``b0``: finite, real, exactly ``shape`` (no silent reshape)."""
    t = to_tensor(v, name)
    if t.dtype == torch.bool or t.is_complex():
        raise InputError(f"{name} must be a real array of shape {shape}, got {describe(v)}")
    if tuple(t.shape) != shape:
        raise InputError(
            f"{name} must have shape {shape} (K classes x d features of the statistics), got "
            f"{describe(v)}"
        )
    a = t.detach().to(torch.float64).cpu().numpy().copy()
    if not np.isfinite(a).all():
        raise InputError(f"{name} contains NaN or inf; pass a finite start")
    return a


# ---------------------------------------------------------------------------------- the model
class ReducedObjective:
    """Value, gradient and Hessian-vector product of the reduced objective f(W, b)."""

    def __init__(self, st: SufficientStatistics, lam, lam_w, lam_h, lam_b, bias, alpha=1.0):
        # alpha: the data are divided by alpha (a power of two, exact); the equivalent problem
        # has lam * alpha^2, lam_h * alpha^2, lam_w / alpha^2 (h = alpha h', W = W' / alpha).
        st.check_ready()
        self.st, self.K, self.d = st, st.K, st.d
        N = st.N
        self.N = N
        a2 = alpha * alpha
        lam, lam_h, lam_w = lam * a2, lam_h * a2, lam_w / a2
        if not all(math.isfinite(v) for v in (lam, lam_h, lam_w)) or lam_w == 0.0:
            raise InputError(
                f"the coefficients rescaled to data of unit scale (data scale {alpha:.3g}: "
                f"lam={lam:.3g}, lam_h={lam_h:.3g}, lam_w={lam_w:.3g}) leave float64's range; "
                "rescale X or the coefficients"
            )
        self.mu = lam + lam_h
        s = lam / self.mu
        self.s = s
        self.lam, self.lam_w, self.lam_b, self.bias = lam, lam_w, lam_b, bias
        self.pi = st.counts / N
        self.m = (s / alpha) * st.sums.sum(0) / N  # mean of x~
        self.P = (s / alpha) * st.sums / N  # (1/N) Y^T X~
        self.cX = 0.5 * lam * (1.0 - s) * (st.sq / a2) / N
        self.c2 = (s / alpha) ** 2 / N  # second moment scale
        self.nW = self.K * self.d
        self.n = self.nW + (self.K if bias else 0)
        self._cache_x: np.ndarray | None = None
        self._cache: dict[str, Any] = {}

    def split(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        W = z[: self.nW].reshape(self.K, self.d)
        b = z[self.nW :] if self.bias else np.zeros(self.K)
        return W, b

    def cmul(self, V: np.ndarray) -> np.ndarray:
        if self.c2 == 0.0:
            return np.zeros_like(V)
        return self.c2 * self.st.second_times(V)

    def _eval(self, z: np.ndarray) -> dict[str, Any]:
        if self._cache_x is not None and np.array_equal(z, self._cache_x):
            return self._cache
        W, b = self.split(z)
        K = self.K
        Jw = self.cmul(W) + np.outer(b, self.m) - self.P
        Wm = W @ self.m
        Jb = Wm + b - self.pi
        S = np.diag(self.pi) - self.P @ W.T - np.outer(self.pi, b) + Jw @ W.T + np.outer(Jb, b)
        S = 0.5 * (S + S.T)
        A = np.eye(K) + (W @ W.T) / self.mu
        cf = scipy.linalg.cho_factor(A, lower=True)
        B = scipy.linalg.cho_solve(cf, np.eye(K))
        B = 0.5 * (B + B.T)
        f = 0.5 * float(np.sum(B * S)) + self.cX + 0.5 * self.lam_w * float(np.sum(W * W))
        if self.bias:
            f += 0.5 * self.lam_b * float(b @ b)
        SBW = S @ (B @ W)
        T = B @ SBW
        gW = B @ Jw - T / self.mu + self.lam_w * W
        parts = [gW.ravel()]
        if self.bias:
            parts.append(B @ Jb + self.lam_b * b)
        self._cache_x = z.copy()
        self._cache = {
            "W": W,
            "b": b,
            "Jw": Jw,
            "Jb": Jb,
            "S": S,
            "B": B,
            "SBW": SBW,
            "f": f,
            "g": np.concatenate(parts),
        }
        return self._cache

    def fg(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        c = self._eval(z)
        return c["f"], c["g"].copy()

    def f(self, z: np.ndarray) -> float:
        return self._eval(z)["f"]

    def g(self, z: np.ndarray) -> np.ndarray:
        return self._eval(z)["g"].copy()

    def hessp(self, z: np.ndarray, p: np.ndarray) -> np.ndarray:
        c = self._eval(z)
        W, B, S, Jw, Jb, SBW = c["W"], c["B"], c["S"], c["Jw"], c["Jb"], c["SBW"]
        V, cb = self.split(np.asarray(p, dtype=np.float64))
        mu = self.mu
        dA = (V @ W.T + W @ V.T) / mu
        dB = -B @ dA @ B
        dJw = self.cmul(V) + np.outer(cb, self.m)
        dS = V @ Jw.T + np.outer(cb, Jb)
        dS = dS + dS.T
        BW = B @ W
        dT = dB @ SBW + B @ (dS @ BW) + B @ (S @ (dB @ W)) + B @ (S @ (B @ V))
        hW = dB @ Jw + B @ dJw - dT / mu + self.lam_w * V
        parts = [hW.ravel()]
        if self.bias:
            dJb = V @ self.m + cb
            parts.append(dB @ Jb + B @ dJb + self.lam_b * cb)
        return np.concatenate(parts)

    def min_curvature(self, z: np.ndarray, seed: int) -> tuple[float, np.ndarray]:
        """Smallest Hessian eigenvalue and its unit eigenvector at ``z``."""
        n = self.n
        if n <= _DENSE_HESS:
            E = np.eye(n)
            Hm = np.stack([self.hessp(z, E[i]) for i in range(n)], axis=1)
            Hm = 0.5 * (Hm + Hm.T)
            w, U = np.linalg.eigh(Hm)
            return float(w[0]), U[:, 0]
        # Lanczos with full reorthogonalisation, 80 steps: Ritz values are Rayleigh quotients,
        # hence >= the smallest eigenvalue, so a negative one proves negative curvature; a
        # strongly negative direction (a saddle such as W = 0) is found in a few steps.
        v = np.random.default_rng(seed).standard_normal(n)
        m = min(n, 80)
        Q = np.zeros((m, n))
        alpha, beta = np.zeros(m), np.zeros(m)
        Q[0] = v / np.linalg.norm(v)
        k = m
        for j in range(m):
            w = self.hessp(z, Q[j])
            alpha[j] = Q[j] @ w
            w -= Q[: j + 1].T @ (Q[: j + 1] @ w)
            w -= Q[: j + 1].T @ (Q[: j + 1] @ w)
            if j + 1 < m:
                beta[j] = np.linalg.norm(w)
                if beta[j] < 1e-12 * max(1.0, abs(alpha[j])):
                    k = j + 1
                    break
                Q[j + 1] = w / beta[j]
        T = np.diag(alpha[:k]) + np.diag(beta[: k - 1], 1) + np.diag(beta[: k - 1], -1)
        theta, S = np.linalg.eigh(T)
        u = S[:, 0] @ Q[:k]
        return float(theta[0]), u / np.linalg.norm(u)


# ---------------------------------------------------------------------------------- solving
@dataclass
class StatsSolution:
    """Optimum ``(W, b)`` of the reduced MSE problem and how it was reached.

    Attributes
    ----------
    W : ndarray of shape (K, d)
    b : ndarray of shape (K,)
        Zeros when ``bias=False``.
    objective : float
        ``f(W, b, H*)`` of the (M)UFM, ``H*`` the closed-form features (MATH.md sec. 5).
    grad_norm : float
        ``sqrt(||grad_W f||^2 + ||grad_b f||^2)`` of the reduced objective; by the envelope
        theorem it equals the balanced-coordinate gradient norm of the full objective at
        ``(W, b, H*)``. When the data's RMS sample norm exceeds ``2^10`` the
        problem is solved on data rescaled by a power of two ``alpha`` (exactly equivalent:
        ``lam, lam_h -> lam alpha^2, lam_h alpha^2``, ``lam_w -> lam_w / alpha^2``,
        ``W -> alpha W``), and this is the gradient norm of that scale-free problem.
    status : Status
        ``Status.CONVERGED``, ``MAX_ITER`` or ``STALLED`` (equal to the strings
        ``"converged"``, ``"max_iter"``, ``"stalled"``).
    n_iter : int
        Newton (trust-region) iterations over all restarts.
    n_escapes : int
        Saddle escapes made by the second-order check.
    min_eig : float
        Smallest Hessian eigenvalue at the solution (>= -tolerance at a local minimum).
    lam, lam_h : float
        Coefficients, needed to form the features.
    history : dict
        ``"objective"`` and ``"grad_norm"`` per iteration.
    time_s : float
        Wall time of the solve (statistics excluded).
    """

    W: np.ndarray
    b: np.ndarray
    objective: float
    grad_norm: float
    status: Status
    n_iter: int
    n_escapes: int
    min_eig: float
    lam: float
    lam_h: float
    history: dict[str, np.ndarray] = field(default_factory=dict)
    time_s: float = 0.0

    @property
    def converged(self) -> bool:
        return self.status is Status.CONVERGED

    def _maps(self) -> tuple[np.ndarray, float]:
        mu = self.lam + self.lam_h
        Q = np.linalg.solve(self.W @ self.W.T + mu * np.eye(self.W.shape[0]), self.W)  # (K, d)
        return Q, self.lam / mu

    @thread_policy("X")
    def features(self, X: Any, y: Any, *, check: SufficientStatistics | None = None) -> Any:
        """The optimal features ``H*`` of a batch (one streaming pass; numpy or torch).

        ``h_i = W^T (W W^T + mu I)^{-1} (e_{y_i} - b) + (lam/mu) (x_i - W^T (W W^T + mu I)^{-1}
        W x_i)``. ``X`` may be ``None`` for the UFM (``lam = 0``), then ``y`` alone is used.

        Parameters
        ----------
        X : array of shape (N, d) or None
        y : array of shape (N,)
        check : SufficientStatistics, optional
            The statistics this solution was computed from, when ``(X, y)`` is the whole data
            set (numpy): the class counts and the sums of ``X W^T`` are compared with them, so
            data changed in place since the solve raise instead of giving features of another
            problem.

        Raises
        ------
        InputError
            ``check`` given and ``(X, y)`` no longer match it.
        """
        Q, s = self._maps()
        K = self.W.shape[0]
        # H = (E - b - s X W^T) Q + s X with E the one-hot labels: two (N, d) x (d, K)-sized
        # products and one in-place update, no (N, d) temporaries beyond H itself
        if isinstance(y, torch.Tensor):
            like = X if isinstance(X, torch.Tensor) else torch.empty(0, dtype=torch.float64)
            dev = y.device
            Qt = torch.as_tensor(Q, dtype=like.dtype, device=dev)
            Wt = torch.as_tensor(self.W, dtype=like.dtype, device=dev)
            bt = torch.as_tensor(self.b, dtype=like.dtype, device=dev)
            if X is not None and s != 0.0:
                T = (X @ Wt.T).mul_(-s).sub_(bt)
            else:
                T = (-bt).expand(y.shape[0], K).clone()
            T[torch.arange(y.shape[0], device=dev), y] += 1.0
            H = T @ Qt
            if X is not None and s != 0.0:
                H.add_(X, alpha=s)
            return H
        y = np.asarray(y)
        n = y.shape[0]
        has_x = X is not None and s != 0.0
        if has_x:
            X = np.ascontiguousarray(X, dtype=np.float64)
        d = self.W.shape[1]
        H = np.empty((n, d))
        WT = np.ascontiguousarray(self.W.T)
        step = max(4 * K, min(n, CHUNK_ELEMS // max(d, 1)))
        axpy = scipy.linalg.blas.daxpy

        # row blocks (split between the call's threads), chunk by chunk while X's rows are in
        # cache: T = e_y - b - s X W^T, H = T Q + s X written into its final place
        def block(start: int, stop: int) -> np.ndarray:
            Tb = np.empty((max(min(step, stop - start), 1), K))
            ar = np.arange(Tb.shape[0])
            colsum = np.zeros(K)
            for a in range(start, stop, step):
                e = min(a + step, stop)
                T, Hc = Tb[: e - a], H[a:e]
                if has_x:
                    np.matmul(X[a:e], WT, out=T)
                    T *= -s
                    T -= self.b
                else:
                    T[...] = -self.b
                colsum += T.sum(axis=0)
                T[ar[: e - a], y[a:e]] += 1.0
                np.matmul(T, Q, out=Hc)
                if has_x:
                    axpy(X[a:e].reshape(-1), Hc.reshape(-1), a=s)
            return colsum

        colsum = sum(map_row_blocks(n, block, width=d))
        if check is not None:
            self._check_unchanged(check, X if has_x else None, y, colsum, s)
        return H

    def _check_unchanged(
        self, st: SufficientStatistics, X: Any, y: Any, colsum: np.ndarray, s: float
    ) -> None:
        # colsum: column sums of T = -s X W^T - b, against the statistics' sum_i x_i: a checksum
        # that costs no extra pass (round-off bound: N eps times the sum of |x_i . w_k|)
        changed = not np.array_equal(np.bincount(y, minlength=st.K), st.counts)
        if not changed and X is not None and s != 0.0:
            got = (colsum + st.N * self.b) / -s
            want = st.sums.sum(axis=0) @ self.W.T
            scale = np.linalg.norm(self.W, axis=1) * math.sqrt(st.N * st.sq)
            eps = np.finfo(np.float64).eps
            tol = max(1e-9, 64 * st.N * eps) * scale + 1e-300
            # colsum also sums -b over N rows: its round-off, N eps N |b|, divided by s, is
            # what remains of it after adding N b back (it dominated for tiny data, X * 1e-10)
            tol = tol + 64 * st.N * eps * st.N * np.abs(self.b) / abs(s)
            changed = bool(np.any(np.abs(got - want) > tol))
        if changed:
            raise InputError(
                "X or y was changed in place after the solve, so the features H can no longer "
                "be formed from them; read result.H before changing the data (or pass a copy), "
                "or solve again"
            )

    def feature_metrics(
        self,
        X: np.ndarray,
        y: np.ndarray,
        st: SufficientStatistics,
        W: Any = None,
        b: Any = None,
        rank_tol: float | None = None,
    ) -> dict[str, float]:
        """:func:`ufm.collapse_metrics` of ``H*`` in one streaming pass over ``X``, without ``H*``.

        The class means of ``H*`` follow from the statistics (``h_i = a_{y_i} + G x_i``, so
        ``mu_k(H) = a_k + G m_k``: no pass over ``H``); they are the frozen means of a
        :class:`~ufm.metrics.CollapseAccumulator`, whose second pass (deviations from the
        means, NC1's ``K x K`` projections, the NCC and NC4 decisions) runs on each chunk of
        ``H*`` right after it is formed in a chunk-sized buffer, while it is in cache; the
        ``N x d`` array itself is never written (:meth:`features` forms it when it is asked
        for). The row blocks are split between the threads the call was granted
        (:func:`ufm.rowblocks.map_row_blocks`). The metrics are those of ``H = features(X, y)``
        up to round-off (the means differ from ``H``'s own by a few ulps; every scatter is
        computed from the deviations directly, so nothing cancels).

        Parameters
        ----------
        X : ndarray of shape (N, d), float64
        y : ndarray of shape (N,), int
        st : SufficientStatistics
            The statistics of ``(X, y)`` that produced this solution (every class present).
        W, b : array, optional
            Classifier handed to the accumulator (``nc3``, ``nc4``).
        rank_tol : float, optional
            NC1's eigenvalue cut-off (default: the metrics' default).

        Returns
        -------
        dict of str to float
            As :func:`ufm.collapse_metrics` (empty when the class means of ``H`` coincide).
        """
        from ..metrics.accumulator import CollapseAccumulator
        from ..metrics.inputs import DEFAULT_RANK_TOL

        Q, s = self._maps()
        K, d = self.W.shape
        X = np.ascontiguousarray(X, dtype=np.float64)
        y = np.asarray(y).astype(np.int64, copy=False)
        n = y.shape[0]
        # class means of H* from the statistics: mu_k = a_k + G m_k, G = s (I - W^T Q)
        means_x = st.sums / st.counts[:, None]
        A = (np.eye(K) - self.b) @ Q
        means_h = A + s * (means_x - (means_x @ self.W.T) @ Q)
        mx = float(np.abs(means_h).max())
        # the accumulator's internal power-of-two scale only guards against over/underflow
        # (ratios are exact under it); take it from the magnitude of the class means and of x
        rms_x = math.sqrt(st.sq / max(st.N, 1))
        ref = max(mx, abs(s) * rms_x * math.sqrt(max(d, 1)))
        e = math.frexp(ref)[1] if ref > 0 and math.isfinite(ref) else 0
        acc = CollapseAccumulator.from_statistics(
            st.counts.astype(np.int64),
            means_h * math.ldexp(1.0, -e),
            None,  # no scatter: the pass below computes it about the frozen means
            W=W,
            b=b,
            rank_tol=rank_tol or DEFAULT_RANK_TOL,
            scale_exp=e,
            device=torch.device("cpu"),
        )
        acc.end_first_pass()
        fr = acc.frozen
        sc = acc.unit  # power of two: the accumulator's units
        C = np.ascontiguousarray(fr["V"][:, :K].numpy())  # (d, K): centred means, scaled
        dist2 = fr["dist2"].numpy()
        has_w = acc.W is not None
        Wc = acc.W.numpy() if has_w else None
        bc = None if acc.b is None else acc.b.numpy()
        same_w = has_w and np.array_equal(Wc, self.W)
        # Per chunk, in the accumulator's units (sc: a power of two, so every scaling is
        # exact), with Zw = X W^T and T = e_y - b - s Zw:
        #   sc h = T (sc Q) + (s sc) x, so the deviation from the class mean is
        #   nd = mu_y - sc h = R_y + s Zw (sc Q) - (s sc) x,  R_k = mu_k - (e_k - b)(sc Q);
        #   NC1's projections M^T (mu_y - h) = nd C; the classifier's scores W h + b = T (Q W^T)
        #   + s Zw + b; for another classifier Wc: sc (Wc h) = (mu Wc^T)_y - nd Wc^T.
        # Three d x K products per row, every array K wide except nd (chunk-sized, in cache).
        Qs = Q * sc
        mus = acc.means.numpy()
        R = mus - (np.eye(K) - self.b) @ Qs
        QW = Q @ self.W.T
        table = np.concatenate([dist2] + ([] if same_w or not has_w else [mus @ Wc.T]), axis=1)
        R_t, table_t, y_t = torch.from_numpy(R), torch.from_numpy(table), torch.from_numpy(y)
        WT = np.ascontiguousarray(self.W.T)
        QsT = np.asfortranarray(Qs.T)  # (d, K): what dgemm reads without a copy
        gemm = scipy.linalg.blas.dgemm
        axpy = scipy.linalg.blas.daxpy
        step = max(4 * K, min(n, CHUNK_ELEMS // max(d, 1)))

        def block(start: int, stop: int) -> tuple[np.ndarray, np.ndarray, int, int]:
            nb = min(step, stop - start)
            Zb, Tb, Pb, Lb = (np.empty((nb, K)) for _ in range(4))
            Nb = np.empty((nb, d))
            Gb = torch.empty((nb, table.shape[1]), dtype=torch.float64)
            nd_t = torch.from_numpy(Nb)
            ar = np.arange(nb)
            S = np.zeros((K, K))
            ss2 = np.zeros(K)
            correct = mismatch = 0
            for a in range(start, stop, step):
                e = min(a + step, stop)
                m = e - a
                yc, y_c = y[a:e], y_t[a:e]
                Xc, Zw, T, Pm, nd = X[a:e], Zb[:m], Tb[:m], Pb[:m], Nb[:m]
                np.matmul(Xc, WT, out=Zw)
                np.multiply(Zw, -s, out=T)
                T -= self.b
                T[ar[:m], yc] += 1.0
                torch.index_select(R_t, 0, y_c, out=nd_t[:m])
                if s != 0.0:
                    # nd^T += s (sc Q)^T Zw^T in place (nd C-ordered = nd^T Fortran-ordered)
                    out = gemm(s, QsT, Zw.T, beta=1.0, c=nd.T, overwrite_c=1)
                    if out.ctypes.data != nd.ctypes.data:  # pragma: no cover - f2py copied
                        nd[...] = out.T
                    axpy(Xc.reshape(-1), nd.reshape(-1), a=-s * sc)
                ss2 += np.bincount(yc, weights=np.einsum("ij,ij->i", nd, nd), minlength=K)
                np.matmul(nd, C, out=Pm)  # M^T (mu_y - h), scaled
                S += Pm.T @ Pm
                Gt = torch.index_select(table_t, 0, y_c, out=Gb[:m]).numpy()
                # ||h - mu_k||^2 - ||h - mu_y||^2 = 2 (mu_y - h).(mu_y - mu_k) + ||mu_y - mu_k||^2;
                # the row constant (mu_y - h).mu_y does not change the argmin
                Pm *= 2.0
                Pm += Gt[:, :K]
                pred = np.argmin(Pm, axis=1)
                correct += int(np.count_nonzero(pred == yc))
                if has_w:
                    logits = Lb[:m]
                    if same_w:
                        np.matmul(T, QW, out=logits)
                        logits += s * Zw
                        if bc is not None:
                            logits += bc
                    else:  # sc (Wc h + bc), same argmax
                        np.matmul(nd, Wc.T, out=logits)
                        np.subtract(Gt[:, K:], logits, out=logits)
                        if bc is not None:
                            logits += sc * bc
                    mismatch += int(np.count_nonzero(np.argmax(logits, axis=1) != pred))
            return S, ss2, correct, mismatch

        parts = map_row_blocks(n, block, width=d)
        S = sum(p[0] for p in parts[1:]) + parts[0][0]
        ss2 = sum(p[1] for p in parts[1:]) + parts[0][1]
        acc.add_second_pass(
            {
                "S": torch.from_numpy(S),
                "ss2": torch.from_numpy(ss2),
                "counts2": acc.counts.clone(),  # every sample of the statistics, once
                "n2": n,
                "correct": sum(p[2] for p in parts),
                "mismatch": sum(p[3] for p in parts),
            }
        )
        try:
            return acc.compute()
        except DegenerateInputError:
            return {}

    def class_metrics(self, st: SufficientStatistics) -> dict[str, float]:
        """PFC1 and PFC2 of ``H*`` from the statistics alone (no pass over the data).

        ``H*`` is affine per class, ``h_i = a_{y_i} + G x_i``, so its class means are
        ``a_k + G m_k`` and its within-class scatter is ``tr(G S_W G)`` with ``S_W`` the
        within-class scatter of ``x`` (from the second moment minus the class-mean part).
        Needs the dense second moment (``N > d`` or ``gram="dense"``).
        """
        if st.second is None:
            st.densify()
        Q, s = self._maps()
        K, d, N = st.K, st.d, st.N
        G = s * (np.eye(d) - self.W.T @ Q)
        means_x = st.sums / st.counts[:, None]
        A = (np.eye(K) - self.b) @ Q
        means_h = A + means_x @ G  # G symmetric
        Sw = st.second - (st.sums.T / st.counts) @ st.sums  # sum over samples, d x d
        trW = float(np.sum((G @ Sw) * G)) / N
        mu_G = (st.counts / N) @ means_h
        M = means_h - mu_G
        trB = float(np.sum(M * M)) / K
        out: dict[str, float] = {}
        if trB > 0:
            out["pfc1"] = max(trW, 0.0) / trB
            Gm = M @ M.T
            E = (np.eye(K) - 1.0 / K) / math.sqrt(K - 1)
            out["pfc2"] = float(np.linalg.norm(Gm / np.linalg.norm(Gm) - E))
        return out


@thread_policy()
def solve_statistics(
    st: SufficientStatistics,
    *,
    lam: float = 0.1,
    lam_w: float = 5e-4,
    lam_h: float = 0.0,
    lam_b: float = 5e-4,
    bias: bool = True,
    tol: float = 1e-8,
    max_iter: int = 1000,
    seed: int = 0,
    init: str = "ridge",
    newton: str = "trust-ncg",
    W0: Any = None,
    b0: Any = None,
) -> StatsSolution:
    """Minimise the reduced MSE (M)UFM objective ``f(W, b)`` from sufficient statistics.

    .. math::

        f(W, b) = \\tfrac12 \\operatorname{tr}\\big[(I + W W^\\top/\\mu)^{-1} S(W, b)\\big]
        + c_X + \\tfrac{\\lambda_W}{2}\\|W\\|_F^2 + \\tfrac{\\lambda_b}{2}\\|b\\|^2

    (module docstring; MATH.md sec. 5). Trust-region Newton-CG with exact Hessian-vector
    products on the ``K d + K`` variables; at the end a second-order check computes the
    smallest Hessian eigenvalue, and a negative one (a saddle, such as the stationary start
    ``W = 0`` of data whose class means coincide) triggers a step along its eigenvector and a
    restart (at most 20). The cost does not depend on ``N``.

    Parameters
    ----------
    st : SufficientStatistics
        Statistics of the data (for the UFM, ``lam = 0``, only the class counts are used).
    lam, lam_w, lam_h, lam_b : float
        Coefficients (MATH.md sec. 5); ``lam + lam_h > 0``, ``lam_w > 0``.
    bias : bool
        Whether the classifier has a bias.
    tol : float
        Tolerance on the gradient norm (balanced coordinates, as :func:`ufm.solve`).
    max_iter : int
        Budget of Newton iterations over all restarts.
    seed : int
        Seed of the ``"normal"`` start and of the eigenvalue solver.
    init : {"ridge", "normal"}
        ``"ridge"``: ``(W, b)`` the ridge regression of the one-hot labels on ``x`` (the old
        start ``H = X``); ``"normal"``: seeded standard normal (the UFM's start).
    newton : {"trust-ncg", "trust-krylov"}
        The scipy trust-region method.
    W0, b0 : array of shape (K, d) and (K,), optional
        Explicit start (overrides ``init``); ``b0`` only with ``W0`` (default zeros).

    Returns
    -------
    StatsSolution

    Raises
    ------
    InputError
        Invalid coefficients or options, or a start ``W0``/``b0`` of the wrong shape or with
        non-finite values.
    DegenerateInputError
        Statistics without data or with an empty class.
    """
    if not isinstance(st, SufficientStatistics):
        raise InputError(f"st must be a SufficientStatistics, got {describe(st)}")
    lam = check_scalar(lam, "lam")
    lam_w = check_scalar(lam_w, "lam_w", low=0.0, low_inclusive=False)
    lam_h = check_scalar(lam_h, "lam_h")
    lam_b = check_scalar(lam_b, "lam_b")
    if lam + lam_h <= 0:
        raise InputError(f"lam + lam_h must be > 0, got lam={lam}, lam_h={lam_h}")
    if newton not in NEWTON_METHODS:
        raise InputError(f"newton must be one of {NEWTON_METHODS}, got {describe(newton)}")
    if init not in ("ridge", "normal"):
        raise InputError(f"init must be 'ridge' or 'normal', got {describe(init)}")
    tol = check_scalar(tol, "tol", low=0.0, low_inclusive=False)
    max_iter = check_int(max_iter, "max_iter", low=1)
    seed = check_seed(seed)
    t0 = time.perf_counter()
    st.check_ready()
    alpha = rescale_factor(st) if lam > 0 else 1.0
    red = ReducedObjective(st, lam, lam_w, lam_h, lam_b, bool(bias), alpha)
    K, d = red.K, red.d
    rng = np.random.default_rng(seed)
    if W0 is None and b0 is not None:
        raise InputError("b0 was given without W0; pass both (or neither) to set the start")
    if W0 is not None:
        W = _start_array(W0, "W0", (K, d)) * alpha
        b = np.zeros(K) if b0 is None else _start_array(b0, "b0", (K,))
    elif init == "normal" or lam == 0.0 or st.second is None:
        W = rng.standard_normal((K, d))
        b = rng.standard_normal(K)
        if init != "normal":
            W *= 1e-2 / math.sqrt(d)
            b = red.pi.copy()
    else:
        W, b = _ridge_start(st, red, red.lam_w, lam_b, bool(bias), alpha)
    z = np.concatenate([W.ravel(), b]) if bias else W.ravel().copy()
    hist_f, hist_g = [red.f(z)], [float(np.linalg.norm(red.g(z)))]
    # Aim below tol so that the full-gradient check of the caller passes after round-off;
    # Newton's quadratic convergence makes the extra digits nearly free.
    gtol = 0.05 * tol
    n_iter, n_esc, status = 0, 0, Status.MAX_ITER
    min_eig = float("nan")

    def cb(xk, *args):
        hist_f.append(red.f(xk))
        hist_g.append(float(np.linalg.norm(red.g(xk))))

    while True:
        budget = max_iter - n_iter
        if budget <= 0:
            status = Status.MAX_ITER
            break
        res = scipy.optimize.minimize(
            red.fg,
            z,
            jac=True,
            hessp=red.hessp,
            method=newton,
            callback=cb,
            options={"gtol": gtol, "maxiter": budget},
        )
        n_iter += int(res.nit)
        z = res.x
        gn = float(np.linalg.norm(red.g(z)))
        if gn > gtol and n_iter < max_iter:
            # the trust region stops when round-off hides the decrease of f; plain Newton
            # steps judged on the gradient norm finish the job near a minimum
            z, k = _newton_polish(red, z, gtol, cb, min(8, max_iter - n_iter))
            n_iter += k
            gn = float(np.linalg.norm(red.g(z)))
        if gn > tol:
            status = Status.MAX_ITER if n_iter >= max_iter else Status.STALLED
            break
        # second-order check: a stationary point with negative curvature is a saddle
        min_eig, v = red.min_curvature(z, seed)
        scale = max(1.0, abs(red.f(z)))
        if not min_eig < -1e-7 * scale:  # nan: the eigensolver found no eigenvalue
            status = Status.CONVERGED
            break
        if n_esc >= 20:
            status = Status.STALLED
            break
        n_esc += 1
        z = _escape(red, z, v, min_eig)
    W, b = red.split(z)
    gn = float(np.linalg.norm(red.g(z)))
    return StatsSolution(
        W=W / alpha,
        b=b.copy(),
        objective=red.f(z),
        grad_norm=gn,
        status=status,
        n_iter=n_iter,
        n_escapes=n_esc,
        min_eig=min_eig,
        lam=lam,
        lam_h=lam_h,
        history={"objective": np.asarray(hist_f), "grad_norm": np.asarray(hist_g)},
        time_s=time.perf_counter() - t0,
    )


def rescale_factor(st: SufficientStatistics) -> float:
    """Power of two nearest the RMS sample norm when that exceeds ``2^10``, else 1.

    Small data need no rescaling (the problem tends to the UFM, with nothing to overflow);
    rescaling them would blow ``lam_w`` up instead.
    """
    rms = math.sqrt(st.sq / max(st.N, 1))
    if rms <= 2.0**10:
        return 1.0
    return 2.0 ** round(math.log2(rms))


def _ridge_start(st, red, lam_w, lam_b, bias, alpha=1.0):
    """Ridge regression of the one-hot labels on ``[x, 1]`` (the start ``H = X``)."""
    K, d, N = st.K, st.d, st.N
    C = st.second / N / alpha**2
    m = st.sums.sum(0) / N / alpha
    P = st.sums / N / alpha
    if bias:
        Ca = np.block([[C + lam_w * np.eye(d), m[:, None]], [m[None, :], np.full((1, 1), 1.0)]])
        Ca[d, d] += lam_b
        Pa = np.concatenate([P, red.pi[:, None]], axis=1)
    else:
        Ca, Pa = C + lam_w * np.eye(d), P
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", scipy.linalg.LinAlgWarning)
            Z = scipy.linalg.solve(Ca, Pa.T, assume_a="pos").T
    except (np.linalg.LinAlgError, ValueError):
        Z = np.linalg.lstsq(Ca, Pa.T, rcond=None)[0].T
    W = Z[:, :d].copy()
    b = Z[:, d].copy() if bias else np.zeros(K)
    return W, b


def _newton_polish(
    red: ReducedObjective, z: np.ndarray, gtol: float, callback=None, steps: int = 8
) -> tuple[np.ndarray, int]:
    """Up to ``steps`` Newton-CG steps, each kept only if it lowers the gradient norm."""
    g = red.g(z)
    gn = float(np.linalg.norm(g))
    k = 0
    for _ in range(steps):
        op = scipy.sparse.linalg.LinearOperator(
            (red.n, red.n), matvec=lambda p, z=z: red.hessp(z, p)
        )
        p, _ = scipy.sparse.linalg.cg(op, -g, rtol=1e-12, maxiter=4 * red.n)
        z_new = z + p
        g_new = red.g(z_new)
        gn_new = float(np.linalg.norm(g_new))
        if not gn_new < gn:
            break
        z, g, gn = z_new, g_new, gn_new
        k += 1
        if callback is not None:
            callback(z)
        if gn <= gtol:
            break
    return z, k


def _escape(red: ReducedObjective, z: np.ndarray, v: np.ndarray, lam_min: float) -> np.ndarray:
    """Step along a negative-curvature direction until the objective decreases."""
    f0 = red.f(z)
    nz = max(1.0, float(np.linalg.norm(z)))
    t = nz
    for _ in range(60):
        cands = [z + t * v, z - t * v]
        vals = [red.f(c) for c in cands]
        i = int(np.argmin(vals))
        if vals[i] < f0 - 1e-14 * max(1.0, abs(f0)):
            return cands[i]
        t *= 0.5
    return z + math.sqrt(2 * abs(lam_min)) * v
