"""Options declared once: a dataclass field carries its command-line flag, bounds and help.

A configuration dataclass declares each field with :func:`option` (or puts
:func:`option_meta` in a ``field``'s metadata). From that one description:

- :func:`add_options` adds one ``argparse`` option per field, with its flag, converter, bounds,
  choices and a help line that states the bounds and the default;
- :func:`options_from_args` reads the parsed values back as keyword arguments of the class;
- :func:`check_fields` validates an instance against the same bounds and choices (so a config
  built in Python is refused where the command line would refuse it);
- :func:`documented` appends the numpydoc ``Attributes`` section of the class, written from the
  same help texts, to its docstring.

So the help of an option is written once: the command line's help and the class's documentation
cannot drift apart. It lives in :mod:`ufm` so that every package's command line uses it:
:class:`resnet_pfc.config.TrainConfig`, :class:`resnet_pfc.depth_config.DepthConfig`,
:class:`pfc.config.StudyConfig`, ``pfc solve`` / ``pfc metrics`` (:mod:`pfc.options`) and
``python -m proofs_check`` / ``pfc check`` (:class:`proofs_check.cli.CheckOptions`).

>>> from dataclasses import dataclass
>>> @documented
... @dataclass(frozen=True)
... class Demo:
...     '''A demo.'''
...
...     width: int = option(int, "layer width", default=8, low=1)
>>> import argparse
>>> ns = add_options(argparse.ArgumentParser(), Demo).parse_args(["--width", "3"])
>>> Demo(**options_from_args(Demo, ns))
Demo(width=3)
>>> print(Demo.__doc__.splitlines()[-1])
    Layer width.
"""

from __future__ import annotations

import argparse
import inspect
import math
import re
import textwrap
from collections.abc import Callable, Iterable, Mapping
from dataclasses import MISSING, Field, field, fields, is_dataclass
from typing import Any

from .errors import InputError
from .validate import check_int, check_scalar

__all__ = [
    "option",
    "option_from",
    "option_spec",
    "add_options",
    "options_from_args",
    "check_fields",
    "documented",
    "attributes_doc",
]

#: Key of the option description in a field's metadata.
KEY = "cli"


def option_meta(
    kind: Callable[[Any], Any] | str,
    help: str = "",
    *,
    doc: str = "",
    low: float | None = None,
    high: float | None = None,
    positive: bool = False,
    choices: tuple[str, ...] | None = None,
    flag: str | None = None,
    nargs: str | None = None,
    required: bool = False,
    shown: str | None = None,
    type: str | None = None,
    command_line: bool = True,
) -> dict[str, Any]:
    """Field metadata describing one option (put it in ``dataclasses.field(metadata=...)``).

    Parameters
    ----------
    kind : callable or str
        ``int``, ``float``, ``str``, ``bool`` (a ``--X`` switch that turns a false default on),
        ``"no"`` (a ``--no-X`` switch that turns a true default off) or a converter
        ``str -> value`` that raises ``argparse.ArgumentTypeError`` on a bad value.
    help : str
        One line: the command line's help and the first sentence of the field's documentation.
    doc : str
        More documentation (the docstring only; not shown by ``--help``).
    low, high : float, optional
        Bounds of an ``int`` or ``float`` option (``low`` inclusive unless ``positive``).
    positive : bool
        ``low`` is exclusive (``> low``).
    choices : tuple of str, optional
        Accepted values.
    flag : str, optional
        The flag (default ``--field-name``, or ``--no-field-name`` for ``kind="no"``).
    nargs : str, optional
        ``argparse`` nargs (``"+"``, ``"*"``); the values are read back as a tuple.
    required : bool
        The option must be given.
    shown : str, optional
        How ``--help`` names the default (where it is ``None`` or comes from a preset).
    type : str, optional
        The numpydoc type of the field (default: from its annotation and ``choices``).
    command_line : bool
        False for a field that no command line sets (documented and checked only).

    Returns
    -------
    dict
        ``{"cli": {...}}``: the description, read by :func:`option_spec`.
    """
    return {
        KEY: {
            "kind": kind,
            "help": help,
            "doc": doc,
            "low": low,
            "high": high,
            "positive": positive,
            "choices": choices,
            "flag": flag,
            "nargs": nargs,
            "required": required,
            "shown": shown,
            "type": type,
            "command_line": command_line,
        }
    }


