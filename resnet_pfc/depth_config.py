"""The depth study's options: :class:`DepthConfig`, its presets (:data:`DEPTH_PRESETS`), the
study's result record and the metrics it fits; :mod:`resnet_pfc.depth` runs the study and
:mod:`resnet_pfc.depth_report` writes its report."""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from ufm.errors import InputError
from ufm.options import (
    check_fields,
    documented,
    nested,
    option,
    option_from,
    resolve_nested,
    with_options,
)
from ufm.registry import NC2, PFC, SEPARATION
from ufm.threads import MAX_THREADS
from ufm.validate import SEED_MAX

from .config import MAX_BLOCKS, MAX_EPOCHS, TrainConfig, device_ok
from .datasets import canonical_name
from .families import DEPTH_FAMILIES
from .runs import MEASURED_METRICS

__all__ = [
    "DepthConfig",
    "DepthResult",
    "DEPTH_PRESETS",
    "depth_config",
    "INITS",
    "PARTS",
    "TRAIN_OPTIONS",
    "train_defaults",
]

#: Last-layer metrics whose log-log slope against depth is fitted.
SLOPE_METRICS: tuple[str, ...] = ("nc1", *SEPARATION, *NC2, "nc3", *PFC)
#: The slopes the report, the figures and ``pfc depth`` show (NC1 and the separation metrics,
#: NC2, NC3 and PFC1; PFC2-3 are fitted and in depth_slopes.csv).
SHOWN_SLOPES: tuple[str, ...] = ("nc1", *SEPARATION, *NC2, "nc3", "pfc1")
_METRICS = MEASURED_METRICS

_CELLS = "Every (family, depth, seed) is a cell."
_DROPS = "Constant during the main phase, divided by 10 for the anneal epochs."
_STOP = (
    "Each cell trains at the constant lr for at least the minimum epochs, then until the "
    "stationarity criterion holds (relative change of the epoch objective and of "
    "``||theta||^2`` between the means of the last ``window`` epochs and the ``window`` before "
    "below ``tol``) or the cap, then ``anneal_epochs`` at lr/10 "
    "(:mod:`resnet_pfc.depth_train`)."
)
#: Ways of initialising the cells (``DepthConfig.init``).
INITS: tuple[str, ...] = ("independent", "warm", "both")

#: Named settings (``DepthConfig`` fields). ``cpu``: measured on this project's 2-core machine
#: with one thread (load average about 3), one digits epoch (1347 samples, 11 steps of 128)
#: costs about 0.035 s for ``ln_resnet2`` at depth 8 and 0.42 s for the transformer at depth 8
#: (4 tokens of 4x4 patches, width 64). The transformers dominate: 3 variants x 3 seeds x
#: depths (2, 4, 8) at the 150 + 20 epoch cap, plus the warm chains of two of them (depths 4 and
#: 8), about 35 minutes of one core at that speed, so 18-20 minutes with ``jobs=2`` on two idle
#: cores (docs/depth.md has the wall time of the committed run, under load).
DEPTH_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "depths": (2, 4, 8),
        "seeds": (0, 1, 2),
        "epochs": 100,
        "max_epochs": 300,
        "transformer_epochs": 60,
        "transformer_max_epochs": 150,
        "window": 20,
        "tol": 0.002,
        "anneal_epochs": 20,
        "transformer_lr": 0.05,
        "jobs": 2,
        "init": "both",
        "train": {
            "dataset": "digits",
            "width": 64,
            "lr": 0.05,
            "weight_decay": 0.005,
            "patch": 4,
            "device": "cpu",
        },
    },
    "paper": {
        "depths": (2, 3, 5, 8, 13, 21, 34),
        "seeds": (0, 1, 2, 3, 4),
        "epochs": 350,
        "max_epochs": 1000,
        "transformer_epochs": 350,
        "transformer_max_epochs": 1000,
        "window": 50,
        "tol": 0.001,
        "anneal_epochs": 50,
        "transformer_lr": 0.05,
        "init": "both",
        "train": {
            "dataset": "mnist",
            "width": 64,
            "lr": 0.05,
            "weight_decay": 0.005,
            "patch": 7,
            "device": "cuda",
        },
    },
    "tiny": {
        "families": ("ln_resnet1", "transformer"),
        "depths": (1, 2, 4),
        "seeds": (0, 1),
        "epochs": 4,
        "max_epochs": 6,
        "transformer_epochs": 3,
        "transformer_max_epochs": 4,
        "window": 2,
        "tol": 0.01,
        "anneal_epochs": 1,
        "transformer_lr": 0.05,
        "bootstrap": 200,
        "train": {
            "dataset": "digits",
            "width": 16,
            "lr": 0.05,
            "weight_decay": 0.005,
            "per_class": 20,
            "patch": 4,
            "device": "cpu",
        },
    },
}


