"""The metric registry and the status vocabulary."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ufm
from ufm.errors import InputError
from ufm.registry import CORE, LAYER, METRICS, PFC, SEPARATION, TRACES, label, names


def test_registry_covers_what_collapse_metrics_returns():
    rng = np.random.default_rng(0)
    H = rng.standard_normal((60, 8))
    y = np.repeat(np.arange(3), 20)
    keys = set(ufm.collapse_metrics(H, y))
    assert keys <= set(METRICS), keys - set(METRICS)
    assert set(LAYER) | set(TRACES) | set(SEPARATION) | {"ncc_accuracy"} == keys


def test_groups_and_directions():
    assert PFC == ("pfc1", "pfc2", "pfc3")
    assert CORE[:3] == PFC and CORE[3] == "nc1"
    assert all(METRICS[k].direction == "down" for k in LAYER)
    assert METRICS["ncc_accuracy"].direction == "up"
    assert METRICS["nc3"].needs == "classifier"
    assert label("pfc2") == "PFC2" and label("accuracy") == "accuracy"
    with pytest.raises(TypeError):
        METRICS["x"] = None  # read-only


def test_names_rejects_unknown():
    assert names(PFC) == PFC
    assert len(names()) == len(METRICS)
    with pytest.raises(InputError, match="pfc9"):
        names(("pfc1", "pfc9"))


def test_status_is_a_string():
    s = ufm.Status.CONVERGED
    assert s == "converged" and f"{s}" == "converged" and json.dumps(s) == '"converged"'
    assert ufm.Status("max_iter") is ufm.Status.MAX_ITER
    with pytest.raises(ValueError):
        ufm.Status("fine")


def test_classifier_and_second_pass_groups_match_the_accumulator():
    from ufm.registry import CLASSIFIER, SECOND_PASS

    assert CLASSIFIER == tuple(k for k, s in METRICS.items() if s.needs == "classifier")
    rng = np.random.default_rng(1)
    y = np.repeat(np.arange(3), 10)
    H = rng.standard_normal((30, 4)) + 3 * np.eye(4)[y]
    acc = ufm.CollapseAccumulator(3, W=rng.standard_normal((3, 4))).update(H, y)
    first = set(acc.compute())
    assert first == set(METRICS) - set(SECOND_PASS)
    acc.end_first_pass().update(H, y)
    assert set(acc.compute()) == set(METRICS)


def _mean_norm_ratio(s):
    # a toy scale-free metric of the class statistics: largest / smallest centred class-mean norm
    n = s.C.norm(dim=1)
    return float(n.max() / n.min())


def test_a_metric_is_added_by_its_declaration():
    # one MetricSpec with a formula: every accumulator and collapse_metrics report it
    import numpy as np

    import ufm
    from ufm.registry import MetricSpec, register_metric, unregister_metric

    spec = MetricSpec("norm_ratio", "norm ratio", "max / min centred class-mean norm",
                      direction="none", formula=_mean_norm_ratio, per_layer=False)  # fmt: skip
    rng = np.random.default_rng(0)
    H, y = rng.standard_normal((60, 4)) * 1e-3, np.arange(60) % 3
    means = np.stack([H[y == k].mean(0) for k in range(3)])
    c = np.linalg.norm(means - means.mean(0), axis=1)
    register_metric(spec)
    try:
        got = ufm.collapse_metrics(H, y)["norm_ratio"]
        np.testing.assert_allclose(got, c.max() / c.min(), rtol=1e-12)
        acc = ufm.CollapseAccumulator(3).update(H[:30], y[:30]).update(H[30:], y[30:])
        np.testing.assert_allclose(acc.compute()["norm_ratio"], got, rtol=1e-12)
        with pytest.raises(ufm.InputError, match="taken"):
            register_metric(spec)
    finally:
        unregister_metric("norm_ratio")
    assert "norm_ratio" not in ufm.collapse_metrics(H, y)
    with pytest.raises(ufm.InputError, match="not a metric added"):
        unregister_metric("pfc1")


def test_run_columns_are_read_off_the_registry():
    from resnet_pfc.runs import MEASURED_METRICS
    from ufm.registry import METRICS

    assert MEASURED_METRICS == tuple(n for n, s in METRICS.items() if s.per_layer)
    assert all(METRICS[n].formula is not None for n in ("pfc1", "pfc2", "cdnv"))


def test_a_failing_registered_formula_is_named():
    import numpy as np

    import ufm
    from ufm.registry import MetricSpec, register_metric, unregister_metric

    register_metric(MetricSpec("boom", "boom", "fails", formula=lambda s: 1 / 0, per_layer=False))
    try:
        with pytest.raises(ufm.InputError, match="formula of metric 'boom' failed"):
            ufm.collapse_metrics(np.eye(4, 3), np.array([0, 1, 0, 1]))
    finally:
        unregister_metric("boom")
