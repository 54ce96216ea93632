"""ufm.options: options declared once (parser, read-back, checks, documentation),
and the depth study's options declared with it (``pfc depth``); the bounds of both ``pfc depth``
and ``pfc demo`` against their configs' checks."""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pfc.cli import build_parser
from pfc.config import StudyConfig, resolve_study_config
from resnet_pfc.config import TrainConfig
from resnet_pfc.depth import DEPTH_PRESETS, DepthConfig, depth_config
from ufm.errors import InputError
from ufm.options import (
    add_options,
    attributes_doc,
    check_fields,
    command_line_options,
    documented,
    nested,
    option,
    option_from,
    option_spec,
    options_from_args,
    resolve_nested,
    with_options,
)


@documented
@dataclass(frozen=True)
class Toy:
    """A toy configuration."""

    size: int = option(int, "number of things", default=3, low=1)
    rate: float | None = option(float, "a rate", low=0, positive=True, shown="automatic")
    frac: float = option(float, "a fraction", default=0.5, low=0, high=1)
    mode: str = option(str, "the mode", default="a", choices=("a", "b"))
    grid: tuple[int, ...] = option(int, "a grid", default=(1, 2), low=0, nargs="+")
    fast: bool = option(bool, "go fast", default=False)
    progress: bool = option("no", "no progress bars", default=True)
    hidden: int = option(int, "not on the command line", default=7, low=1, command_line=False)
    plain: str = "x"


def _parser(presets=None) -> argparse.ArgumentParser:
    return add_options(argparse.ArgumentParser(exit_on_error=False), Toy, presets=presets)


def test_defaults_and_values_round_trip():
    assert Toy(**options_from_args(Toy, _parser().parse_args([]))) == Toy()
    argv = ["--size", "5", "--rate", "0.25", "--frac", "1", "--mode", "b", "--grid", "0", "4"]
    argv += ["--fast", "--no-progress"]
    got = Toy(**options_from_args(Toy, _parser().parse_args(argv)))
    assert got == Toy(size=5, rate=0.25, frac=1.0, mode="b", grid=(0, 4), fast=True, progress=False)


def test_only_command_line_fields_become_options():
    dests = {a.dest for a in _parser()._actions} - {"help"}
    assert dests == {"size", "rate", "frac", "mode", "grid", "fast", "progress"}
    with pytest.raises(SystemExit):
        _parser().parse_args(["--hidden", "3"])


#: Values that each option's metadata refuses.
REFUSED = {
    "--size": ["0", "1.5"],
    "--rate": ["0", "nan", "inf"],
    "--frac": ["1.01", "-0.1"],
    "--mode": ["c"],
    "--grid": ["-1"],
}


@pytest.mark.parametrize(("flag", "value"), [(f, v) for f, vs in REFUSED.items() for v in vs])
def test_values_outside_the_metadata_are_usage_errors_naming_the_option(flag, value):
    with pytest.raises(argparse.ArgumentError, match=flag):
        _parser().parse_args([flag, value])


def _parsed(flag: str, value: str) -> float | None:
    """The value ``flag value`` parses to, or None where the parser refuses it."""
    try:
        ns = _parser().parse_args([flag, value])
    except argparse.ArgumentError:
        return None
    return getattr(ns, flag[2:])


@settings(max_examples=60, deadline=None)
@given(st.integers(-50, 50))
def test_an_integer_parses_iff_it_is_within_bounds(v):
    assert _parsed("--size", str(v)) == (v if v >= 1 else None)


@settings(max_examples=60, deadline=None)
@given(st.floats(allow_nan=True, allow_infinity=True, width=64))
def test_a_number_parses_iff_finite_and_within_bounds(v):
    ok = math.isfinite(v) and 0 <= v <= 1
    assert _parsed("--frac", repr(v)) == (v if ok else None)


def test_help_states_bounds_and_defaults():
    text = _parser().format_help()
    assert "number of things (>= 1; default 3)" in text
    assert "a rate (> 0; default automatic)" in text
    assert "a fraction (in [0, 1]; default 0.5)" in text


def test_presets_make_the_default_none_and_list_their_values():
    presets = {"usual": {"size": 4}, "--big": {"size": 40, "rate": 2.0}}
    p = _parser(presets)
    ns = p.parse_args([])
    assert ns.size is None and ns.rate is None and ns.frac == 0.5
    text = " ".join(p.format_help().split())
    assert "(>= 1; default 4; --big 40)" in text
    assert "(> 0; default automatic; --big 2)" in text


def test_check_fields_refuses_what_the_parser_refuses():
    check_fields(Toy())
    check_fields(Toy(rate=None))  # None stands for the default ("automatic")
    for bad in (dict(size=0), dict(rate=0.0), dict(frac=2.0), dict(mode="c"), dict(size=2.5)):
        name = next(iter(bad))
        with pytest.raises(InputError, match=name):
            check_fields(Toy(**bad))
    check_fields(Toy(size=0), skip=("size",))
    check_fields(Toy(size=0), names=("frac",))
    with pytest.raises(InputError, match="hidden"):
        check_fields(Toy(hidden=0))  # checked though not on the command line