#: The options of :class:`resnet_pfc.config.TrainConfig` that set every cell's training (the
#: ``train`` field of :class:`DepthConfig`), with what they mean here (:func:`ufm.options.nested`):
#: ``pfc depth`` sets those not marked ``command_line=False``. Each cell's model, depth, seed and
#: folder are set by the study; the other options of ``TrainConfig`` (schedule, measurement,
#: dtype...) are not used by the study's training loop (:mod:`resnet_pfc.depth_train`).
TRAIN_OPTIONS: dict[str, dict[str, Any]] = {
    "dataset": {},
    "width": {"help": "residual-stream / token width d", "shown": None},
    "lr": {"help": "SGD learning rate of the ResNets", "doc": _DROPS, "shown": None},
    "weight_decay": {
        "positive": True,
        "doc": "On every parameter; also the LN-UFM's ``lam_w = lam_b`` (so > 0).",
    },
    "loss": {},
    "momentum": {"command_line": False},
    "batch_size": {"command_line": False},
    "per_class": {"shown": "the whole training split"},
    "heads": {"command_line": False},
    "patch": {"command_line": False},
    "device": {"help": "training device: cpu, cuda or cuda:N"},
    "threads": {"help": "torch threads per cell", "shown": None},
    "data_root": {},
    "download": {},
}
#: The study's training defaults where they differ from ``TrainConfig``'s (a preset's
#: ``"train"`` entry replaces some of them).
TRAIN_DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "width": 64,
    "lr": 0.05,
    "weight_decay": 5e-3,
    "patch": 4,
    "threads": 1,
}


def train_defaults(preset: str = "custom") -> TrainConfig:
    """The training options of every cell of ``preset`` (:data:`DEPTH_PRESETS`'s ``"train"``
    entry over :data:`TRAIN_DEFAULTS`; ``"custom"``: the defaults).

    Raises
    ------
    InputError
        ``preset`` is neither ``"custom"`` nor a key of :data:`DEPTH_PRESETS`.
    """
    if preset != "custom" and preset not in DEPTH_PRESETS:
        raise InputError(
            f"preset must be 'custom' or one of {sorted(DEPTH_PRESETS)}, got {preset!r}"
        )
    return TrainConfig(**{**TRAIN_DEFAULTS, **DEPTH_PRESETS.get(preset, {}).get("train", {})})


def _count(help: str, default: int | None, **meta: Any) -> Any:
    """An integer option ``>= 1``."""
    return option(int, help, default=default, low=1, **meta)


