"""Lower bounds and global-optimality certificates for MUFM (Gram-matrix SDP relaxation).

The MUFM objective (MATH.md section 5)

.. math::

    f(W, b, H) = \\frac1N \\sum_i \\Big[\\ell(W h_i + b, y_i) + \\frac{\\lambda_H}{2}\\|h_i\\|^2
        + \\frac{\\lambda}{2}\\|h_i - x_i\\|^2\\Big] + \\frac{\\lambda_W}{2}\\|W\\|_F^2
        + \\frac{\\lambda_b}{2}\\|b\\|^2

depends on ``W`` and ``H`` only through inner products of the vectors ``w_k``, ``h_i``,
``x_i``: ``(W h_i)_k = <w_k, h_i>``, ``||W||_F^2 = sum_k <w_k, w_k>`` and
``||h_i - x_i||^2 = <h_i, h_i> - 2 <h_i, x_i> + <x_i, x_i>``. Replacing the Gram matrix of these
vectors by any positive semidefinite matrix whose data block equals ``X X^T`` gives a convex
problem (MATH.md section 6) whose value bounds the MUFM optimum from below.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np

from ufm import objective as f_obj
from ufm.engine.convex import (
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
from ufm.errors import InputError, SolverError
from ufm.threads import thread_policy
from ufm.validate import check_features, check_int, check_labels, check_scalar

from .solve import DEFAULT_LAM, solve

__all__ = [
    "certify",
    "Certificate",
]

#: Largest number of samples certified by default. The SDP has a PSD block of size
#: ``K + N + rank(X)``; at N = 60 CLARABEL needs seconds, and the cost grows like its cube.
DEFAULT_MAX_N = 60


def _as_samples(X: Any, y: Any) -> tuple[np.ndarray, np.ndarray, int]:
    """``X (K, n, d)`` with implied labels, or ``X (N, d)`` with ``y``; returns float64 numpy."""
    Xt = check_features(X, "X", ndim=3 if _ndim(X) == 3 else 2)
    if Xt.ndim == 3:
        if y is not None:
            raise InputError(
                f"X has shape {tuple(Xt.shape)} (K, n, d) with labels implied; do not pass y, "
                "or pass X of shape (N, d) together with y"
            )
        K, n, d = Xt.shape
        Xn = Xt.double().cpu().numpy().reshape(K * n, d)
        yn = np.repeat(np.arange(K), n)
        if K < 2:
            check_labels(yn, yn.size)  # raises the standard K < 2 error
        return Xn, yn, K
    if y is None:
        raise InputError(
            f"X has shape {tuple(Xt.shape)} (N, d); pass its labels y (N,), or pass balanced "
            "data as X of shape (K, n, d)"
        )
    yt, K = check_labels(y, int(Xt.shape[0]))
    return Xt.double().cpu().numpy(), yt.cpu().numpy(), K


def _ndim(X: Any) -> int:
    return int(getattr(X, "ndim", np.ndim(X)))


def _procrustes(A: np.ndarray, B: np.ndarray) -> np.ndarray:
    """Orthogonal ``Q`` minimising ``||A Q - B||_F`` (A, B of shape (r, d))."""
    U, _, Vt = np.linalg.svd(A.T @ B)
    return U @ Vt


def _reference_value(Xn, yn, sol, kw) -> float:
    """A feasible objective value (upper bound on the optimum) to normalise the SDP's objective."""
    kw = dict(kw)
    bias = kw.pop("bias")
    if sol is not None:
        v = float(f_obj(*sol, yn, **kw))
    else:
        kw.pop("X")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                v = float(solve(Xn, yn, **kw, bias=bias).objective)
        except (InputError, SolverError):  # only a normalisation: any positive value is valid
            v = 1.0
    return v if math.isfinite(v) and v > 0 else 1.0


