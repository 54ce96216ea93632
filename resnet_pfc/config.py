r"""The options of a training run: :class:`TrainConfig`, their resolution, and their command line.

Every field of :class:`TrainConfig` carries its command-line spelling in its dataclass metadata
(flag, value type, bounds, choices, help: :func:`ufm.options.option`, the mechanism that
also declares the depth study's and the ``pfc demo`` study's options). From that one description:

- :func:`add_train_options` adds the training options to an ``argparse`` parser (used by both
  ``python -m resnet_pfc train`` and ``pfc train``, so both list the same options with the same
  defaults, choices and validation);
- :func:`train_config_from_args` turns the parsed options back into a :class:`TrainConfig`;
- :func:`resolve_config` fills the data set's presets (:data:`PRESETS`) and validates every field
  against the same bounds (a config built in Python gets the checks a command line gets).

:func:`make_model` builds the model a resolved config asks for.

Each field carries its flag, bounds and help, so the command line, the checks and the
dataclass cannot drift apart; data-set facts come from :mod:`resnet_pfc.datasets`.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import MISSING, dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from ufm.errors import CheckpointError, InputError
from ufm.lazy import torch
from ufm.losses import LOSSES
from ufm.threads import MAX_THREADS
from ufm.validate import SEED_MAX, check_int

from .datasets import DATASET_SPECS, DATASETS, canonical_name
from .families import DEPTH_FAMILIES

if TYPE_CHECKING:
    from .models import MeasuredModel
from ufm.options import add_options, check_fields, documented, option, options_from_args

__all__ = [
    "TrainConfig",
    "PRESETS",
    "RESUME_FREE",
    "resolve_config",
    "make_model",
    "add_train_options",
    "dataset_arg",
    "device_ok",
    "train_config_from_args",
    "TRAIN_DESCRIPTION",
]

#: How ``--resume`` treats ``--epochs`` (shown in ``--help`` and in refusals).
EXTEND_RULE = (
    "--resume continues a run with the same options; --epochs may only grow (extending a "
    "finished or interrupted run), and only when the lr schedule up to the old last epoch is "
    "unchanged: pass the old --milestones explicitly (the default E/3, 2E/3 moves with --epochs) "
    "and add later ones at will"
)

#: Description of the ``train`` command of both command lines.
TRAIN_DESCRIPTION = (
    "Train with the paper's recipe (SGD momentum 0.9, weight decay 5e-4, batch 128, lr divided "
    "by 10 at 1/3 and 2/3 of the epochs) and measure the collapse metrics of the input of the "
    "measured stage and of every block. The paper's data sets are read from --data-root (or "
    "fetched with --download); digits is embedded and mnist_5k ships with the install. "
    "Resuming: " + EXTEND_RULE + "."
)

#: Upper bounds of the size options: far beyond any study of this toolkit (the paper's deepest
#: network has 10 blocks of width 1000, the depth study 34 blocks, 350 epochs), and low enough
#: that a mistyped value is refused at once instead of hanging or exhausting memory.
MAX_BLOCKS = 4096
MAX_WIDTH = 65536
MAX_EPOCHS = 1_000_000
MAX_WORKERS = 64

#: Accepted values of ``TrainConfig.model``.
MODEL_CHOICES: tuple[str, ...] = ("auto", "fc", "conv", *DEPTH_FAMILIES)
#: Training losses (the first, the paper's cross entropy, is the default).
#: Relative positions of the layers (see :func:`resnet_pfc.measure.measure`).
POSITIONS: tuple[str, ...] = ("index", "distance")

#: Per data set defaults used when a field is ``None``: epochs, initial lr, eval_every (read off
#: each built-in :class:`resnet_pfc.datasets.DatasetSpec`; :func:`resolve_config` reads the
#: registry itself, so a data set registered later has its presets too).
PRESETS: dict[str, dict[str, Any]] = {n: dict(s.preset) for n, s in DATASET_SPECS.items()}

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


def _choice(help: str, choices: tuple[str, ...], **meta: Any) -> Any:
    """A string option whose default is the first of its ``choices``."""
    return option(str, help, default=choices[0], choices=choices, **meta)


def dataset_arg(s: str) -> str:
    """The data set named by the command-line value ``s``
    (:func:`resnet_pfc.datasets.canonical_name`: case, ``-``/``_`` and aliases are free): the
    converter of every ``--dataset`` option.

    Raises
    ------
    argparse.ArgumentTypeError
        Not a known data set (argparse reports it as a usage error naming the option).
    """
    try:
        return canonical_name(s)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def device_ok(device: Any) -> bool:
    """Whether ``device`` names a training device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"``."""
    return isinstance(device, str) and (
        device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    )


