"""Catalogue of reference UFM / MUFM problems with certified global optima.

Like cvxpy's solver-test helpers: each :class:`ReferenceProblem` carries deterministic data
(built from a seed), the keyword arguments of its ``solve`` call, and a certified optimum
computed by :func:`ufm.certify` / :func:`mufm.certify` on first use (``functools.cache``), so
that ``pytest`` pays the cvxpy time once per session (about 10 s for the whole catalogue on
two cores). Every problem here is *exactly* certified (the convex bound is attained by a
feasible point); ``tests/test_reference_catalogue.py`` checks that and then requires every
solver method to reach the optimum within 1e-6 relative.

The module also holds the brute-force reference used by the certificate tests: multi-start
scipy L-BFGS on ``(W, b, H)`` with its own objective and gradient, independent of the
toolkit's solvers.

Usage (from a test)::

    from reference_problems import CATALOGUE, by_name
    prob = by_name("ufm_mse_bias_K4")
    res = prob.solve(method="lbfgs")
    assert abs(res.objective - prob.optimum) <= 1e-6 * prob.optimum
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import logsumexp, softmax

__all__ = [
    "ReferenceProblem",
    "CATALOGUE",
    "by_name",
    "reference_objective",
    "brute_force",
    "sphere_data",
]


def sphere_data(K: int, n: int, d: int, *, noise: float, seed: int) -> np.ndarray:
    """Balanced data ``(K, n, d)``: class centres uniform on the unit sphere plus Gaussian noise.

    Written here independently of :func:`mufm.make_data` so that the catalogue does not
    depend on the experiment module.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((K, d))
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    return centres[:, None, :] + noise * rng.standard_normal((K, n, d))


@dataclass(frozen=True)
class ReferenceProblem:
    """One catalogue entry.

    Attributes
    ----------
    name : str
        Unique identifier (used as the pytest id).
    family : {"ufm", "mufm"}
    K, n, d : int
        Classes, samples per class (balanced), feature dimension.
    kwargs : dict
        Problem constants passed to ``solve`` and ``certify`` (``lam_w``, ``lam_h``, ``lam_b``,
        ``loss``, ``bias``, and ``lam`` for MUFM).
    seed : int
        Seed of the MUFM data.
    noise : float
        Standard deviation of the MUFM data around the class centres.
    etf : bool
        Whether the optimum is a simplex ETF (balanced UFM).
    counts : tuple of int or None
        Samples per class of an imbalanced UFM (then ``n`` is unused); ``None``: ``n`` each.
    """

    name: str
    family: str
    K: int
    n: int
    d: int
    kwargs: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    noise: float = 0.3
    counts: tuple[int, ...] | None = None

    @property
    def etf(self) -> bool:
        return self.family == "ufm" and self.counts is None

    @property
    def y(self) -> np.ndarray:
        return np.repeat(np.arange(self.K), self.n if self.counts is None else self.counts)

    @property
    def X(self) -> np.ndarray | None:
        """Data of shape (K, n, d) for MUFM, None for UFM."""
        if self.family == "ufm":
            return None
        return sphere_data(self.K, self.n, self.d, noise=self.noise, seed=self.seed)

    def solve(self, **options: Any) -> Any:
        """Solve with the toolkit; ``options`` are method/backend/tol/max_iter/... ."""
        if self.family == "ufm":
            import ufm

            return ufm.solve(self.y, d=self.d, **self.kwargs, **options)
        import mufm

        return mufm.solve(self.X, **self.kwargs, **options)

    def certificate(self) -> Any:
        """The (cached) certificate of this problem."""
        return _certificate(self.name)

    @property
    def optimum(self) -> float:
        """Certified global optimum (raises if the certificate is not exact)."""
        cert = self.certificate()
        if not cert.exact:
            raise AssertionError(f"{self.name}: the certificate is not exact ({cert.summary()})")
        return float(cert.optimum)


