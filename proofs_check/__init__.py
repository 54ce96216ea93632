"""proofs_check: numerical and exact checks of the PFC paper's Theorems 1-4.

Each ``check_theoremN`` draws (or takes) instances, separates those outside the theorem's
assumptions (degenerate input is reported, never counted as a confirmation or a violation),
checks the claim on the rest and returns a frozen :class:`CheckResult`. Theorems 1 and 2 are
certified exactly per instance (a Sturm sequence over the rationals decides the sign of the
derivative's numerator on ``[0, 1]``); Theorems 3 and 4 are checked numerically against the
solvers of :mod:`mufm`.

What the reports say, and what they do not: for Theorem 1, that every ``c < 0`` line rises
first is the certified consequence ``PFC1'(0) = -2ac/b^2 > 0``, not an observation; for
Theorem 2, the transport-cost assumption is per direction, and the report is the distribution
of the per-direction critical costs (random directions and near-ETF starts), never one
threshold; for Theorem 4, the observed ``lam_0`` of each instance on a log grid over
``[1e-5, 1e4]`` (4 points per decade), ``0`` when the inequality holds on the whole grid.

>>> from proofs_check import check_theorem1
>>> r = check_theorem1(50, seed=0)
>>> r.n_violations
0

Command line: ``python -m proofs_check --seed 0 --instances 100 --json out.json``.
The hypothesis strategies live in :mod:`proofs_check.strategies` (needs ``hypothesis``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ufm.lazy import lazy_package

if TYPE_CHECKING:
    from .common import CheckResult

# Names load on first access (PEP 562): ``pfc --help`` reads the options of ``pfc check``
# (:class:`proofs_check.cli.CheckOptions`) without loading the checks, mufm and torch.
_NAMES = {
    **dict.fromkeys(
        ("SignCertificate", "certify_sign", "count_roots", "isolate_roots"), ".certify"
    ),
    **dict.fromkeys(("COUNTEREXAMPLE_KINDS", "CheckResult"), ".common"),
    **dict.fromkeys(("LineInstance", "MeansInstance", "MUFMInstance"), ".instances"),
    **dict.fromkeys(
        ("analyze_line", "check_theorem1", "line_coefficients", "pfc1_closed_form"), ".theorem1"
    ),
    **dict.fromkeys(("analyze_means_line", "check_theorem2", "pfc2_line_polynomials"), ".theorem2"),
    **dict.fromkeys(
        ("analyze_multilayer", "check_theorem3", "solve_multilayer_joint"), ".theorem3"
    ),
    **dict.fromkeys(("analyze_mufm", "check_theorem4", "reduced_mse_flow"), ".theorem4"),
}
__getattr__, __dir__ = lazy_package(__name__, _NAMES)

__all__ = [
    "CheckResult",
    "COUNTEREXAMPLE_KINDS",
    "SignCertificate",
    "certify_sign",
    "count_roots",
    "isolate_roots",
    "LineInstance",
    "MeansInstance",
    "MUFMInstance",
    "check_theorem1",
    "check_theorem2",
    "check_theorem3",
    "check_theorem4",
    "analyze_line",
    "analyze_means_line",
    "analyze_multilayer",
    "analyze_mufm",
    "line_coefficients",
    "pfc1_closed_form",
    "pfc2_line_polynomials",
    "solve_multilayer_joint",
    "reduced_mse_flow",
    "run_all",
]


def run_all(
    *,
    seed: int = 0,
    instances: int = 100,
    solver_instances: int | None = None,
    progress: bool = False,
) -> list[CheckResult]:
    """Run the four checks: ``instances`` for Theorems 1-2, ``solver_instances`` (default
    ``max(1, instances // 10)``) for the solver-based Theorems 3-4."""
    from .theorem1 import check_theorem1
    from .theorem2 import check_theorem2
    from .theorem3 import check_theorem3
    from .theorem4 import check_theorem4

    ns = max(1, instances // 10) if solver_instances is None else solver_instances
    return [
        check_theorem1(instances, seed=seed, progress=progress),
        check_theorem2(instances, seed=seed, progress=progress),
        check_theorem3(ns, seed=seed, progress=progress),
        check_theorem4(ns, seed=seed, progress=progress),
    ]
