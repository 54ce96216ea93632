"""mufm: the multilayer unconstrained feature model (data-anchored), built on :mod:`ufm`.

>>> from mufm import solve
>>> res = solve(X, lam=0.1)          # X of shape (K, n, d), balanced, labels implied
"""

from __future__ import annotations

# eager: binds `mufm.solve` and `mufm.certify` to the functions for good, even after an
# `import mufm.solve` (the module is then already in sys.modules and leaves the attribute alone)
from .certify import certify
from .experiment import make_data, run_experiment
from .flow import FlowResult, gradient_flow
from .layers import multilayer_objective
from .solve import SolveResult, solve

__all__ = [
    "solve",
    "SolveResult",
    "certify",
    "gradient_flow",
    "FlowResult",
    "multilayer_objective",
    "make_data",
    "run_experiment",
]
