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
