r"""Collapse metrics: exact, streaming, and never a ``d x d`` matrix.

All metrics follow ``MATH.md`` sections 2-4. Features are samples first, ``H`` of shape
``(N, d)`` with labels ``y`` of shape ``(N,)`` in ``0..K-1`` (or a balanced ``(K, n, d)`` array
with labels implied). Inputs may be numpy arrays or torch tensors on any device and of any
floating dtype; every statistic is accumulated in float64 on the input's device, and results
are Python floats.

Everything is computed from per-class counts, per-class means, per-class sums of squared
deviations, the ``K x K`` Gram matrix ``G = M^T M`` of the centred class means and
``K``-dimensional projections of the samples. The state of a streaming accumulator is therefore
``O(K d + K^2)`` per layer, whatever ``N`` is.

Two passes
----------
Quantities that depend on every sample *and* on the final class means (NCC accuracy, NC1, NC4)
need a second pass over the data once the means are known:

>>> acc = CollapseAccumulator(K=10)
>>> for Hb, yb in batches: acc.update(Hb, yb)   # pass 1: counts, means, scatter
>>> acc.end_first_pass()                         # freeze the class means
>>> for Hb, yb in batches: acc.update(Hb, yb)   # pass 2: NCC, NC1, NC4
>>> acc.compute()

:func:`collapse_metrics` runs both passes over in-memory features in cache-sized chunks.

References
----------
Papyan, Han, Donoho, "Prevalence of neural collapse during the terminal phase of deep learning
training", PNAS 2020. Zhu et al., "A geometric analysis of neural collapse with unconstrained
features", NeurIPS 2021. Galanti et al., "On the role of neural collapse in transfer learning",
ICLR 2022. Wang, Gai, Zhang, "Progressive Feedforward Collapse of ResNet Training".

Layout
------
``inputs`` (validation, chunking), ``gram`` (metrics from the ``K x K`` Gram of the class means),
``accumulator`` (:class:`CollapseAccumulator`), ``batch`` (:func:`collapse_metrics` and one
function per metric), ``line`` (:class:`LineAccumulator`), ``geometry`` (simplex ETF, alignment,
effective depth, relative position), ``separation`` (the law of data separation's
per-layer rate fit, :func:`separation_rate`). Metric names and groups: :mod:`ufm.registry`.
"""

from __future__ import annotations

from ..lazy import lazy_package

# Names load on first access (PEP 562): ``effective_depth`` of given errors needs neither torch
# nor numba, so ``pfc report`` stays light.
_NAMES = {
    "CollapseAccumulator": ".accumulator",
    **dict.fromkeys(
        (
            "cdnv",
            "collapse_metrics",
            "gram_eig_ratio",
            "nc1",
            "nc2",
            "nc3",
            "nc4",
            "ncc_accuracy",
            "pfc1",
            "pfc2",
            "pfc3",
        ),
        ".batch",
    ),
    **dict.fromkeys(
        ("alignment", "effective_depth", "relative_position", "simplex_etf"), ".geometry"
    ),
    "DEFAULT_RANK_TOL": ".inputs",
    "LineAccumulator": ".line",
    **dict.fromkeys(("SeparationFit", "separation_rate"), ".separation"),
}
__getattr__, __dir__ = lazy_package(__name__, _NAMES)

__all__ = [
    "collapse_metrics",
    "pfc1",
    "pfc2",
    "pfc3",
    "ncc_accuracy",
    "nc1",
    "nc2",
    "nc3",
    "nc4",
    "cdnv",
    "gram_eig_ratio",
    "separation_rate",
    "SeparationFit",
    "simplex_etf",
    "effective_depth",
    "alignment",
    "relative_position",
    "CollapseAccumulator",
    "LineAccumulator",
    "DEFAULT_RANK_TOL",
]
