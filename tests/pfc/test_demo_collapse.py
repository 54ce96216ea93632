"""The demo's collapse check (per-layer values, strict decrease, goals) and recipe table."""

from __future__ import annotations

import pytest

from pfc.config import StudyConfig, recipe_vs_paper, resolve_study_config
from resnet_pfc.analysis import COLLAPSE_GOALS, collapse_check, rising_metrics
from ufm.errors import InputError


def _summary(values: dict[str, list[float]]) -> dict:
    n = len(next(iter(values.values())))
    names = ["input"] + [f"block{i}" for i in range(1, n)]
    return {
        "layers": [{"layer": names[i], **{k: v[i] for k, v in values.items()}} for i in range(n)]
    }


def test_collapse_check_strict_ties_rises_and_goals():
    col = collapse_check(
        _summary(
            {
                "pfc1": [1.0, 0.5, 0.09],  # strict, goal met (<= 0.1)
                "pfc2": [0.8, 0.8, 0.1],  # a tie: not strict; goal met at equality
                "pfc3": [0.2, 0.3, 0.1],  # rises at block1
                "nc1": [2.0, 1.0, 0.05],  # strict; goal met at equality
            }
        )
    )
    assert col["layers"] == ["input", "block1", "block2"]
    assert col["strictly_decreasing"] == {"pfc1": True, "pfc2": False, "pfc3": False, "nc1": True}
    assert col["last_layer"] == {"pfc1": 0.09, "pfc2": 0.1, "pfc3": 0.1, "nc1": 0.05}
    assert {k: g["met"] for k, g in col["goals"].items()} == {
        "pfc1": True,
        "pfc2": True,
        "nc1": True,
    }
    assert col["all_goals_met"] is True
    assert {k: g["goal"] for k, g in col["goals"].items()} == COLLAPSE_GOALS
    # the order goals: PFC2 not strict and PFC3 rising fail them, so the collapse goals fail
    assert {k: o["met"] for k, o in col["order_goals"].items()} == {
        "pfc1": True,
        "pfc2": False,
        "pfc3": False,
        "nc1": True,
    }
    assert col["collapse_goals_met"] is False


def test_order_goals_allow_pfc3_ties_at_zero():
    col = collapse_check(
        _summary(
            {
                "pfc1": [1.0, 0.5, 0.09],
                "pfc2": [0.8, 0.3, 0.1],
                "pfc3": [0.2, 0.0, 0.0],  # ties at 0: non-increasing, not strict
                "nc1": [2.0, 1.0, 0.04],
            }
        )
    )
    assert col["strictly_decreasing"]["pfc3"] is False and col["non_increasing"]["pfc3"] is True
    assert col["collapse_goals_met"] is True
    col = collapse_check(_summary({"pfc1": [1.0, 0.5], "pfc2": [0.8, 0.3], "pfc3": [0.2, 0.0],
                                   "nc1": [2.0, 0.06]}))  # fmt: skip
    assert col["goals"]["nc1"]["met"] is False and col["collapse_goals_met"] is False
    with pytest.raises(InputError, match="order goal"):
        collapse_check(_summary({"pfc1": [1.0, 0.5]}), orders={"pfc1": "sideways"})


def _rows(series: dict[int, list[float]], key: str = "pfc2") -> list[dict]:
    """metrics.csv-like rows: layer index -> values at epochs 0, 10, 20, ..."""
    return [
        {"split": "train", "epoch": 10 * e, "layer_index": li, "layer": f"L{li}", key: v}
        for li, vals in series.items()
        for e, v in enumerate(vals)
    ]


def test_rising_metrics_names_layers_and_ignores_initialisation():
    # layer 0 falls then rises (0.2 -> 0.5); layer 1 keeps falling; layer 2 is best at init only
    rows = _rows({0: [0.9, 0.2, 0.5], 1: [0.9, 0.5, 0.3], 2: [0.1, 0.6, 0.55]})
    (r,) = rising_metrics(rows, metrics=("pfc2",))
    assert r["metric"] == "pfc2" and r["layers"] == ["L0"] and r["n_layers"] == 3
    assert r["last_layer"] is None
    # the last layer rising is reported with its best epoch and final value
    rows = _rows({0: [0.9, 0.5, 0.4], 1: [0.9, 0.2, 0.5]})
    (r,) = rising_metrics(rows, metrics=("pfc2",))
    assert r["last_layer"] == {"best": 0.2, "best_epoch": 10, "final": 0.5}
    # within the tolerance (5% + 0.001): not a rise
    assert rising_metrics(_rows({0: [0.9, 0.2, 0.2105]}), metrics=("pfc2",)) == []


