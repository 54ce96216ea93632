"""One vocabulary of outcomes for every solver, certificate and check of the toolkit.

:class:`Status` is a string-valued enum: ``Status.CONVERGED == "converged"`` holds, so results
serialise to JSON as plain strings and compare equal to the strings users already know.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Status"]


class Status(StrEnum):
    """Outcome of a solve, a certificate or a theorem check.

    Solvers
        ``CONVERGED`` (the tolerance was met at a point that passed the second-order check),
        ``MAX_ITER`` (budget exhausted), ``STALLED`` (no further progress at the arithmetic's
        precision), ``SADDLE`` (stationary with negative curvature: not a minimum),
        ``DIVERGED`` (non-finite values).
    Certificates
        ``OPTIMAL`` and ``OPTIMAL_INACCURATE`` (the convex solver's own words), ``REFUSED``
        (the problem was not solved: too large or badly scaled; the reason is given).
    Checks (proofs_check)
        ``CONFIRMED`` (the claim held where it could have failed), ``VIOLATION`` (it failed),
        ``INCONCLUSIVE`` (numerics could not decide), ``OUTSIDE`` (the theorem's assumptions do
        not hold for this instance).
    """

    CONVERGED = "converged"
    MAX_ITER = "max_iter"
    STALLED = "stalled"
    SADDLE = "saddle"
    DIVERGED = "diverged"
    OPTIMAL = "optimal"
    OPTIMAL_INACCURATE = "optimal_inaccurate"
    REFUSED = "refused"
    CONFIRMED = "confirmed"
    VIOLATION = "violation"
    INCONCLUSIVE = "inconclusive"
    OUTSIDE = "outside"
