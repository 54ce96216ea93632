"""ufm: the foundation of the toolkit.

Simplex ETF, collapse metrics (batch and streaming), the unconstrained feature model (UFM) with
its solvers, and the UFM global-optimality certificate. Every public entry point chooses its CPU
thread count from the size of its work (:mod:`ufm.threads`; override with
``ufm.set_threads(n)``, ``with ufm.threads(n):`` or ``PFC_THREADS=n``).

>>> from ufm import collapse_metrics, solve
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from . import errors
from .errors import (
    BackendError,
    ConvergenceWarning,
    DegenerateInputError,
    InputError,
    PFCError,
    RankWarning,
    SolverError,
)

__version__ = "0.1.0"

# `solve`, `objective` and `certify` share their names with their modules: importing the functions
# eagerly binds the package attributes to the functions for good (a later `import ufm.solve`
# finds the module in sys.modules and leaves the attribute alone).
from .certify import Certificate, certify  # noqa: E402
from .objective import objective  # noqa: E402
from .registry import METRICS, MetricSpec  # noqa: E402
from .solve import solve  # noqa: E402
from .status import Status  # noqa: E402
from .threads import get_threads, set_threads, thread_policy, threads  # noqa: E402

# Heavier submodules load on first use so that `import ufm` stays cheap.
_LAZY = {
    "collapse_metrics": "metrics",
    "pfc1": "metrics",
    "pfc2": "metrics",
    "pfc3": "metrics",
    "ncc_accuracy": "metrics",
    "nc1": "metrics",
    "nc2": "metrics",
    "nc3": "metrics",
    "nc4": "metrics",
    "simplex_etf": "metrics",
    "effective_depth": "metrics",
    "alignment": "metrics",
    "relative_position": "metrics",
    "CollapseAccumulator": "metrics",
    "LineAccumulator": "metrics",
    "SolveResult": "result",
    "LayerNormOptimum": "layernorm",
    "layernorm_etf_optimum": "layernorm",
    "layernorm_normalize": "layernorm",
    "layernorm_objective": "layernorm",
    "SufficientStatistics": "suffstats",
    "solve_statistics": "suffstats",
}

__all__ = [
    "METRICS",
    "MetricSpec",
    "Status",
    "errors",
    "objective",
    "solve",
    "certify",
    "Certificate",
    "threads",
    "set_threads",
    "get_threads",
    "thread_policy",
    "PFCError",
    "InputError",
    "DegenerateInputError",
    "BackendError",
    "SolverError",
    "ConvergenceWarning",
    "RankWarning",
    *_LAZY,
]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'ufm' has no attribute {name!r}")
    value = getattr(import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