def test_docstring_lists_every_field_once_with_its_help():
    doc = Toy.__doc__
    assert doc.startswith("A toy configuration.\n\nAttributes\n----------\n")
    for f in fields(Toy):
        assert doc.count(f"\n{f.name} : ") == 1
    assert "\nrate : float, optional\n    A rate. ``None``: automatic.\n" in doc
    assert '\nmode : {"a", "b"}\n' in doc
    assert "\ngrid : tuple of int\n    A grid.\n" in doc
    assert "\nprogress : bool\n    ``--no-progress``: no progress bars.\n" in doc
    assert doc.endswith(attributes_doc(Toy) + "\n")


@pytest.mark.parametrize("cls", [DepthConfig, TrainConfig, StudyConfig])
def test_real_configs_describe_every_field(cls):
    assert all(option_spec(f) is not None for f in fields(cls))
    # documented by the same mechanism: the Attributes section is written from the options
    assert cls.__doc__.endswith(attributes_doc(cls) + "\n")
    assert cls.__doc__.count("\nAttributes\n") == 1


# ------------------------------------------------------------------------------------------
# the depth study: DepthConfig and `pfc depth`
# ------------------------------------------------------------------------------------------


def _depth_parser() -> argparse.ArgumentParser:
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["depth"]


def test_depth_docstring_lists_every_field():
    for f in fields(DepthConfig):
        assert f"\n{f.name} : " in DepthConfig.__doc__


def test_pfc_depth_has_one_option_per_command_line_field():
    dests = {a.dest for a in _depth_parser()._actions} - {"help", "preset"}
    want = {o.dest for o in command_line_options(DepthConfig)}
    assert dests == want
    assert {"train.lr", "train.width", "train.dataset", "epochs"} <= dests
    assert {"train.momentum", "train.batch_size", "train.heads", "train.patch"}.isdisjoint(dests)


def test_pfc_depth_defaults_leave_the_preset_values():
    ns = _depth_parser().parse_args([])
    opts = options_from_args(DepthConfig, ns)
    for preset in DEPTH_PRESETS:
        assert depth_config(preset, **opts) == depth_config(preset)


def _resolve_study(**opts):
    return resolve_study_config(StudyConfig(**opts))


#: (config class, its `pfc` subcommand, the function that validates it from keyword options)
CONFIGS = [
    (DepthConfig, "depth", lambda **opts: depth_config("tiny", **opts)),
    (StudyConfig, "demo", _resolve_study),
]


def _bounded_cases():
    for cls, command, resolve in CONFIGS:
        for o in command_line_options(cls):
            spec = o.spec
            if spec["kind"] in (int, float) and spec["low"] is not None:
                yield pytest.param(command, resolve, o, id=f"{command}-{o.dest}")


@pytest.mark.parametrize(("command", "resolve", "opt"), list(_bounded_cases()))
def test_parse_time_and_config_time_bounds_agree(command, resolve, opt):
    """A value below a field's bound is refused by ``pfc depth`` / ``pfc demo`` as it is parsed
    and by depth_config / resolve_study_config alike (a nested option under its name
    FIELD.NAME)."""
    spec = opt.spec
    kind, low = spec["kind"], spec["low"]
    bad = low if spec["positive"] else (low - 1 if kind is int else low - 0.5)
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, opt.flag, str(bad)])
    assert exc.value.code == 2
    value = (1.0, kind(bad)) if spec["nargs"] else kind(bad)
    opts = {opt.name: value} if opt.parent is None else {opt.parent: {opt.name: value}}
    with pytest.raises(InputError, match=opt.dest.replace(".", r"\.")):
        resolve(**opts)


def test_training_options_are_held_not_redeclared():
    """DepthConfig and StudyConfig hold TrainConfigs (``train``; ``fc`` and ``deep``) instead of
    copies of its fields: the only names they share with TrainConfig are their own options of
    another meaning (the study's folder, seed, progress bars, minimum epochs, threads)."""
    train = {f.name for f in fields(TrainConfig)}
    own = {"out", "seed", "progress", "epochs", "threads", "dataset", "resume"}
    for cls in (DepthConfig, StudyConfig):
        assert {f.name for f in fields(cls)} & train <= own, cls
    assert option_spec(next(f for f in fields(DepthConfig) if f.name == "train"))["cls"] is (
        TrainConfig
    )
    cfg = depth_config("tiny", train={"lr": 0.2, "momentum": 0.5})
    assert isinstance(cfg.train, TrainConfig) and cfg.train.lr == 0.2
    assert cfg.train.momentum == 0.5 and cfg.train.width == DEPTH_PRESETS["tiny"]["train"]["width"]
    # the depth study's own bound on a shared option: weight decay > 0 (the LN-UFM's lam_w)
    with pytest.raises(InputError, match=r"train\.weight_decay"):
        depth_config("tiny", train={"weight_decay": 0.0})
    # an option the study does not use is refused, not ignored
    with pytest.raises(InputError, match=r"train\.dtype.*not used by the depth study"):
        depth_config("tiny", train={"dtype": "float64"})
    with pytest.raises(InputError, match="no option"):
        depth_config("tiny", train={"nope": 1})
    with pytest.raises(InputError, match="no option field"):
        nested(TrainConfig, "x", options=("nope",))
    with pytest.raises(InputError, match="unknown keyword"):
        nested(TrainConfig, "x", options={"lr": {"colour": "red"}})
    with pytest.raises(InputError, match="unknown keyword"):
        option_from(TrainConfig, "lr", colour="red")


