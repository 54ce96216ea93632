r"""Theorem 3: the ``L``-layer MUFM reduces to the one-layer problem, with equally spaced layers.

The multilayer objective (MATH.md section 5; per-sample averaging, time step ``1/L``) is

.. math::

    F(H_1, \dots, H_L, W, b) = \frac1N \sum_i \Big[\ell(W h_i^L + b, y_i)
        + \frac{\lambda_H}{2}\|h_i^L\|^2
        + \frac{\lambda L}{2} \sum_{l=1}^{L} \|h_i^l - h_i^{l-1}\|^2\Big]
        + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_b}{2}\|b\|^2,\qquad H_0 = X .

By Cauchy-Schwarz, :math:`L\sum_l \|h^l - h^{l-1}\|^2 \ge \|h^L - h^0\|^2` with equality iff
the steps are equal, so :math:`\min F` equals the MUFM optimum and the optimal layers are
:math:`h_i^l = x_i + \tfrac{l}{L}(h_i^L - x_i)`.

The check minimises ``F`` over *all* layers and ``(W, b)`` jointly (L-BFGS on the stacked
variables, from a random start; analytic gradient, verified by finite differences in the tests)
and compares with :func:`mufm.solve` on the reduced problem: equal spacing of the joint
optimum's layers, equal optimal values, and the identity ``F(lift(H)) = f(H)`` at the reduced
optimum (also against :func:`mufm.multilayer_objective` when available).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy.optimize import minimize

import mufm
from ufm.errors import ConvergenceWarning
from ufm.losses import check_loss
from ufm.objective import objective as f_reduced
from ufm.status import Status
from ufm.threads import threads
from ufm.validate import check_int, check_scalar

from .common import CheckResult, Tally, draw_instances
from .instances import MUFMInstance, random_mufm_instance

__all__ = [
    "multilayer_value_and_grad",
    "solve_multilayer_joint",
    "analyze_multilayer",
    "check_theorem3",
]

#: What a counterexample of Theorem 3 records about its instance.
_EXAMPLE_KEYS = ("K", "N", "d", "L", "lam", "lam_w", "spacing_err", "value_gap", "identity_err")

CLAIM = (
    "minimising the L-layer MUFM over all layers gives equally spaced layers on the straight "
    "line and the same optimum as the reduced (one-layer) MUFM"
)


def _onehot(y: np.ndarray, K: int) -> np.ndarray:
    Y = np.zeros((y.shape[0], K))
    Y[np.arange(y.shape[0]), y] = 1.0
    return Y


def multilayer_value_and_grad(
    Hs: np.ndarray,
    W: np.ndarray,
    b: np.ndarray | None,
    X: np.ndarray,
    y: np.ndarray,
    *,
    lam: float,
    lam_w: float,
    lam_h: float = 0.0,
    lam_b: float = 0.0,
    loss: str = "mse",
) -> tuple[float, np.ndarray, np.ndarray, np.ndarray | None]:
    r"""Value and gradient of the multilayer MUFM objective (module docstring).

    Parameters
    ----------
    Hs : array of shape (L, N, d)
        Layers ``H_1 .. H_L`` (``H_0 = X`` is fixed).
    W : array of shape (K, d)
    b : array of shape (K,) or None
        ``None``: no bias.
    X : array of shape (N, d)
    y : array of shape (N,)
    lam, lam_w, lam_h, lam_b : float
    loss : {"mse", "ce"}

    Returns
    -------
    value : float
    gHs : array of shape (L, N, d)
    gW : array of shape (K, d)
    gb : array of shape (K,) or None
    """
    L, N, _ = Hs.shape
    K = W.shape[0]
    HL = Hs[-1]
    Z = HL @ W.T + (0.0 if b is None else b)
    Y = _onehot(y, K)
    if loss == "mse":
        R = Z - Y
        lval = 0.5 * float((R * R).sum())
    elif loss == "ce":
        zmax = Z.max(axis=1, keepdims=True)
        ez = np.exp(Z - zmax)
        s = ez.sum(axis=1, keepdims=True)
        lval = float((np.log(s) + zmax).sum() - (Z * Y).sum())
        R = ez / s - Y
    else:
        check_loss(loss)  # raises: the one message for an unknown loss
        raise AssertionError("unreachable")
    R = R / N
    prev = np.concatenate([X[None], Hs[:-1]], axis=0)
    steps = Hs - prev  # (L, N, d): h^l - h^{l-1}
    kin = 0.5 * lam * L / N * float((steps * steps).sum())
    val = (
        lval / N
        + 0.5 * lam_h / N * float((HL * HL).sum())
        + kin
        + 0.5 * lam_w * float((W * W).sum())
        + (0.0 if b is None else 0.5 * lam_b * float(b @ b))
    )
    c = lam * L / N
    gHs = c * steps
    gHs[:-1] -= c * steps[1:]
    gHs[-1] += R @ W + (lam_h / N) * HL
    gW = R.T @ HL + lam_w * W
    gb = None if b is None else R.sum(axis=0) + lam_b * b
    return val, gHs, gW, gb


def solve_multilayer_joint(
    inst: MUFMInstance,
    *,
    seed: int = 0,
    max_iter: int = 20_000,
    gtol: float = 1e-11,
    init_scale: float = 1.0,
) -> dict[str, Any]:
    """Minimise the multilayer objective over ``H_1..H_L, W, b`` jointly with L-BFGS.

    The start is standard normal (times ``init_scale``) in every variable, drawn from
    ``numpy.random.default_rng(seed)``, so the straight line is not built in.

    Returns
    -------
    dict
        ``Hs (L, N, d)``, ``W``, ``b`` (or None), ``value``, ``grad_norm``, ``n_iter``,
        ``converged``.
    """
    X, y = inst.flat()
    N, d = X.shape
    K, L = inst.K, check_int(inst.L, "L", low=1)
    rng = np.random.default_rng(seed)
    nH, nW, nb = L * N * d, K * d, (K if inst.bias else 0)

    def unpack(z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        Hs = z[:nH].reshape(L, N, d)
        W = z[nH : nH + nW].reshape(K, d)
        b = z[nH + nW :] if inst.bias else None
        return Hs, W, b

    def fun(z: np.ndarray) -> tuple[float, np.ndarray]:
        Hs, W, b = unpack(z)
        v, gH, gW, gb = multilayer_value_and_grad(Hs, W, b, X, y, lam=inst.lam, **inst.penalties())
        parts = [gH.ravel(), gW.ravel()] + ([gb] if gb is not None else [])
        return v, np.concatenate(parts)

    z0 = init_scale * rng.standard_normal(nH + nW + nb)
    res = minimize(
        fun,
        z0,
        jac=True,
        method="L-BFGS-B",
        options={
            "maxiter": max_iter,
            "maxfun": 2 * max_iter,
            "gtol": gtol,
            "ftol": 1e-16,
            "maxcor": 30,
        },
    )
    Hs, W, b = unpack(res.x)
    v, g = fun(res.x)
    return {
        "Hs": Hs.copy(),
        "W": W.copy(),
        "b": None if b is None else b.copy(),
        "value": v,
        "grad_norm": float(np.linalg.norm(g, np.inf)),
        "n_iter": int(res.nit),
        "converged": bool(res.success),
    }


def _lift(X: np.ndarray, H: np.ndarray, L: int) -> np.ndarray:
    return np.stack([X + (l / L) * (H - X) for l in range(1, L + 1)])


def analyze_multilayer(
    inst: MUFMInstance,
    *,
    seed: int = 0,
    n_restarts: int = 2,
    spacing_tol: float = 1e-5,
    value_tol: float = 1e-7,
    identity_tol: float = 1e-10,
    solver_tol: float = 1e-9,
    max_iter: int = 3000,
) -> dict[str, Any]:
    """Check Theorem 3 on one MUFM instance; return a JSON-friendly record.

    Keys: ``status`` (``"confirmed"``, ``"violation"``, ``"inconclusive"``, ``"outside"``),
    ``spacing_err`` (:math:`\\max_l \\|H_l - X - \\tfrac lL (H_L - X)\\|_F / \\|H_L - X\\|_F` at
    the joint optimum), ``value_gap`` (relative ``F_joint - f_reduced``), ``identity_err``
    (relative ``|F(lift(H)) - f(H)|`` at the reduced optimum), ``cs_gap`` (``F_joint - f(H_L)``,
    nonnegative by Cauchy-Schwarz).

    A joint optimum with a larger value than the reduced one (a local minimum of the joint
    L-BFGS) or a reduced solve that is beaten by the joint one is ``"inconclusive"``; the
    theorem's content (spacing, identity, Cauchy-Schwarz) must hold regardless.
    """

    lam = check_scalar(inst.lam, "lam")
    X, y = inst.flat()
    N, d = X.shape
    rec: dict[str, Any] = {
        "K": inst.K,
        "N": N,
        "d": d,
        "L": inst.L,
        "lam": lam,
        "lam_w": inst.lam_w,
        "lam_b": inst.lam_b,
        "loss": inst.loss,
    }
    if lam == 0:
        return {**rec, "status": Status.OUTSIDE, "reason": "lam = 0 (no transport term)"}
    red = solve_reduced(inst, lam, tol=solver_tol, max_iter=max_iter)
    Hr, Wr, br = (np.asarray(a, dtype=float) for a in (red.H, red.W, red.b))
    br_ = br if inst.bias else None
    move = float(np.linalg.norm(Hr - X))
    rec["transport"] = move
    if move <= 1e-9 * max(1.0, float(np.linalg.norm(X))):
        return {**rec, "status": Status.OUTSIDE, "reason": "zero transport (optimum stays at X)"}
    f_red = float(red.objective)
    rec["f_reduced"] = f_red
    rec["reduced_status"] = red.status
    # the identity F(lift(H)) = f(H) at the reduced optimum, ours and the library's
    kw = dict(lam=lam, **inst.penalties())
    F_lift, *_ = multilayer_value_and_grad(_lift(X, Hr, inst.L), Wr, br_, X, y, **kw)
    f_here = f_reduced(Wr, br_, Hr, y, X=X, **kw)
    scale = max(1.0, abs(f_red))
    problems: list[str] = []
    rec["identity_err"] = abs(F_lift - f_here) / scale
    if not rec["identity_err"] <= identity_tol:
        problems.append(f"F(lift(H)) != f(H) (rel. err. {rec['identity_err']:.2e})")
    layers = [np.asarray(a, dtype=float) for a in red.layers(inst.L)]
    lift_err = max(
        float(np.abs(a - b).max()) for a, b in zip(layers[1:], _lift(X, Hr, inst.L), strict=True)
    )
    rec["layers_err"] = lift_err
    if not lift_err <= 1e-12 * max(1.0, float(np.abs(X).max())):
        problems.append(f"result.layers(L) is not the straight line ({lift_err:.2e})")
    mlo = getattr(mufm, "multilayer_objective", None) if _has_layers_module() else None
    if mlo is not None:
        F_lib = float(mlo(layers, y, Wr, br_, **kw))
        rec["library_identity_err"] = abs(F_lib - F_lift) / scale
        if not rec["library_identity_err"] <= identity_tol:
            problems.append(
                f"mufm.multilayer_objective differs from this check's F ({rec['library_identity_err']:.2e})"
            )
    # the joint solve over all layers, from random starts
    best = None
    for r in range(max(1, n_restarts)):
        sol = solve_multilayer_joint(inst, seed=seed * 1000 + r)
        if best is None or sol["value"] < best["value"]:
            best = sol
    assert best is not None
    Hs = best["Hs"]
    HL = Hs[-1]
    denom = float(np.linalg.norm(HL - X))
    spacing = max(
        float(np.linalg.norm(Hs[l - 1] - (X + (l / inst.L) * (HL - X))))
        for l in range(1, inst.L + 1)
    ) / max(denom, 1e-300)
    rec.update(
        spacing_err=spacing,
        f_joint=best["value"],
        joint_grad=best["grad_norm"],
        joint_iter=best["n_iter"],
    )
    f_at_HL = f_reduced(best["W"], best["b"], HL, y, X=X, **kw)
    rec["cs_gap"] = (best["value"] - f_at_HL) / scale
    if rec["cs_gap"] < -identity_tol:
        problems.append(f"Cauchy-Schwarz bound F >= f(H_L) fails ({rec['cs_gap']:.2e})")
    gap = (best["value"] - f_red) / scale
    rec["value_gap"] = gap
    local = gap > value_tol
    if not local and spacing > spacing_tol:
        problems.append(f"joint optimum's layers are not equally spaced ({spacing:.2e})")
    if problems:
        rec["status"], rec["problems"] = Status.VIOLATION, problems
    elif local:
        rec["status"], rec["reason"] = Status.INCONCLUSIVE, "joint L-BFGS stopped at a higher value"
    elif gap < -value_tol:
        rec["status"], rec["reason"] = Status.INCONCLUSIVE, "reduced solver beaten by the joint one"
    else:
        rec["status"] = Status.CONFIRMED
    return rec


def solve_reduced(
    inst: MUFMInstance, lam: float, *, tol: float, max_iter: int, loss: str | None = None
) -> Any:
    """:func:`mufm.solve` on the reduced (one-layer) MUFM of ``inst`` at ``lam``.

    Convergence warnings are silenced: the caller reads the result's ``status``. ``loss``
    overrides the instance's loss.
    """

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        kw = inst.penalties() | ({} if loss is None else {"loss": loss})
        return mufm.solve(inst.X, lam=lam, bias=inst.bias, tol=tol, max_iter=max_iter, **kw)


def _has_layers_module() -> bool:
    import importlib.util

    return importlib.util.find_spec("mufm.layers") is not None


def check_theorem3(
    instances: int | Iterable[MUFMInstance] = 10,
    *,
    seed: int | None = 0,
    degenerate_rate: float = 0.1,
    n_restarts: int = 2,
    spacing_tol: float = 1e-5,
    value_tol: float = 1e-7,
    progress: bool = False,
) -> CheckResult:
    r"""Check Theorem 3 on random (or given) small MUFM instances.

    .. math::

        \min_{H_1..H_L, W, b} F = \min_{H, W, b} f, \qquad
        H_l^\star = X + \tfrac{l}{L}(H_L^\star - X).

    Parameters
    ----------
    instances : int or iterable of MUFMInstance
        Number of random instances (drawn from ``seed``) or the instances.
    seed : int, optional
    degenerate_rate : float
        Fraction of random instances built degenerate (``lam = 0``: no transport) on purpose.
    n_restarts : int
        Random starts of the joint L-BFGS (the best value is kept).
    spacing_tol, value_tol : float
        Tolerances on the relative spacing error and the relative value gap.
    progress : bool

    Returns
    -------
    CheckResult
        ``worst_margin``: ``-max(spacing_err, |value_gap|)`` over confirmed instances (closest to
        zero is best).
    """
    degenerate_rate = check_scalar(degenerate_rate, "degenerate_rate", high=1.0)
    tally = Tally("theorem3", CLAIM, "-max(spacing_err, |value_gap|) (0 is exact agreement)", seed)
    items = draw(instances, seed, degenerate_rate, 3)
    worst_spacing = worst_gap = 0.0
    with threads(1):  # small dense problems: one thread (the toolkit's policy, scoped)
        for i, inst in enumerate(tally.over(items, progress)):
            rec = analyze_multilayer(
                inst,
                seed=(seed or 0) + i,
                n_restarts=n_restarts,
                spacing_tol=spacing_tol,
                value_tol=value_tol,
            )
            status = tally.record(rec, **{k: rec.get(k) for k in _EXAMPLE_KEYS})
            if status is Status.VIOLATION:
                tally.margin(-math.inf)
            if status is not Status.CONFIRMED:
                continue
            worst_spacing = max(worst_spacing, rec["spacing_err"])
            worst_gap = max(worst_gap, abs(rec["value_gap"]))
            tally.margin(-max(rec["spacing_err"], abs(rec["value_gap"])))
    tally.details.update(max_spacing_err=worst_spacing, max_abs_value_gap=worst_gap)
    return tally.result()


def draw(
    instances: int | Iterable[MUFMInstance], seed: int | None, rate: float, theorem: int = 3
) -> list[MUFMInstance]:
    """Random MUFM instances for Theorem ``theorem`` (3 or 4; ``rate`` degenerate), or those given."""
    return draw_instances(
        instances,
        seed=seed,
        theorem=theorem,
        rate=rate,
        draw=lambda rng, deg: random_mufm_instance(rng, degenerate=deg),
        kind=MUFMInstance,
    )