@documented
@dataclass(frozen=True)
class DepthConfig:
    """Every option of a depth study (``pfc depth`` sets those declared for the command line).

    Each field carries its flag, bounds and help (:func:`ufm.options.option`): the
    command line, the checks of :func:`depth_config` and the list below come from them.
    """

    out: str = option(str, "output folder", default="runs/depth")
    train: TrainConfig = nested(
        TrainConfig,
        "the training options of every cell (model, depth, seed and folder are set per cell)",
        options=TRAIN_OPTIONS,
        default_factory=lambda: TrainConfig(**TRAIN_DEFAULTS),
        doc="A mapping of some options, e.g. ``{'lr': 0.1}``, replaces those of the preset's "
        "(:func:`depth_config`). The options of :class:`resnet_pfc.config.TrainConfig` not "
        "listed in :data:`TRAIN_OPTIONS` are not used by the study and must keep their "
        "defaults.",
    )
    families: tuple[str, ...] = option(
        str, "model families", default=DEPTH_FAMILIES, choices=DEPTH_FAMILIES, nargs="+"
    )
    depths: tuple[int, ...] = _count(
        "blocks per network", (2, 3, 5, 8, 13, 21, 34), nargs="+", doc=_CELLS, high=MAX_BLOCKS
    )
    seeds: tuple[int, ...] = option(
        int, "training seeds", default=(0, 1, 2), low=0, high=SEED_MAX, nargs="+", doc=_CELLS
    )
    epochs: int = _count(
        "minimum epochs of the ResNets (constant lr)", 100, doc=_STOP, high=MAX_EPOCHS
    )
    transformer_epochs: int = _count(
        "minimum epochs of the transformers", 60, doc=_STOP, high=MAX_EPOCHS
    )
    max_epochs: int = _count(
        "cap on the ResNets' epochs at the constant lr", 300, doc=_STOP, high=MAX_EPOCHS
    )
    transformer_max_epochs: int = _count(
        "cap on the transformers' epochs", 200, doc=_STOP, high=MAX_EPOCHS
    )
    window: int = _count("stationarity window N (epochs)", 20, doc=_STOP, high=MAX_EPOCHS)
    tol: float = option(
        float,
        "stationarity tolerance on the relative changes",
        default=1e-3,
        low=0,
        positive=True,
        doc=_STOP,
    )
    anneal_epochs: int = option(
        int,
        "epochs at lr/10 after the constant-lr phase",
        default=20,
        low=0,
        high=MAX_EPOCHS,
        doc=_STOP,
    )
    transformer_lr: float = option_from(
        TrainConfig, "lr", default=0.05, help="SGD learning rate of the transformers",
        doc=_DROPS, shown=None,
    )  # fmt: skip
    init: str = option(
        str,
        "independent training, the warm start, or both",
        default="independent",
        choices=INITS,
        doc="``warm``: depth ``L`` starts from the trained next-shallower depth of the same "
        "family and seed plus identity blocks (:func:`resnet_pfc.depth_train.warm_start`; the "
        "shallowest depth is trained independently); ``both`` trains both chains and compares "
        "them. Families without an identity block (``transformer_post``) are trained "
        "independently only.",
    )
    jobs: int = _count("cells trained in parallel, one process each", 1, high=MAX_THREADS)
    bootstrap: int = option(
        int, "bootstrap resamples of each slope", default=2000, low=10, high=1_000_000
    )
    seed: int = option(
        int, "seed of the bootstrap and of the LN-UFM solve", default=0, low=0, high=SEED_MAX
    )
    progress: bool = option_from(TrainConfig, "progress", default=True)
    preset: str = option(
        str,
        "the preset of DEPTH_PRESETS the options started from",
        default="custom",
        command_line=False,
    )


@dataclass(frozen=True)
class DepthResult:
    """What :func:`depth_study` returns.

    Attributes
    ----------
    out_dir : Path
    cells : list of dict
        One row per finished cell (the rows of ``depth_cells.csv``).
    slopes : list of dict
        The rows of ``depth_slopes.csv``.
    missing : list of tuple
        ``(family, depth, seed)`` of the cells not finished (empty after a complete run).
    report : str
        The text of ``report.md``.
    """

    out_dir: Path
    cells: list[dict[str, Any]] = field(default_factory=list)
    slopes: list[dict[str, Any]] = field(default_factory=list)
    missing: list[tuple[str, int, int]] = field(default_factory=list)
    report: str = ""