def _ufm(name: str, K: int, n: int, d: int, **kw: Any) -> ReferenceProblem:
    return ReferenceProblem(name, "ufm", K, n, d, kw)


def _imbalanced(name: str, counts: tuple[int, ...], d: int, **kw: Any) -> ReferenceProblem:
    return ReferenceProblem(name, "ufm", len(counts), 0, d, kw, counts=tuple(counts))


def _mufm(name: str, K: int, n: int, d: int, seed: int = 0, **kw: Any) -> ReferenceProblem:
    return ReferenceProblem(name, "mufm", K, n, d, kw, seed=seed)


CATALOGUE: list[ReferenceProblem] = [
    # UFM: d >= K, so the nuclear-norm problem is exact by theory.
    _ufm("ufm_mse_bias_K4", 4, 5, 4, lam_w=1e-2, lam_h=1e-2, lam_b=1e-3, loss="mse", bias=True),
    _ufm("ufm_mse_nobias_K3", 3, 4, 5, lam_w=5e-3, lam_h=2e-2, loss="mse", bias=False),
    _ufm("ufm_mse_bias_K5", 5, 3, 6, lam_w=1e-3, lam_h=1e-3, lam_b=0.0, loss="mse", bias=True),
    _ufm("ufm_ce_bias_K4", 4, 5, 4, lam_w=1e-2, lam_h=1e-2, lam_b=1e-3, loss="ce", bias=True),
    _ufm("ufm_ce_nobias_K3", 3, 4, 3, lam_w=5e-3, lam_h=5e-3, loss="ce", bias=False),
    # Imbalanced UFM (minority classes): still d >= K, so the certificate is exact; the
    # bias-free MSE ones also have the closed form ufm.deep_linear_optimum(counts, L=1) (singular-
    # value thresholding; the last one thresholds its minority class to zero logits).
    _imbalanced(
        "ufm_imb_mse_nobias_K3", (20, 5, 2), 3, lam_w=1e-2, lam_h=1e-2, loss="mse", bias=False
    ),
    _imbalanced(
        "ufm_imb_mse_nobias_zero_K3", (30, 6, 1), 4, lam_w=0.2, lam_h=0.2, loss="mse", bias=False
    ),
    _imbalanced(
        "ufm_imb_mse_bias_K3", (12, 4, 1), 3, lam_w=1e-2, lam_h=1e-2, lam_b=0.0, loss="mse"
    ),
    _imbalanced("ufm_imb_ce_bias_K3", (12, 4, 1), 3, lam_w=1e-2, lam_h=1e-2, lam_b=1e-3, loss="ce"),
    _imbalanced(
        "ufm_imb_ce_nobias_K4", (8, 8, 2, 1), 4, lam_w=5e-3, lam_h=5e-3, loss="ce", bias=False
    ),
    # MUFM: small sizes where the Gram relaxation is tight (checked by the catalogue test).
    _mufm("mufm_mse_K3n4d6_lam0.01", 3, 4, 6, lam=0.01, lam_w=1e-2, lam_b=5e-4, loss="mse"),
    _mufm("mufm_mse_K3n4d6_lam10", 3, 4, 6, lam=10.0, lam_w=1e-2, lam_b=5e-4, loss="mse"),
    _mufm("mufm_mse_K4n5d8_lam0.01", 4, 5, 8, lam=0.01, lam_w=1e-2, lam_b=5e-4, loss="mse"),
    _mufm("mufm_mse_K2n3d8_lam1", 2, 3, 8, seed=1, lam=1.0, lam_w=1e-2, lam_b=5e-4, loss="mse"),
    _mufm(
        "mufm_mse_nobias_K3n3d12_lam0.3",
        3,
        3,
        12,
        seed=2,
        lam=0.3,
        lam_w=5e-3,
        lam_h=1e-2,
        loss="mse",
        bias=False,
    ),
    _mufm("mufm_ce_K3n4d6_lam1", 3, 4, 6, lam=1.0, lam_w=1e-2, lam_b=5e-4, loss="ce"),
    _mufm("mufm_ce_K3n4d3_lam10", 3, 4, 3, lam=10.0, lam_w=1e-2, lam_b=5e-4, loss="ce"),
]


