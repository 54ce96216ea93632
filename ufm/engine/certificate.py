"""The result of both convex certificates, :class:`Certificate`, and the provable facts its
bound is checked against (:func:`check_bound`); :func:`ufm.engine.convex.conclude` assembles it."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from ..errors import SolverError
from ..status import Status

__all__ = ["Certificate", "EXACT_RTOL", "check_bound"]

#: Relative tolerance under which a feasible point built from the relaxed solution is taken to
#: attain the bound (so the bound is the global optimum up to the solver's accuracy).
EXACT_RTOL = 1e-6


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
    solver : str
        cvxpy solver used.
    status : Status
        Its status: ``Status.OPTIMAL`` or ``Status.OPTIMAL_INACCURATE`` (equal to cvxpy's
        strings ``"optimal"``, ``"optimal_inaccurate"``).
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
    status: Status
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

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: numbers and strings, arrays as nested lists (``b`` None without bias).

        ``status`` is the plain string; ``params`` is copied. ``json.dumps(cert.to_dict())``
        works as is.
        """

        def plain(v: Any) -> Any:
            if isinstance(v, np.ndarray):
                return v.tolist()
            if isinstance(v, np.generic):
                return v.item()
            if isinstance(v, Status):
                return v.value
            if isinstance(v, dict):
                return {str(k): plain(x) for k, x in v.items()}
            if isinstance(v, tuple | list):
                return [plain(x) for x in v]
            return v

        return {f.name: plain(getattr(self, f.name)) for f in fields(self)}


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
