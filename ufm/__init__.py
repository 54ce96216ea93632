"""ufm: the foundation of the toolkit.

Simplex ETF, collapse metrics (batch and streaming), the unconstrained feature model (UFM) with
its solvers (engine in :mod:`ufm.engine`), and the UFM global-optimality certificate. Every public entry point chooses its CPU
thread count from the size of its work (:mod:`ufm.threads`; override with
``ufm.set_threads(n)``, ``with ufm.threads(n):`` or ``PFC_THREADS=n``).

>>> from ufm import collapse_metrics, solve
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError
from importlib.metadata import version as _dist_version

from . import errors
from .errors import (
    BackendError,
    ConvergenceWarning,
    DegenerateInputError,
    InputError,
    PFCError,
    RankWarning,
    ScaleWarning,
    SolverError,
)
from .lazy import lazy_package
from .metrics import __all__ as _metric_names
from .registry import METRICS, MetricSpec
from .status import Status
from .threads import get_threads, set_threads, thread_policy, threads  # light: stdlib only

#: The distribution (``pip install neural-collapse-depth``) that ships ufm, mufm, proofs_check,
#: resnet_pfc and pfc.
DISTRIBUTION = "neural-collapse-depth"
try:
    #: The toolkit's one version record: the installed distribution's metadata (pyproject.toml).
    __version__ = _dist_version(DISTRIBUTION)
except PackageNotFoundError:  # a source tree on sys.path without an install
    __version__ = "0+unknown"

# Public names load on first access (PEP 562): ``import ufm`` does not import torch, numba or
# cvxpy; ``ufm.collapse_metrics`` loads its modules (and torch) when first used. ``solve``,
# ``objective`` and ``certify`` share their names with their modules: the package attribute stays
# the function even after ``import ufm.solve`` (and ``threads`` the context manager).
_NAMES = {
    "metrics": ".metrics",
    "Certificate": ".certify",
    "certify": ".certify",
    "LayerNormOptimum": ".layernorm",
    "layernorm_etf_optimum": ".layernorm",
    "layernorm_normalize": ".layernorm",
    "layernorm_objective": ".layernorm",
    "LOSSES": ".losses",
    "check_loss": ".losses",
    "objective": ".objective",
    "OTProfile": ".ot",
    "ot_claims": ".ot",
    "ot_profile": ".ot",
    "SolveResult": ".result",
    "solve": ".solve",
    "SufficientStatistics": ".suffstats",
    "solve_statistics": ".engine.statistics",
    **dict.fromkeys((n for n in _metric_names if n != "DEFAULT_RANK_TOL"), ".metrics"),
    **dict.fromkeys(
        ("DeepLinearOptimum", "DeepSolveResult", "deep_linear_optimum", "solve_deep"), ".deep"
    ),
}
__getattr__, __dir__ = lazy_package(
    __name__, _NAMES, shadowed=("solve", "objective", "certify", "threads")
)

# The public names: those imported above and every lazily loaded name (one table, ``_NAMES``).
__all__ = [
    "METRICS",
    "MetricSpec",
    "Status",
    "errors",
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
    "ScaleWarning",
    *(name for name in _NAMES if name != "metrics"),
]
