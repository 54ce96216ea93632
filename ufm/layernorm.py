r"""The sphere-constrained (LayerNorm) unconstrained feature model.

Features live where LayerNorm (without its affine part) puts them: every feature has zero mean
across its ``d`` coordinates and Euclidean norm ``sqrt(d)``,

.. math::

    \mathcal S_d = \{ n \in \mathbb R^d :\ \mathbf 1^\top n = 0,\ \|n\| = \sqrt d \},

the sphere of radius :math:`\sqrt d` in the ``(d-1)``-dimensional subspace orthogonal to the
all-ones vector. The model (Súkeník, Lampert, Mondelli 2025, the large-depth limit of regularised
LayerNorm ResNets and transformers) is

.. math::

    \min_{W, b,\ n_i \in \mathcal S_d}\ \frac1N \sum_{i=1}^N \ell(W h_i + b, y_i)
    + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_b}{2}\|b\|^2
    \;\Big[+ \frac{\lambda_A}{2}\big(\|\gamma\|^2 + \|\beta\|^2\big)\Big],

with :math:`h_i = n_i` (``affine=False``) or :math:`h_i = \gamma \odot n_i + \beta`
(``affine=True``, LayerNorm's learnable scale and shift, weight-decayed with ``lam_affine``,
default ``lam_w``, as a training run with weight decay on every parameter does). There is no
feature penalty: :math:`\tfrac{\lambda_H}{2}\|n_i\|^2 = \lambda_H d / 2` is a constant on
:math:`\mathcal S_d`, so a nonzero ``lam_h`` is rejected.

Solver: the engine's L-BFGS (:func:`ufm.engine.lbfgs.lbfgs`, strong-Wolfe line search) with
manifold hooks, on the product of :math:`\mathcal S_d^N` with the Euclidean blocks (a problem
variant of the engine: the objective is :class:`ufm.engine.core.Problem` with per-sample weights
plus the affine part, :class:`_Flat` supplies the hooks): tangent projection
:math:`P_n(g) = g - \bar g\mathbf 1 - \tfrac{\langle g, n\rangle}{d} n`, retraction
:math:`R_n(\xi) = \sqrt d\,(n + \xi)/\|n + \xi\|`, vector transport by projection; the result is
built by the engine's :func:`ufm.engine.pipeline.build_result`. The metric weights each ``n_i`` by ``1/N`` (the balanced coordinates of
:mod:`ufm.engine.core`), so the gradient norm compared with ``tol`` is
:math:`\sqrt{\|\nabla_W f\|^2 + \|\nabla_b f\|^2 + N\sum_i \|P_{n_i}\nabla_{n_i} f\|^2 + \dots}`.
For MSE, ``(W, b)`` is eliminated in closed form (ridge regression, MATH.md sec. 5) and the
Riemannian gradient in ``n`` is the partial one at the optimal ``(W, b)`` (envelope theorem).

Global optimum (balanced classes, ``affine=False``), :func:`layernorm_etf_optimum`: a convex
relaxation that replaces every feature by its class mean (Jensen), drops the rank and keeps
:math:`\|\mu_k\|^2 \le d`, then symmetrises over class permutations, reduces to a problem in a
few scalars whose minimiser is explicit. For CE (any bias setting) and for MSE with an
unpenalised bias its value is attained by the simplex ETF on the sphere (needs ``d >= K``), which
is therefore globally optimal. For MSE without bias, or with ``lam_b > 0``, and ``d >= K + 1``,
the optimum's centred class means are still a simplex ETF, but the class means share an offset
(an orthogonal frame without bias); with ``d = K`` there is no room for the offset and the simplex
ETF is optimal again (a majorisation argument). With ``affine=True`` the problem has spurious
local minima (seen in multi-start runs): no closed form, use several seeds.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.optimize

from .engine.core import NP, Params, Problem
from .engine.lbfgs import lbfgs
from .engine.methods import Progress, Raw
from .engine.pipeline import build_result
from .engine.registry import manifold_method
from .errors import (
    BackendError,
    InputError,
    RankWarning,
    SolverError,
)
from .losses import check_loss
from .objective import objective
from .result import SolveResult
from .validate import (
    check_features,
    check_int,
    check_labels,
    check_scalar,
    check_seed,
    describe,
    to_tensor,
)

__all__ = [
    "LayerNormOptimum",
    "layernorm_etf_optimum",
    "layernorm_normalize",
    "layernorm_objective",
    "solve_layernorm",
]

DEFAULT_LAM = 5e-4
DEFAULT_MAX_ITER = 10_000
DEFAULT_TOL = 1e-8
MEMORY = 10
_EPS = np.finfo(np.float64).eps


# ------------------------------------------------------------------------------ the manifold
def layernorm_normalize(Z: Any) -> np.ndarray:
    r"""Map rows onto LayerNorm's image (LayerNorm without affine and without ``eps``).

    .. math::

        n = \sqrt d\, \frac{z - \bar z \mathbf 1}{\|z - \bar z \mathbf 1\|}

    Parameters
    ----------
    Z : array of shape (N, d)
        Rows to normalise, ``d >= 2``.

    Returns
    -------
    numpy.ndarray of shape (N, d)
        Rows with zero mean and norm ``sqrt(d)`` (float64), for rows at any scale of float64
        (``1e300`` and subnormal rows included).

    Raises
    ------
    InputError
        Non-finite values, ``d < 2``, or a constant row. A constant row has no direction:
        LayerNorm without ``eps`` is undefined there (0/0) and with ``eps`` maps it to ``0``,
        which is not on the sphere, so it is refused rather than mapped. A row that is not
        constant in float64 (``[1, 1, 1, 1 + 2**-52]``) keeps its direction.

    Notes
    -----
    Each row is first divided by its largest absolute entry (no overflow of the mean or the
    norm: rows like ``1e300`` were mapped to 0), then centred twice: the second pass removes
    the round-off of the first mean, which dominates rows whose entries differ in their last
    bits (those were left off the sphere).
    """
    Z = check_features(Z, "Z").cpu().numpy().astype(np.float64)
    if Z.shape[1] < 2:
        raise InputError(f"Z must have d >= 2 columns to be mean-centred, got {describe(Z)}")
    scale = np.abs(Z).max(axis=1, keepdims=True)
    C = Z / np.where(scale > 0, scale, 1.0)
    C = C - C.mean(axis=1, keepdims=True)
    C -= C.mean(axis=1, keepdims=True)
    nrm = np.linalg.norm(C, axis=1, keepdims=True)
    if np.any(nrm == 0):
        bad = np.flatnonzero(nrm[:, 0] == 0)[:5].tolist()
        raise InputError(
            f"rows {bad} of Z are constant: a constant row has no direction (LayerNorm maps it "
            "to 0, not onto the sphere); drop those rows or add variation to them"
        )
    return math.sqrt(Z.shape[1]) * (C / nrm)


def _tangent(Nm: np.ndarray, G: np.ndarray) -> np.ndarray:
    d = Nm.shape[1]
    G = G - G.mean(axis=1, keepdims=True)
    return G - (np.einsum("ij,ij->i", G, Nm) / d)[:, None] * Nm


# ------------------------------------------------------------------------ value and gradient
class _Model:
    """The LayerNorm UFM's value and gradients: the engine's :class:`~ufm.engine.core.Problem`
    (numpy, ``lam = lam_h = 0``, per-sample weights ``w``) plus LayerNorm's affine part.

    ``Y`` is the one-hot label matrix ``(N, K)``; ``w`` weights summing to 1 (``None``: ``1/N``
    each; the class phase passes ``n_k / N``).
    """

    def __init__(self, Y, K, d, loss, bias, affine, lam_w, lam_b, lam_a, w=None):
        self.K, self.d, self.loss, self.bias, self.affine = K, d, loss, bias, affine
        self.lam_w, self.lam_b, self.lam_a, self.w = lam_w, lam_b, lam_a, w
        y = np.asarray(Y).argmax(axis=1)
        params = Params(0.0, lam_w, 0.0, lam_b, loss, bias)
        self.pb = Problem(NP, y, K, d, None, params, np.empty(0), weights=w)

    @property
    def N(self) -> int:
        return self.pb.N

    @property
    def weights(self) -> np.ndarray:
        return np.full(self.N, 1.0 / self.N) if self.w is None else self.w

    @property
    def zeros_b(self) -> np.ndarray:
        return np.zeros(self.K)

    def features(self, Nm, g, be):
        return Nm if not self.affine else Nm * g + be

    def ridge(self, H):
        """Optimal ``(W, b)`` of the MSE objective for fixed features ``H`` (the engine's)."""
        return self.pb.ridge(H)

    def full(self, W, b, H):
        """Objective (without the affine penalty) and its Euclidean gradients in W, b, H."""
        val, gW, gb, gH = self.pb.full(W, b, H)
        return val, gW, (self.zeros_b if gb is None else gb), gH

    def affine_terms(self, Nm, g, be, gH):
        """Affine penalty and gradients of ``(n, gamma, beta)`` given ``grad_H``."""
        if not self.affine:
            return 0.0, gH, None, None
        pen = 0.5 * self.lam_a * float(g @ g + be @ be)
        return (
            pen,
            gH * g,
            np.einsum("ij,ij->j", gH, Nm) + self.lam_a * g,
            gH.sum(axis=0) + self.lam_a * be,
        )


# Variables are dicts of blocks; "n" lives on the product of spheres, the rest is Euclidean.
def _fg(model: _Model, x: dict[str, np.ndarray]):
    Nm = x["n"]
    g, be = x.get("gamma"), x.get("beta")
    H = model.features(Nm, g, be)
    if model.loss == "mse":
        W, b = model.ridge(H)
    else:
        W, b = x["W"], x.get("b", model.zeros_b)
    f, gW, gb, gH = model.full(W, b, H)
    pen, gN, gg, gbe = model.affine_terms(Nm, g, be, gH)
    grad = {"n": gN}
    if model.loss == "ce":
        grad["W"] = gW
        if model.bias:
            grad["b"] = gb
    if model.affine:
        grad["gamma"], grad["beta"] = gg, gbe
    return f + pen, grad, (W, b)


class _Flat:
    """The LayerNorm UFM as a problem variant of the engine: flat balanced coordinates and the
    manifold hooks of :func:`ufm.engine.lbfgs.lbfgs`.

    ``z`` stacks the blocks of ``x`` in the order ``n, W, b, gamma, beta`` (those present), with
    row ``i`` of ``n`` multiplied by ``sqrt(w_i)`` (``w_i = 1/N`` per sample, ``n_k/N`` in the
    class phase): the Euclidean metric of ``z`` is the weighted metric of MATH.md's balanced
    coordinates, so the engine's plain dot products are the Riemannian ones and its gradient
    norm is the one compared with ``tol``. Row ``i`` of the ``n`` block lives on the sphere of
    radius ``sqrt(w_i d)`` in the mean-zero subspace: ``project`` removes the row mean and the
    radial part, ``retract`` centres and rescales each row (the metric projection).
    """

    def __init__(self, model: _Model, x: dict[str, np.ndarray]):
        self.model = model
        self.keys = [k for k in ("n", "W", "b", "gamma", "beta") if k in x]
        self.shapes = {k: x[k].shape for k in self.keys}
        self.sw = np.sqrt(model.weights)[:, None]
        self.radius = np.sqrt(model.weights * model.d)[:, None]
        self.stop = x["n"].size

    def pack(self, x: dict[str, np.ndarray]) -> np.ndarray:
        return np.concatenate([(x[k] * self.sw if k == "n" else x[k]).ravel() for k in self.keys])

    def unpack(self, z: np.ndarray) -> dict[str, np.ndarray]:
        out, i = {}, 0
        for k in self.keys:
            size = int(np.prod(self.shapes[k]))
            v = z[i : i + size].reshape(self.shapes[k])
            out[k] = v / self.sw if k == "n" else v
            i += size
        return out

    def fg(self, z: np.ndarray) -> tuple[float, np.ndarray]:
        """Objective and Euclidean gradient in ``z`` (the engine projects it)."""
        f, eg, _ = _fg(self.model, self.unpack(z))
        return f, np.concatenate(
            [(eg[k] / self.sw if k == "n" else eg[k]).ravel() for k in self.keys]
        )

    def project(self, z: np.ndarray, v: np.ndarray) -> np.ndarray:
        """Orthogonal projection of ``v`` onto the tangent space at ``z`` (``n`` rows only)."""
        shape = self.shapes["n"]
        Z, V = z[: self.stop].reshape(shape), v[: self.stop].reshape(shape)
        V = V - V.mean(axis=1, keepdims=True)
        V = V - (np.einsum("ij,ij->i", V, Z) / np.einsum("ij,ij->i", Z, Z))[:, None] * Z
        return np.concatenate([V.ravel(), v[self.stop :]])

    def retract(self, z: np.ndarray) -> np.ndarray:
        """Map ``z`` (a point plus a step) back onto the product of spheres."""
        Y = z[: self.stop].reshape(self.shapes["n"]).copy()
        Y -= Y.mean(axis=1, keepdims=True)  # exact mean zero despite round-off
        Y *= self.radius / np.linalg.norm(Y, axis=1, keepdims=True)
        return np.concatenate([Y.ravel(), z[self.stop :]])


def _minimise(model: _Model, x: dict[str, np.ndarray], max_iter: int, tol: float, verbose: bool):
    """Riemannian L-BFGS on the LayerNorm UFM: the engine's L-BFGS with the sphere's hooks.

    Returns ``(x, status, n_iter, history_f, history_g)``.
    """
    flat = _Flat(model, x)
    bar = Progress(verbose, max_iter, "layernorm ufm (R-L-BFGS)")
    try:
        out = lbfgs(
            flat.fg, flat.pack(x), NP, max_iter=max_iter, tol=tol, memory=MEMORY,
            eps_f=10 * _EPS, callback=lambda it, f, gn: bar.update(1, f, gn), manifold=flat,
        )  # fmt: skip
    finally:
        bar.close()
    return flat.unpack(out.x), out.status, out.n_iter, out.history_f, out.history_g


# ------------------------------------------------------------------------------------ solve
def _check_common(lam_w, lam_b, lam_affine, loss, bias, affine):
    lam_w = check_scalar(lam_w, "lam_w", low=0.0, low_inclusive=False)
    lam_b = check_scalar(lam_b, "lam_b")
    lam_a = lam_w if lam_affine is None else check_scalar(lam_affine, "lam_affine")
    check_loss(loss)
    if not isinstance(bias, bool | np.bool_):
        raise InputError(f"bias must be True or False, got {describe(bias)}")
    if not isinstance(affine, bool | np.bool_):
        raise InputError(f"affine must be True or False, got {describe(affine)}")
    if affine and lam_a <= 0:
        raise InputError(
            f"lam_affine must be > 0 with affine=True, got {lam_a}: an unpenalised LayerNorm "
            "scale gamma lets W shrink while gamma grows, so the infimum is not attained"
        )
    return lam_w, lam_b, lam_a, bool(bias), bool(affine)


def _affine_scale(lam_w: float, lam_a: float) -> float:
    """The balancing scale ``a = (lam_w / lam_affine)^(1/4)``: ``lam_w / a^2 = lam_affine a^2``.

    ``W / a``, ``(gamma, beta) a`` with ``lam_w a^2``, ``lam_affine / a^2`` is the same problem,
    so every pair ``(lam_w, lam_affine)`` with the same product is solved as the one balanced
    problem, from the same start: the solve is scale-equivariant for every ``a`` (not only
    outside a window). Before, problems within ``a`` in ``[2^-8, 2^8]`` were solved as given: their
    start ``W0 ~ N(0, 1)``, ``gamma = 1`` is a different point of the balanced problem for each
    ``a``, and the affine model has spurious local minima and is ill-conditioned away from
    balance, so ``a = 2^5`` ended at another objective (1e-8 to 2e-1 relative, ``max_iter``).
    The exponents are split off (:func:`math.frexp`) so that for ``lam_w / lam_affine = 2^(4e)``
    the scale is exactly ``2^e`` and the rescaled problem is bit for bit the balanced one.
    1.0 where the rescaled penalties would leave float64's normal range.
    """
    m1, k1 = math.frexp(lam_w)
    m2, k2 = math.frexp(lam_a)
    q, r = divmod(k1 - k2, 4)
    a = math.ldexp((m1 / m2 * 2.0**r) ** 0.25, q)
    if not (2.0**-1022 <= lam_w / a / a < math.inf and 2.0**-1022 <= lam_a * a * a < math.inf):
        return 1.0
    return a


def _check_rank(K: int, d: int) -> None:
    """``d >= K``: solved, the optimum a simplex ETF (or with an offset). ``3 <= d < K``: solved
    with a :class:`~ufm.errors.RankWarning` (the optimum is no ETF). ``d = 2 < K``: refused."""
    if d >= K:
        return
    if d == 2:
        raise InputError(
            f"d=2 < K={K}: LayerNorm features in d=2 take only the two values +-(1, -1) (the "
            "mean-zero subspace is a line), so the classes must share them: a combinatorial "
            "assignment the Riemannian solver cannot search (its tangent space is 0, it keeps "
            f"the start's assignment); use d >= 3 (d >= {K} for the simplex ETF optimum)"
        )
    warnings.warn(
        f"d={d} < K={K}: LayerNorm features live in the (d-1)-dimensional mean-zero subspace, "
        f"fewer than the K-1={K - 1} dimensions of a simplex ETF, so the optimum is not an ETF "
        "(a spherical code of K points in d-1 dimensions, generalised neural collapse, Jiang et "
        "al. 2024; for d = 3 the regular K-gon) and the PFC2/NC2 metrics do not vanish; the "
        "problem can have several local minima (use several seeds), and layernorm_etf_optimum "
        f"has no closed form for it; use d >= {K} for the ETF regime",
        RankWarning,
        stacklevel=4,
    )


def solve_layernorm(
    y: Any,
    *,
    d: int,
    loss: str = "ce",
    lam_w: float = DEFAULT_LAM,
    lam_b: float = DEFAULT_LAM,
    lam_h: float | None = None,
    bias: bool = True,
    affine: bool = False,
    lam_affine: float | None = None,
    method: str = "lbfgs",
    backend: str | None = None,
    device: Any = None,
    dtype: Any = None,
    max_iter: int | None = None,
    tol: float | None = None,
    seed: int = 0,
    verbose: bool = False,
) -> SolveResult:
    r"""Minimise the sphere-constrained (LayerNorm) UFM on its manifold.

    Called by :func:`ufm.solve` with ``features="layernorm"`` (use that).

    .. math::

        \min_{W, b,\ n_i \in \mathcal S_d}\ \frac1N \sum_{i=1}^N \ell(W h_i + b, y_i)
        + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_b}{2}\|b\|^2
        + \Big[\frac{\lambda_A}{2}(\|\gamma\|^2 + \|\beta\|^2)\Big],
        \qquad h_i = n_i \ \text{or}\ \gamma\odot n_i + \beta,

    :math:`\mathcal S_d = \{n : \mathbf 1^\top n = 0, \|n\| = \sqrt d\}`.

    Parameters
    ----------
    y : array of shape (N,)
        Integer labels ``0..K-1`` (every class present, ``K >= 2``).
    d : int
        Feature dimension. ``d >= K``: the optimum is a simplex ETF (the ETF of ``K`` classes
        needs ``K - 1`` dimensions in the ``(d-1)``-dimensional mean-zero subspace), see
        :func:`layernorm_etf_optimum`. ``3 <= d < K`` (issue 22): solved, with a
        :class:`~ufm.errors.RankWarning`: the optimum is not an ETF but a spherical code of
        ``K`` points in ``d - 1`` dimensions (generalised neural collapse, Jiang et al. 2024;
        for ``d = 3`` the tests find the regular ``K``-gon from every seed), there is no closed
        form, and the metrics are reported as they are. ``d = 2 < K`` is refused: the sphere is
        then the two points ``+-(1, -1)``, a combinatorial assignment of classes that the
        Riemannian solver (tangent space 0) cannot search.
    loss : {"ce", "mse"}
        Cross entropy or :math:`\tfrac12\|z - e_y\|^2`.
    lam_w, lam_b : float
        Weight decay of ``W`` (> 0) and ``b`` (>= 0).
    lam_h : None or 0
        Meaningless on the sphere (:math:`\|n_i\|^2 = d` is fixed); anything else is rejected.
    bias : bool
        Whether the classifier has a bias.
    affine : bool
        LayerNorm's learnable per-coordinate scale ``gamma`` (start 1) and shift ``beta``
        (start 0): ``h_i = gamma * n_i + beta``. They are returned in
        ``result.params["gamma"]`` and ``result.params["beta"]``; ``result.H`` holds ``h_i``
        and ``result.params["n"]`` the normalised features ``n_i``.
    lam_affine : float, optional
        Weight decay of ``gamma`` and ``beta``, default ``lam_w`` (weight decay on every
        parameter, as in the seed paper's training). ``W / a``, ``(gamma, beta) a`` with
        ``lam_w a^2``, ``lam_affine / a^2`` is the same problem: it is always solved at the
        balancing scale ``a = (lam_w / lam_affine)^(1/4)`` (``result.params["scale"]``), where
        both penalties are ``sqrt(lam_w lam_affine)``, and mapped back, so results are
        scale-equivariant (``tol`` applies to the balanced problem).
    method : {"lbfgs"}
        Riemannian L-BFGS (the only method).
    backend, device, dtype
        Only numpy on the CPU in float64 (``None``, ``"numpy"``, ``"cpu"``).
    max_iter : int, optional
        Iteration budget, default 10,000.
    tol : float, optional
        Tolerance on the Riemannian gradient norm in balanced coordinates, default ``1e-8``.
    seed : int
        Seed of the start: standard-normal ``W``, ``b``, then one feature per class, the
        normalised projection of a standard-normal row (``numpy.random.default_rng(seed)``).
    verbose : bool
        tqdm progress bar.

    Notes
    -----
    The solver first minimises over *collapsed* configurations, one feature per class with
    weight :math:`n_k/N`, then expands and continues per sample. This loses nothing: for fixed
    :math:`(W, b, \gamma, \beta)` each sample's best feature depends only on its label, so a
    collapsed global minimiser exists and both problems have the same optimal value; and at a
    collapsed point the class problem's gradient norm (metric weight :math:`n_k/N`) equals the
    per-sample one, so the class phase stops exactly when the per-sample criterion holds. The
    per-sample phase (usually zero iterations) certifies the final point on the full problem.
    The cost of an iteration falls from :math:`O(NKd)` to :math:`O(K^2 d)`.

    Returns
    -------
    SolveResult
        ``X = None``, ``method = "lbfgs"`` (the engine's L-BFGS, on the sphere:
        ``params["manifold"]``); ``history`` per iteration (for MSE the objective is
        the reduced one, ``(W, b)`` optimal for each ``H``; the class phase, then the
        per-sample phase); ``params["features"] =
        "layernorm"``.

    Raises
    ------
    InputError
        Bad labels, ``d < 2``, ``d = 2 < K``, ``lam_h`` not 0, ``lam_w <= 0``, negative
        coefficients, unknown options.
    BackendError
        A torch backend or a non-CPU device.

    Warns
    -----
    RankWarning
        ``3 <= d < K``: solved, but the optimum is not a simplex ETF (see ``d``).
    ConvergenceWarning
        Stopped before ``tol`` (``result.status`` is ``"max_iter"`` or ``"stalled"``).

    References
    ----------
    Súkeník, Lampert, Mondelli, "Neural Collapse is Globally Optimal in Deep Regularized ResNets
    and Transformers", 2025; Absil, Mahony, Sepulchre, "Optimization Algorithms on Matrix
    Manifolds", 2008; Huang, Gallivan, Absil, "A Broyden class of quasi-Newton methods for
    Riemannian optimization", SIAM J. Optim. 2015.
    """
    d = check_int(d, "d", low=1)
    if lam_h is not None and check_scalar(lam_h, "lam_h") != 0:
        raise InputError(
            f"lam_h={lam_h} is meaningless with features='layernorm': every feature has norm "
            "sqrt(d), so (lam_h/2)||h||^2 is the constant lam_h*d/2; leave lam_h unset (or 0)"
        )
    manifold_method(method)  # None: the default, Riemannian L-BFGS
    if backend not in (None, "numpy") or (device is not None and str(device) != "cpu"):
        raise BackendError(
            f"features='layernorm' runs on numpy on the CPU only; got backend={backend!r}, "
            f"device={device!r}; leave them unset"
        )
    if dtype is not None and np.dtype(str(dtype).replace("torch.", "")) != np.float64:
        raise BackendError(f"features='layernorm' works in float64 only, got dtype={dtype!r}")
    lam_w, lam_b, lam_a, bias, affine = _check_common(lam_w, lam_b, lam_affine, loss, bias, affine)
    y0 = to_tensor(y, "y")
    if y0.ndim != 1 or y0.shape[0] == 0:
        raise InputError(
            f"y must be a non-empty 1-d array of integer labels 0..K-1, got {describe(y)}"
        )
    yt, K = check_labels(y0, int(y0.shape[0]))
    _check_rank(K, d)
    seed = check_seed(seed)
    max_iter = DEFAULT_MAX_ITER if max_iter is None else check_int(max_iter, "max_iter", low=1)
    tol = DEFAULT_TOL if tol is None else check_scalar(tol, "tol", low=0.0, low_inclusive=False)
    yn = yt.cpu().numpy()
    N = yn.shape[0]
    Y = np.zeros((N, K))
    Y[np.arange(N), yn] = 1.0
    # With affine=True, W -> W / a, (gamma, beta) -> a (gamma, beta) with lam_w a^2 and
    # lam_affine / a^2 is the same problem: solve it at the power of two a where the two
    # penalties are about equal, and map back (scale-equivariance; issue 20).
    lam_w_user, lam_a_user = lam_w, lam_a
    a = _affine_scale(lam_w, lam_a) if affine else 1.0
    lam_w, lam_a = lam_w / a / a, lam_a * a * a
    model = _Model(Y, K, d, loss, bias, affine, lam_w, lam_b, lam_a)
    counts = np.bincount(yn, minlength=K).astype(np.float64)

    rng = np.random.default_rng(seed)
    x: dict[str, np.ndarray] = {}
    W0 = rng.standard_normal((K, d))
    b0 = rng.standard_normal(K) if bias else np.zeros(K)
    x["n"] = layernorm_normalize(rng.standard_normal((K, d)))  # one start per class
    if loss == "ce":
        x["W"] = W0
        if bias:
            x["b"] = b0
    if affine:
        x["gamma"], x["beta"] = np.ones(d), np.zeros(d)

    hist_f: list[float] = []
    hist_g: list[float] = []
    n_iter = 0
    if N > K:
        # Phase 1: the collapsed problem, K class features weighted by n_k / N (exact, see the
        # docstring); its gradient norm equals the per-sample one at the expanded point.
        cmodel = _Model(np.eye(K), K, d, loss, bias, affine, lam_w, lam_b, lam_a, w=counts / N)
        x, _, n_iter, hist_f, hist_g = _minimise(cmodel, x, max_iter, tol, verbose)
    x["n"] = x["n"][yn]
    # Phase 2: per sample, from the expanded point (usually converged on arrival).
    x, status, it2, hf, hg = _minimise(model, x, max_iter - n_iter, tol, verbose)
    skip = 1 if hist_f else 0
    hist_f, hist_g = hist_f + hf[skip:], hist_g + hg[skip:]
    n_iter += it2

    # Final point: full (joint) Riemannian gradient, including the W, b blocks for MSE.
    Nm = x["n"]
    H = model.features(Nm, x.get("gamma"), x.get("beta"))
    W, b = model.ridge(H) if loss == "mse" else (x["W"], x["b"] if bias else np.zeros(K))
    f, gW, gb, gH = model.full(W, b, H)
    pen, gN, gg, gbe = model.affine_terms(Nm, x.get("gamma"), x.get("beta"), gH)
    f += pen
    sq = float(np.sum(gW * gW)) + (float(gb @ gb) if bias else 0.0)
    sq += N * float(np.sum(_tangent(Nm, gN) ** 2))
    if affine:
        sq += float(gg @ gg + gbe @ gbe)
    gn = math.sqrt(sq)  # of the rescaled problem, where tol is meaningful
    if a != 1.0:
        W, H = W / a, H * a
        x["gamma"], x["beta"] = x["gamma"] * a, x["beta"] * a
        lam_w, lam_a = lam_w_user, lam_a_user
    params = {
        "model": "ufm",
        "features": "layernorm",
        "K": K,
        "d": d,
        "lam": 0.0,
        "lam_w": lam_w,
        "lam_h": 0.0,
        "lam_b": lam_b,
        "loss": loss,
        "bias": bias,
        "affine": affine,
        "lam_affine": lam_a if affine else None,
        "method": "lbfgs",
        "manifold": "sphere of radius sqrt(d) in the centred subspace (tangent projection and "
        "retraction)",
        "backend": "numpy",
        "device": None,
        "dtype": "float64",
        "max_iter": max_iter,
        "tol": tol,
        "seed": seed,
        "init": "standard normal W, b; n = layernorm_normalize(standard normal) "
        "from numpy.random.default_rng(seed); gamma = 1, beta = 0",
        "n": Nm,
        "gamma": x.get("gamma"),
        "beta": x.get("beta"),
        "scale": a,
    }
    raw = Raw(W, b, H, status, n_iter, hist_f, hist_g, reduced=(f, gn))
    return build_result(
        None, raw, y_out=yn, X_out=None, method="lbfgs", backend="numpy", params=params,
        tol=tol, stacklevel=4, bias=bias,  # the caller of ufm.solve
    )  # fmt: skip


# ------------------------------------------------------------------------ public objective
def layernorm_objective(
    W: Any,
    b: Any,
    H: Any,
    y: Any,
    *,
    lam_w: float,
    lam_b: float = 0.0,
    loss: str = "ce",
    gamma: Any = None,
    beta: Any = None,
    lam_affine: float | None = None,
    rtol: float = 1e-6,
) -> float:
    r"""Objective of the LayerNorm UFM at given variables, after checking the constraint.

    .. math::

        f = \frac1N \sum_i \ell(W h_i + b, y_i) + \frac{\lambda_W}{2}\|W\|_F^2
        + \frac{\lambda_b}{2}\|b\|^2 \Big[+ \frac{\lambda_A}{2}(\|\gamma\|^2 + \|\beta\|^2)\Big],
        \quad h_i = n_i\ \text{or}\ \gamma \odot n_i + \beta,

    evaluated by :func:`ufm.objective` (with ``lam_h = 0``) plus the affine penalty.

    Parameters
    ----------
    W : array of shape (K, d)
        Classifier.
    b : array of shape (K,) or None
        Bias (``None``: no bias).
    H : array of shape (N, d)
        Normalised features ``n_i`` (LayerNorm's output before its affine part): each row must
        have mean 0 and norm ``sqrt(d)`` up to ``rtol`` (relative to ``sqrt(d)``); use
        :func:`layernorm_normalize` on raw features (a trained LayerNorm's ``eps`` shrinks norms
        slightly).
    y : array of shape (N,)
        Labels ``0..K-1``.
    lam_w, lam_b : float
        Penalties.
    loss : {"ce", "mse"}
        Loss.
    gamma, beta : array of shape (d,), optional
        LayerNorm's affine scale and shift (both or neither).
    lam_affine : float, optional
        Their penalty, default ``lam_w``.
    rtol : float
        Tolerance of the constraint check.

    Returns
    -------
    float

    Raises
    ------
    InputError
        A row off the sphere, wrong shapes, only one of ``gamma``/``beta``, bad coefficients.
    """
    Hn = check_features(H, "H").cpu().numpy().astype(np.float64)
    N, d = Hn.shape
    scale = math.sqrt(d)
    mean_err = float(np.max(np.abs(Hn.mean(axis=1)))) / scale
    norm_err = float(np.max(np.abs(np.linalg.norm(Hn, axis=1) - scale))) / scale
    rtol = check_scalar(rtol, "rtol")
    if mean_err > rtol or norm_err > rtol:
        raise InputError(
            f"H is not on LayerNorm's sphere (row mean up to {mean_err:.2e}*sqrt(d), norm off "
            f"sqrt(d) by up to {norm_err:.2e}*sqrt(d) > rtol={rtol:g}); pass "
            "layernorm_normalize(H), or raise rtol"
        )
    if (gamma is None) != (beta is None):
        raise InputError("pass both gamma and beta (LayerNorm's affine part) or neither")
    pen = 0.0
    if gamma is not None:
        g = check_features(gamma, "gamma", ndim=1).cpu().numpy().astype(np.float64)
        be = check_features(beta, "beta", ndim=1).cpu().numpy().astype(np.float64)
        if g.shape != (d,) or be.shape != (d,):
            raise InputError(
                f"gamma and beta must have shape ({d},), got {describe(gamma)} and {describe(beta)}"
            )
        lam_a = check_scalar(lam_w if lam_affine is None else lam_affine, "lam_affine")
        pen = 0.5 * lam_a * float(g @ g + be @ be)
        Hn = Hn * g + be
    return objective(W, b, Hn, y, lam_w=lam_w, lam_b=lam_b, lam_h=0.0, loss=loss) + pen


# ------------------------------------------------------------------ global optimum, balanced
@dataclass(frozen=True)
class LayerNormOptimum:
    r"""Global optimum of the balanced LayerNorm UFM (``affine=False``) and its certificate.

    Attributes
    ----------
    objective : float
        Value of ``(W, b, H)`` below (per-sample averaged, so independent of ``n``).
    W : numpy.ndarray of shape (K, d)
    b : numpy.ndarray of shape (K,)
    H : numpy.ndarray of shape (K, d)
        Feature of class ``k`` in row ``k`` (every sample of class ``k`` equals it); rows have
        mean 0 and norm ``sqrt(d)``. Use ``H[y]`` for per-sample features.
    structure : str
        ``"etf"``: the class features form a simplex ETF (mean zero);
        ``"etf+offset"``: centred class features form a simplex ETF, plus a shared offset
        (``"orthogonal frame"`` when the offset makes them orthogonal, MSE without bias).
    etf_objective : float
        Value of the simplex-ETF candidate (equal to ``objective`` when ``structure="etf"``).
    lower_bound : float
        A proven lower bound (the relaxation's value, see :func:`layernorm_etf_optimum`): no
        feasible point with balanced classes (any ``n`` per class) has a smaller objective.
    optimal : bool
        ``objective - lower_bound <= 1e-12 * max(1, |objective|)``: ``(W, b, H)`` is a global
        minimiser.
    gap : float
        ``objective - lower_bound`` (0 up to round-off in every case derived so far: the field
        is kept so that callers can check the certificate).
    params : dict
        ``K``, ``d``, ``loss``, ``lam_w``, ``lam_b``, ``bias`` and the relaxation's scalars
        (``gamma1``: squared norm scale of the centred class features, ``p``: ``K`` times the
        squared norm of the shared offset).
    """

    objective: float
    W: np.ndarray
    b: np.ndarray
    H: np.ndarray
    structure: str
    etf_objective: float
    lower_bound: float
    optimal: bool
    gap: float
    params: dict[str, Any] = field(default_factory=dict)


def _ce_beta(K: int, gamma1: float, lam_w: float) -> tuple[float, float]:
    """Minimise log(1 + (K-1) e^{-t}) + lam_w (K-1) t^2 / (2 gamma1) over t (convex)."""
    c = lam_w * (K - 1) / gamma1

    def dg(t):
        e = (K - 1) * math.exp(-t)
        return -e / (1 + e) + c * t

    hi = 1.0 / c  # dg(hi) > 0
    t = scipy.optimize.brentq(dg, 0.0, hi, xtol=1e-300, rtol=4 * _EPS, maxiter=500)
    val = math.log1p((K - 1) * math.exp(-t)) + 0.5 * c * t * t
    return t, val


def _class_frame(K: int, d: int, extra: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Orthonormal V (d, K-1) spanning a centred-simplex subspace, and unit u (d,) orthogonal to
    it, all inside the mean-zero subspace of R^d; plus C (K, K-1) orthonormal with 1^T C = 0."""
    # Orthonormal basis of the mean-zero subspace of R^d (Helmert-like, via QR).
    A = np.eye(d)[:, : d - 1] - np.eye(d)[:, 1:d]
    Q, _ = np.linalg.qr(A)
    B = np.eye(K)[:, : K - 1] - np.eye(K)[:, 1:K]
    C, _ = np.linalg.qr(B)  # (K, K-1), columns orthogonal to 1
    V = Q[:, : K - 1]
    u = Q[:, K - 1] if extra else np.zeros(d)
    return V, u, C


def layernorm_etf_optimum(
    K: int,
    d: int,
    *,
    loss: str = "ce",
    lam_w: float = DEFAULT_LAM,
    lam_b: float = DEFAULT_LAM,
    bias: bool = True,
) -> LayerNormOptimum:
    r"""Global optimum of the balanced LayerNorm UFM in closed form (``affine=False``).

    **Relaxation.** Replace each feature by its class mean :math:`\mu_k` (the loss is convex in
    the logits, so by Jensen this does not increase the objective; :math:`\|\mu_k\|^2 \le d`),
    lift to the Gram matrix of :math:`(w_k, \mu_k)` and drop its rank; the problem is convex and
    invariant under class permutations, so its optimum may be taken permutation-symmetric:
    Gram blocks :math:`a_1 I + a_2 J`, with :math:`J = \mathbf 1\mathbf 1^\top`. Writing
    :math:`\gamma_1` for the eigenvalue of the class-mean Gram on centred vectors and :math:`p`
    on :math:`\mathbf 1` (so :math:`(K-1)\gamma_1 + p \le dK`), the relaxation becomes, for CE,

    .. math::

        \min_{t \ge 0}\ \log\big(1 + (K-1)e^{-t}\big) + \frac{\lambda_W (K-1)^2}{2 d K} t^2
        \qquad (p = 0,\ \gamma_1 = dK/(K-1)),

    attained by the simplex ETF :math:`h_i = \sqrt d\, u_{y_i}` on the sphere,
    :math:`W = (t/\gamma_1) H_{\text{class}}`, :math:`b = 0`. For MSE, with
    :math:`c_1 = \lambda_W K (K-1)`, :math:`c_2 = \lambda_W K (1 + 1/\lambda_b)` (:math:`c_2 =
    \lambda_W K` without bias; :math:`p = 0` with an unpenalised bias, value
    :math:`\lambda_W (K-1)^2 / (2(dK + c_1))`),

    .. math::

        F(p) = \frac{\lambda_W}{2}\Big[\frac{(K-1)^2}{dK - p + c_1} + \frac{1}{p + c_2}\Big],
        \qquad p^\star = \max\big(0,\ d - (K-1)\lambda_W/\lambda_b\big)

    (:math:`p^\star = d` without bias: the orthogonal frame), attained by class features whose
    centred parts form a simplex ETF of squared norm :math:`\gamma_1 (K-1)/K` plus a shared
    offset of squared norm :math:`p^\star/K` orthogonal to them (needs ``d >= K + 1``).

    **d = K (MSE).** The class means then span at most ``K - 1`` dimensions, a constraint the
    relaxation above ignores. Eliminating ``(W, b)`` for fixed class means gives
    :math:`\tfrac{\lambda_W}{2}\operatorname{tr}\big((\lambda_W K I + G + aJ)^{-1}\big)`,
    :math:`G` the class-mean Gram (rank :math:`\le K-1`, trace :math:`\le dK`),
    :math:`a = \lambda_W/\lambda_b` (0 without bias). By Ky Fan's principle the eigenvalues of
    :math:`G + aJ` are weakly supermajorised by :math:`(\gamma, \dots, \gamma, aK)`,
    :math:`\gamma = dK/(K-1)`, and :math:`x \mapsto 1/(\lambda_W K + x)` is convex and
    decreasing, so the simplex ETF (``p = 0``) is globally optimal (for MSE without bias it is
    not the only optimum: any :math:`G = \gamma(I - ss^\top/K)`, :math:`s \in \{\pm 1\}^K`,
    has the same value). ``lower_bound`` then equals ``objective``.

    Parameters
    ----------
    K : int
        Number of classes, ``K >= 2``.
    d : int
        Feature dimension, ``d >= K``. For ``d < K`` the closed form does not exist: the
        relaxation's optimum needs ``K - 1`` mean-zero dimensions for the centred simplex, so its
        value is then only a lower bound that no feasible point attains, and the optimum is a
        spherical code with no known closed form for general ``K``, ``d``; such ``d`` are
        refused (:func:`solve_layernorm` solves them numerically).
    loss : {"ce", "mse"}
    lam_w : float
        Weight decay of ``W`` (> 0).
    lam_b : float
        Weight decay of ``b`` (>= 0; 0 = unpenalised bias).
    bias : bool
        Whether the classifier has a bias.

    Returns
    -------
    LayerNormOptimum

    Raises
    ------
    InputError
        ``K < 2``, ``d < K`` (no closed form, see ``d``), bad coefficients or options.

    References
    ----------
    Súkeník, Lampert, Mondelli (2025); Zhu et al., NeurIPS 2021 (the free-feature analogue).

    Examples
    --------
    >>> from ufm import layernorm_etf_optimum
    >>> opt = layernorm_etf_optimum(4, 8, loss="ce", lam_w=5e-3)
    >>> opt.structure, opt.optimal
    ('etf', True)
    """
    K = check_int(K, "K", low=2)
    d = check_int(d, "d", low=1)
    if d < K:
        raise InputError(
            f"d={d} < K={K}: the closed form is the simplex ETF on LayerNorm's sphere, which needs "
            f"K-1={K - 1} dimensions of the (d-1)={d - 1}-dimensional mean-zero subspace; for d < K "
            "the optimum is a spherical code with no closed form here (the relaxation's value "
            f"is not attained); use d >= {K}, or solve_layernorm / ufm.solve(features="
            "'layernorm'), which solve d >= 3 numerically"
        )
    lam_w, lam_b, _, bias, _ = _check_common(lam_w, lam_b, None, loss, bias, False)
    if K * max(K, d) > 2**27:
        # the optimum is built as dense (K, d) arrays: refuse sizes that cannot be allocated
        raise InputError(
            f"layernorm_etf_optimum(K={K}, d={d}) would build arrays of {K * max(K, d):,} "
            "float64 entries, above the limit of 2**27 (1 GiB); use a smaller K or d (the "
            "optimal value depends on d only through the formula in the docstring)"
        )
    V, u, C = _class_frame(K, d, extra=d >= K + 1)

    def features(p):
        g1 = (d * K - p) / (K - 1)
        return g1, math.sqrt(g1) * (C @ V.T) + math.sqrt(p / K) * u[None, :]

    def ridge_wb(Hc):
        m = _Model(np.eye(K), K, d, "mse", bias, False, lam_w, lam_b, 0.0)
        return m.ridge(Hc)

    def value(W, b, Hc):
        m = _Model(np.eye(K), K, d, loss, bias, False, lam_w, lam_b, 0.0)
        return m.full(W, b, Hc)[0]

    if loss == "ce":
        g1, Hc = features(0.0)
        try:
            t, val = _ce_beta(K, g1, lam_w)
        except (ValueError, OverflowError, FloatingPointError) as exc:
            raise InputError(
                f"lam_w={lam_w:g} is too large for the cross-entropy optimum to be computed in "
                f"float64 ({exc}); use lam_w <= 1e100 (the optimum is W = 0 long before that)"
            ) from exc
        W, b = (t / g1) * Hc, np.zeros(K)
        lb = val
        p_star = 0.0
        etf_val = val
        structure = "etf"
    else:
        c1 = lam_w * K * (K - 1)
        if bias and lam_b == 0:
            c2, p_star = math.inf, 0.0
        elif bias:
            c2 = lam_w * K * (1 + 1 / lam_b)
            p_star = max(0.0, d - (K - 1) * lam_w / lam_b)
        else:
            c2, p_star = lam_w * K, float(d)

        def F(p):
            return 0.5 * lam_w * ((K - 1) ** 2 / (d * K - p + c1) + 1.0 / (p + c2))

        if d == K:
            # The class means span at most K-1 = d-1 dimensions; the rank-constrained bound
            # (majorisation argument in the docstring) is attained by the ETF, so p = 0.
            p_star = 0.0
        lb, etf_val = F(p_star), F(0.0)
        p_use = p_star
        g1, Hc = features(p_use)
        W, b = ridge_wb(Hc)
        val = F(p_use)
        if p_use == 0.0:
            structure = "etf"
        elif not bias or abs(g1 - d) <= 1e-12 * d:
            structure = "orthogonal frame"
        else:
            structure = "etf+offset"
    val_check = value(W, b, Hc)
    if not abs(val_check - val) <= 1e-9 * max(1.0, abs(val)):
        raise SolverError(  # pragma: no cover - an internal consistency check
            f"layernorm_etf_optimum: closed form {val!r} != evaluated {val_check!r}"
        )
    gap = max(0.0, val - lb)
    return LayerNormOptimum(
        objective=float(val),
        W=W,
        b=b,
        H=Hc,
        structure=structure,
        etf_objective=float(etf_val),
        lower_bound=float(lb),
        optimal=gap <= 1e-12 * max(1.0, abs(val)),
        gap=float(gap),
        params={
            "K": K,
            "d": d,
            "loss": loss,
            "lam_w": lam_w,
            "lam_b": lam_b,
            "bias": bias,
            "gamma1": float(g1),
            "p": float(p_star),
        },
    )