@thread_policy("X")
def certify(
    X: Any,
    y: Any = None,
    *,
    lam: float | None = None,
    lam_w: float | None = None,
    lam_h: float | None = None,
    lam_b: float | None = None,
    loss: str | None = None,
    bias: bool | None = None,
    solution: Any = None,
    solver: str | None = None,
    max_n: int = DEFAULT_MAX_N,
    rank_tol: float = 1e-6,
    rtol: float = EXACT_RTOL,
    verbose: bool | None = None,
) -> Certificate:
    """Lower-bound the MUFM optimum by an SDP, and certify it when the relaxation is tight.

    Let ``X = U_r S_r E`` be a thin SVD with ``r = rank(X)`` and orthonormal rows ``E (r, d)``;
    the data are ``x_i = sum_j C_ij e_j`` with ``C = U_r S_r``. The relaxation optimises over a
    PSD matrix ``G`` of size ``m = K + N + r``, the Gram matrix of ``(w_1..w_K, h_1..h_N,
    e_1..e_r)`` with the ``e``-block fixed to ``I_r`` (equivalent to fixing the ``x``-block of
    the ``K + 2N`` Gram matrix to ``X X^T``, with fewer variables):

    .. math::

        p^\\star = \\min_{G \\succeq 0,\\ G_{ee} = I_r,\\ b}\\;
            \\frac1N \\sum_i \\Big[\\ell\\big((G_{wh})_{:,i} + b, y_i\\big)
            + \\frac{\\lambda_H}{2} (G_{hh})_{ii}
            + \\frac{\\lambda}{2}\\big((G_{hh})_{ii} - 2 (G_{he} C^T)_{ii} + \\|x_i\\|^2\\big)\\Big]
            + \\frac{\\lambda_W}{2} \\operatorname{tr} G_{ww} + \\frac{\\lambda_b}{2}\\|b\\|^2 .

    (The solve uses the Gram matrix of ``(w, u, e)`` with ``u_i = h_i - x_i``, a linear change
    of the vectors that gives the same value and keeps ``lam/2 ||h_i - x_i||^2 = lam/2
    ||u_i||^2`` free of cancellation; and it runs on the exactly rescaled problem ``X / a``,
    ``lam a^2``, ``lam_h a^2``, ``lam_w / a^2`` with ``a`` the power of two nearest the RMS
    sample norm, see :func:`ufm.engine.convex.certify_scale`.)

    Every feasible ``(W, b, H)`` gives a feasible ``G`` of equal value, so ``p* <= f*``. If the
    relaxed ``G`` has rank ``<= d`` it factors as vectors in ``R^d``; an orthogonal Procrustes
    rotation maps its ``e``-vectors onto ``E`` and yields a feasible ``(W, b, H)`` of value
    ``p*``. MSE makes the SDP a convex quadratic one; cross entropy adds exponential cones
    (log-sum-exp).

    *Verification.* The certificate is ``exact`` (and ``tight``) only when that feasible point,
    polished and evaluated in the original scale, has objective within ``rtol`` relative of the
    bound: then both numbers pin the global optimum. Otherwise it is inexact: ``bound`` and
    ``reconstruction_value`` bracket the optimum and ``message`` says why. The theory below
    says when tightness is expected, but a conic solver's inaccurate bound is never reported
    as attained on its strength (``params["theory_exact"]`` records it).

    *Tight by theory when* ``rank(X) + K <= d``: the SDP optimum is a global, hence stationary,
    point of the MUFM in dimension ``m``, where stationarity gives ``lam_w W = -(1/N) sum_i g_i
    h_i^T`` and ``(lam + lam_h) h_i = lam x_i - W^T g_i`` (``g_i`` the loss gradient in the
    logits): all vectors lie in ``span(x) + span(w)``, of dimension ``<= rank(X) + K``.

    *Why no N-independent certificate.* For MSE the features can be eliminated
    (:mod:`ufm.engine.statistics`): the reduced objective in ``(W, b)`` needs only ``K x K``,
    ``K x d`` and ``d x d`` statistics, and the matrix-fractional term
    ``tr[(I + W W^T/mu)^{-1} S]`` is jointly convex in ``(P, R)`` once ``W W^T`` is replaced by
    a free ``P >= W W^T``. That relaxation is *not* a certificate of this problem: it equals the
    MUFM with ``K`` zero coordinates appended to every ``x_i`` (the extra dimensions let ``W``
    act outside the data's span), and it is loose (relative gaps of 14-83% on four instances,
    MATH.md sec. 5). A lower bound that is not attained proves nothing about optimality, so it
    is not shipped; certify a class-balanced subsample (``N <= max_n``) instead, and rely on the
    solver's second-order check (``result.params["min_eig"]``) at large ``N``.

    Validity checks: the bound is compared with what is provable (the objective is
    non-negative; the bound cannot exceed the objective of the reconstructed feasible point or
    of the given solution); a violation raises :class:`~ufm.errors.SolverError` instead of
    returning an invalid certificate. Problems whose feature-decay energy
    ``lam_h mean ||x||^2`` exceeds 1e6 are refused up front (with ``lam_h > 0`` the relaxation
    still cancels ``||x||^2`` terms of that size, beyond conic-solver accuracy; the product is
    invariant under the exact rescaling), and so are sizes whose estimated memory or time is
    too large (the message gives both estimates).

    Parameters
    ----------
    X : array-like of shape (K, n, d) or (N, d), or SolveResult
        Data: balanced with labels implied, or samples with ``y``. A ``SolveResult`` of
        :func:`mufm.solve` may be passed instead (its data, labels and ``params`` define the
        problem and it is the solution checked; leave the problem keywords unset).
    y : array-like of shape (N,), optional
        Labels ``0..K-1`` for ``X (N, d)``.
    lam : float, default 0.1
        Transport coefficient, ``> 0``. Defaults of every constant are those of
        :func:`mufm.solve`.
    lam_w : float, default 5e-4
        Weight decay, ``> 0``.
    lam_h : float, default 0.0
        Feature decay.
    lam_b : float, default 5e-4
        Bias penalty (ignored without bias; 0 leaves the bias unpenalised).
    loss : {"mse", "ce"}, default "mse"
    bias : bool, default True
    solution : SolveResult or tuple (W, b, H), optional
        Candidate whose objective and gap are reported.
    solver : str, optional
        cvxpy solver; default CLARABEL, falling back to SCS.
    max_n : int, default 60
        Largest ``N`` accepted (the SDP grows like ``(K + 2N)^2`` variables).
    rank_tol : float, default 1e-6
        Relative eigenvalue threshold for the numerical rank of ``G``.
    rtol : float, default 1e-6
        Relative tolerance of the verification: ``exact`` needs ``(reconstruction_value -
        bound) <= rtol * reconstruction_value``. SCS (first-order) rarely reaches 1e-6; raise
        ``rtol`` to accept its accuracy knowingly.
    verbose : bool, optional
        Progress on stderr (stage and elapsed time). Default: shown when the estimated solve
        time exceeds :data:`ufm.engine.convex.PROGRESS_SECONDS` (2 s).

    Returns
    -------
    Certificate
        ``bound`` (lower bound; the optimum when ``exact``), ``rank`` and ``spectrum`` (the
        eigenvalues of ``G``), the reconstructed ``(W, b, H)`` and its objective, and the gap
        of ``solution``.

    Raises
    ------
    InputError
        ``N > max_n`` or an estimated cost too large (with estimates of memory and time and
        advice to subsample), transport energy above 1e6, bad shapes or labels, non-finite data,
        ``lam <= 0`` or ``lam_w <= 0``, ``rtol`` outside (0, 1), negative ``lam_h``/``lam_b``, unknown loss or solver,
        a solution of the wrong shape, problem keywords together with a SolveResult.
    SolverError
        No cvxpy solver solved the SDP, or its value contradicts a provable fact.

    References
    ----------
    MATH.md section 6; Wang, Gai, Zhang, "Progressive Feedforward Collapse of ResNet Training"
    (MUFM, eq. 12-13).
    """
    if is_result(X):
        result = X
        given = {"y": y, "lam": lam, "lam_w": lam_w, "lam_h": lam_h, "lam_b": lam_b}
        given |= {"loss": loss, "bias": bias, "solution": solution}
        p = problem_from_result(result, given, family="mufm")
        lam, lam_w, lam_h, lam_b = p["lam"], p["lam_w"], p["lam_h"], p["lam_b"]
        loss, bias, solution = p["loss"], p["bias"], result
        X = result.X
        y = None if X.ndim == 3 else result.y
    lam = check_scalar(DEFAULT_LAM if lam is None else lam, "lam", low=0.0, low_inclusive=False)
    lam_w, lam_h, lam_b, loss, bias = certify_constants(
        lam_w, lam_h, lam_b, loss, bias, lam_h_default=0.0
    )
    solver = check_solver(solver)
    max_n = check_int(max_n, "max_n", low=1)
    rank_tol = check_scalar(rank_tol, "rank_tol", low=0.0, low_inclusive=False, high=1.0)
    rtol = check_scalar(rtol, "rtol", low=0.0, low_inclusive=False, high=1.0)
    if verbose is not None and not isinstance(verbose, bool | np.bool_):
        raise InputError(f"verbose must be True, False or None, got {verbose!r}")
    Xn, yn, K = _as_samples(X, y)
    N, d = Xn.shape
    blk = K + min(N, d) + 1
    mem, sec = psd_cost(blk, N)
    if N > max_n:
        raise InputError(
            f"mufm.certify solves an SDP with N PSD blocks of size K + rank(X) + 1 (here "
            f"{N} blocks of size up to {blk}; estimated {mem / 2**30:.3g} GiB, {sec:.3g} s, "
            f"growing quickly with N); N = {N} samples exceeds the limit max_n = {max_n}. "
            f"Certify a class-balanced subsample (e.g. X[:, :m] for X of shape (K, n, d), or "
            f"m samples per class) or raise max_n. No N-independent certificate exists here: "
            f"the K x K relaxation of the reduced form is loose (see the docstring)"
        )
    size_guard(blk, N, f"mufm.certify with K={K}, N={N}, d={d}", "Certify a subsample")
    # With lam_h > 0 the relaxation still carries lam_h ||x_i||^2 and cancels it against
    # <u_i, x_i> terms: far above the O(1) loss, the conic solver's ~1e-8 relative accuracy no
    # longer resolves the objective. The exact rescaling leaves this product unchanged: refuse.
    # (The transport term lam ||h_i - x_i||^2 has no such cancellation: see below.)
    amax = max(float(np.max(np.abs(Xn))), 1e-300)
    energy = 0.0
    if lam_h > 0:
        with np.errstate(over="ignore"):
            energy = lam_h * amax**2 * float(np.mean(np.sum((Xn / amax) ** 2, axis=1)))
    if not energy <= 1e6:
        raise InputError(
            f"mufm.certify: lam_h * mean ||x_i||^2 = {energy:.3g} > 1e6 (lam_h={lam_h:g}, "
            f"data scale {float(np.max(np.abs(Xn))):.3g}): the relaxation cancels terms of that "
            "size against each other, beyond the conic solver's accuracy, so no valid "
            "certificate can be computed. The product is scale invariant; use a smaller lam_h "
            "(lam_h = 0 has no such limit)"
        )
    sol = None if solution is None else unpack_solution(solution, K, N, d, bias)
    # Solve the exactly equivalent, well-scaled problem X / a, lam a^2, lam_h a^2, lam_w / a^2
    # (unit RMS sample norm); the feasible point is mapped back and checked in the original scale.
    a = certify_scale(Xn, lam, lam_w, lam_h)
    kw0 = {"X": Xn, "lam": lam, "lam_w": lam_w, "lam_h": lam_h, "lam_b": lam_b, "loss": loss}
    kw0 |= {"bias": bias}
    Xs = Xn / a
    lam_s, lam_hs, lam_ws = lam * a * a, lam_h * a * a, lam_w / (a * a)
    prog = CertifyProgress(verbose, f"mufm.certify (K={K}, N={N}, d={d})", sec)
    try:
        prog.stage("building the SDP")
        import cvxpy as cp

        # Orthonormal basis of the data's row space: x_i = sum_j C_ij e_j.
        U, s, Vt = np.linalg.svd(Xs, full_matrices=False)
        r = int(np.count_nonzero(s > 1e-12 * max(float(s.max()) if s.size else 0.0, 1e-300)))
        C = U[:, :r] * s[:r]
        E = Vt[:r]
        c = K + r  # size of the core block (w, e)
        # Variables: the Gram matrix of (w_k, u_i = h_i - x_i, e_j). Writing the features as
        # displacements keeps the transport term lam/2 ||u_i||^2 free of the cancellation
        # ||h||^2 - 2<h, x> + ||x||^2 (which cost the conic solver its accuracy); the logits
        # are <w_k, u_i> + <w_k, x_i>, linear in the Gram entries as before.
        # Chordal form of the PSD constraint: one (c+1)-block per sample sharing the core.
        Gww = cp.Variable((K, K), symmetric=True)
        Gwe = cp.Variable((K, r)) if r > 0 else None
        core = Gww if r == 0 else cp.bmat([[Gww, Gwe], [Gwe.T, np.eye(r)]])
        Z = cp.Variable((K, N))  # <w_k, u_i>
        Gue = cp.Variable((r, N)) if r > 0 else None  # <e_j, u_i>
        uu = cp.Variable(N)  # ||u_i||^2
        cross = Z if r == 0 else cp.vstack([Z, Gue])
        constraints = []
        for i in range(N):
            col = cp.reshape(cross[:, i], (c, 1), order="F")
            block = cp.bmat([[core, col], [col.T, cp.reshape(uu[i], (1, 1), order="F")]])
            constraints.append(block >> 0)
        if N == 0 or not constraints:  # pragma: no cover - N >= K >= 2 always
            constraints.append(core >> 0)
        b_var = cp.Variable(K) if bias else None
        xx = np.einsum("ij,ij->i", Xs, Xs)
        logits = Z if r == 0 else Z + Gwe @ C.T
        data_term = loss_expr(logits, b_var, one_hot(yn, K), np.full(N, 1.0 / N), loss)
        pen = (lam_s / 2) * cp.sum(uu)
        if lam_hs > 0:
            ux = cp.sum(cp.multiply(Gue, C.T), axis=0) if r > 0 else np.zeros(N)
            pen = pen + (lam_hs / 2) * cp.sum(uu + 2 * ux + xx)
        objective = data_term + pen / N + (lam_ws / 2) * cp.trace(Gww)
        if bias and lam_b > 0:
            objective = objective + (lam_b / 2) * cp.sum_squares(b_var)
        # the conic solver's absolute tolerances: give its objective unit size (an upper
        # bound on the optimum, from the solution or a local solve, fixes the unit)
        fscale = 1.0 / _reference_value(Xn, yn, sol, kw0)
        problem = cp.Problem(cp.Minimize(fscale * objective), constraints)
        prog.stage(f"conic solve ({solver or 'CLARABEL'})")
        solved = solve_cvx(problem, solver)

        prog.stage("feasible point and verification")
        # Minimum-rank completion: realise the core, then each u_i as its projection on the
        # core's span plus a residual along one extra direction shared by all samples.
        core_v = np.asarray(core.value, dtype=np.float64)
        core_v = (core_v + core_v.T) / 2
        lam_c, U_c = np.linalg.eigh(core_v)
        top = max(float(lam_c.max()), 1.0)
        keep = lam_c > 1e-10 * top
        F_core = U_c[:, keep] * np.sqrt(lam_c[keep])  # (c, rho)
        cross_v = np.asarray(cross.value, dtype=np.float64)  # (c, N)
        A = (U_c[:, keep].T @ cross_v) / np.sqrt(lam_c[keep])[:, None]  # u_i coords (rho, N)
        resid = np.clip(np.asarray(uu.value, dtype=np.float64) - np.sum(A * A, axis=0), 0.0, None)
        V = np.zeros((K + N + r, F_core.shape[1] + 1))  # rows: w, u, e
        V[:K, :-1] = F_core[:K]
        V[K + N :, :-1] = F_core[K:]
        V[K : K + N, :-1] = A.T
        V[K : K + N, -1] = np.sqrt(resid)
        # the Gram matrix of (w, h, e) has the same rank as that of (w, u, e) (h = u + C e)
        Uv, sv, Vvt = np.linalg.svd(V, full_matrices=False)
        spectrum = sv**2  # nonzero eigenvalues of the completed Gram matrix
        rank = numerical_rank(spectrum, rank_tol)
        q = min(d, sv.size)
        F = np.zeros((K + N + r, d))
        F[:, :q] = Uv[:, :q] * sv[:q]
        Q = _procrustes(F[K + N :], E) if r > 0 else np.eye(d)
        W_r = F[:K] @ Q
        H_r = F[K : K + N] @ Q + Xs  # h_i = u_i + x_i, in the rescaled problem
        b_val = np.asarray(b_var.value, dtype=np.float64).reshape(K) if bias else None
        m = K + N + r

        kw = {"X": Xn, "lam": lam, "lam_w": lam_w, "lam_h": lam_h, "lam_b": lam_b, "loss": loss}
        params = {"K": K, "N": N, "d": d, "rank_X": r, "gram_size": m, "block_size": c + 1}
        params |= {k: v for k, v in kw.items() if k != "X"} | {"bias": bias}
        params |= {"max_n": max_n, "rank_tol": rank_tol}
        return conclude(
            family="mufm", bound=float(problem.value) / fscale, theory_exact=r + K <= d, rank=rank, d=d,
            spectrum=spectrum, recon=(W_r, b_val, H_r), y=yn, kw=kw, solution=sol, solved=solved,
            params=params, rtol=rtol, scale=a,
        )  # fmt: skip
    finally:
        prog.close()
