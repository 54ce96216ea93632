"""The machinery shared by the two convex certificates, :func:`ufm.certify` and :func:`mufm.certify`.

:class:`Certificate` (what a relaxation says), option checks, the conic solve with its
fallbacks (:func:`solve_cvx`), the cost guard (:func:`size_guard`), the validity check of the
bound (:func:`check_bound`), the independent numpy objective used to polish the feasible point
(:func:`value_and_grad`, :func:`polish`), and the common tail of both certificates
(:func:`problem_from_result`, :func:`conclude`): polish the point built from the relaxed
solution, evaluate it and the given solution, and assemble the certificate
(:class:`Certificate`, from :mod:`ufm.engine.certificate`).
"""

from __future__ import annotations

import math
import time
import warnings
from typing import Any

import numpy as np

from ..errors import ConvergenceWarning, InputError, SolverError
from ..losses import check_loss
from ..status import Status
from ..validate import check_features, check_scalar, describe
from .certificate import EXACT_RTOL, Certificate, check_bound
from .objective import objective
from .options import DEFAULT_LAM_B, DEFAULT_LAM_W

__all__ = [
    "Certificate",
    "EXACT_RTOL",
    "CertifyProgress",
    "PROGRESS_SECONDS",
    "certify_constants",
    "certify_scale",
    "check_bound",
    "check_solver",
    "conclude",
    "is_result",
    "loss_expr",
    "numerical_rank",
    "one_hot",
    "problem_from_result",
    "psd_cost",
    "size_guard",
    "solve_cvx",
    "unpack_solution",
    "value_and_grad",
]


def check_bias(bias: Any) -> bool:
    if not isinstance(bias, bool | np.bool_):
        raise InputError(f"bias must be True or False, got {describe(bias)}")
    return bool(bias)


def certify_constants(
    lam_w: Any, lam_h: Any, lam_b: Any, loss: Any, bias: Any, *, lam_h_default: float
) -> tuple[float, float, float, str, bool]:
    """Defaults and checks of the problem constants that both certificates share.

    ``None`` takes the default of the solvers: ``lam_w`` :data:`DEFAULT_LAM_W`, ``lam_h``
    ``lam_h_default``, ``lam_b`` :data:`DEFAULT_LAM_B`, ``loss`` ``"mse"``, ``bias`` True.
    ``lam_w`` must be positive; ``lam_h`` too when its default is (the UFM, whose infimum is
    not attained at ``lam_h = 0``), else non-negative (the MUFM); ``lam_b`` non-negative.

    Parameters
    ----------
    lam_w, lam_h, lam_b : float or None
        Weight, feature and bias penalties as passed.
    loss : {"mse", "ce"} or None
    bias : bool or None
    lam_h_default : float
        The family's default ``lam_h`` (positive for the UFM, 0 for the MUFM).

    Returns
    -------
    tuple
        ``(lam_w, lam_h, lam_b, loss, bias)``, validated (``loss`` lower case).

    Raises
    ------
    InputError
        A constant out of its range or not a finite number, an unknown loss, a non-bool bias.
    """
    lam_w = check_scalar(
        DEFAULT_LAM_W if lam_w is None else lam_w, "lam_w", low=0.0, low_inclusive=False
    )
    lam_h = lam_h_default if lam_h is None else lam_h
    lam_h = check_scalar(lam_h, "lam_h", low=0.0, low_inclusive=lam_h_default == 0)
    lam_b = check_scalar(DEFAULT_LAM_B if lam_b is None else lam_b, "lam_b", low=0.0)
    loss = check_loss("mse" if loss is None else loss)
    bias = check_bias(True if bias is None else bias)
    return lam_w, lam_h, lam_b, loss, bias


def check_solver(solver: Any) -> str | None:
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
        # tight first (margin where the problem allows it); an inaccurate tight solve is
        # followed by the defaults, which often reach "optimal" there (see solve_cvx)
        tight = {"tol_gap_abs": 1e-10, "tol_gap_rel": 1e-10, "tol_feas": 1e-10}
        return [tight, {}]
    if name == "SCS":
        # 50k iterations bound the time (the digits case of issue 20 took 159-182 s at 200k and
        # still ended inaccurate); the certificate verifies whatever bound SCS reaches
        return [{"eps_abs": 1e-9, "eps_rel": 1e-9, "max_iters": 50_000}]
    return [{}]


