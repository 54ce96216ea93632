"""The demo's collapse check (per-layer values, strict decrease, goals) and recipe table."""

from __future__ import annotations

import pytest

from pfc.config import StudyConfig, recipe_vs_paper, resolve_study_config
from resnet_pfc.analysis import COLLAPSE_GOALS, collapse_check
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
                "pfc2": [0.8, 0.8, 0.2],  # a tie: not strict; goal met
                "pfc3": [0.2, 0.3, 0.1],  # rises at block1
                "nc1": [2.0, 1.0, 0.1],  # strict; goal met at equality
            }
        )
    )
    assert col["layers"] == ["input", "block1", "block2"]
    assert col["strictly_decreasing"] == {"pfc1": True, "pfc2": False, "pfc3": False, "nc1": True}
    assert col["last_layer"] == {"pfc1": 0.09, "pfc2": 0.2, "pfc3": 0.1, "nc1": 0.1}
    assert {k: g["met"] for k, g in col["goals"].items()} == {
        "pfc1": True,
        "pfc2": True,
        "nc1": True,
    }
    assert col["all_goals_met"] is True
    assert {k: g["goal"] for k, g in col["goals"].items()} == COLLAPSE_GOALS


def test_collapse_check_missing_value_is_not_strict_and_goal_missed():
    col = collapse_check(
        _summary({"pfc1": [1.0, None], "pfc2": [0.9, 0.31], "pfc3": [0.1, 0.0], "nc1": [1, 0.5]})
    )
    assert col["strictly_decreasing"]["pfc1"] is False
    assert col["goals"]["pfc1"]["met"] is False and col["goals"]["pfc2"]["met"] is False
    assert col["all_goals_met"] is False


def test_recipe_table_flags_every_difference_with_a_reason():
    cfg = resolve_study_config(StudyConfig())
    rows = {r["option"]: r for r in recipe_vs_paper(cfg)}
    assert rows["optimiser"]["differs"] is False
    for name in ("loss", "weight_decay", "batch_size", "epochs"):
        paper, demo = rows[name]["paper"], rows[name]["demo"]
        assert rows[name]["differs"] == (str(paper) != str(demo))
        if rows[name]["differs"]:
            assert rows[name]["why"], name
    paper_like = resolve_study_config(
        StudyConfig(loss="ce", weight_decay=5e-4, batch_size=128, epochs=350)
    )
    rows = {r["option"]: r for r in recipe_vs_paper(paper_like)}
    assert not any(rows[n]["differs"] for n in ("loss", "weight_decay", "batch_size", "epochs"))


def test_study_dataset_and_loss_options():
    cfg = resolve_study_config(StudyConfig(dataset="mnist-5k", loss="ce"))
    assert cfg.dataset == "mnist_5k" and cfg.loss == "ce"
    with pytest.raises(InputError, match="loss"):
        resolve_study_config(StudyConfig(loss="hinge"))
    with pytest.raises(InputError, match="imagenet"):
        resolve_study_config(StudyConfig(dataset="imagenet"))
    with pytest.raises(InputError, match="batch_size"):
        resolve_study_config(StudyConfig(batch_size=0))


def test_pfc_demo_parser_accepts_dataset_and_loss():
    from pfc.cli import build_parser

    a = build_parser().parse_args(["demo", "--dataset", "mnist-5k", "--loss", "ce"])
    assert a.dataset == "mnist_5k" and a.loss == "ce"
