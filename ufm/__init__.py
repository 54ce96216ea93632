"""ufm: the foundation of the toolkit.

Simplex ETF, collapse metrics (batch and streaming), the unconstrained feature model (UFM) with
its solvers (engine in :mod:`ufm.engine`), and the UFM global-optimality certificate. Every public entry point chooses its CPU
thread count from the size of its work (:mod:`ufm.threads`; override with
``ufm.set_threads(n)``, ``with ufm.threads(n):`` or ``PFC_THREADS=n``).

>>> from ufm import collapse_metrics, solve
"""

from __future__ import annotations

from . import errors, metrics
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
from .certify import Certificate, certify
from .deep import DeepLinearOptimum, DeepSolveResult, deep_linear_optimum, solve_deep
from .layernorm import (
    LayerNormOptimum,
    layernorm_etf_optimum,
    layernorm_normalize,
    layernorm_objective,
)
from .losses import LOSSES, check_loss
from .metrics import *  # noqa: F403 - the metric functions and accumulators, listed there
from .objective import objective
from .registry import METRICS, MetricSpec
from .result import SolveResult
from .solve import solve
from .status import Status
from .suffstats import SufficientStatistics, solve_statistics
from .threads import get_threads, set_threads, thread_policy, threads

# Every public name is imported eagerly: torch dominates the import time, and the modules above
# add a few milliseconds to it (measured with ``python -X importtime -c "import ufm"``).

__all__ = [
    "METRICS",
    "MetricSpec",
    "Status",
    "errors",
    "objective",
    "LOSSES",
    "check_loss",
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
    "SolveResult",
    "solve_deep",
    "DeepSolveResult",
    "DeepLinearOptimum",
    "deep_linear_optimum",
    "LayerNormOptimum",
    "layernorm_etf_optimum",
    "layernorm_normalize",
    "layernorm_objective",
    "SufficientStatistics",
    "solve_statistics",
    *(name for name in metrics.__all__ if name != "DEFAULT_RANK_TOL"),
]