def option(
    kind: Callable[[Any], Any] | str,
    help: str = "",
    *,
    default: Any = None,
    default_factory: Callable[[], Any] | Any = MISSING,
    **meta: Any,
) -> Any:
    """A dataclass field with the option description of :func:`option_meta`.

    Parameters
    ----------
    kind, help, **meta
        As :func:`option_meta`.
    default : object
        The field's default (``None`` unless given).
    default_factory : callable, optional
        Instead of ``default``, for a mutable default.

    Returns
    -------
    dataclasses.Field
    """
    metadata = option_meta(kind, help, **meta)
    if default_factory is not MISSING:
        return field(default_factory=default_factory, metadata=metadata)
    return field(default=default, metadata=metadata)


def option_from(
    cls: type,
    name: str,
    *,
    default: Any = None,
    default_factory: Callable[[], Any] | Any = MISSING,
    **overrides: Any,
) -> Any:
    """A field declared like field ``name`` of the options class ``cls`` (its kind, bounds,
    choices, help and documentation), with its own default and any ``overrides`` of
    :func:`option_meta`'s keywords: an option shared by several configs is declared once.

    >>> from dataclasses import dataclass
    >>> @dataclass
    ... class A:
    ...     rate: float = option(float, "a rate", default=0.5, low=0, high=1)
    >>> f = option_from(A, "rate", default=0.1, command_line=False)

    Raises
    ------
    InputError
        ``cls`` has no option field ``name``, or an override is not a keyword of
        :func:`option_meta`.
    """
    if not is_dataclass(cls):
        raise InputError(f"option_from needs a dataclass of options, got {cls!r}")
    spec = next((option_spec(f) for f in fields(cls) if f.name == name), None)
    if spec is None:
        raise InputError(f"{cls.__name__} has no option field {name!r}")
    unknown = sorted(set(overrides) - set(spec))
    if unknown:
        raise InputError(f"option_from: unknown keyword(s) {unknown}; use those of option_meta")
    meta = {**spec, **overrides}
    return option(meta.pop("kind"), meta.pop("help"), default=default,
                  default_factory=default_factory, **meta)  # fmt: skip


def option_spec(f: Field) -> dict[str, Any] | None:
    """The option description of the dataclass field ``f`` (``None`` for a plain field)."""
    return f.metadata.get(KEY)


def _specs(cls: type) -> Iterable[tuple[Field, dict[str, Any]]]:
    for f in fields(cls):
        spec = option_spec(f)
        if spec is not None:
            yield f, spec


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


def bounds_text(spec: dict[str, Any]) -> str:
    """The bounds of an option in words (``">= 1"``, ``"> 0"``, ``"in [0, 1]"``; ``""``)."""
    low, high, pos = spec["low"], spec["high"], spec["positive"]
    if low is None and high is None:
        return ""

    def num(v: float) -> str:  # integers exactly (a seed bound of 4294967295 is not 4.29e+09)
        return str(v) if isinstance(v, int) else f"{v:g}"

    if high is None:
        return f"{'>' if pos else '>='} {num(low)}"
    if low is None:
        return f"<= {num(high)}"
    return f"in [{num(low)}, {num(high)}]"


def _converter(name: str, spec: dict[str, Any]) -> Callable[[str], Any]:
    kind = spec["kind"]
    if kind not in (int, float):
        return kind

    def conv(s: str) -> Any:
        try:
            v = kind(s)
        except ValueError:
            what = "an integer" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"must be {what}, got {s!r}") from None
        low, high = spec["low"], spec["high"]
        bad = not math.isfinite(v)
        bad = bad or (low is not None and (v <= low if spec["positive"] else v < low))
        bad = bad or (high is not None and v > high)
        if bad:
            raise argparse.ArgumentTypeError(
                f"must be a finite {'integer' if kind is int else 'number'} "
                f"{bounds_text(spec)}, got {s!r}"
            )
        return v

    conv.__name__ = name
    return conv


def _flag(f: Field, spec: dict[str, Any]) -> str:
    if spec["flag"]:
        return spec["flag"]
    prefix = "--no-" if spec["kind"] == "no" else "--"
    return prefix + f.name.replace("_", "-")