def test_collapse_check_missing_value_is_not_strict_and_goal_missed():
    col = collapse_check(
        _summary({"pfc1": [1.0, None], "pfc2": [0.9, 0.31], "pfc3": [0.1, 0.0], "nc1": [1, 0.5]})
    )
    assert col["strictly_decreasing"]["pfc1"] is False
    assert col["goals"]["pfc1"]["met"] is False and col["goals"]["pfc2"]["met"] is False
    assert col["all_goals_met"] is False


def test_recipe_table_flags_every_difference_with_a_reason():
    from pfc.config import PAPER_RECIPE, networks

    cfg = resolve_study_config(StudyConfig())
    for net in networks(cfg):
        rows = {r["option"]: r for r in recipe_vs_paper(cfg, net)}
        assert rows["optimiser"]["differs"] is False
        used = {"loss": net.train.loss, "weight_decay": net.train.weight_decay,
                "batch_size": net.train.batch_size, "epochs": net.train.epochs}  # fmt: skip
        for name, value in used.items():
            assert rows[name]["differs"] == (value != PAPER_RECIPE[name]), (net.name, name)
            if rows[name]["differs"]:
                assert rows[name]["why"], (net.name, name)
        # the paper's lost values are labelled as Papyan et al.'s defaults
        assert "not in the paper's text" in str(rows["weight_decay"]["paper"])
    paper_like = resolve_study_config(
        StudyConfig(fc={"loss": "ce", "weight_decay": 5e-4, "batch_size": 128, "epochs": 350})
    )
    rows = {r["option"]: r for r in recipe_vs_paper(paper_like)}
    assert not any(rows[n]["differs"] for n in ("loss", "weight_decay", "batch_size", "epochs"))


def test_study_dataset_and_loss_options():
    cfg = resolve_study_config(StudyConfig(dataset="mnist-5k", fc={"loss": "ce"}))
    assert cfg.dataset == "mnist_5k" and cfg.fc.loss == "ce"
    with pytest.raises(InputError, match="fc.loss"):
        resolve_study_config(StudyConfig(fc={"loss": "hinge"}))
    with pytest.raises(InputError, match="imagenet"):
        resolve_study_config(StudyConfig(dataset="imagenet"))
    with pytest.raises(InputError, match="batch_size"):
        resolve_study_config(StudyConfig(fc={"batch_size": 0}))
    with pytest.raises(InputError, match="deep.model"):
        resolve_study_config(StudyConfig(deep={"model": "fc"}))
    with pytest.raises(InputError, match="fc.dataset is set by the study"):
        resolve_study_config(StudyConfig(fc={"dataset": "digits"}))


def test_pfc_demo_parser_accepts_dataset_and_loss():
    from pfc.cli import build_parser

    a = build_parser().parse_args(["demo", "--dataset", "mnist-5k", "--loss", "ce"])
    assert a.dataset == "mnist_5k" and getattr(a, "fc.loss") == "ce"


def test_rising_metrics_and_network_figure_refuse_bad_input(tmp_path):
    from resnet_pfc.figures import draw_network_comparison
    from ufm.errors import CheckpointError

    rows = _rows({0: [0.9, 0.2, 0.5]})
    with pytest.raises(InputError, match="rel_tol"):
        rising_metrics(rows, rel_tol=-1.0)
    with pytest.raises(InputError, match="abs_tol"):
        rising_metrics(rows, abs_tol=float("nan"))
    with pytest.raises(InputError, match="unknown metric"):
        rising_metrics(rows, metrics=("pfc9",))
    with pytest.raises(InputError, match="at least one run"):
        draw_network_comparison({}, tmp_path / "x.png")
    with pytest.raises(CheckpointError, match="metrics.csv"):
        draw_network_comparison({"a": tmp_path}, tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()
