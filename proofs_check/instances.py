"""Random instances for the theorem checks (numpy generators; reproducible from a seed).

Every generator takes a :class:`numpy.random.Generator`. The hypothesis strategies in
:mod:`proofs_check.strategies` build the same objects from drawn parameters.

Exact ETFs
----------
:func:`dyadic_etf` returns a simplex ETF whose coordinates are dyadic rationals, hence exactly
representable in float64: rows ``K e_k - 1`` (embedded in ``R^d``, ``d >= K``) rotated by a
product of signed permutations and Householder reflections ``I - 2 v v^T / |v|^2`` with
``v in {-1, 0, 1}^d`` and ``|v|^2`` a power of two. Its Gram matrix is *exactly* proportional to
``I - 11^T/K``, so certificates about lines ending at it involve no rounding of the end point.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from ufm.errors import InputError
from ufm.metrics import simplex_etf

__all__ = [
    "LineInstance",
    "MeansInstance",
    "MUFMInstance",
    "dyadic_etf",
    "gaussian_data",
    "random_line_instance",
    "random_means_instance",
    "near_etf_means_instance",
    "random_mufm_instance",
    "DEGENERATE_KINDS",
]

#: Degenerate instance kinds the generators can produce on request.
DEGENERATE_KINDS = {
    1: ("collapsed", "d_lt_k_minus_1", "c_zero"),
    2: ("d_lt_k_minus_1", "zero_transport", "k_equals_2"),
    3: ("no_transport",),
    4: ("collapsed",),
}


class _Instance:
    """What the instances of every theorem share: a class count ``K`` and a ``tag``.

    Attributes
    ----------
    K : int
        The number of classes: rows of the class-indexed array that the subclass names in
        ``_class_rows``.
    tag : dict of str to Any
        How a generator built the instance (``"degenerate"`` kind, ``"family"``, ``"rho"``, ...);
        the last field of every instance class, empty by default (Theorem 2's check reports
        the ``"family"``).
    """

    _class_rows: ClassVar[str]
    tag: dict[str, Any]

    @property
    def K(self) -> int:
        """The number of classes."""
        return int(getattr(self, self._class_rows).shape[0])


# ---------------------------------------------------------------------------------- building blocks


def dyadic_rotation(d: int, rng: np.random.Generator, *, n_reflections: int = 3) -> np.ndarray:
    """A random orthogonal ``(d, d)`` matrix with dyadic-rational entries (exact in float64).

    .. math:: Q = P_\\pi S \\prod_j \\big(I - 2 v_j v_j^\\top / \\|v_j\\|^2\\big)

    with ``P_pi`` a permutation, ``S`` a diagonal of signs and ``v_j in {-1,0,1}^d`` with
    ``2^k`` nonzero entries. Products of a few such factors stay exactly representable.
    """
    if d < 1:
        raise InputError(f"d must be >= 1, got {d}")
    Q = np.eye(d)[rng.permutation(d)] * rng.choice([-1.0, 1.0], size=d)
    for _ in range(n_reflections):
        ks = [2**j for j in range(0, 3) if 2**j <= d]
        k = int(rng.choice(ks))
        v = np.zeros(d)
        idx = rng.choice(d, size=k, replace=False)
        v[idx] = rng.choice([-1.0, 1.0], size=k)
        Hh = np.eye(d) - (2.0 / k) * np.outer(v, v)
        Q = Q @ Hh
    return Q


def dyadic_etf(
    K: int, d: int, rng: np.random.Generator, *, scale_exp: int = 0, offset: bool = False
) -> np.ndarray:
    """An exactly representable simplex ETF, rows ``(K, d)``; needs ``d >= K``.

    Rows are ``2^scale_exp (K e_k - 1) Q`` (padded to ``d``), optionally shifted by a common
    integer offset (class end points need not be centred; the metrics centre them).
    """
    if K < 2 or d < K:
        raise InputError(f"dyadic_etf needs K >= 2 and d >= K, got K={K}, d={d}")
    base = np.zeros((K, d))
    base[:, :K] = K * np.eye(K) - 1.0
    out = (base @ dyadic_rotation(d, rng)) * 2.0**scale_exp
    if offset:
        out = out + rng.integers(-2, 3, size=d).astype(float)
    return out


def float_etf(K: int, d: int, rng: np.random.Generator, *, scale: float = 1.0) -> np.ndarray:
    """A rotated simplex ETF from :func:`ufm.metrics.simplex_etf` (float, any ``d >= K - 1``)."""

    return simplex_etf(K, d, seed=int(rng.integers(2**31)), scale=scale)


def gaussian_data(
    rng: np.random.Generator, K: int, n: int, d: int, *, sigma: float = 0.5, spread: float = 1.0
) -> np.ndarray:
    """Balanced data ``(K, n, d)``: Gaussian clouds around centres on the sphere of radius
    ``spread`` (the paper's Sec. IV-B setting)."""
    C = rng.standard_normal((K, d))
    C *= spread / np.linalg.norm(C, axis=1, keepdims=True)
    return C[:, None, :] + sigma * rng.standard_normal((K, n, d))


def _procrustes(target: np.ndarray, source: np.ndarray) -> np.ndarray:
    """``source @ R`` with the orthogonal ``R`` that best matches ``target`` (rows)."""
    U, _, Vt = np.linalg.svd(source.T @ target)  # (d, d): a square orthogonal R = U Vt
    return source @ (U @ Vt)


# ---------------------------------------------------------------------------------------- Theorem 1


@dataclass(frozen=True, eq=False)
class LineInstance(_Instance):
    """A Theorem 1 instance: labelled data and the class end points of the line (MATH.md eq. 10).

    Attributes
    ----------
    X : numpy.ndarray
        Data, rows ``(N, d)``: the start ``h_i(0) = x_i`` of the line.
    y : numpy.ndarray
        Labels ``(N,)`` in ``0..K-1``.
    end_means : numpy.ndarray
        Class end points ``mu*_k``, rows ``(K, d)``: sample ``i`` moves to ``mu*_{y_i}``.
    tag : dict of str to Any
        See :class:`_Instance`.
    """

    _class_rows = "end_means"
    X: np.ndarray
    y: np.ndarray
    end_means: np.ndarray
    tag: dict[str, Any] = field(default_factory=dict)


def random_line_instance(
    rng: np.random.Generator, *, degenerate: str | None = None, max_K: int = 5, max_d: int = 8
) -> LineInstance:
    """A random Theorem 1 instance.

    Half of the end points are rotated towards the data's class means (a short transport, so
    typically ``c > 0``); the rest are randomly rotated (``c`` of either sign). ``degenerate``
    in ``{"collapsed", "d_lt_k_minus_1", "c_zero"}`` produces an instance outside the
    assumptions on purpose.
    """
    K = int(rng.integers(2, max_K + 1))
    n = int(rng.integers(2, 6))
    if degenerate == "d_lt_k_minus_1":
        K = max(K, 3)
        d = K - 2
        X = gaussian_data(rng, K, n, d)
        end = rng.standard_normal((K, d))
    elif degenerate == "c_zero":
        d = K + int(rng.integers(1, 4))
        X = np.zeros((K, n, d))
        X[:, :, K:] = gaussian_data(rng, K, n, d - K)
        end = dyadic_etf(K, K, rng)
        end = np.concatenate([end, np.zeros((K, d - K))], axis=1)
    else:
        d = int(rng.integers(max(K, 2), max(K, max_d) + 1))
        X = gaussian_data(rng, K, n, d, sigma=float(rng.uniform(0.1, 1.5)))
        if degenerate == "collapsed":
            X = np.repeat(X.mean(axis=1, keepdims=True), n, axis=1)
        elif degenerate is not None:
            raise InputError(f"unknown degenerate kind {degenerate!r} for Theorem 1")
        if rng.random() < 0.5:
            end = dyadic_etf(K, d, rng, scale_exp=int(rng.integers(-2, 3)), offset=True)
        else:
            end = float_etf(K, d, rng, scale=float(np.exp(rng.uniform(-1, 1))))
            if rng.random() < 0.6:
                means = X.mean(axis=1)
                end = _procrustes(means - means.mean(0), end)
    y = np.repeat(np.arange(K), n)
    return LineInstance(X.reshape(K * n, d), y, end, {"degenerate": degenerate})


# ---------------------------------------------------------------------------------------- Theorem 2


@dataclass(frozen=True, eq=False)
class MeansInstance(_Instance):
    """A Theorem 2 instance: the ends of the line of class means ``M(t)`` (MATH.md eq. 11).

    Attributes
    ----------
    means0 : numpy.ndarray
        Start class means ``M_0``, rows ``(K, d)`` (balanced centring).
    means_star : numpy.ndarray
        End class means ``M*``, rows ``(K, d)``, same shape as ``means0``.
    tag : dict of str to Any
        See :class:`_Instance`.
    """

    _class_rows = "means0"
    means0: np.ndarray
    means_star: np.ndarray
    tag: dict[str, Any] = field(default_factory=dict)


def random_means_instance(
    rng: np.random.Generator,
    *,
    rho: float | None = None,
    degenerate: str | None = None,
    max_K: int = 6,
    max_d: int = 8,
) -> MeansInstance:
    """A random Theorem 2 instance ``M_0 = M^* + rho ||M^*||_F Delta / ||Delta||_F``.

    ``rho`` is the relative transport cost ``||M_0 - M^*||_F / ||M^*||_F`` (log-uniform on
    ``[0.01, 10]`` when omitted); ``Delta`` is a random centred direction. The ETF end point
    is exact (dyadic) when ``d >= K`` with probability 0.7, else a float ETF.
    ``degenerate`` in ``{"d_lt_k_minus_1", "zero_transport", "k_equals_2"}`` builds an instance
    outside the assumptions (for ``K = 2`` PFC2 is identically zero).
    """
    K = 2 if degenerate == "k_equals_2" else int(rng.integers(3, max(3, max_K) + 1))
    if degenerate == "d_lt_k_minus_1":
        d = K - 2
        Ms = rng.standard_normal((K, d))
        return MeansInstance(Ms + rng.standard_normal((K, d)), Ms, {"degenerate": degenerate})
    d = int(rng.integers(K - 1, max(K - 1, max_d) + 1))
    if d >= K and rng.random() < 0.7:
        Ms = dyadic_etf(K, d, rng, scale_exp=int(rng.integers(-1, 2)))
    else:
        Ms = float_etf(K, d, rng, scale=float(np.exp(rng.uniform(-1, 1))))
    if degenerate == "zero_transport":
        return MeansInstance(Ms.copy(), Ms, {"degenerate": degenerate, "rho": 0.0})
    if degenerate not in (None, "k_equals_2"):
        raise InputError(f"unknown degenerate kind {degenerate!r} for Theorem 2")
    if rho is None:
        rho = float(10 ** rng.uniform(-2, 1))
    delta = rng.standard_normal((K, d))
    delta -= delta.mean(axis=0)
    M0 = Ms + rho * np.linalg.norm(Ms) * delta / np.linalg.norm(delta)
    return MeansInstance(M0, Ms, {"family": "random", "rho": rho, "delta": delta})


def near_etf_means_instance(
    rng: np.random.Generator,
    *,
    K: int | None = None,
    d: int | None = None,
    angle: float | None = None,
    noise: float | None = None,
) -> MeansInstance:
    r"""A Theorem 2 instance whose start is a slightly rotated simplex ETF plus small noise.

    .. math:: M_0 = M^* \exp(\theta A) + \varepsilon \|M^*\|_F Z / \|Z\|_F,

    with ``M*`` an exact (dyadic) ETF, ``A`` a random skew-symmetric ``(d, d)`` matrix with
    ``||A||_F = 1``, ``theta = angle`` (log-uniform on ``[0.01, 0.5]`` when omitted) and ``Z``
    a random ``(K, d)`` matrix; ``noise = epsilon`` is relative to ``||M*||_F`` (log-uniform on
    ``[1e-6, 1e-3]`` when omitted). Both ends are (nearly) ETFs, so PFC2 is (nearly) zero at
    both ends and rises in between: such directions have a critical relative cost of the order
    of their own cost (about ``theta / 2``), so no positive cost threshold holds for every
    direction. ``K`` defaults to ``3..6`` and ``d`` to ``K..K+2``.
    """
    from scipy.linalg import expm

    K = int(rng.integers(3, 7)) if K is None else int(K)
    d = int(rng.integers(K, K + 3)) if d is None else int(d)
    if K < 3 or d < K:
        raise InputError(f"near_etf_means_instance needs K >= 3 and d >= K, got K={K}, d={d}")
    angle = float(10 ** rng.uniform(-2, math.log10(0.5))) if angle is None else float(angle)
    noise = float(10 ** rng.uniform(-6, -3)) if noise is None else float(noise)
    Ms = dyadic_etf(K, d, rng)
    A = rng.standard_normal((d, d))
    A = A - A.T
    A /= np.linalg.norm(A)
    Z = rng.standard_normal((K, d))
    Z *= noise * np.linalg.norm(Ms) / np.linalg.norm(Z)
    M0 = Ms @ expm(angle * A) + Z
    rho = float(np.linalg.norm((M0 - M0.mean(0)) - Ms) / np.linalg.norm(Ms))
    return MeansInstance(M0, Ms, {"family": "near_etf", "angle": angle, "noise": noise, "rho": rho})


# --------------------------------------------------------------------------------- Theorems 3 and 4


@dataclass(frozen=True, eq=False)
class MUFMInstance(_Instance):
    """A Theorem 3/4 instance: balanced data and the hyper-parameters of the MUFM (MATH.md sec. 5).

    Attributes
    ----------
    X : numpy.ndarray
        Balanced data ``(K, n, d)``: ``n`` samples of each of ``K`` classes.
    lam : float
        Transport coefficient ``lam`` (``0``: no transport term).
    lam_w, lam_b, lam_h : float
        Penalties on ``W``, ``b`` and the last-layer features ``H``.
    bias : bool
        Whether the classifier has a bias ``b``.
    loss : str
        ``"mse"`` or ``"ce"``.
    L : int
        Depth: the number of layers ``H_1, ..., H_L`` after ``H_0 = X`` (Theorem 3).
    tag : dict of str to Any
        See :class:`_Instance`.
    """

    _class_rows = "X"
    X: np.ndarray
    lam: float
    lam_w: float
    lam_b: float = 0.0
    lam_h: float = 0.0
    bias: bool = True
    loss: str = "mse"
    L: int = 3
    tag: dict[str, Any] = field(default_factory=dict)

    def flat(self) -> tuple[np.ndarray, np.ndarray]:
        """``(X (N, d), y (N,))`` with samples of class ``k`` contiguous."""
        K, n, d = self.X.shape
        return self.X.reshape(K * n, d), np.repeat(np.arange(K), n)

    def penalties(self) -> dict[str, Any]:
        """The objective's constants other than ``lam``: ``lam_w``, ``lam_h``, ``lam_b``, ``loss``.

        Keyword arguments of :func:`mufm.solve` and of the multilayer objective alike.
        """
        return {"lam_w": self.lam_w, "lam_h": self.lam_h, "lam_b": self.lam_b, "loss": self.loss}


def random_mufm_instance(
    rng: np.random.Generator,
    *,
    degenerate: str | None = None,
    max_K: int = 3,
    max_n: int = 4,
    max_d: int = 5,
    loss: str = "mse",
) -> MUFMInstance:
    """A small random MUFM instance (Sec. IV-B setting): Gaussian classes around centres on
    the unit sphere; ``lam`` log-uniform on ``[0.1, 10]``, ``lam_w`` on ``[1e-3, 1e-1]``,
    ``L`` in ``2..4``, bias on with ``lam_b = 0`` or ``lam_b`` on ``[1e-3, 1e-1]``.
    ``degenerate="collapsed"`` collapses every class to its mean; ``"no_transport"`` sets
    ``lam = 0`` (no transport term: the intermediate layers are undetermined)."""
    K = int(rng.integers(2, max_K + 1))
    n = int(rng.integers(2, max_n + 1))
    d = int(rng.integers(max(K - 1, 2), max_d + 1))
    X = gaussian_data(rng, K, n, d, sigma=float(rng.uniform(0.2, 1.0)))
    lam = float(10 ** rng.uniform(-1, 1))
    if degenerate == "collapsed":
        X = np.repeat(X.mean(axis=1, keepdims=True), n, axis=1)
    elif degenerate == "no_transport":
        lam = 0.0
    elif degenerate is not None:
        raise InputError(f"unknown degenerate kind {degenerate!r} for MUFM instances")
    lam_b = 0.0 if rng.random() < 0.5 else float(10 ** rng.uniform(-3, -1))
    return MUFMInstance(
        X=X,
        lam=lam,
        lam_w=float(10 ** rng.uniform(-3, -1)),
        lam_b=lam_b,
        bias=True,
        loss=loss,
        L=int(rng.integers(2, 5)),
        tag={"degenerate": degenerate},
    )
