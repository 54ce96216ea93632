"""mufm: the multilayer unconstrained feature model (data-anchored), built on :mod:`ufm`.

>>> from mufm import solve
>>> res = solve(X, lam=0.1)          # X of shape (K, n, d), balanced, labels implied
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# eager: binds `mufm.solve` and `mufm.certify` to the functions for good, even after an
# `import mufm.solve` (the module is then already in sys.modules and leaves the attribute alone)
from .certify import certify
from .solve import SolveResult, solve

_LAZY = {
    "multilayer_objective": "layers",
    "gradient_flow": "flow",
    "make_data": "experiment",
    "run_experiment": "experiment",
}

__all__ = ["solve", "SolveResult", "certify", *_LAZY]


def __getattr__(name: str) -> Any:
    mod = _LAZY.get(name)
    if mod is None:
        raise AttributeError(f"module 'mufm' has no attribute {name!r}")
    value = getattr(import_module(f".{mod}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
