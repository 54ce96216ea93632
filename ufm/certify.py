"""Global-optimality certificate for the unconstrained feature model (UFM).

The UFM objective (MATH.md section 5 with ``lam = 0``)

.. math::

    f(W, b, H) = \\frac1N \\sum_{i=1}^N \\ell(W h_i + b, y_i)
        + \\frac{\\lambda_H}{2N} \\|H\\|_F^2 + \\frac{\\lambda_W}{2} \\|W\\|_F^2
        + \\frac{\\lambda_b}{2} \\|b\\|^2

is non-convex in ``(W, H)`` but depends on them only through the logits ``Z = W H^T`` (shape
``(K, N)``) and the two norms. The variational form of the nuclear norm turns it into a convex
problem (MATH.md section 6), solved here with cvxpy. The returned :class:`Certificate` is shared
with :func:`mufm.certify` (the Gram-matrix relaxation of the data-anchored model).
"""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import ConvergenceWarning, InputError, SolverError
from .threads import thread_policy
from .validate import check_features, check_int, check_labels, check_scalar, describe, to_tensor

__all__ = ["Certificate", "certify", "balanced_factors"]

#: Relative tolerance under which a feasible point built from the relaxed solution is taken to
#: attain the bound (so the bound is the global optimum up to the solver's accuracy).
EXACT_RTOL = 1e-6

_LOSSES = ("mse", "ce")


@dataclass(frozen=True, eq=False)
class Certificate:
    """What a convex relaxation says about the global optimum of a UFM or MUFM problem.

    Attributes
    ----------
    family : {"ufm", "mufm"}
        The problem family certified.
    bound : float
        Optimal value of the convex problem as returned by the conic solver: a lower bound on
        the global optimum of the non-convex problem (up to the solver's accuracy, about 1e-7
        relative), and equal to it when ``exact`` is true.
    optimum : float or None
        The certified global optimum when ``exact``, else None: the objective of the feasible
        point ``(W, b, H)`` when that lies within ``EXACT_RTOL`` of ``bound`` (the more accurate
        number, being a true objective value), otherwise ``bound``.
    exact : bool
        True when the global optimum is pinned down: either guaranteed by theory (UFM with
        ``d >= K``; MUFM with ``rank(X) + K <= d``) or verified, because the feasible point
        built from the relaxed solution attains the bound within ``EXACT_RTOL`` relative. When
        false, ``bound`` is only a lower bound and ``reconstruction_value`` an upper bound.
    tight : bool
        The relaxed solution has numerical rank ``<= d`` (so it is realisable in dimension d).
    rank : int
        Numerical rank of the relaxed solution (``Z`` for the UFM, the Gram matrix for MUFM),
        counting entries of ``spectrum`` above ``rank_tol * max(spectrum.max(), 1)``.
    spectrum : numpy.ndarray
        Singular values of ``Z`` (UFM) or eigenvalues of the Gram matrix (MUFM), descending.
    value : float or None
        Objective of the solution passed in (``solution=``), if any.
    gap, rel_gap : float or None
        ``value - optimum`` (``value - bound`` when not exact) and ``gap / |reference|``. The
        gap is ``>= 0`` up to solver accuracy; a small ``rel_gap`` with ``exact`` true
        certifies that the solution is globally optimal.
    W, b, H : numpy.ndarray
        A feasible point built from the relaxed solution (``W (K, d)``, ``b (K,)`` or None
        without bias, ``H (N, d)``; truncated to rank d when the rank is larger) and then
        polished by a local quasi-Newton method (scipy L-BFGS), which only lowers its value.
    reconstruction_value : float
        Objective of ``(W, b, H)``: an upper bound on the global optimum.
    solver, status : str
        cvxpy solver used and its status (``"optimal"`` or ``"optimal_inaccurate"``).
    solve_time : float
        Wall-clock seconds of the cvxpy solve (canonicalisation included).
    params : dict
        The problem (``d``, ``lam``, ``lam_w``, ``lam_h``, ``lam_b``, ``loss``, ``bias``, ``K``,
        ``N``) and the certificate options.
    """

    family: str
    bound: float
    optimum: float | None
    exact: bool
    tight: bool
    rank: int
    spectrum: np.ndarray
    value: float | None
    gap: float | None
    rel_gap: float | None
    W: np.ndarray
    b: np.ndarray | None
    H: np.ndarray
    reconstruction_value: float
    solver: str
    status: str
    solve_time: float
    params: dict[str, Any] = field(default_factory=dict)

    def certifies(self, rtol: float = 1e-6) -> bool:
        """True when a solution was given, the bound is exact and ``rel_gap <= rtol``.

        The gap may be slightly negative (the solution is better than the solver's value by its
        accuracy); ``|rel_gap| <= rtol`` is what is checked.
        """
        return bool(self.exact and self.rel_gap is not None and abs(self.rel_gap) <= rtol)

    def summary(self) -> str:
        """One human-readable paragraph."""
        if self.exact:
            head = f"global optimum = {self.optimum:.12g} (convex bound {self.bound:.12g})"
        else:
            head = f"lower bound (not proven exact) = {self.bound:.12g}"
        lines = [
            f"{self.family.upper()} certificate: {head} "
            f"[{self.solver}, {self.status}, {self.solve_time:.2f} s]",
            f"relaxed solution rank {self.rank} (d = {self.params.get('d')}), tight = {self.tight}",
        ]
        lines.append(f"feasible point from the relaxation: {self.reconstruction_value:.12g}")
        if self.value is not None:
            lines.append(
                f"given solution: {self.value:.12g}, gap {self.gap:.3g} (relative {self.rel_gap:.3g})"
            )
        return "\n".join(lines)