def by_name(name: str) -> ReferenceProblem:
    for p in CATALOGUE:
        if p.name == name:
            return p
    raise KeyError(name)


@functools.cache
def _certificate(name: str) -> Any:
    prob = by_name(name)
    if prob.family == "ufm":
        import ufm

        return ufm.certify(prob.y, d=prob.d, **prob.kwargs)
    import mufm

    return mufm.certify(prob.X, **prob.kwargs)


# --------------------------------------------------------------------------------------------
# independent brute-force reference
# --------------------------------------------------------------------------------------------


def reference_objective(W, b, H, y, *, lam_w, X=None, lam=0.0, lam_h=0.0, lam_b=0.0, loss="mse"):
    """MATH.md section 5 objective and gradient, written directly (test reference).

    ``W (K, d)``, ``b (K,)`` or None, ``H (N, d)``, ``y (N,)``, data ``X (N, d)`` or None (UFM);
    returns ``(f, grad_W, grad_b, grad_H)`` in float64 numpy.
    """
    N, K = H.shape[0], W.shape[0]
    Y = np.eye(K)[y]
    Z = H @ W.T + (0.0 if b is None else b[None, :])
    if loss == "mse":
        data = 0.5 * np.sum((Z - Y) ** 2)
        G = Z - Y
    else:
        data = np.sum(logsumexp(Z, axis=1) - Z[np.arange(N), y])
        G = softmax(Z, axis=1) - Y
    anchor = 0.0 if X is None else 0.5 * lam * np.sum((H - X) ** 2)
    f = (data + 0.5 * lam_h * np.sum(H**2) + anchor) / N + 0.5 * lam_w * np.sum(W**2)
    gH = G @ W + lam_h * H + (0.0 if X is None else lam * (H - X))
    gW = G.T @ H / N + lam_w * W
    gb = None
    if b is not None:
        f += 0.5 * lam_b * np.sum(b**2)
        gb = G.sum(axis=0) / N + lam_b * b
    return float(f), gW, gb, gH / N


#: scipy L-BFGS-B options of :func:`brute_force`: tolerances at the limit of double precision.
LBFGS_OPTIONS = {"maxiter": 20_000, "maxcor": 30, "gtol": 1e-12, "ftol": 1e-16}


def brute_force(
    y: np.ndarray, d: int, *, bias: bool = True, starts: int = 8, seed: int = 0, **problem: Any
) -> float:
    """Best objective over ``starts`` random starts of scipy L-BFGS on ``(W, b, H)`` jointly.

    Starting scales vary (0.1, 1, 3) so that both the collapsed and the spread basins are
    sampled; tolerances are at the limit of double precision. ``problem`` holds the keywords of
    :func:`reference_objective` (``lam_w`` and optionally ``X``, ``lam``, ``lam_h``, ``lam_b``,
    ``loss``).
    """
    y = np.asarray(y)
    K, N = int(y.max()) + 1, y.size
    nb = K if bias else 0

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W = theta[: K * d].reshape(K, d)
        b = theta[K * d : K * d + nb] if bias else None
        H = theta[K * d + nb :].reshape(N, d)
        f, gW, gb, gH = reference_objective(W, b, H, y, **problem)
        parts = [gW.ravel()] + ([gb] if bias else []) + [gH.ravel()]
        return f, np.concatenate(parts)

    rng = np.random.default_rng(seed)
    best = np.inf
    size = K * d + nb + N * d
    for s in range(starts):
        theta = rng.standard_normal(size) * (0.1, 1.0, 3.0)[s % 3]
        res = minimize(fun, theta, jac=True, method="L-BFGS-B", options=LBFGS_OPTIONS)
        best = min(best, float(res.fun))
    return best
