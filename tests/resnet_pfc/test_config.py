"""TrainConfig's one command-line description: both command lines, validation, round trips."""

from __future__ import annotations

import argparse
import ast
from dataclasses import fields
from pathlib import Path

import pytest
import torch

from pfc.cli import build_parser as pfc_parser
from resnet_pfc import train
from resnet_pfc.__main__ import build_parser as resnet_parser
from resnet_pfc.config import (
    TrainConfig,
    add_train_options,
    resolve_config,
    train_config_from_args,
)
from resnet_pfc.data import load_dataset
from resnet_pfc.runs import load_run, read_csv
from ufm.errors import CheckpointError, InputError, PFCWarning

PKG = Path(__file__).resolve().parents[2] / "resnet_pfc"


def _train_actions(parser: argparse.ArgumentParser) -> dict[str, tuple]:
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    t = sub.choices["train"]
    return {
        a.dest: (tuple(a.option_strings), a.default, a.choices, a.nargs, a.required, a.help)
        for a in t._actions
        if a.dest != "help"
    }


def test_both_command_lines_have_the_same_training_options():
    a, b = _train_actions(resnet_parser()), _train_actions(pfc_parser())
    assert a == b
    assert set(a) == {f.name for f in fields(TrainConfig)}


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(exit_on_error=False)
    add_train_options(p)
    return p


def test_defaults_round_trip_to_the_dataclass_defaults():
    ns = _parser().parse_args(["--out", "r"])
    assert train_config_from_args(ns) == TrainConfig(out="r")


def test_explicit_options_round_trip(to_argv):
    opts = dict(
        dataset="mnist_5k",
        out="x",
        model="fc",
        blocks=3,
        width=7,
        epochs=4,
        lr=0.25,
        loss="mse",
        milestones=(2, 3),
        eval_test=True,
        resume=True,
        device="cuda:1",
        dtype="float64",
        threads=2,
        position="distance",
        epsilon=0.5,
        progress=False,
        figures=False,
    )
    argv = to_argv({k: v for k, v in opts.items() if k != "milestones"})
    argv += ["--milestones", "2", "3"]
    argv[argv.index("--dataset") + 1] = "MNIST-5k"  # the tolerant spelling
    assert train_config_from_args(_parser().parse_args(argv)) == TrainConfig(**opts)


def _bounded_fields():
    for f in fields(TrainConfig):
        spec = f.metadata["cli"]
        if spec["kind"] in (int, float) and spec["low"] is not None and f.name != "milestones":
            yield f.name, spec


@pytest.mark.parametrize(("name", "spec"), list(_bounded_fields()))
def test_parse_time_and_resolve_time_bounds_agree(name, spec):
    """A value outside a field's bounds is refused by the parser and by resolve_config alike;
    the bound itself (or a value just inside) is accepted by both."""
    kind = spec["kind"]
    low = spec["low"]
    bad = [low - 1 if kind is int else low - 0.5]
    good = [low + 1 if kind is int else low + 0.25]
    if spec["positive"]:
        bad.append(low)
    if spec["high"] is not None:
        bad.append(spec["high"] + 1)
    flag = "--" + name.replace("_", "-")
    for v in bad:
        with pytest.raises(argparse.ArgumentError):
            _parser().parse_args(["--out", "r", flag, str(v)])
        with pytest.raises(InputError, match=name):
            resolve_config(TrainConfig(**{name: kind(v)}))
    for v in good:
        if name == "lr" or name == "weight_decay":
            v = min(v, 0.5)
        ns = _parser().parse_args(["--out", "r", flag, str(v)])
        resolve_config(train_config_from_args(ns))


@pytest.mark.parametrize(
    ("flag", "value"),
    [
        ("--dataset", "imagenet"),
        ("--model", "vit"),
        ("--device", "tpu"),
        ("--loss", "l1"),
        ("--dtype", "float16"),
        ("--lr", "nan"),
        ("--epochs", "x"),
    ],
)
def test_bad_values_are_usage_errors_naming_the_option(flag, value):
    with pytest.raises(argparse.ArgumentError, match=flag):
        _parser().parse_args(["--out", "r", flag, value])


def test_only_the_training_loop_imports_train():
    """Run files, figures, report, config and checkpoints never import the training loop (the
    old train <-> figures/report cycle), not even inside a function."""
    for name in ("runs", "figures", "report", "config", "checkpoint", "analysis", "measure"):
        tree = ast.parse((PKG / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                assert node.module not in ("train", "resnet_pfc.train"), name
                assert not (node.level == 1 and node.module == "train"), name


def test_load_run_gives_the_trained_model(tmp_path, tiny_run):
    """The loaded model reproduces the training-set accuracy that the run measured at its last
    epoch (computed here by a plain forward pass, not by the measurement code)."""
    out = tmp_path / "run"
    train(**tiny_run, epochs=2, out=str(out))
    cfg, model = load_run(out)
    assert cfg == resolve_config(TrainConfig(**tiny_run, epochs=2, out=str(out)))
    assert not model.training
    ds = load_dataset(cfg.dataset, split="train", per_class=cfg.per_class, seed=cfg.seed)
    with torch.no_grad():
        pred = model(ds.x.to(torch.float32)).argmax(1)
    acc = float((pred == ds.y).double().mean())
    rows = [r for r in read_csv(out / "metrics.csv") if r["epoch"] == 2 and r["split"] == "train"]
    assert rows and acc == pytest.approx(rows[0]["accuracy"], abs=1e-12)
    with pytest.raises(CheckpointError, match="config.json"):
        load_run(tmp_path / "missing")
    (out / "checkpoints" / "last.pt").write_bytes(b"junk")
    with pytest.warns(PFCWarning, match="previous checkpoint"):  # one generation back
        _, older = load_run(out)
    assert older.measured_layers() == model.measured_layers()
    (out / "checkpoints" / "last.prev.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError):
        load_run(out)


def test_trainer_default_loss_is_the_papers_cross_entropy():
    # the default does not follow the order of ufm.losses.LOSSES (a regression caught once)
    from resnet_pfc.config import TrainConfig

    assert TrainConfig(out="x").loss == "ce"
