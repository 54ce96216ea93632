"""Global-optimality certificate for the unconstrained feature model (UFM).

The UFM objective (MATH.md section 5 with ``lam = 0``)

.. math::

    f(W, b, H) = \\frac1N \\sum_{i=1}^N \\ell(W h_i + b, y_i)
        + \\frac{\\lambda_H}{2N} \\|H\\|_F^2 + \\frac{\\lambda_W}{2} \\|W\\|_F^2
        + \\frac{\\lambda_b}{2} \\|b\\|^2

is non-convex in ``(W, H)`` but depends on them only through the logits ``Z = W H^T`` (shape
``(K, N)``) and the two norms. The variational form of the nuclear norm turns it into a convex
problem (MATH.md section 6), solved here with cvxpy. The returned :class:`Certificate` and the
machinery around the conic solve are shared with :func:`mufm.certify` (:mod:`ufm.engine.convex`).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .engine.convex import (
    EXACT_RTOL,
    Certificate,
    CertifyProgress,
    certify_constants,
    certify_scale,
    check_solver,
    conclude,
    is_result,
    loss_expr,
    numerical_rank,
    one_hot,
    problem_from_result,
    psd_cost,
    size_guard,
    solve_cvx,
    unpack_solution,
)
from .engine.options import DEFAULT_LAM_H
from .errors import InputError
from .threads import thread_policy
from .validate import check_int, check_labels, check_scalar, encode_labels

__all__ = ["Certificate", "certify", "balanced_factors"]


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
    rtol: float = EXACT_RTOL,
    verbose: bool | None = None,
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
    (``Z`` has ``K`` rows). Whatever the theory says, ``exact`` (and ``tight``) is set only
    when verified: the balanced factors of the relaxed minimiser, polished and evaluated in the
    original scale, attain the bound within ``rtol`` relative; otherwise the certificate is
    inexact, ``bound`` and ``reconstruction_value`` bracket the optimum and ``message`` says
    why. The relaxation is invariant under the exact rescaling ``lam_w / a^2``, ``lam_h a^2``;
    the factors are built and polished at the ``a`` that equalises the two penalties
    (:func:`ufm.engine.convex.certify_scale`) and mapped back.

    *Class reduction* (``reduce=True``, the default): averaging the columns of ``Z`` within each
    class lowers the loss (Jensen) and the nuclear norm (a projection), so the minimiser has
    one column ``c_k`` per class, ``Z = C E`` with ``E`` the ``(K, N)`` class indicator, and
    :math:`\\|C E\\|_* = \\|C D^{1/2}\\|_*` with ``D = diag(n_k)``. The convex problem then has
    ``K x K`` variables whatever ``N`` is. ``reduce=False`` solves the ``(K, N)`` problem as
    written (slow; for testing).

    Parameters
    ----------
    y : array-like of shape (N,) or SolveResult
        Class labels, any hashable values (mapped to ``0..K-1`` in sorted order, as in
        :func:`ufm.solve`). A ``SolveResult`` of :func:`ufm.solve` may be passed instead:
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
    rtol : float, default 1e-6
        Relative tolerance of the verification: ``exact`` needs ``(reconstruction_value -
        bound) <= rtol * reconstruction_value``.
    verbose : bool, optional
        Progress on stderr (stage and elapsed time). Default: shown when the estimated solve
        time exceeds 2 s.

    Returns
    -------
    Certificate
        ``bound`` is the global UFM optimum when ``exact``; ``W, b, H`` is a global minimiser
        built from the convex solution (balanced factors).

    Raises
    ------
    InputError
        Bad labels, ``d < 1``, non-positive ``lam_w`` or ``lam_h``, ``rtol`` outside (0, 1), negative ``lam_b``, unknown
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
    if is_result(y):
        result = y
        given = {"d": d, "lam_w": lam_w, "lam_h": lam_h, "lam_b": lam_b}
        given |= {"loss": loss, "bias": bias, "solution": solution}
        p = problem_from_result(result, given, family="ufm")
        lam_w, lam_h, lam_b = p["lam_w"], p["lam_h"], p["lam_b"]
        loss, bias, solution = p["loss"], p["bias"], result
        y = result.y
        d = int(result.H.shape[1])
    if d is None:
        raise InputError("certify(y, ...) needs the feature dimension d (keyword)")
    y_t, _ = encode_labels(y, "y")  # any hashable labels, sorted classes as in ufm.solve
    yt, K = check_labels(y_t, int(y_t.shape[0]))
    y_np = yt.cpu().numpy()
    N = int(y_np.size)
    d = check_int(d, "d", low=1)
    lam_w, lam_h, lam_b, loss, bias = certify_constants(
        lam_w, lam_h, lam_b, loss, bias, lam_h_default=DEFAULT_LAM_H
    )
    solver = check_solver(solver)
    rank_tol = check_scalar(rank_tol, "rank_tol", low=0.0, low_inclusive=False, high=1.0)
    rtol = check_scalar(rtol, "rtol", low=0.0, low_inclusive=False, high=1.0)
    if verbose is not None and not isinstance(verbose, bool | np.bool_):
        raise InputError(f"verbose must be True, False or None, got {verbose!r}")
    sol = None if solution is None else unpack_solution(solution, K, N, d, bias)
    m = K + K if reduce else K + N
    size_guard(
        m,
        1,
        f"ufm.certify with K={K}, N={N}, reduce={reduce}",
        "Use reduce=True (the default: K x K variables whatever N is)"
        if not reduce
        else "Certify fewer classes",
    )

    prog = CertifyProgress(verbose, f"ufm.certify (K={K}, N={N})", psd_cost(m, 1)[1])
    with prog:
        prog.stage("conic solve")
        bound, Cv, b_val, solved = _solve_relaxation(
            y_np, K, N, lam_w, lam_h, lam_b, loss, bias, reduce, solver
        )
        prog.stage("feasible point and verification")
        return _finish(
            Cv, b_val, bound, solved, y_np, K, N, d, lam_w, lam_h, lam_b, loss, bias, reduce,
            rank_tol, rtol, sol,
        )  # fmt: skip


def _solve_relaxation(y_np, K, N, lam_w, lam_h, lam_b, loss, bias, reduce, solver):
    """The nuclear-norm problem of :func:`certify`: ``(bound, C, b, solved)``."""
    import cvxpy as cp

    coef = math.sqrt(lam_w * lam_h / N)
    counts = np.bincount(y_np, minlength=K).astype(np.float64)
    b_var = cp.Variable(K) if bias else None
    if reduce:
        # C (K, K): one logit column per class; weights n_k / N.
        C = cp.Variable((K, K))
        data_term = loss_expr(C, b_var, np.eye(K), counts / N, loss)
        nuc = cp.normNuc(C @ np.diag(np.sqrt(counts)))
    else:
        C = cp.Variable((K, N))
        data_term = loss_expr(C, b_var, one_hot(y_np, K), np.full(N, 1.0 / N), loss)
        nuc = cp.normNuc(C)
    objective = data_term + coef * nuc
    if bias and lam_b > 0:
        objective = objective + (lam_b / 2) * cp.sum_squares(b_var)
    problem = cp.Problem(cp.Minimize(objective))
    solved = solve_cvx(problem, solver)

    Cv = np.asarray(C.value, dtype=np.float64)
    b_val = np.asarray(b_var.value, dtype=np.float64).reshape(K) if bias else None
    return float(problem.value), Cv, b_val, solved


def _finish(Cv, b_val, bound, solved, y_np, K, N, d, lam_w, lam_h, lam_b, loss, bias, reduce,
            rank_tol, rtol, sol):  # fmt: skip
    """Feasible point (balanced factors at the well-scaled ``a``) and :func:`conclude`."""
    Z = Cv[:, y_np] if reduce else Cv
    spectrum = np.linalg.svd(Z, compute_uv=False)
    rank = numerical_rank(spectrum, rank_tol)
    a = certify_scale(None, 0.0, lam_w, lam_h)
    W_r, H_r = balanced_factors(Z, d, lam_w=lam_w / (a * a), lam_h=lam_h * a * a)
    kw = {"lam_w": lam_w, "lam_h": lam_h, "lam_b": lam_b, "loss": loss}
    params = {"K": K, "N": N, "d": d, "lam": 0.0, **kw, "bias": bias}
    params |= {"reduce": bool(reduce), "rank_tol": rank_tol}
    return conclude(
        family="ufm", bound=bound, theory_exact=d >= K, rank=rank, d=d,
        spectrum=spectrum, recon=(W_r, b_val, H_r), y=y_np, kw=kw, solution=sol, solved=solved,
        params=params, rtol=rtol, scale=a,
    )  # fmt: skip