def depth_config(preset: str = "cpu", **overrides: Any) -> DepthConfig:
    """A :class:`DepthConfig` from a preset of :data:`DEPTH_PRESETS` plus overrides.

    ``None`` overrides are ignored (the preset's value stays); ``train`` may be a mapping of
    some training options (``train={"lr": 0.1}``), which replaces those of the preset's.

    Raises
    ------
    InputError
        Unknown preset or field, or a value out of its bounds.
    """
    if preset not in DEPTH_PRESETS:
        raise InputError(f"preset must be one of {sorted(DEPTH_PRESETS)}, got {preset!r}")
    own = {k: v for k, v in DEPTH_PRESETS[preset].items() if k != "train"}
    cfg = DepthConfig(preset=preset, train=train_defaults(preset), **own)
    return validate_depth_config(
        with_options(cfg, {k: v for k, v in overrides.items() if v is not None})
    )


def validate_depth_config(cfg: DepthConfig) -> DepthConfig:
    """Check every field of ``cfg`` (bounds, choices, families, depths, the training options);
    return it with ``train`` a :class:`resnet_pfc.config.TrainConfig`."""
    fams = tuple(cfg.families)
    if not fams or any(f not in DEPTH_FAMILIES for f in fams):
        raise InputError(f"families must be a non-empty subset of {DEPTH_FAMILIES}, got {fams}")
    depths = tuple(sorted({int(d) for d in cfg.depths}))
    seeds = tuple(sorted({int(s) for s in cfg.seeds}))
    if not depths or depths[0] < 1:
        raise InputError(f"depths must be positive integers, got {cfg.depths}")
    if not seeds or seeds[0] < 0:
        raise InputError(f"seeds must be non-negative integers, got {cfg.seeds}")
    train = resolve_nested(cfg.train, train_defaults(cfg.preset), name="train")
    train = replace(train, dataset=canonical_name(train.dataset))
    cfg = replace(cfg, train=train)
    # every bounded field against its option's bounds, the training options included
    check_fields(cfg)
    if not device_ok(train.device):
        raise InputError(f"train.device must be 'cpu', 'cuda' or 'cuda:N', got {train.device!r}")
    unused = [
        f.name
        for f in fields(TrainConfig)
        if f.name not in TRAIN_OPTIONS and getattr(train, f.name) != f.default
    ]
    if unused:
        raise InputError(
            f"train.{unused[0]}={getattr(train, unused[0])!r} is not used by the depth study (it "
            "sets each cell's model, depth, seed and folder, and trains with its own schedule: "
            f"resnet_pfc.depth_train); leave {', '.join('train.' + n for n in unused)} at "
            f"TrainConfig's default; the study's training options are {sorted(TRAIN_OPTIONS)}"
        )
    for lo, hi in (("epochs", "max_epochs"), ("transformer_epochs", "transformer_max_epochs")):
        if getattr(cfg, hi) < getattr(cfg, lo):
            raise InputError(
                f"{hi}={getattr(cfg, hi)} must be >= {lo}={getattr(cfg, lo)} (the cap on the "
                "epochs cannot be below the minimum); raise it"
            )
    if not str(cfg.out):
        raise InputError("out must name a folder")
    return replace(cfg, families=fams, depths=depths, seeds=seeds, out=str(cfg.out))


#: Parts of the weight-decay penalty reported per cell (:data:`resnet_pfc.depth_train.PARTS`).
PARTS = ("classifier", "blocks", "layernorm", "embedding")

#: A cell is "not at its optimum" when its full objective exceeds the lowest full objective of
#: a shallower cell of its family, seed and chain by more than this relative tolerance (float32
#: round-off of the forward pass; an identity block reproduces the shallower objective to ~1e-7).
OPTIMUM_RTOL = 1e-5


def is_number(v: Any) -> bool:
    """Whether ``v`` is a real number (Python or numpy, not a bool): a CSV cell to format."""
    return isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool)