def test_option_from_needs_a_dataclass():
    from ufm.options import option_from

    with pytest.raises(InputError, match="dataclass"):
        option_from(int, "x")


@documented
@dataclass(frozen=True)
class Outer:
    """A config holding a Toy."""

    n: int = option(int, "outer count", default=2, low=1)
    toy: Toy | None = nested(
        Toy, "the inner options", options={"size": {"help": "size here"}, "frac": {}},
        prefix="in-",
    )  # fmt: skip


def test_nested_options_parse_into_a_mapping_and_resolve_against_a_base():
    p = add_options(argparse.ArgumentParser(exit_on_error=False), Outer,
                    presets={"usual": {"toy": {"size": 4}}, "--big": {"toy": {"size": 40}}})  # fmt: skip
    assert Outer(**options_from_args(Outer, p.parse_args([]))) == Outer()
    ns = p.parse_args(["--in-size", "5", "--in-frac", "0.25"])
    got = Outer(**options_from_args(Outer, ns))
    assert got.toy == {"size": 5, "frac": 0.25}
    assert resolve_nested(got.toy, Toy(mode="b"), name="toy") == Toy(size=5, frac=0.25, mode="b")
    assert resolve_nested(None, Toy(mode="b"), name="toy") == Toy(mode="b")
    text = " ".join(p.format_help().split())
    assert "--in-size IN_SIZE size here (>= 1; default 4; --big 40)" in text
    assert "--in-frac IN_FRAC a fraction (in [0, 1])" in text
    with pytest.raises(argparse.ArgumentError, match="--in-size"):
        p.parse_args(["--in-size", "0"])
    # with_options merges a mapping into a mapping or an object
    assert with_options(got, {"toy": {"mode": "b"}}).toy == {"size": 5, "frac": 0.25, "mode": "b"}
    obj = Outer(toy=Toy())
    assert with_options(obj, {"toy": {"size": 9}}).toy == Toy(size=9)
    assert with_options(obj, {"n": 3}) == Outer(n=3, toy=Toy())
    with pytest.raises(InputError, match="unknown Outer option"):
        with_options(obj, {"m": 1})
    # checks name the nested option FIELD.NAME, for a mapping and for an object alike
    for bad in ({"size": 0}, Toy(size=0)):
        with pytest.raises(InputError, match=r"toy\.size"):
            check_fields(Outer(toy=bad))
    with pytest.raises(InputError, match=r"toy\.hidden"):  # not on the command line, checked
        check_fields(Outer(toy={"hidden": 0}))
    with pytest.raises(InputError, match="no option"):
        check_fields(Outer(toy={"sise": 1}))
    with pytest.raises(InputError, match="must be a Toy"):
        check_fields(Outer(toy=3))
    with pytest.raises(InputError, match="no option"):
        resolve_nested({"sise": 1}, Toy(), name="toy")
    assert "\ntoy : Toy\n" in Outer.__doc__ and "``--in-size`` (size here)" in Outer.__doc__


def test_a_training_option_reaches_the_demo_by_its_declaration():
    """An option declared only on TrainConfig reaches the demo's networks: the study holds
    TrainConfigs, so neither pfc/config.py nor the stage names it (``geodesic_points`` here
    stands for a new option); the depth study refuses one its loop does not use."""
    from pathlib import Path

    import pfc.config
    import pfc.stages.train

    for mod in (pfc.config, pfc.stages.train):
        assert "geodesic_points" not in Path(mod.__file__).read_text()
    from pfc.config import networks

    cfg = resolve_study_config(StudyConfig(fc={"geodesic_points": 51}, deep={"lr_gamma": 0.5}))
    fc, deep = networks(cfg)
    assert fc.train.geodesic_points == 51 and deep.train.lr_gamma == 0.5
    assert deep.train.geodesic_points == TrainConfig().geodesic_points
    with pytest.raises(InputError, match=r"fc\.geodesic_points"):  # its bounds come along
        resolve_study_config(StudyConfig(fc={"geodesic_points": 1}))
    with pytest.raises(InputError, match="not used by the depth study"):
        depth_config("tiny", train={"geodesic_points": 51})


def test_the_option_functions_refuse_what_is_not_an_options_dataclass():
    from resnet_pfc.depth_config import train_defaults

    for call in (
        lambda: command_line_options(int),
        lambda: add_options(argparse.ArgumentParser(), dict),
        lambda: check_fields(3),
    ):
        with pytest.raises(InputError, match="dataclass"):
            call()
    assert train_defaults("custom").width == 64
    with pytest.raises(InputError, match="preset"):
        train_defaults("cpuu")
