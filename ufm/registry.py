"""The one registry of collapse metrics: names, labels, descriptions and directions.

Every list of metric names in the toolkit (CSV columns, reports, command lines, figures) reads
this module, so a metric is added or renamed in one place. Definitions: MATH.md sec. 3.

>>> from ufm import METRICS
>>> METRICS["pfc1"].label, METRICS["pfc1"].direction
('PFC1', 'down')
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from .errors import InputError

__all__ = [
    "MetricSpec",
    "METRICS",
    "PFC",
    "CORE",
    "NC2",
    "LAYER",
    "SEPARATION",
    "TRACES",
    "CLASSIFIER",
    "SECOND_PASS",
    "LOG_SCALE",
    "names",
    "register_metric",
    "unregister_metric",
    "label",
]


@dataclass(frozen=True)
class MetricSpec:
    """One collapse metric.

    Attributes
    ----------
    name : str
        Key in every result dict and CSV column (``"pfc1"``).
    label : str
        Short display name (``"PFC1"``).
    description : str
        One line: what it measures.
    direction : {"down", "up", "none"}
        How it moves under collapse: ``"down"`` falls towards 0 (every PFC/NC metric),
        ``"up"`` rises (NCC accuracy), ``"none"`` is a raw statistic.
    needs : {"features", "classifier"}
        Whether it is computed from features and labels alone or also needs ``(W, b)``.
    formula : str or callable, optional
        A function of the first-pass class statistics (:class:`ufm.metrics.gram.ClassStats`:
        counts, class means, their centred Gram, per-class scatters, the traces) returning the
        metric as a float, or ``"module:function"`` naming it (imported on first use, so this
        module stays light). Every metric with a formula is computed by
        :meth:`ufm.CollapseAccumulator.compute` (and so by :func:`ufm.collapse_metrics`, the
        ResNet measurement and the depth study) from this declaration alone. ``None``: the
        metric needs a classifier or a second pass, computed by the accumulator itself.
    log_scale : bool
        Whether figures draw it on a log axis (ratios that fall over decades under collapse).
    per_layer : bool
        Whether it is a column of a run's ``metrics.csv``
        (:data:`resnet_pfc.runs.MEASURED_METRICS`, read off this registry in its order).
    """

    name: str
    label: str
    description: str
    direction: str = "down"
    needs: str = "features"
    formula: str | Callable[[Any], float] | None = None
    per_layer: bool = True
    log_scale: bool = False

    def compute(self, stats: Any) -> float:
        """The metric from first-pass statistics (:attr:`formula`; an error without one)."""
        fn = self.formula
        if fn is None:
            raise InputError(f"metric {self.name!r} has no formula of the class statistics")
        if isinstance(fn, str):
            module, _, attr = fn.partition(":")
            fn = getattr(importlib.import_module(module), attr)
        try:
            return float(fn(stats))
        except Exception as exc:  # a registered formula's own failure, named
            raise InputError(
                f"the formula of metric {self.name!r} failed ({type(exc).__name__}: {exc}); fix "
                "it, or unregister_metric it"
            ) from exc


_SPECS = (
    MetricSpec(
        "pfc1", "PFC1", "variability collapse: tr(Sigma_W) / tr(Sigma_B)",
        formula="ufm.metrics.gram:pfc1_of", log_scale=True,
    ),
    MetricSpec(
        "pfc2", "PFC2", "distance of the centred class-mean Gram to the simplex ETF",
        formula="ufm.metrics.gram:pfc2_of",
    ),
    MetricSpec("pfc3", "PFC3", "1 - nearest-class-centre accuracy"),
    MetricSpec("ncc_accuracy", "NCC accuracy", "nearest-class-centre accuracy", direction="up"),
    MetricSpec("nc1", "NC1", "Papyan's (1/K) tr(Sigma_W Sigma_B^+)", log_scale=True),
    MetricSpec(
        "nc2_equinorm", "NC2 equinorm", "std/mean of the centred class-mean norms",
        formula="ufm.metrics.gram:nc2_equinorm_of",
    ),
    MetricSpec(
        "nc2_equiangular", "NC2 equiangular",
        "mean |cos(mu_k, mu_k') + 1/(K-1)| over class pairs",
        formula="ufm.metrics.gram:nc2_equiangular_of",
    ),
    MetricSpec("nc3", "NC3", "self-duality ||W^T/||W|| - M/||M|| ||_F^2", needs="classifier"),
    MetricSpec(
        "nc4", "NC4", "disagreement of the classifier with the NCC rule", needs="classifier"
    ),
    MetricSpec("tr_sigma_w", "tr Sigma_W", "within-class variability", direction="none"),
    MetricSpec("tr_sigma_b", "tr Sigma_B", "between-class variability", direction="none"),
    MetricSpec(
        "cdnv", "CDNV",
        "Galanti's mean over class pairs of (V_k + V_k') / (2 ||mu_k - mu_k'||^2)",
        formula="ufm.metrics.gram:cdnv_of", per_layer=False,
    ),
    MetricSpec(
        "gram_eig_ratio", "Gram eigenvalue ratio",
        "largest / smallest nonzero eigenvalue of the centred class-mean Gram (1 at an ETF)",
        direction="none", formula="ufm.metrics.gram:gram_eig_ratio_of", per_layer=False,
    ),
)  # fmt: skip

_REGISTRY: dict[str, MetricSpec] = {s.name: s for s in _SPECS}
#: Every metric by name (a read-only view; :func:`register_metric` adds one).
METRICS = MappingProxyType(_REGISTRY)


def register_metric(spec: MetricSpec) -> None:
    """Add a metric computed from the first-pass class statistics (``spec.formula`` set): from
    then on every accumulator and :func:`ufm.collapse_metrics` report it.

    Raises
    ------
    InputError
        Not a :class:`MetricSpec`, no formula, or the name is taken.
    """
    if not isinstance(spec, MetricSpec) or spec.formula is None:
        raise InputError(
            "register_metric takes a MetricSpec with a formula of the class statistics"
        )
    if spec.name in _REGISTRY:
        raise InputError(f"metric name {spec.name!r} is taken")
    _REGISTRY[spec.name] = spec


def unregister_metric(name: str) -> None:
    """Remove a metric added by :func:`register_metric` (the built-in ones stay).

    Raises
    ------
    InputError
        ``name`` is built in or not registered.
    """
    if name not in _REGISTRY or any(s.name == name for s in _SPECS):
        raise InputError(f"{name!r} is not a metric added by register_metric")
    del _REGISTRY[name]


#: The paper's three progressive-collapse metrics.
PFC = ("pfc1", "pfc2", "pfc3")
#: The metrics reported across depth everywhere: the PFC metrics and NC1.
CORE = (*PFC, "nc1")
#: Papyan's NC2, both parts.
NC2 = ("nc2_equinorm", "nc2_equiangular")
#: What a layer's features give without a classifier, in report order.
LAYER = (*CORE, *NC2)
#: Class separation beside NC1: CDNV (Galanti et al. 2022) and the class-mean Gram's
#: eigenvalue ratio (anisotropy of the class means, which inflates NC1 through Sigma_B^+).
SEPARATION = ("cdnv", "gram_eig_ratio")
#: Raw traces behind PFC1.
TRACES = ("tr_sigma_w", "tr_sigma_b")
#: The metrics that need a classifier ``(W, b)``.
CLASSIFIER = ("nc3", "nc4")
#: The metrics that need a second pass over the samples once the class means are frozen.
SECOND_PASS = ("ncc_accuracy", "pfc3", "nc1", "nc4")
#: The metrics figures draw on a log axis (``MetricSpec.log_scale``).
LOG_SCALE = tuple(s.name for s in _SPECS if s.log_scale)


def names(group: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The metric names of ``group`` (default: all), checked against the registry."""
    if group is None:
        return tuple(METRICS)
    unknown = [g for g in group if g not in METRICS]
    if unknown:
        raise InputError(f"unknown metric name(s) {unknown}; known: {sorted(METRICS)}")
    return tuple(group)


def label(name: str) -> str:
    """Display label of metric ``name`` (the name itself if it is not a registered metric)."""
    spec = METRICS.get(name)
    return spec.label if spec is not None else name