def _device_arg(s: str) -> str:
    if not device_ok(s):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda or cuda:N; got {s!r}")
    return s


@documented
@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run (``None`` means: the data set's preset).

    Each field carries its command-line flag, type, bounds and help (:func:`ufm.options.option`;
    see :func:`add_train_options`): the command line, the checks of :func:`resolve_config` and
    the list below come from them.
    """

    dataset: str = option(
        dataset_arg,
        f"training data, one of {', '.join(DATASETS)} (case, '-'/'_' and aliases such as "
        "mnist-5k or Fashion-MNIST are free; digits and mnist_5k need no download)",
        default="digits",
        doc="``digits`` is embedded and ``mnist_5k`` ships as package data: both offline.",
    )
    out: str = option(str, "run directory", default="runs/digits", required=True)
    model: str = _choice(
        "auto: the data set's Table I model",
        MODEL_CHOICES,
        doc="Table I is :data:`resnet_pfc.models.TABLE_I` (built by "
        ":func:`resnet_pfc.models.paper_model`); ``ln_resnet1``, ``ln_resnet2`` and the "
        "transformers are the depth study's LayerNorm families "
        "(:func:`resnet_pfc.models.build_depth_model`; default width 64, 5 blocks).",
    )
    blocks: int | None = option(
        int,
        "blocks of the measured stage",
        default=None,
        low=1,
        high=MAX_BLOCKS,
        shown="the model's",
    )
    width: int | None = option(
        int, "FC width or conv channels", default=None, low=1, high=MAX_WIDTH, shown="the model's"
    )
    variant: int = option(int, "Table I variant index", default=0, low=0)
    heads: int = option(
        int,
        "attention heads (transformer)",
        default=4,
        low=1,
        high=MAX_WIDTH,
        doc="``model='transformer'`` only.",
    )
    patch: int | None = option(
        int,
        "transformer tokens: p x p patches",
        default=None,
        low=1,
        shown="one per image row",
        doc="``model='transformer'`` only: ``None`` gives one token per image row, an int ``p`` gives ``p x p`` patches.",
    )
    epochs: int | None = option(
        int,
        "training epochs",
        default=None,
        low=1,
        high=MAX_EPOCHS,
        shown="the data set's preset",
        doc="Default from :data:`PRESETS`.",
    )
    lr: float | None = option(
        float,
        "initial learning rate",
        default=None,
        low=0,
        positive=True,
        shown="the preset",
        doc="Default from :data:`PRESETS`.",
    )
    loss: str = option(
        str,
        "ce: cross entropy (the paper's); mse: (1/2)||z - e_y||^2 per sample",
        default="ce",
        choices=LOSSES,
        doc="The squared error is :math:`\\tfrac12\\|z - e_y\\|^2` averaged over the samples.",
    )
    momentum: float = option(float, "SGD momentum", default=0.9, low=0, high=1)
    weight_decay: float = option(float, "SGD weight decay", default=5e-4, low=0)
    batch_size: int = option(int, "global batch size", default=128, low=1)
    milestones: tuple[int, ...] | None = option(
        int,
        "epochs after which the lr is multiplied by --lr-gamma",
        default=None,
        low=1,
        nargs="*",
        shown="E/3 2E/3",
        doc="Default ``(round(E/3), round(2E/3))``.",
    )
    lr_gamma: float = option(
        float, "lr factor at each milestone", default=0.1, low=0, positive=True
    )
    eval_every: int | None = option(
        int,
        "measure every N epochs",
        default=None,
        low=1,
        shown="the preset",
        doc="Default from :data:`PRESETS`.",
    )
    eval_test: bool = option(bool, "also measure the test split", default=False)
    eval_batch_size: int = option(
        int,
        "batch size of the measurement passes",
        default=512,
        low=1,
        doc="Any value gives the same metrics.",
    )
    per_class: int | None = option(
        int,
        "balanced training subset: samples per class",
        default=None,
        low=1,
        doc="A data option of :func:`resnet_pfc.data.load_dataset`, as ``data_root`` and ``download``.",
    )
    data_root: str | None = option(
        str,
        "folder with the torchvision data files",
        default=None,
        shown="$PFC_DATA_ROOT or ./data",
    )
    download: bool = option(bool, "download missing data with torchvision (network)", default=False)
    seed: int = option(int, "seed of everything", default=0, low=0, high=SEED_MAX)
    resume: bool = option(
        bool,
        "continue from checkpoints/last.pt of --out (same options; --epochs may grow when the "
        "lr schedule up to the old last epoch is unchanged: repeat the old --milestones)",
        default=False,
        doc="From ``out/checkpoints/last.pt`` if it exists (or from ``last.prev.pt``, with a warning, when ``last.pt`` is unreadable). Every option except those in :data:`RESUME_FREE` must equal the checkpoint's, except that ``epochs`` may grow (extending a finished or interrupted run) when the lr schedule up to the old last epoch is unchanged (:func:`extends_schedule`); this is checked before any file is written.",
    )
    device: str = option(_device_arg, "training device: cpu, cuda or cuda:N", default="cpu")
    dtype: str = _choice(
        "parameter and feature dtype", ("float32", "float64"), doc="float64 for exactness studies."
    )
    num_workers: int = option(
        int, "DataLoader workers (processes)", default=0, low=0, high=MAX_WORKERS
    )
    threads: int | None = option(
        int,
        "torch threads (1 is fastest for small models on a busy machine)",
        default=None,
        low=1,
        high=MAX_THREADS,
        shown="torch's",
        doc="``torch.set_num_threads`` for the run, restored afterwards.",
    )
    position: str = _choice(
        "relative position of a layer: l/L or ||H_l-H_0||/||H_L-H_0||",
        POSITIONS,
        doc="See :func:`resnet_pfc.measure.measure`.",
    )
    # upper bounds: each grid point is a metric pass over the features (1e8 points hung)
    geodesic_points: int = option(
        int, "grid of the line prediction (pass-1 metrics)", default=101, low=2, high=10_000
    )
    geodesic_pass2_points: int = option(
        int, "grid of the line prediction (NCC accuracy, NC1)", default=11, low=2, high=1_000
    )
    epsilon: float = option(
        float, "effective-depth threshold of the report", default=0.01, low=0, high=1
    )
    progress: bool = option("no", "no progress bars", default=True)
    figures: bool = option("no", "skip figures and report.md", default=True)


# ------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------


def add_train_options(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add one option per :class:`TrainConfig` field to ``parser`` (flag ``--field-name``).

    Values are checked as they are parsed (bounds, choices, device and data set names), so a
    bad value is a usage error naming the option. Read them back with
    :func:`train_config_from_args`. Returns ``parser``.
    """
    return add_options(
        parser, TrainConfig, title="training options (resnet_pfc.config.TrainConfig)"
    )


def train_config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The :class:`TrainConfig` of options parsed by a parser built with
    :func:`add_train_options` (not yet resolved: see :func:`resolve_config`)."""
    return TrainConfig(**options_from_args(TrainConfig, args))


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


def resolve_config(config: TrainConfig) -> TrainConfig:
    """Fill the ``None`` fields from :data:`PRESETS` and validate every option.

    Raises
    ------
    InputError
        Any option out of range.
    """
    ds = canonical_name(config.dataset)
    pre = DATASET_SPECS[ds].preset
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
    check_fields(resolved)
    if not str(config.out):
        raise InputError("out must name a run directory")
    if not device_ok(config.device):
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


def extends_schedule(saved: dict[str, Any], now: dict[str, Any]) -> str | None:
    """Why resuming the run of config ``saved`` with ``now`` cannot extend it (``None``: it can).

    A run of ``E`` epochs may be extended to ``E' > E`` epochs when the lr of every epoch up to
    ``E`` is unchanged: the same ``lr``, ``lr_gamma`` (checked with the other options) and the
    same milestones ``<= E`` (a milestone ``m`` lowers the lr after epoch ``m``), so that the
    extended run equals, up to epoch ``E``, the run that is resumed. Milestones after ``E``
    are free.
    """
    old_e, new_e = saved.get("epochs"), now.get("epochs")
    if not isinstance(old_e, int) or not isinstance(new_e, int):
        return f"the checkpoint's epochs {old_e!r} cannot be compared with {new_e!r}"
    if new_e < old_e:
        return (
            f"epochs: {old_e} -> {new_e}: a run cannot be shortened (its schedule and last "
            "measurement depend on the end); resume with --epochs >= the old value or start a "
            "new --out"
        )
    old_ms = saved.get("milestones") or []
    new_ms = now.get("milestones") or []
    early_old = sorted(m for m in old_ms if isinstance(m, int) and m <= old_e)
    early_new = sorted(m for m in new_ms if m <= old_e)
    if early_old != early_new or len(early_old) != sum(1 for m in old_ms if m <= old_e):
        return (
            f"epochs {old_e} -> {new_e} would change the lr schedule of the epochs already "
            f"trained (milestones up to the old last epoch {old_e}: {early_old} -> "
            f"{early_new}); to extend the run pass --milestones "
            f"{' '.join(map(str, early_old)) or '(none)'} followed by any later than {old_e}"
        )
    return None


def check_resumable(saved: dict[str, Any], now: dict[str, Any], where: Any) -> None:
    """Refuse to resume the checkpoint ``where`` (config ``saved``) with the options ``now``
    when any option outside :data:`RESUME_FREE` differs, except that a run may be extended
    (``epochs`` larger, with the milestones of :func:`extends_schedule`; see
    :data:`EXTEND_RULE`).

    Raises
    ------
    CheckpointError
        The message lists every differing option, old and new value, and the rule.
    """
    names = {f.name for f in fields(TrainConfig)} - RESUME_FREE
    # a checkpoint written before an option existed ran with that option's default
    defaults = field_defaults()
    diff = [n for n in sorted(names) if saved.get(n, defaults.get(n)) != now.get(n)]
    if "epochs" in diff:
        why = extends_schedule(saved, now)
        if why is not None:
            raise CheckpointError(f"cannot resume {where}: {why}")
        diff = [n for n in diff if n not in ("epochs", "milestones")]
    if diff:
        detail = ", ".join(f"{n}: {saved.get(n)!r} -> {now.get(n)!r}" for n in diff)
        raise CheckpointError(
            f"cannot resume {where}: options differ from the checkpoint's ({detail}); resume with "
            "the original options or start a new --out"
        )


# ------------------------------------------------------------------------------------------
# the model of a config
# ------------------------------------------------------------------------------------------


def make_model(
    config: TrainConfig, input_shape: tuple[int, ...], num_classes: int
) -> MeasuredModel:
    """The model a (resolved) config asks for."""
    # torch loads here, not when the options are parsed (`pfc --help`)
    from .models import TABLE_I, build_depth_model, build_model, paper_model

    ds = DATASET_SPECS[canonical_name(config.dataset)].table_i
    if config.model == "auto":
        blocks = config.blocks
        rows = TABLE_I.get(ds, ()) if ds is not None else ()
        # no Table I row (a data set registered without one) or another depth than its rows
        if not rows or (blocks is not None and all(r.blocks != blocks for r in rows)):
            kind = rows[0].kind if rows else "fc"
            width = config.width or (rows[0].width if rows else 256)
            return build_model(
                kind,
                input_shape,
                num_classes,
                blocks=blocks or 4,
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
