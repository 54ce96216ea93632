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
    documented,
    option,
    option_spec,
    options_from_args,
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


@pytest.mark.parametrize("cls", [DepthConfig, TrainConfig])
def test_real_configs_describe_every_field(cls):
    assert all(option_spec(f) is not None for f in fields(cls))


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
    want = {f.name for f in fields(DepthConfig) if option_spec(f)["command_line"]}
    assert dests == want
    assert {"momentum", "batch_size", "heads", "patch"}.isdisjoint(dests)


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
        for f in fields(cls):
            spec = option_spec(f)
            if spec["command_line"] and spec["kind"] in (int, float) and spec["low"] is not None:
                yield pytest.param(command, resolve, f.name, spec, id=f"{command}-{f.name}")


@pytest.mark.parametrize(("command", "resolve", "name", "spec"), list(_bounded_cases()))
def test_parse_time_and_config_time_bounds_agree(command, resolve, name, spec):
    """A value below a field's bound is refused by ``pfc depth`` / ``pfc demo`` as it is parsed
    and by depth_config / resolve_study_config alike."""
    kind, low = spec["kind"], spec["low"]
    bad = low if spec["positive"] else (low - 1 if kind is int else low - 0.5)
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args([command, "--" + name.replace("_", "-"), str(bad)])
    assert exc.value.code == 2
    value = (1.0, kind(bad)) if spec["nargs"] else kind(bad)
    with pytest.raises(InputError, match=name):
        resolve(**{name: value})


def test_shared_options_are_declared_once():
    # the depth study's and the demo's copies of TrainConfig's options come from its fields
    from dataclasses import fields as dc_fields

    from ufm.options import option_from

    def spec(cls, name):
        return next(option_spec(f) for f in dc_fields(cls) if f.name == name)

    for name in ("dataset", "loss", "momentum", "batch_size", "heads", "patch", "progress"):
        got, ref = spec(DepthConfig, name), spec(TrainConfig, name)
        same = {k: v for k, v in got.items() if k not in ("command_line", "shown")}
        assert same == {k: v for k, v in ref.items() if k in same}, name
    assert (
        spec(DepthConfig, "weight_decay")["positive"]
        and not spec(TrainConfig, "weight_decay")["positive"]
    )
    for name in ("weight_decay", "batch_size", "lr", "eval_every", "epochs"):
        assert spec(StudyConfig, name)["help"] == spec(TrainConfig, name)["help"], name
    # the deep network's options: TrainConfig's kind, bounds and choices under their own help
    for name in ("blocks", "loss", "lr", "weight_decay", "batch_size", "epochs", "eval_every"):
        got, ref = spec(StudyConfig, f"deep_{name}"), spec(TrainConfig, name)
        for key in ("kind", "low", "high", "positive", "choices"):
            assert got[key] == ref[key], (name, key)
    with pytest.raises(InputError, match="no option field"):
        option_from(TrainConfig, "nope")
    with pytest.raises(InputError, match="unknown keyword"):
        option_from(TrainConfig, "lr", colour="red")


def test_option_from_needs_a_dataclass():
    from ufm.options import option_from

    with pytest.raises(InputError, match="dataclass"):
        option_from(int, "x")
