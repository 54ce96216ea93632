"""The solver engine of :func:`ufm.solve`, :func:`mufm.solve` and both certificates (public).

One module per job; import from the module (``from ufm.engine.options import resolve_backend``):

:mod:`ufm.engine.core`
    ``Problem`` and ``Params``: value and gradient of the (M)UFM objective on numpy or torch
    (``Ops``, ``NP``, ``TORCH``), balanced coordinates.
:mod:`ufm.engine.options`
    Defaults (coefficients, tolerances, iteration budgets), ``Backend`` and its resolution,
    coefficient checks and per-method options (``step`` for ``gd`` only).
:mod:`ufm.engine.lbfgs`
    The L-BFGS minimiser shared by both backends.
:mod:`ufm.engine.registry`
    The registry of solver methods: one :class:`~ufm.engine.registry.Method` object per
    method (name, losses, default budget, own options, runner); everything that asks about a
    method queries it.
:mod:`ufm.engine.methods`
    ``run_method`` and the runners of the built-in methods ``suffstats``, ``lbfgs``,
    ``lbfgs-h`` and ``gd``, restarts and the second-order check.
:mod:`ufm.engine.statistics`
    The reduced MSE objective in ``(W, b)`` from :class:`ufm.suffstats.SufficientStatistics`
    and its trust-region solve (``solve_statistics``, ``StatsSolution``).
:mod:`ufm.engine.pipeline`
    ``solve_problem``: the one solve pipeline behind both ``solve`` front ends, and the
    ``SolveResult`` it builds.
:mod:`ufm.engine.certificate`
    The :class:`~ufm.Certificate` both certificates return and the provable facts its bound
    is checked against.
:mod:`ufm.engine.convex`
    What the two convex certificates share: option checks, the conic solve, size guards,
    polishing, and the common tail ``conclude``.

:mod:`ufm.engine.objective`
    The objective evaluated on given variables (public as :func:`ufm.objective`).

Arrows point into the engine only: no engine module imports a module of ``ufm`` that imports
the engine (``ufm.objective``, ``ufm.solve``, ``ufm.certify``, ``ufm.layernorm`` sit above it).
The package imports none of its modules eagerly.
"""

__all__ = [
    "certificate",
    "convex",
    "core",
    "lbfgs",
    "methods",
    "objective",
    "options",
    "pipeline",
    "statistics",
]
