"""StudyConfig's options, declared once (ufm.options): ``pfc demo``'s parser, the checks
of resolve_study_config and the class documentation all come from the same fields."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from pfc.cli import build_parser
from pfc.config import FULL, QUICK, StudyConfig, resolve_study_config
from ufm.errors import InputError
from ufm.options import command_line_options, options_from_args


def _demo_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["demo"]


def _demo(*argv: str) -> StudyConfig:
    return StudyConfig(**options_from_args(StudyConfig, _demo_parser().parse_args(list(argv))))


def test_docstring_lists_every_field():
    doc = StudyConfig.__doc__
    for f in fields(StudyConfig):
        assert doc.count(f"\n{f.name} : ") == 1, f.name
    assert "\nfc : TrainConfig\n" in doc and "``--deep-epochs`` (training epochs of" in doc
    assert "\nprogress : bool\n    ``--no-progress``: no progress bars or status lines.\n" in doc


def test_pfc_demo_has_one_option_per_command_line_field():
    dests = {a.dest for a in _demo_parser()._actions} - {"help"}
    want = {o.dest for o in command_line_options(StudyConfig)}
    assert dests == want
    assert want == {
        "out", "seed", "quick", "resume", "force", "threads", "progress", "dataset", "fc.loss",
        "fc.epochs", "lams", "instances", "train_deep", "deep.blocks", "deep.epochs",
    }  # fmt: skip


def test_pfc_demo_defaults_are_the_dataclass_defaults():
    assert _demo() == StudyConfig()
    assert _demo("--quick") == StudyConfig(quick=True)


def test_pfc_demo_values_round_trip():
    got = _demo("--epochs", "5", "--lams", "2", "1", "--no-progress", "--dataset", "MNIST-5k")
    assert got == StudyConfig(fc={"epochs": 5}, lams=(2.0, 1.0), progress=False, dataset="mnist_5k")
    assert _demo("--loss", "ce", "--seed", "3", "--force").fc == {"loss": "ce"}
    both = _demo("--epochs", "7", "--deep-epochs", "9", "--deep-blocks", "3", "--no-deep")
    assert both.fc == {"epochs": 7} and both.deep == {"epochs": 9, "blocks": 3}
    assert both.train_deep is False
    cfg = resolve_study_config(both)
    assert cfg.fc.epochs == 7 and cfg.deep.epochs == 9 and cfg.deep.blocks == 3
    assert cfg.deep.width == FULL["deep"]["width"]  # the rest from the preset


def test_help_shows_the_presets_values():
    text = " ".join(_demo_parser().format_help().split())
    assert (
        f"training epochs (in [1, 1000000]; default {FULL['fc']['epochs']}; --quick "
        f"{QUICK['fc']['epochs']})" in text
    )
    assert f"(>= 1; default {FULL['instances']}; --quick {QUICK['instances']})" in text
    assert f"default {len(FULL['lams'])} values from {min(FULL['lams']):g}" in text


# The bounds of every command-line option against resolve_study_config: tests/resnet_pfc/
# test_options.py (test_parse_time_and_config_time_bounds_agree).


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("fc.batch_size", 0),
        ("fc.weight_decay", -1.0),
        ("fc.lr", 0.0),
        ("tol", 0.0),
        ("fc.per_class", 1),
        ("deep.per_class", 1),
        ("deep.width", 1),
        ("fc.blocks", 0),
        ("fc.loss", "hinge"),
        ("deep.momentum", 1.5),
        ("seed", -1),
    ],
)
def test_options_off_the_command_line_are_checked_too(name, value):
    head, _, tail = name.partition(".")
    with pytest.raises(InputError, match=name.replace(".", r"\.")):
        resolve_study_config(StudyConfig(**{head: {tail: value} if tail else value}))