# --------------------------------------------------------------------------------------------
# helpers shared with mufm.certify
# --------------------------------------------------------------------------------------------


def _check_loss(loss: Any) -> str:
    if not isinstance(loss, str) or loss.lower() not in _LOSSES:
        raise InputError(f"loss must be 'mse' or 'ce', got {describe(loss)}")
    return loss.lower()


def _check_bias(bias: Any) -> bool:
    if not isinstance(bias, bool | np.bool_):
        raise InputError(f"bias must be True or False, got {describe(bias)}")
    return bool(bias)


def _check_solver(solver: Any) -> str | None:
    if solver is None:
        return None
    import cvxpy as cp

    if not isinstance(solver, str) or solver.upper() not in cp.installed_solvers():
        raise InputError(
            f"solver must be None (CLARABEL, falling back to SCS) or an installed cvxpy solver "
            f"{cp.installed_solvers()}, got {describe(solver)}"
        )
    return solver.upper()


def _solver_attempts(name: str) -> list[dict[str, Any]]:
    """Option sets tried in turn: tight tolerances first, then the solver's defaults.

    The certificate must resolve 1e-6 relative differences of the optimum; CLARABEL's defaults
    (1e-8) already do, the tighter set buys margin where the problem allows it.
    """
    if name == "CLARABEL":
        tight = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}
        medium = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9}
        return [tight, medium, {}]
    if name == "SCS":
        return [{"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 200_000}]
    return [{}]


def _solve_cvx(problem: Any, solver: str | None) -> tuple[str, str, float]:
    """Solve a cvxpy problem; CLARABEL first, SCS as fallback when ``solver`` is None.

    Returns ``(solver name, status, seconds)`` of the first accurate solve (or, failing that,
    of the last inaccurate one, with a ConvergenceWarning); raises SolverError when nothing
    solves it.
    """
    import cvxpy as cp

    installed = cp.installed_solvers()
    if solver is not None:
        names = [solver]
    else:
        names = [s for s in ("CLARABEL", "SCS") if s in installed]
        if not names:
            raise SolverError(
                "no conic solver for the certificate: install CLARABEL (pip install clarabel) "
                "or SCS"
            )
    failures: list[str] = []
    inaccurate: tuple[str, dict[str, Any]] | None = None
    t0 = time.perf_counter()
    for name in names:
        for opts in _solver_attempts(name):
            try:
                with warnings.catch_warnings():
                    # cvxpy's own "solution may be inaccurate" warning: the status says it.
                    warnings.simplefilter("ignore", UserWarning)
                    problem.solve(solver=name, **opts)
            except (cp.error.SolverError, ValueError, ArithmeticError) as exc:
                failures.append(f"{name}: {exc}")
                continue
            status = str(problem.status)
            if status == cp.OPTIMAL and problem.value is not None:
                return name, status, time.perf_counter() - t0
            if status == cp.OPTIMAL_INACCURATE and problem.value is not None:
                inaccurate = (name, opts)
            failures.append(f"{name}: status {status}")
    if inaccurate is not None:
        name, opts = inaccurate
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            problem.solve(solver=name, **opts)
        warnings.warn(
            f"the certificate's convex problem was solved only inaccurately ({name}); the bound "
            "may be off by more than 1e-6 relative: try another solver (solver='SCS' or "
            "'CLARABEL') or less extreme lam_* constants",
            ConvergenceWarning,
            stacklevel=3,
        )
        return name, str(problem.status), time.perf_counter() - t0
    raise SolverError(
        "the certificate's convex problem could not be solved (" + "; ".join(failures) + "); "
        "check that the regularisation constants are not extreme"
    )


def _numerical_rank(spectrum: np.ndarray, rank_tol: float) -> int:
    top = float(spectrum.max()) if spectrum.size else 0.0
    return int(np.count_nonzero(spectrum > rank_tol * max(top, 1.0)))


def _is_result(obj: Any) -> bool:
    """Duck-typed test for a SolveResult (avoids importing the solvers here)."""
    return all(hasattr(obj, a) for a in ("W", "H", "y", "params", "objective"))


def _param(result: Any, name: str, default: Any = None) -> Any:
    params = getattr(result, "params", None) or {}
    return params.get(name, default)


def _unpack_solution(
    solution: Any, K: int, N: int, d: int, bias: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Validate ``solution`` (a SolveResult or a tuple ``(W, b, H)``) against the problem."""
    if _is_result(solution):
        W, b, H = solution.W, solution.b, solution.H
    elif isinstance(solution, tuple | list) and len(solution) == 3:
        W, b, H = solution
    else:
        raise InputError(
            f"solution must be a SolveResult or a tuple (W, b, H), got {describe(solution)}"
        )
    W = check_features(W, "solution W").double().cpu().numpy()
    H = check_features(H, "solution H").double().cpu().numpy()
    if W.shape != (K, d) or H.shape != (N, d):
        raise InputError(
            f"solution has W of shape {W.shape} and H of shape {H.shape}; the problem needs "
            f"W ({K}, {d}) and H ({N}, {d})"
        )
    if bias:
        if b is None:
            raise InputError("the problem has a bias but the solution's b is None; pass b (K,)")
        b = check_features(_to_numpy(b).reshape(1, -1), "solution b").numpy().reshape(-1)
        if b.shape != (K,):
            raise InputError(f"solution b must have shape ({K},), got {b.shape}")
    else:
        b = None
    return W, b, H


def _finish(
    *,
    family: str,
    bound: float,
    theory_exact: bool,
    rank: int,
    d: int,
    spectrum: np.ndarray,
    recon: tuple[np.ndarray, np.ndarray | None, np.ndarray],
    recon_value: float,
    value: float | None,
    solver: str,
    status: str,
    solve_time: float,
    params: dict[str, Any],
) -> Certificate:
    check_bound(bound, recon_value, value, family)
    scale = max(abs(bound), 1e-300)
    attained = recon_value - bound <= EXACT_RTOL * scale
    exact = bool(theory_exact or attained)
    optimum = (recon_value if attained else bound) if exact else None
    gap = rel_gap = None
    if value is not None:
        ref = optimum if optimum is not None else bound
        gap = value - ref
        rel_gap = gap / max(abs(ref), 1e-300)
    W, b, H = recon
    return Certificate(
        family=family,
        bound=float(bound),
        optimum=None if optimum is None else float(optimum),
        exact=exact,
        tight=bool(rank <= d),
        rank=int(rank),
        spectrum=spectrum,
        value=value,
        gap=gap,
        rel_gap=rel_gap,
        W=W,
        b=b,
        H=H,
        reconstruction_value=float(recon_value),
        solver=solver,
        status=status,
        solve_time=float(solve_time),
        params=params,
    )


#: Largest estimated memory of the conic solver's factorisation that certify accepts (bytes).
MAX_CERTIFY_BYTES = 4 * 2**30
#: Largest estimated solve time that certify accepts (seconds).
MAX_CERTIFY_SECONDS = 900.0


def psd_cost(m: int, blocks: int = 1) -> tuple[float, float]:
    """Rough (bytes, seconds) of an interior-point solve with ``blocks`` PSD cones of size m.

    Each cone has ``t = m (m + 1) / 2`` scalar variables and a dense ``t x t`` block in the
    KKT system: memory ``8 t^2`` bytes and about ``t^3 / 3`` flops per factorisation, times
    ~30 iterations at ~1e10 flop/s. (Measured: ``ufm.certify(..., reduce=False)`` at N = 360,
    ``m = 364``, allocated 35 GB, which this formula reproduces.)
    """
    t = m * (m + 1) / 2
    return blocks * 8.0 * t * t, blocks * 30 * (t**3 / 3) / 1e10


def size_guard(m: int, blocks: int, what: str, advice: str) -> None:
    """Refuse, before building the problem, a relaxation whose estimated cost is too large.

    Raises
    ------
    InputError
        Estimated memory above :data:`MAX_CERTIFY_BYTES`; the message gives the estimate of
        memory and time and what to do.
    """
    mem, sec = psd_cost(m, blocks)
    if mem > MAX_CERTIFY_BYTES or sec > MAX_CERTIFY_SECONDS:
        raise InputError(
            f"{what}: the SDP has {blocks} PSD block(s) of size {m}; the interior-point solver "
            f"would need about {mem / 2**30:.3g} GiB of memory and {sec:.3g} s (estimates; "
            f"limits {MAX_CERTIFY_BYTES / 2**30:.0f} GiB, {MAX_CERTIFY_SECONDS:.0f} s). {advice}"
        )


def check_bound(bound: float, recon_value: float, value: float | None, family: str) -> None:
    """Check the conic solver's value against provable facts, or refuse.

    The (M)UFM objective is non-negative, so is its convex relaxation's value; a lower bound
    cannot exceed the objective of any feasible point (the reconstruction, or the given
    solution). A violation beyond the solver's accuracy means the conic solve is wrong (badly
    scaled problem); no certificate is returned.

    Raises
    ------
    SolverError
        The bound is negative or above a feasible objective value, beyond tolerance.
    """
    scale = max(abs(recon_value), abs(bound), 1e-12)
    tol = 1e-5 * scale
    facts = [("the objective is non-negative", bound >= -tol)]
    facts.append((f"a feasible point has objective {recon_value:.10g}", bound <= recon_value + tol))
    if value is not None:
        facts.append((f"the given solution has objective {value:.10g}", bound <= value + tol))
    broken = [f for f, ok in facts if not ok]
    if broken or not math.isfinite(bound):
        raise SolverError(
            f"{family}.certify: the conic solver returned the bound {bound:.10g}, which "
            f"contradicts what is provable ({'; '.join(broken) or 'bound is not finite'}). "
            "The relaxation is numerically unreliable at this scale (very large or small "
            "coefficients or data); no certificate is issued. Rescale the problem "
            "(X * a with lam / a^2, lam_w * a^2 is the same MUFM) or try solver='SCS'"
        )


def _to_numpy(a: Any) -> np.ndarray:
    """float64 numpy copy of an array or tensor (any device)."""
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def value_and_grad(
    W: np.ndarray,
    b: np.ndarray | None,
    H: np.ndarray,
    y: np.ndarray,
    *,
    X: np.ndarray | None = None,
    lam: float = 0.0,
    lam_w: float,
    lam_h: float = 0.0,
    lam_b: float = 0.0,
    loss: str = "mse",
) -> tuple[float, np.ndarray, np.ndarray | None, np.ndarray]:
    """Objective of MATH.md section 5 and its gradient in ``(W, b, H)`` (numpy, float64).

    With logits ``Z = H W^T + 1 b^T`` and ``G = dl/dZ`` (``Z - Y`` for MSE, ``softmax(Z) - Y``
    for CE, ``Y`` one-hot, shape ``(N, K)``):

    .. math::

        \\nabla_W f = G^T H / N + \\lambda_W W, \\quad
        \\nabla_b f = G^T 1 / N + \\lambda_b b, \\quad
        \\nabla_H f = (G W + \\lambda_H H + \\lambda (H - X)) / N .

    Used to polish the certificate's feasible point; independent of the solvers' code.
    """
    N = H.shape[0]
    K = W.shape[0]
    Z = H @ W.T
    if b is not None:
        Z = Z + b
    Y = np.zeros_like(Z)
    Y[np.arange(N), y] = 1.0
    if loss == "mse":
        G = Z - Y
        data = 0.5 * float(np.sum(G * G))
    else:
        zmax = Z.max(axis=1, keepdims=True)
        ez = np.exp(Z - zmax)
        se = ez.sum(axis=1, keepdims=True)
        data = float(np.sum(np.log(se[:, 0]) + zmax[:, 0] - Z[np.arange(N), y]))
        G = ez / se - Y
    f = data + 0.5 * lam_h * float(np.sum(H * H))
    gH = G @ W + lam_h * H
    if X is not None and lam > 0:
        D = H - X
        f += 0.5 * lam * float(np.sum(D * D))
        gH = gH + lam * D
    f = f / N + 0.5 * lam_w * float(np.sum(W * W))
    gW = G.T @ H / N + lam_w * W
    gb = None
    if b is not None:
        f += 0.5 * lam_b * float(b @ b)
        gb = G.sum(axis=0) / N + lam_b * b
    del K
    return f, gW, gb, gH / N


def _polish(
    W: np.ndarray,
    b: np.ndarray | None,
    H: np.ndarray,
    y: np.ndarray,
    kw: dict[str, Any],
    max_iter: int = 5000,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Local L-BFGS refinement of a feasible point (never returns a worse one).

    Runs in balanced coordinates ``(W, b, H / sqrt(N))``, where the blocks have curvature of
    the same order, so that a gradient tolerance means the same for every block.
    """
    from scipy.optimize import minimize

    K, d = W.shape
    N = H.shape[0]
    root = math.sqrt(N)
    nb = 0 if b is None else K

    def split(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        Wt = theta[: K * d].reshape(K, d)
        bt = theta[K * d : K * d + nb] if b is not None else None
        Ht = theta[K * d + nb :].reshape(N, d) * root
        return Wt, bt, Ht

    def fun(theta: np.ndarray) -> tuple[float, np.ndarray]:
        Wt, bt, Ht = split(theta)
        f, gW, gb, gH = value_and_grad(Wt, bt, Ht, y, **kw)
        parts = [gW.ravel()] + ([gb] if gb is not None else []) + [gH.ravel() * root]
        return f, np.concatenate(parts)

    parts0 = [W.ravel()] + ([b] if b is not None else []) + [H.ravel() / root]
    theta0 = np.concatenate(parts0)
    f0 = fun(theta0)[0]
    res = minimize(
        fun,
        theta0,
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": max_iter, "maxcor": 30, "gtol": 1e-13, "ftol": 1e-16},
    )
    if not np.isfinite(res.fun) or res.fun > f0:
        return W, b, H
    return split(res.x)


def _one_hot(y: np.ndarray, K: int) -> np.ndarray:
    Y = np.zeros((K, y.size))
    Y[y, np.arange(y.size)] = 1.0
    return Y


def _loss_expr(Z: Any, b: Any, Y: np.ndarray, weights: np.ndarray, loss: str) -> Any:
    """cvxpy expression of ``sum_j weights_j l(Z[:, j] + b, Y[:, j])`` (columns = samples)."""
    import cvxpy as cp

    K, M = Y.shape
    logits = Z if b is None else Z + cp.reshape(b, (K, 1), order="F") @ np.ones((1, M))
    if loss == "mse":
        return 0.5 * cp.sum_squares((logits - Y) @ np.diag(np.sqrt(weights)))
    lse = cp.log_sum_exp(logits, axis=0)
    return weights @ lse - cp.sum(cp.multiply(Y @ np.diag(weights), logits))


# --------------------------------------------------------------------------------------------
# the UFM certificate
# --------------------------------------------------------------------------------------------


def balanced_factors(
    Z: np.ndarray, d: int, *, lam_w: float, lam_h: float
) -> tuple[np.ndarray, np.ndarray]:
    """Factor logits ``Z (K, N)`` as ``W H^T`` with the smallest UFM penalty.

    With the SVD ``Z = U S V^T`` and :math:`\\alpha^2 = \\sqrt{\\lambda_H / (N \\lambda_W)}`,

    .. math::

        W = \\alpha\\, U S^{1/2}, \\qquad H = \\alpha^{-1} V S^{1/2}, \\qquad
        \\frac{\\lambda_W}{2}\\|W\\|_F^2 + \\frac{\\lambda_H}{2N}\\|H\\|_F^2
        = \\sqrt{\\lambda_W\\lambda_H / N}\\, \\|Z\\|_*,

    the equality case of the inequality in :func:`certify`. Only the ``d`` leading singular
    triplets are kept (exact when ``rank Z <= d``); the factors are zero-padded to ``d`` columns.

    Parameters
    ----------
    Z : numpy.ndarray of shape (K, N)
    d : int
        Feature dimension.
    lam_w, lam_h : float
        Positive weight and feature penalties.

    Returns
    -------
    W : numpy.ndarray of shape (K, d)
    H : numpy.ndarray of shape (N, d)
    """
    Z = np.asarray(Z, dtype=np.float64)
    K, N = Z.shape
    U, s, Vt = np.linalg.svd(Z, full_matrices=False)
    r = min(d, s.size)
    alpha = (lam_h / (N * lam_w)) ** 0.25
    root = np.sqrt(s[:r])
    W = np.zeros((K, d))
    H = np.zeros((N, d))
    W[:, :r] = alpha * U[:, :r] * root
    H[:, :r] = (Vt[:r].T * root) / alpha
    return W, H


@thread_policy("y", "d")
def certify(
    y: Any,
    *,
    d: int | None = None,
    lam_w: float | None = None,
    lam_h: float | None = None,
    lam_b: float | None = None,
    loss: str | None = None,
    bias: bool | None = None,
    solution: Any = None,
    solver: str | None = None,
    reduce: bool = True,
    rank_tol: float = 1e-6,
) -> Certificate:
    """Certify the global optimum of the UFM with a convex (nuclear-norm) reformulation.

    For every factorisation ``Z = W H^T`` of the logits ``Z`` (shape ``(K, N)``),

    .. math::

        \\frac{\\lambda_W}{2}\\|W\\|_F^2 + \\frac{\\lambda_H}{2N}\\|H\\|_F^2
        \\;\\ge\\; \\sqrt{\\lambda_W \\lambda_H / N}\\; \\|Z\\|_*,

    with equality for the balanced factors of :func:`balanced_factors`. *Derivation*: for any
    ``c > 0``, :math:`\\|Z\\|_* = \\min_{Z = AB^T} (\\|A\\|_F^2 + \\|B\\|_F^2)/2`; put
    ``A = W/\\alpha``, ``B = \\alpha H`` with :math:`\\alpha^2 = \\sqrt{\\lambda_H/(N\\lambda_W)}`
    and use AM-GM, :math:`\\frac{\\lambda_W}{2}\\|W\\|^2 + \\frac{\\lambda_H}{2N}\\|H\\|^2 =
    \\sqrt{\\lambda_W\\lambda_H/N}\\,(\\|A\\|^2 + \\|B\\|^2)/2`. Hence the UFM optimum is at least

    .. math::

        p^\\star = \\min_{Z, b}\\; \\frac1N \\sum_i \\ell(z_i + b, y_i)
            + \\sqrt{\\lambda_W \\lambda_H / N}\\, \\|Z\\|_* + \\frac{\\lambda_b}{2}\\|b\\|^2,

    and equal to it when the minimiser has rank ``<= d``, in particular whenever ``d >= K``
    (``Z`` has ``K`` rows). When ``d < K`` the value is a lower bound unless the relaxed
    minimiser happens to have rank ``<= d`` (then ``exact`` is set because the reconstructed
    point attains it).

    *Class reduction* (``reduce=True``, the default): averaging the columns of ``Z`` within each
    class lowers the loss (Jensen) and the nuclear norm (a projection), so the minimiser has
    one column ``c_k`` per class, ``Z = C E`` with ``E`` the ``(K, N)`` class indicator, and
    :math:`\\|C E\\|_* = \\|C D^{1/2}\\|_*` with ``D = diag(n_k)``. The convex problem then has
    ``K x K`` variables whatever ``N`` is. ``reduce=False`` solves the ``(K, N)`` problem as
    written (slow; for testing).

    Parameters
    ----------
    y : array-like of shape (N,) or SolveResult
        Integer labels ``0..K-1``. A ``SolveResult`` of :func:`ufm.solve` may be passed instead:
        its problem (``y``, ``d`` and the constants in ``result.params``) is certified and the
        result itself is the solution checked; the problem keywords must then be left unset.
    d : int
        Feature dimension (required with labels).
    lam_w, lam_h : float, default 5e-4
        Positive weight-decay and feature-decay constants (defaults as in :func:`ufm.solve`).
        The UFM infimum is not attained when either is 0.
    lam_b : float, default 5e-4
        Bias penalty (ignored without bias; 0 leaves the bias unpenalised).
    loss : {"mse", "ce"}, default "mse"
        MSE :math:`\\tfrac12\\|z - e_y\\|^2` or cross entropy.
    bias : bool, default True
        Whether the model has a bias ``b``.
    solution : SolveResult or tuple (W, b, H), optional
        A candidate solution whose objective and gap are reported. ``W (K, d)``, ``b (K,)`` (None
        without bias), ``H (N, d)``.
    solver : str, optional
        cvxpy solver name. Default: CLARABEL (interior point, about 1e-9 relative accuracy),
        falling back to SCS.
    reduce : bool, default True
        Use the class reduction described above.
    rank_tol : float, default 1e-6
        Relative threshold for the numerical rank of the relaxed ``Z``.

    Returns
    -------
    Certificate
        ``bound`` is the global UFM optimum when ``exact``; ``W, b, H`` is a global minimiser
        built from the convex solution (balanced factors).

    Raises
    ------
    InputError
        Bad labels, ``d < 1``, non-positive ``lam_w`` or ``lam_h``, negative ``lam_b``, unknown
        loss or solver, a solution of the wrong shape, or problem keywords given together with
        a SolveResult.
    SolverError
        No cvxpy solver solved the convex problem.

    References
    ----------
    Zhu et al., "A geometric analysis of neural collapse with unconstrained features",
    NeurIPS 2021 (the nuclear-norm reformulation). MATH.md section 6.

    Examples
    --------
    >>> import numpy as np
    >>> cert = certify(np.repeat(np.arange(3), 4), d=3, lam_w=1e-2, lam_h=1e-2)
    >>> cert.exact, round(cert.optimum, 6)
    (True, 0.01153)
    """
    if _is_result(y):
        result = y
        given = {"d": d, "lam_w": lam_w, "lam_h": lam_h, "lam_b": lam_b}
        given |= {"loss": loss, "bias": bias, "solution": solution}
        clash = [k for k, v in given.items() if v is not None]
        if clash:
            raise InputError(
                f"certify(result) reads the problem from the SolveResult; do not also pass "
                f"{clash}. Call certify(y, d=..., lam_w=..., ...) to certify another problem"
            )
        if getattr(result, "X", None) is not None or _param(result, "model") == "mufm":
            raise InputError(
                "this SolveResult is a MUFM problem (it has data X / lam > 0); "
                "certify it with mufm.certify(result)"
            )
        y = result.y
        d = int(result.H.shape[1])
        lam_w = _param(result, "lam_w")
        lam_h = _param(result, "lam_h")
        lam_b = _param(result, "lam_b", 0.0)
        loss = _param(result, "loss", "mse")
        bias = _param(result, "bias", result.b is not None)
        solution = result
    if d is None:
        raise InputError("certify(y, ...) needs the feature dimension d (keyword)")
    from ._solvers import DEFAULT_LAM_B, DEFAULT_LAM_H, DEFAULT_LAM_W

    lam_w = DEFAULT_LAM_W if lam_w is None else lam_w
    lam_h = DEFAULT_LAM_H if lam_h is None else lam_h
    lam_b = DEFAULT_LAM_B if lam_b is None else lam_b
    loss = "mse" if loss is None else loss
    bias = True if bias is None else bias

    y_t = to_tensor(y, "y")
    yt, K = check_labels(y_t, int(y_t.shape[0]) if y_t.ndim >= 1 else 0)
    y_np = yt.cpu().numpy()
    N = int(y_np.size)
    d = check_int(d, "d", low=1)
    lam_w = check_scalar(lam_w, "lam_w", low=0.0, low_inclusive=False)
    lam_h = check_scalar(lam_h, "lam_h", low=0.0, low_inclusive=False)
    lam_b = check_scalar(lam_b, "lam_b", low=0.0)
    loss = _check_loss(loss)
    bias = _check_bias(bias)
    solver = _check_solver(solver)
    rank_tol = check_scalar(rank_tol, "rank_tol", low=0.0, low_inclusive=False, high=1.0)
    sol = None if solution is None else _unpack_solution(solution, K, N, d, bias)
    m = K + K if reduce else K + N
    size_guard(
        m,
        1,
        f"ufm.certify with K={K}, N={N}, reduce={reduce}",
        "Use reduce=True (the default: K x K variables whatever N is)"
        if not reduce
        else "Certify fewer classes",
    )

    import cvxpy as cp

    coef = math.sqrt(lam_w * lam_h / N)
    counts = np.bincount(y_np, minlength=K).astype(np.float64)
    b_var = cp.Variable(K) if bias else None
    if reduce:
        # C (K, K): one logit column per class; weights n_k / N.
        C = cp.Variable((K, K))
        data_term = _loss_expr(C, b_var, np.eye(K), counts / N, loss)
        nuc = cp.normNuc(C @ np.diag(np.sqrt(counts)))
    else:
        C = cp.Variable((K, N))
        data_term = _loss_expr(C, b_var, _one_hot(y_np, K), np.full(N, 1.0 / N), loss)
        nuc = cp.normNuc(C)
    objective = data_term + coef * nuc
    if bias and lam_b > 0:
        objective = objective + (lam_b / 2) * cp.sum_squares(b_var)
    problem = cp.Problem(cp.Minimize(objective))
    used, status, seconds = _solve_cvx(problem, solver)

    Cv = np.asarray(C.value, dtype=np.float64)
    Z = Cv[:, y_np] if reduce else Cv
    b_val = np.asarray(b_var.value, dtype=np.float64).reshape(K) if bias else None
    spectrum = np.linalg.svd(Z, compute_uv=False)
    rank = _numerical_rank(spectrum, rank_tol)
    W_r, H_r = balanced_factors(Z, d, lam_w=lam_w, lam_h=lam_h)

    from .objective import objective as ufm_objective

    kw = {"lam_w": lam_w, "lam_h": lam_h, "lam_b": lam_b, "loss": loss}
    W_r, b_val, H_r = _polish(W_r, b_val, H_r, y_np, kw)
    recon_value = float(ufm_objective(W_r, b_val, H_r, y_np, **kw))
    value = None if sol is None else float(ufm_objective(sol[0], sol[1], sol[2], y_np, **kw))
    params = {"K": K, "N": N, "d": d, "lam": 0.0, **kw, "bias": bias}
    params |= {"reduce": bool(reduce), "rank_tol": rank_tol}
    return _finish(
        family="ufm",
        bound=float(problem.value),
        theory_exact=d >= K,
        rank=rank,
        d=d,
        spectrum=spectrum,
        recon=(W_r, b_val, H_r),
        recon_value=recon_value,
        value=value,
        solver=used,
        status=status,
        solve_time=seconds,
        params=params,
    )
