"""StudyConfig's options, declared once (ufm.options): ``pfc demo``'s parser, the checks
of resolve_study_config and the class documentation all come from the same fields."""

from __future__ import annotations

import argparse
from dataclasses import fields

import pytest

from pfc.cli import build_parser
from pfc.config import FULL, QUICK, StudyConfig, resolve_study_config
from ufm.errors import InputError
from ufm.options import option_spec, options_from_args


def _demo_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["demo"]


def _demo(*argv: str) -> StudyConfig:
    return StudyConfig(**options_from_args(StudyConfig, _demo_parser().parse_args(list(argv))))


def test_docstring_lists_every_field():
    doc = StudyConfig.__doc__
    for f in fields(StudyConfig):
        assert doc.count(f"\n{f.name} : ") == 1, f.name
    assert '\nloss : {"mse", "ce"}, optional\n' in doc
    assert "\nprogress : bool\n    ``--no-progress``: no progress bars or status lines.\n" in doc


def test_pfc_demo_has_one_option_per_command_line_field():
    dests = {a.dest for a in _demo_parser()._actions} - {"help"}
    want = {f.name for f in fields(StudyConfig) if option_spec(f)["command_line"]}
    assert dests == want
    assert want == {
        "out", "seed", "quick", "resume", "force", "threads", "progress", "dataset", "loss",
        "epochs", "lams", "instances", "deep", "deep_blocks", "deep_epochs",
    }  # fmt: skip


def test_pfc_demo_defaults_are_the_dataclass_defaults():
    assert _demo() == StudyConfig()
    assert _demo("--quick") == StudyConfig(quick=True)


def test_pfc_demo_values_round_trip():
    got = _demo("--epochs", "5", "--lams", "2", "1", "--no-progress", "--dataset", "MNIST-5k")
    assert got == StudyConfig(epochs=5, lams=(2.0, 1.0), progress=False, dataset="mnist_5k")
    assert _demo("--loss", "ce", "--seed", "3", "--force").loss == "ce"


def test_help_shows_the_presets_values():
    text = " ".join(_demo_parser().format_help().split())
    assert (
        f"training epochs (in [1, 1000000]; default {FULL['epochs']}; --quick {QUICK['epochs']})"
        in text
    )
    assert f"(>= 1; default {FULL['instances']}; --quick {QUICK['instances']})" in text
    assert f"default {len(FULL['lams'])} values from {min(FULL['lams']):g}" in text


# The bounds of every command-line option against resolve_study_config: tests/resnet_pfc/
# test_options.py (test_parse_time_and_config_time_bounds_agree).


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("batch_size", 0),
        ("weight_decay", -1.0),
        ("lr", 0.0),
        ("tol", 0.0),
        ("train_per_class", 1),
        ("blocks", 0),
        ("loss", "hinge"),
        ("seed", -1),
    ],
)
def test_options_off_the_command_line_are_checked_too(name, value):
    with pytest.raises(InputError, match=name):
        resolve_study_config(StudyConfig(**{name: value}))