def _value_text(value: Any, spec: dict[str, Any]) -> str:
    """A default as ``--help`` shows it: a long float grid as its size and range."""
    if value is None:
        return spec["shown"] or "none"
    if isinstance(value, tuple | list):
        if len(value) > 4 and all(isinstance(v, float) for v in value):
            return f"{len(value)} values from {min(value):g} to {max(value):g}"
        return " ".join(_value_text(v, spec) for v in value)
    return f"{value:g}" if isinstance(value, float) else str(value)


def _preset_text(f: Field, spec: dict[str, Any], presets: Mapping[str, Mapping[str, Any]]) -> str:
    """``default V`` of the first preset, then ``; LABEL V`` for each preset that differs."""
    base = None if f.default is MISSING else f.default
    texts = [(label, _value_text(p.get(f.name, base), spec)) for label, p in presets.items()]
    first = texts[0][1]
    return "; ".join([f"default {first}"] + [f"{lb} {t}" for lb, t in texts[1:] if t != first])


def add_options(
    parser: Any,
    cls: type,
    *,
    title: str | None = None,
    presets: Mapping[str, Mapping[str, Any]] | None = None,
) -> Any:
    """Add one option per command-line field of the dataclass ``cls`` to ``parser``.

    Values are checked as they are parsed (bounds, choices, converters), so a bad value is a
    usage error that names the option. Read them back with :func:`options_from_args`.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The parser (or subparser).
    cls : type
        A dataclass whose fields carry :func:`option_meta` descriptions; fields without one,
        or declared ``command_line=False``, are left out. Options follow the field order.
    title : str, optional
        Put the options in an argument group of this title.
    presets : mapping of str to mapping, optional
        Named sets of field values, the first being the one used when none is chosen (labels as
        the help should name them, e.g. ``{"cpu": ..., "--preset paper": ...}``). A field that
        any preset sets has the default ``None`` on the command line (meaning: the preset's
        value), and its help lists the presets' values.

    Returns
    -------
    argparse.ArgumentParser
        ``parser``.
    """
    g = parser.add_argument_group(title) if title else parser
    for f, spec in _specs(cls):
        if not spec["command_line"]:
            continue
        kind = spec["kind"]
        from_preset = bool(presets) and any(f.name in p for p in presets.values())
        default = None if from_preset or f.default is MISSING else f.default
        help_text = spec["help"]
        kw: dict[str, Any] = {"dest": f.name}
        if kind is bool or kind == "no":
            kw["action"] = "store_true" if kind is bool else "store_false"
            if from_preset:
                kw["default"] = None
        else:
            kw["type"] = _converter(f.name.replace("_", "-"), spec)
            kw["default"] = default
            if spec["nargs"]:
                kw["nargs"] = spec["nargs"]
            if spec["choices"]:
                if kind is str:
                    kw["choices"] = spec["choices"]
                else:
                    kw["metavar"] = "{" + ",".join(spec["choices"]) + "}"
            if spec["required"]:
                kw["required"] = True
                kw.pop("default")
            else:
                bounds = bounds_text(spec)
                extra = [bounds] if bounds else []
                if from_preset:
                    extra.append(_preset_text(f, spec, presets or {}))
                elif spec["shown"] is not None:
                    extra.append(f"default {spec['shown']}")
                elif default is not None:
                    extra.append("default %(default)s")
                if extra:
                    help_text = f"{help_text} ({'; '.join(extra)})"
        g.add_argument(_flag(f, spec), help=help_text, **kw)
    return parser