def solve_cvx(problem: Any, solver: str | None) -> tuple[str, str, float]:
    """Solve a cvxpy problem; CLARABEL first, SCS as fallback when ``solver`` is None.

    Returns ``(solver name, status, seconds)`` of the first solve that reaches an optimal or
    (then with a ConvergenceWarning) an inaccurate optimal status, whose values it keeps;
    raises SolverError when nothing solves it. The certificates verify the bound against a
    feasible point, so an inaccurate bound is never reported as exact beyond ``rtol``.
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
            except BaseException as exc:  # CLARABEL's Rust panics are BaseExceptions (pyo3)
                if type(exc).__name__ != "PanicException":
                    raise
                failures.append(f"{name}: internal error {exc}")
                continue
            status = str(problem.status)
            if status == cp.OPTIMAL and problem.value is not None:
                return name, status, time.perf_counter() - t0
            if status == cp.OPTIMAL_INACCURATE and problem.value is not None:
                # the last inaccurate solve's values are kept as they are (no re-solve: the
                # certificate verifies the bound against a feasible point anyway; the re-solve
                # and a middle tolerance set cost half the time of the digits case, issue 20)
                inaccurate = (name, opts)
                continue
            inaccurate = None  # a failed later attempt leaves no usable values
            failures.append(f"{name}: status {status}")
        if inaccurate is not None:
            break
    if inaccurate is not None:
        name, opts = inaccurate
        warnings.warn(
            f"the certificate's convex problem was solved only inaccurately ({name}); the bound "
            "may be off by more than 1e-6 relative (the certificate is exact only if a feasible "
            "point verifies it within rtol): try another solver (solver='SCS' or 'CLARABEL') "
            "or less extreme lam_* constants",
            ConvergenceWarning,
            stacklevel=3,
        )
        return name, str(problem.status), time.perf_counter() - t0
    raise SolverError(
        "the certificate's convex problem could not be solved (" + "; ".join(failures) + "); "
        "check that the regularisation constants are not extreme"
    )


def numerical_rank(spectrum: np.ndarray, rank_tol: float) -> int:
    top = float(spectrum.max()) if spectrum.size else 0.0
    return int(np.count_nonzero(spectrum > rank_tol * max(top, 1.0)))


def is_result(obj: Any) -> bool:
    """Duck-typed test for a SolveResult (avoids importing the solvers here)."""
    return all(hasattr(obj, a) for a in ("W", "H", "y", "params", "objective"))


def result_param(result: Any, name: str, default: Any = None) -> Any:
    params = getattr(result, "params", None) or {}
    return params.get(name, default)


def unpack_solution(
    solution: Any, K: int, N: int, d: int, bias: bool
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """Validate ``solution`` (a SolveResult or a tuple ``(W, b, H)``) against the problem."""
    if is_result(solution):
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


def polish(
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


def one_hot(y: np.ndarray, K: int) -> np.ndarray:
    Y = np.zeros((K, y.size))
    Y[y, np.arange(y.size)] = 1.0
    return Y


def loss_expr(Z: Any, b: Any, Y: np.ndarray, weights: np.ndarray, loss: str) -> Any:
    """cvxpy expression of ``sum_j weights_j l(Z[:, j] + b, Y[:, j])`` (columns = samples)."""
    import cvxpy as cp

    K, M = Y.shape
    logits = Z if b is None else Z + cp.reshape(b, (K, 1), order="F") @ np.ones((1, M))
    if loss == "mse":
        return 0.5 * cp.sum_squares((logits - Y) @ np.diag(np.sqrt(weights)))
    lse = cp.log_sum_exp(logits, axis=0)
    return weights @ lse - cp.sum(cp.multiply(Y @ np.diag(weights), logits))


def problem_from_result(result: Any, given: dict[str, Any], *, family: str) -> dict[str, Any]:
    """The problem of a SolveResult to certify; refuses keywords passed with it and the other family.

    Returns
    -------
    dict
        The problem's constants from ``result.params``: ``lam`` (MUFM only), ``lam_w``,
        ``lam_h``, ``lam_b``, ``loss`` and ``bias``. Where ``params`` lacks one: ``lam_h`` 0 for
        the MUFM (None for the UFM, whose front end then applies its default), ``lam_b`` 0,
        ``loss`` ``"mse"``, ``bias`` whether the result has a ``b``.

    Raises
    ------
    InputError
        A keyword of ``given`` is not None, or ``result`` belongs to the other family (a MUFM
        result has data ``X``; a UFM result has none).
    """
    clash = [k for k, v in given.items() if v is not None]
    if clash:
        call = (
            "certify(y, d=..., lam_w=..., ...)"
            if family == "ufm"
            else "certify(X, y, lam=..., ...)"
        )
        raise InputError(
            f"certify(result) reads the problem from the SolveResult; do not also pass "
            f"{clash}. Call {call} to certify another problem"
        )
    has_data = getattr(result, "X", None) is not None
    if family == "ufm" and (has_data or result_param(result, "model") == "mufm"):
        raise InputError(
            "this SolveResult is a MUFM problem (it has data X / lam > 0); "
            "certify it with mufm.certify(result)"
        )
    if family == "mufm" and not has_data:
        raise InputError(
            "this SolveResult has no data X (a UFM problem); certify it with ufm.certify(result)"
        )
    absent = {"lam_h": 0.0 if family == "mufm" else None, "lam_b": 0.0, "loss": "mse"}
    absent["bias"] = result.b is not None
    keys: tuple[str, ...] = ("lam_w", "lam_h", "lam_b", "loss", "bias")
    if family == "mufm":
        keys = ("lam", *keys)
    return {k: result_param(result, k, absent.get(k)) for k in keys}


def certify_scale(X: np.ndarray | None, lam: float, lam_w: float, lam_h: float) -> float:
    """The power of two ``a`` a certificate divides its data by before the conic solve.

    The (M)UFM is scale-equivariant: ``X / a``, ``lam a^2``, ``lam_h a^2``, ``lam_w / a^2``
    is the same problem (``H = a H'``, ``W = W' / a``, equal objective). With data, ``a`` is
    the power of two nearest the RMS sample norm ``sqrt(mean ||x_i||^2)`` (unit-scale data);
    without data, or for all-zero data, the one nearest ``(lam_w / (lam + lam_h))^(1/4)`` (equal
    weight and feature penalties). A power of two makes the rescaling exact in floating point,
    so ``a X`` gives the same conic problem as ``X``.
    """
    if X is not None and X.size:
        amax = float(np.max(np.abs(X)))
        if amax > 0:
            # scaled by its own max first: squares of 2^600 or 2^-600 stay in range
            rms = amax * math.sqrt(float(np.mean(np.sum((X / amax) ** 2, axis=1))))
            if rms > 0 and math.isfinite(rms):
                return math.ldexp(1.0, round(math.log2(rms)))
    mu = lam + lam_h
    if mu > 0 and lam_w > 0:
        e = (math.log2(lam_w) - math.log2(mu)) / 4
        return math.ldexp(1.0, round(e))
    return 1.0


def scaled_kw(kw: dict[str, Any], a: float) -> dict[str, Any]:
    """The keywords of :func:`ufm.objective` for the problem rescaled by ``a`` (see
    :func:`certify_scale`)."""
    out = dict(kw)
    a2 = a * a
    if out.get("X") is not None:
        out["X"] = out["X"] / a
    for k in ("lam", "lam_h"):
        if k in out:
            out[k] = out[k] * a2
    out["lam_w"] = out["lam_w"] / a2
    return out


class CertifyProgress:
    """Progress of a certificate on stderr (tqdm): the stage and the elapsed time.

    ``enabled=None`` turns it on when the estimated conic solve time ``estimate`` exceeds
    :data:`PROGRESS_SECONDS`; a background thread refreshes the elapsed time every second
    while the (uninterruptible) conic solver runs.
    """

    def __init__(self, enabled: bool | None, desc: str, estimate: float = 0.0):
        # automatic progress shows on a terminal only (tqdm's disable=None): a log file gets no
        # carriage-return lines; verbose=True always shows it
        disable = None if enabled is None else False
        if enabled is None:
            enabled = estimate > PROGRESS_SECONDS
        self.bar = None
        self._stop = None
        if enabled:
            import threading

            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=None, desc=desc, bar_format="{desc}: {elapsed} {postfix}", disable=disable
            )
            self._stop = threading.Event()

            def tick() -> None:
                while not self._stop.wait(1.0):
                    self.bar.refresh()

            threading.Thread(target=tick, daemon=True).start()

    def stage(self, name: str) -> None:
        if self.bar is not None:
            self.bar.set_postfix_str(name, refresh=True)

    def close(self) -> None:
        if self.bar is not None:
            self._stop.set()
            self.bar.close()
            self.bar = None

    def __enter__(self) -> CertifyProgress:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


#: Estimated conic-solve seconds above which ``verbose=None`` shows the certificate's progress.
PROGRESS_SECONDS = 2.0


def conclude(
    *,
    family: str,
    bound: float,
    theory_exact: bool,
    rank: int,
    d: int,
    spectrum: np.ndarray,
    recon: tuple[np.ndarray, np.ndarray | None, np.ndarray],
    y: np.ndarray,
    kw: dict[str, Any],
    solution: tuple[np.ndarray, np.ndarray | None, np.ndarray] | None,
    solved: tuple[str, str, float],
    params: dict[str, Any],
    rtol: float = EXACT_RTOL,
    scale: float = 1.0,
) -> Certificate:
    """The common tail of both certificates.

    ``recon`` is the feasible point built from the relaxed solution *in the rescaled problem*
    (data divided by ``scale``, see :func:`certify_scale`; ``scale=1`` for none). It is polished
    there (:func:`polish`, well scaled), mapped back (``W / scale``, ``H * scale``) and
    evaluated with :func:`ufm.objective` in the original scale (keywords ``kw``: ``X``,
    ``lam``, ``lam_w``, ``lam_h``, ``lam_b``, ``loss``), as is ``solution``; the bound (which
    the exact rescaling leaves unchanged) is checked (:func:`check_bound`) and the certificate
    is ``exact`` only when that feasible value is within ``rtol`` relative of the bound.
    ``theory_exact`` is recorded in ``params`` but never makes a certificate exact by itself.
    ``solved`` is :func:`solve_cvx`'s ``(solver, status, seconds)``.
    """
    W, b, H = polish(*recon, y, scaled_kw(kw, scale))
    W, H = W / scale, H * scale
    recon_value = float(objective(W, b, H, y, **kw))
    value = None if solution is None else float(objective(*solution, y, **kw))
    check_bound(bound, recon_value, value, family)
    # duality gap and first-order conditions of the feasible point, in the original scale
    rel = (recon_value - bound) / max(abs(recon_value), 1e-300)
    with np.errstate(all="ignore"):  # informative only: may overflow at extreme scales
        _, gW, gb, gH = value_and_grad(W, b, H, y, **kw)
        kkt = math.sqrt(
            float(np.sum(gW * gW)) + (0.0 if gb is None else float(gb @ gb))
            + H.shape[0] * float(np.sum(gH * gH))
        )  # fmt: skip
    exact = bool(rel <= rtol)
    optimum = recon_value if exact else None
    if exact:
        message = (
            f"verified: the feasible point's objective {recon_value:.10g} is within "
            f"{max(rel, 0.0):.2g} (rtol={rtol:g}) of the convex bound {bound:.10g}, so it is "
            "the global optimum up to that relative tolerance"
        )
    else:
        why = (
            "the relaxation is not tight here (relaxed rank > d)"
            if rank > d
            else "the conic solver's bound is not accurate enough to verify it (try "
            "solver='CLARABEL', or a larger rtol)"
        )
        message = (
            f"inexact: lower bound {bound:.10g} <= global optimum <= {recon_value:.10g} "
            f"(feasible value); relative gap {rel:.3g} > rtol={rtol:g}, so no global optimum "
            f"is claimed; {why}"
        )
    gap = rel_gap = None
    if value is not None:
        ref = optimum if optimum is not None else bound
        gap = value - ref
        rel_gap = gap / max(abs(ref), 1e-300)
    used, status, seconds = solved
    params = dict(params)
    params |= {"rtol": rtol, "scale": scale, "theory_exact": bool(theory_exact)}
    params |= {"verified_rel_gap": rel, "kkt_grad_norm": kkt}
    return Certificate(
        family=family,
        bound=float(bound),
        optimum=None if optimum is None else float(optimum),
        exact=exact,
        tight=bool(exact and rank <= d),
        rank=int(rank),
        spectrum=spectrum,
        value=value,
        gap=gap,
        rel_gap=rel_gap,
        W=W,
        b=b,
        H=H,
        reconstruction_value=recon_value,
        solver=used,
        status=Status(status),
        solve_time=float(seconds),
        params=params,
        message=message,
    )
