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
from dataclasses import MISSING, Field, dataclass, field, fields, is_dataclass, replace
from typing import Any

from .errors import InputError
from .validate import check_int, check_scalar

__all__ = [
    "option",
    "option_from",
    "nested",
    "nested_options",
    "resolve_nested",
    "with_options",
    "option_spec",
    "add_options",
    "command_line_options",
    "CommandLineOption",
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


#: ``kind`` of a nested options field (:func:`nested`).
NESTED = "nested"


def nested(
    cls: type,
    help: str,
    *,
    options: Mapping[str, Mapping[str, Any]] | Iterable[str] = (),
    prefix: str = "",
    doc: str = "",
    default_factory: Callable[[], Any] | None = None,
) -> Any:
    """A field that holds a whole options object of the dataclass ``cls`` (a nested config).

    The options of ``cls`` are declared once, on ``cls``: the outer config holds an instance of
    it instead of copies of its fields. ``options`` names the options of ``cls`` that the
    outer config's command line sets (flag ``--PREFIX-NAME``, dest ``FIELD.NAME``), each with
    :func:`option_meta` overrides (a help line that says what the option means here, other
    bounds, ``shown``); the others keep ``cls``'s values.

    The field's value is an instance of ``cls``, ``None`` (the outer config's default, filled
    by its resolver through :func:`resolve_nested`), or a mapping of some of ``cls``'s options
    (``{"lr": 0.1}``: those replaced in that default). :func:`options_from_args` reads the
    command line back as such a mapping; :func:`check_fields` checks the nested values against
    the declarations (with the overrides of ``options``) and names them ``FIELD.NAME``.

    Parameters
    ----------
    cls : type
        A dataclass declared with :func:`option`.
    help : str
        What the nested object is (documentation).
    options : mapping of str to mapping, or iterable of str
        The options of ``cls`` on the outer command line, with their overrides.
    prefix : str
        Prefix of their flags (``"deep-"``: ``--deep-epochs``).
    doc : str
        More documentation.
    default_factory : callable, optional
        The field's default (default ``None``: the resolver's).

    Raises
    ------
    InputError
        ``cls`` is not a dataclass, names an option it does not have, or an override is not a
        keyword of :func:`option_meta`.
    """
    if not is_dataclass(cls):
        raise InputError(f"nested needs a dataclass of options, got {cls!r}")
    specs = {f.name: s for f, s in _specs(cls)}
    items = options.items() if isinstance(options, Mapping) else ((n, {}) for n in options)
    subs: dict[str, dict[str, Any]] = {}
    for name, overrides in items:
        if name not in specs:
            raise InputError(f"{cls.__name__} has no option field {name!r}")
        unknown = sorted(set(overrides) - set(specs[name]))
        if unknown:
            raise InputError(f"nested: unknown keyword(s) {unknown}; use those of option_meta")
        subs[name] = {**specs[name], **overrides}
    meta = option_meta(NESTED, help, doc=doc, type=cls.__name__)
    meta[KEY] |= {"cls": cls, "options": subs, "prefix": prefix}
    if default_factory is not None:
        return field(default_factory=default_factory, metadata=meta)
    return field(default=None, metadata=meta)


def nested_options(spec: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The option descriptions of every field of a nested option's class: those named in
    :func:`nested`'s ``options`` with their overrides, the others as ``cls`` declares them
    (``command_line=False``: only the named ones are on the outer command line)."""
    cls = spec["cls"]
    return {
        f.name: spec["options"].get(f.name) or {**s, "command_line": False} for f, s in _specs(cls)
    }


def resolve_nested(value: Any, base: Any, *, name: str) -> Any:
    """The nested options object that ``value`` stands for, given the default ``base`` (an
    instance of the nested class): ``None`` -> ``base``; a mapping -> ``base`` with those
    options replaced; an instance -> itself.

    Raises
    ------
    InputError
        A mapping names an option the class does not have, or ``value`` is neither.
    """
    if value is None:
        return base
    _check_kind(name, value, type(base))
    return value if isinstance(value, type(base)) else replace(base, **value)


def _check_kind(name: str, value: Any, cls: type) -> None:
    """Refuse a nested field's value that is neither an instance of ``cls`` nor a mapping of
    some of its options (naming the unknown ones)."""
    if isinstance(value, Mapping):
        known = {f.name for f in fields(cls)}
        bad = sorted(set(value) - known)
        if bad:
            raise InputError(
                f"{name} has no option(s) {bad}; the options of {cls.__name__} are {sorted(known)}"
            )
    elif not isinstance(value, cls):
        raise InputError(
            f"{name} must be a {cls.__name__}, a mapping of its options or None, got "
            f"{type(value).__name__}"
        )


def with_options(obj: Any, overrides: Mapping[str, Any]) -> Any:
    """``dataclasses.replace(obj, **overrides)``, except that a mapping given for a nested
    field (:func:`nested`) replaces only those options of the nested value (merged into a
    mapping or an instance; kept as the mapping where the value is ``None``).

    Raises
    ------
    InputError
        An override names no field of ``obj``.
    """
    known = {f.name: f for f in fields(obj)}
    bad = sorted(set(overrides) - set(known))
    if bad:
        raise InputError(f"unknown {type(obj).__name__} option(s) {bad}; known: {sorted(known)}")
    vals = dict(overrides)
    for name, value in overrides.items():
        spec = option_spec(known[name])
        if spec is None or spec["kind"] != NESTED or not isinstance(value, Mapping):
            continue
        now = getattr(obj, name)
        if isinstance(now, Mapping):
            vals[name] = {**now, **value}
        elif now is not None:
            vals[name] = resolve_nested(value, now, name=name)
    return replace(obj, **vals)


def option_spec(f: Field) -> dict[str, Any] | None:
    """The option description of the dataclass field ``f`` (``None`` for a plain field)."""
    return f.metadata.get(KEY)


def _specs(cls: type) -> Iterable[tuple[Field, dict[str, Any]]]:
    if not is_dataclass(cls):
        raise InputError(f"expected a dataclass of options (declared with option), got {cls!r}")
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


def _preset_text(spec: dict[str, Any], values: list[tuple[str, Any]]) -> str:
    """``default V`` of the first preset, then ``; LABEL V`` for each preset that differs."""
    texts = [(label, _value_text(v, spec)) for label, v in values]
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
    for opt in command_line_options(cls):
        # the presets' values: each preset is a mapping of fields (of options, for a nested one)
        sets = [(lb, p if opt.parent is None else p.get(opt.parent) or {}) for lb, p in
                (presets or {}).items()]  # fmt: skip
        values = [(lb, p.get(opt.name, opt.default)) for lb, p in sets]
        if not any(opt.name in p for _, p in sets):
            values = []
        _add_argument(g, opt.dest, opt.flag, opt.spec, opt.default, values)
    return parser


@dataclass(frozen=True)
class CommandLineOption:
    """One option that :func:`add_options` adds: the field ``name`` of the options class (of the
    nested field ``parent``, or ``None``), its ``argparse`` dest, flag, description and default."""

    name: str
    parent: str | None
    dest: str
    flag: str
    spec: dict[str, Any]
    default: Any


def command_line_options(cls: type) -> list[CommandLineOption]:
    """The command-line options of the options class ``cls`` in order: one per field declared
    for the command line, and for a nested field (:func:`nested`) one per option it names
    (dest ``FIELD.NAME``)."""
    out = []
    for f, spec in _specs(cls):
        if not spec["command_line"]:
            continue
        base = None if f.default is MISSING else f.default
        if spec["kind"] != NESTED:
            out.append(CommandLineOption(f.name, None, f.name, _flag(f, spec), spec, base))
            continue
        # no default object: the outer config's resolver fills what is not given
        inner = None if f.default_factory is MISSING else f.default_factory()
        for name, sub in spec["options"].items():
            if sub["command_line"]:
                out.append(CommandLineOption(
                    name, f.name, f"{f.name}.{name}", sub["flag"] or _sub_flag(spec, name, sub),
                    sub, None if inner is None else getattr(inner, name),
                ))  # fmt: skip
    return out


def _sub_flag(spec: dict[str, Any], name: str, sub: dict[str, Any]) -> str:
    """The flag of option ``name`` of a nested field: ``--PREFIXNAME`` (``--no-...`` for a
    ``"no"`` switch)."""
    return ("--no-" if sub["kind"] == "no" else "--") + (spec["prefix"] + name).replace("_", "-")


def _add_argument(
    g: Any,
    dest: str,
    flag: str,
    spec: dict[str, Any],
    base: Any,
    preset_values: list[tuple[str, Any]],
) -> None:
    """Add one option (``preset_values``: ``(label, value)`` per preset that sets it; the
    option's default is then ``None``, meaning the preset's)."""
    kind = spec["kind"]
    from_preset = bool(preset_values)
    default = None if from_preset else base
    help_text = spec["help"]
    kw: dict[str, Any] = {"dest": dest}
    if kind is bool or kind == "no":
        kw["action"] = "store_true" if kind is bool else "store_false"
        if from_preset:
            kw["default"] = None
    else:
        kw["type"] = _converter(dest.rsplit(".", 1)[-1].replace("_", "-"), spec)
        kw["default"] = default
        if "." in dest and not spec["choices"]:  # named by its flag, not its dest FIELD.NAME
            kw["metavar"] = flag.lstrip("-").replace("-", "_").upper()
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
                extra.append(_preset_text(spec, preset_values))
            elif spec["shown"] is not None:
                extra.append(f"default {spec['shown']}")
            elif default is not None:
                extra.append("default %(default)s")
            if extra:
                help_text = f"{help_text} ({'; '.join(extra)})"
    g.add_argument(flag, help=help_text, **kw)


def options_from_args(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The values of the command-line fields of ``cls`` in ``args`` (parsed by a parser built
    with :func:`add_options`), as keyword arguments of ``cls``; multi-value options become
    tuples. Fields absent from ``args`` are left out; a nested field (:func:`nested`) comes
    back as the mapping of its options that were given (none given: left out)."""
    opts: dict[str, Any] = {}
    for opt in command_line_options(cls):
        if not hasattr(args, opt.dest):
            continue
        value = getattr(args, opt.dest)
        if opt.spec["nargs"] and value is not None:
            value = tuple(value)
        if opt.parent is None:
            opts[opt.name] = value
        elif value is not None:
            opts.setdefault(opt.parent, {})[opt.name] = value
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
        if f.name in skipped or (chosen is not None and f.name not in chosen):
            continue
        value = getattr(obj, f.name)
        if spec["kind"] == NESTED:
            _check_nested(f.name, value, spec)
            continue
        if chosen is None and (spec["kind"] in (bool, "no") or spec["nargs"]):
            continue
        if value is None and (f.default is None or f.default is MISSING):
            continue
        check_value(f.name, value, spec)


def _check_nested(name: str, value: Any, spec: dict[str, Any]) -> None:
    """Check a nested field's value (an instance or a mapping of options; ``None`` passes)
    against its class's declarations with the overrides of :func:`nested`."""
    if value is None:
        return
    cls = spec["cls"]
    subs = nested_options(spec)
    _check_kind(name, value, cls)
    if isinstance(value, Mapping):
        items = value.items()
    else:
        items = ((f.name, getattr(value, f.name)) for f in fields(cls))
    defaults = {f.name: f.default for f in fields(cls)}
    for sub_name, v in items:
        sub = subs.get(sub_name)
        if sub is None or sub["kind"] in (bool, "no") or sub["nargs"] or sub["kind"] == NESTED:
            continue
        if v is None and defaults[sub_name] in (None, MISSING):
            continue
        check_value(f"{name}.{sub_name}", v, sub)


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
    # a help that starts by naming a value ("ce: cross entropy") keeps it as code
    text = re.sub(r"^([a-z0-9_]+):", r"``\1``:", text)
    if not text.startswith("``"):
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
        if spec["kind"] == NESTED:
            flags = [
                f"``{sub['flag'] or _sub_flag(spec, n, sub)}`` ({sub['help']})"
                for n, sub in spec["options"].items()
                if sub["command_line"]
            ]
            if flags:
                parts.append("On the command line: " + "; ".join(flags) + ".")
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