def options_from_args(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The values of the command-line fields of ``cls`` in ``args`` (parsed by a parser built
    with :func:`add_options`), as keyword arguments of ``cls``; multi-value options become
    tuples. Fields absent from ``args`` are left out."""
    opts: dict[str, Any] = {}
    for f, spec in _specs(cls):
        if spec["command_line"] and hasattr(args, f.name):
            value = getattr(args, f.name)
            opts[f.name] = tuple(value) if spec["nargs"] and value is not None else value
    return opts


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------


def check_value(name: str, value: Any, spec: dict[str, Any]) -> Any:
    """Check ``value`` against the bounds and choices of ``spec``; returns it (ints as int).

    Raises
    ------
    InputError
        Out of bounds, not finite, of the wrong type, or not one of the choices (the message
        names the option and the value).
    """
    kind = spec["kind"]
    if kind is int:
        v = check_int(value, name, low=spec["low"])
        if spec["high"] is not None and v > spec["high"]:
            raise InputError(f"{name} must be <= {spec['high']}, got {v}")
        return v
    if kind is float:
        return check_scalar(
            value, name, low=spec["low"], low_inclusive=not spec["positive"], high=spec["high"]
        )
    if spec["choices"] and value not in spec["choices"]:
        raise InputError(f"{name} must be one of {spec['choices']}, got {value!r}")
    return value


def check_fields(obj: Any, names: Iterable[str] | None = None, *, skip: Iterable[str] = ()) -> None:
    """Check the fields of the dataclass instance ``obj`` against their option descriptions.

    Parameters
    ----------
    obj : dataclass instance
    names : iterable of str, optional
        The fields to check (default: every field with a description, except switches and
        multi-value options). A ``None`` value passes where the field's default is ``None``.
    skip : iterable of str
        Fields not to check (their value is checked elsewhere).

    Raises
    ------
    InputError
        The first field out of its bounds or choices.
    """
    chosen = None if names is None else set(names)
    skipped = set(skip)
    for f, spec in _specs(type(obj)):
        if f.name in skipped:
            continue
        if chosen is None:
            if spec["kind"] in (bool, "no") or spec["nargs"]:
                continue
        elif f.name not in chosen:
            continue
        value = getattr(obj, f.name)
        if value is None and (f.default is None or f.default is MISSING):
            continue
        check_value(f.name, value, spec)


# ------------------------------------------------------------------------------------------
# documentation
# ------------------------------------------------------------------------------------------


def _type_text(f: Field, spec: dict[str, Any]) -> str:
    """The numpydoc type of a field, from ``spec["type"]``, its choices or its annotation."""
    if spec["type"]:
        return spec["type"]
    ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", str(f.type))
    parts = [p.strip() for p in ann.split("|")]
    optional = "None" in parts
    text = " | ".join(p for p in parts if p != "None")
    if spec["kind"] == "no":
        text = "bool"
    elif spec["choices"] and spec["kind"] is str:
        choices = "{" + ", ".join(f'"{c}"' for c in spec["choices"]) + "}"
        text = f"tuple of {choices}" if spec["nargs"] else choices
    text = re.sub(r"^tuple\[(\w+), \.\.\.\]$", r"tuple of \1", text)
    text = re.sub(r"^(dict|list|tuple)\[.*\]$", r"\1", text)
    return f"{text}, optional" if optional else text


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return ""
    text = text[0].upper() + text[1:]
    return text if text.endswith(".") else text + "."


def attributes_doc(cls: type) -> str:
    """The numpydoc ``Attributes`` section of a dataclass declared with :func:`option`.

    Every field is listed in field order: ``name : type`` (from the annotation, or the choices)
    then the option's help as a sentence (for a ``--no-X`` switch: the flag and its help), its
    ``doc`` text and what ``None`` stands for (``shown``). A field without a description is
    listed with its type only.
    """
    lines = ["Attributes", "----------"]
    for f in fields(cls):
        spec = option_spec(f)
        if spec is None:
            ann = f.type if isinstance(f.type, str) else getattr(f.type, "__name__", "")
            lines.append(f"{f.name} : {ann}")
            continue
        lines.append(f"{f.name} : {_type_text(f, spec)}")
        help_text = _sentence(spec["help"])
        if spec["kind"] == "no":  # the help says what the switch does
            help_text = f"``{_flag(f, spec)}``: {spec['help']}."
        parts = [help_text, spec["doc"].strip()]
        if spec["shown"] and "None" in str(f.type):
            parts.append(f"``None``: {spec['shown']}.")
        body = " ".join(t for t in parts if t)
        if body:
            lines.append(textwrap.fill(body, 92, initial_indent="    ", subsequent_indent="    "))
    return "\n".join(lines)


def documented(cls: type) -> type:
    """Class decorator (above ``@dataclass``): append :func:`attributes_doc` to ``__doc__``.

    The docstring keeps its own summary and notes and gets no hand-written ``Attributes``
    section, so each field's documentation is its option's help, written once.
    """
    head = inspect.cleandoc(cls.__doc__ or "")
    cls.__doc__ = f"{head}\n\n{attributes_doc(cls)}\n"
    return cls
