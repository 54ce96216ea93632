r"""Train a ResNet with the paper's recipe and measure every block's collapse while it trains.

Recipe (PFC paper Sec. IV-A, MATH.md section 8; every item is a :class:`TrainConfig` field):
cross entropy, SGD with momentum 0.9 and weight decay 5e-4 (applied to every parameter, as in
Papyan et al.), global batch 128, 350 epochs, learning rate divided by 10 after epochs
``round(E/3)`` and ``round(2E/3)`` (117 and 233 for 350 epochs). The initial learning rates were
lost from the paper's text; this project uses 0.01 for the fully connected MNIST model and 0.05
for the conv models (*convention*; pass ``lr`` to change it). The embedded ``digits`` preset is
tuned for speed instead (FC width 256, 4 blocks, 60 epochs, lr 0.1, measured every 5 epochs):
it reaches 100% training accuracy within about 10 epochs; lr 0.3 diverges on it. ``mnist_5k``
(5000 real MNIST images, :mod:`resnet_pfc.data`) uses the MNIST preset and the MNIST model of
Table I (FC, 10 blocks, width 1000).

``loss="mse"`` replaces cross entropy by the squared error of MATH.md,
:math:`\frac{1}{N}\sum_i \tfrac12 \|z_i - e_{y_i}\|^2` (``z_i`` the logits, ``e_y`` one-hot),
the loss of Han et al. (2022) under which neural collapse is also the global optimum; the
demo uses it (see ``docs/demo_recipe.md``).

Every ``eval_every`` epochs (and at epoch 0, the initialisation, and at the last epoch) the
measured layers -- the input of the measured stage and the output of each block -- are measured on
the training set (and the test set when ``eval_test``) with :func:`resnet_pfc.measure.measure_run`:
two extra forward passes, all layers at once, ``O(K d)`` memory per layer, plus the geodesic
prediction between the first and last layer. The last layer gets NC3 and NC4 with the classifier
(exact for the conv models too, see :meth:`ConvResNet.measured_classifier`).

Run directory (all files written atomically)::

    config.json      every option after defaults are resolved, plus library versions
    metrics.csv      one row per (epoch, split, layer)
    geodesic.csv     one row per (epoch, split, t) of the line prediction
    checkpoints/last.pt  written after every epoch (the previous one kept as last.prev.pt)
    figures/         fig2_<split>.png, fig3_<split>.png (at the end, or `python -m resnet_pfc figures`)
    report.md        monotonicity across layers at the final epoch and the effective depth

Determinism: seeds for Python, NumPy and torch, ``torch.use_deterministic_algorithms`` during the
run, and a sample order that depends only on ``(seed, epoch)`` (see
:mod:`resnet_pfc.distributed`). Two runs with the same config on the same machine and thread
count give identical ``metrics.csv``; a run killed at any time and resumed with ``resume=True``
continues from the last checkpoint and ends with the same files as an uninterrupted run.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ufm.cli import check_output_file
from ufm.errors import CheckpointError, DivergenceError, InputError
from ufm.validate import check_int, check_scalar

from . import distributed as dist_mod
from .checkpoint import (
    atomic_write_text,
    checkpoint_exists,
    load_latest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .measure import Measurement, measure_run
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
    "RunResult",
    "train",
    "resolve_config",
    "make_model",
    "METRIC_COLUMNS",
    "GEODESIC_COLUMNS",
    "PRESETS",
    "MODEL_CHOICES",
    "read_csv",
]

#: Accepted values of ``TrainConfig.model``.
MODEL_CHOICES: tuple[str, ...] = ("auto", "fc", "conv", *DEPTH_FAMILIES)

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

_METRICS = (
    "pfc1",
    "pfc2",
    "pfc3",
    "ncc_accuracy",
    "nc1",
    "nc2_equinorm",
    "nc2_equiangular",
    "nc3",
    "nc4",
    "tr_sigma_w",
    "tr_sigma_b",
)
#: Columns of metrics.csv (one row per epoch, split, layer).
METRIC_COLUMNS = (
    "epoch",
    "split",
    "layer",
    "layer_index",
    "position",
    "distance",
    *_METRICS,
    "loss",
    "accuracy",
    "train_loss",
    "train_acc",
    "lr",
)
#: Columns of geodesic.csv (one row per epoch, split, t); ``layer`` names the layer at that t.
GEODESIC_COLUMNS = (
    "epoch",
    "split",
    "t",
    "layer",
    "pfc1",
    "pfc2",
    "pfc3",
    "ncc_accuracy",
    "nc1",
    "nc2_equinorm",
    "nc2_equiangular",
    "tr_sigma_w",
    "tr_sigma_b",
)

# Fields that may differ between a run and its resumption. ``out`` is free so that a run folder
# given by another spelling (relative/absolute, trailing slash) or moved elsewhere resumes: the
# checkpoint found in the folder is what identifies the run.
_RESUME_FREE = {
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


@dataclass(frozen=True)
class TrainConfig:
    """Every option of a training run (``None`` means: the data set's preset).

    Attributes
    ----------
    dataset : str
        One of :data:`resnet_pfc.data.DATASETS` (``"digits"`` is embedded and offline).
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
        a warning, when ``last.pt`` is unreadable). Every option except ``out``, ``resume``,
        ``device``, ``num_workers``, ``threads``, ``progress``, ``figures``, ``data_root`` and
        ``download`` must equal the checkpoint's; this is checked before any file is written.
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

    dataset: str = "digits"
    out: str = "runs/digits"
    model: str = "auto"
    blocks: int | None = None
    width: int | None = None
    variant: int = 0
    heads: int = 4
    patch: int | None = None
    epochs: int | None = None
    lr: float | None = None
    loss: str = "ce"
    momentum: float = 0.9
    weight_decay: float = 5e-4
    batch_size: int = 128
    milestones: tuple[int, ...] | None = None
    lr_gamma: float = 0.1
    eval_every: int | None = None
    eval_test: bool = False
    eval_batch_size: int = 512
    per_class: int | None = None
    data_root: str | None = None
    download: bool = False
    seed: int = 0
    resume: bool = False
    device: str = "cpu"
    dtype: str = "float32"
    num_workers: int = 0
    threads: int | None = None
    position: str = "index"
    geodesic_points: int = 101
    geodesic_pass2_points: int = 11
    epsilon: float = 0.01
    progress: bool = True
    figures: bool = True


@dataclass(frozen=True)
class RunResult:
    """What :func:`train` returns.

    Attributes
    ----------
    out_dir : Path
    config : TrainConfig
        The resolved config.
    metrics : list of dict
        The rows of metrics.csv.
    geodesic : list of dict
        The rows of geodesic.csv.
    epochs_run : int
        Epochs trained by this call (0 if the checkpoint was already complete).
    train_accuracy : float or None
        Training-set accuracy (eval mode) at the last measurement.
    elapsed_s : float
        Wall time of the whole run, summed over resumptions.
    """

    out_dir: Path
    config: TrainConfig
    metrics: list[dict[str, Any]] = field(default_factory=list)
    geodesic: list[dict[str, Any]] = field(default_factory=list)
    epochs_run: int = 0
    train_accuracy: float | None = None
    elapsed_s: float = 0.0


def _canonical(name: str) -> str:
    return str(name).lower().replace("-", "_")


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
    epochs = pre["epochs"] if config.epochs is None else config.epochs
    check_int(epochs, "epochs", low=1)
    lr = pre["lr"] if config.lr is None else config.lr
    check_scalar(lr, "lr", low=0.0, low_inclusive=False)
    eval_every = pre["eval_every"] if config.eval_every is None else config.eval_every
    check_int(eval_every, "eval_every", low=1)
    milestones = config.milestones
    if milestones is None:
        milestones = tuple(sorted({max(1, round(epochs / 3)), max(1, round(2 * epochs / 3))}))
    if isinstance(milestones, str | bytes) or not hasattr(milestones, "__iter__"):
        raise InputError(f"milestones must be a sequence of epochs, got {milestones!r}")
    milestones = tuple(check_int(m, "milestones", low=1) for m in milestones)
    if config.loss not in ("ce", "mse"):
        raise InputError(f"loss must be 'ce' or 'mse', got {config.loss!r}")
    if config.model not in MODEL_CHOICES:
        raise InputError(f"model must be one of {MODEL_CHOICES}, got {config.model!r}")
    check_scalar(config.momentum, "momentum", low=0.0, high=1.0)
    check_scalar(config.weight_decay, "weight_decay", low=0.0)
    check_scalar(config.lr_gamma, "lr_gamma", low=0.0, low_inclusive=False)
    check_int(config.batch_size, "batch_size", low=1)
    check_int(config.eval_batch_size, "eval_batch_size", low=1)
    check_int(config.seed, "seed", low=0)
    check_int(config.variant, "variant", low=0)
    check_int(config.num_workers, "num_workers", low=0)
    check_int(config.geodesic_points, "geodesic_points", low=2)
    check_int(config.geodesic_pass2_points, "geodesic_pass2_points", low=2)
    check_scalar(config.epsilon, "epsilon", low=0.0, high=1.0)
    check_int(config.heads, "heads", low=1)
    for name in ("blocks", "width", "per_class", "threads", "patch"):
        v = getattr(config, name)
        if v is not None:
            check_int(v, name, low=1)
    if config.dtype not in ("float32", "float64"):
        raise InputError(f"dtype must be 'float32' or 'float64', got {config.dtype!r}")
    if config.position not in ("index", "distance"):
        raise InputError(f"position must be 'index' or 'distance', got {config.position!r}")
    if not str(config.out):
        raise InputError("out must name a run directory")
    _check_device(config.device)
    # SGD multiplies by lr and weight_decay in the parameter dtype; beyond its range torch fails
    # with an overflow on the first step, so refuse such values before any work.
    big = float(torch.finfo(torch.float64 if config.dtype == "float64" else torch.float32).max)
    for name, v in (("lr", float(lr)), ("weight_decay", float(config.weight_decay))):
        growth = len(milestones) * math.log(max(1.0, float(config.lr_gamma)))
        if v > 0 and math.log(v) + growth > math.log(big):
            raise InputError(
                f"{name}={v:g} overflows {config.dtype} in the SGD step (lr_gamma="
                f"{config.lr_gamma:g} over {len(milestones)} milestone(s)); use a value below "
                f"{big:.3g}, in practice below 1"
            )
    return replace(
        config,
        dataset=ds,
        epochs=epochs,
        lr=float(lr),
        eval_every=eval_every,
        milestones=milestones,
        out=str(config.out),
    )


def _check_device(device: Any) -> None:
    """``cpu``, ``cuda`` or ``cuda:N``; availability is checked when the run starts."""
    ok = isinstance(device, str) and (
        device in ("cpu", "cuda") or (device.startswith("cuda:") and device[5:].isdigit())
    )
    if not ok:
        raise InputError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")


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


def _versions() -> dict[str, str]:
    import ufm

    out = {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "pfc_toolkit": getattr(ufm, "__version__", "?"),
    }
    try:
        import torchvision

        out["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover - optional
        pass
    return out


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return str(v)


def _csv_text(rows: list[dict[str, Any]], columns: tuple[str, ...]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(columns)
    for r in rows:
        w.writerow([_fmt(r.get(c)) for c in columns])
    return buf.getvalue()


def read_csv(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Read metrics.csv / geodesic.csv back: numbers as int or float, empty cells as None."""

    def conv(s: str) -> Any:
        if s == "":
            return None
        try:
            return int(s)
        except ValueError:
            pass
        try:
            return float(s)
        except ValueError:
            return s

    rows = []
    try:
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                if None in row or None in row.values():
                    # more cells than the header (key None) or fewer (value None)
                    raise InputError(
                        f"{str(path)!r} is malformed: line {reader.line_num} has "
                        f"{len(row) - (None in row) + len(row.get(None) or [])} cells for "
                        f"{len(reader.fieldnames or [])} columns; the file was damaged or "
                        "edited: rerun the training (or restore the file)"
                    )
                rows.append(
                    {k: (v if k in ("split", "layer") else conv(v)) for k, v in row.items()}
                )
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{str(path)!r} is not a readable CSV file ({exc})") from exc
    return rows


def _rows_from(
    m: Measurement, epoch: int, split: str, extra: dict[str, Any]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = []
    for i, (lab, met) in enumerate(m.layers.items()):
        row = {
            "epoch": epoch,
            "split": split,
            "layer": lab,
            "layer_index": i,
            "position": m.positions[lab],
            "distance": m.distances[lab],
        }
        row.update({k: met.get(k) for k in _METRICS})
        row.update(loss=m.loss, accuracy=m.accuracy, **extra)
        rows.append(row)
    geo = []
    if m.geodesic is not None:
        at = {}
        for lab, pos in m.positions.items():
            at.setdefault(pos, lab)
        for j, t in enumerate(m.geodesic["t"]):
            row = {"epoch": epoch, "split": split, "t": float(t), "layer": at.get(float(t), "")}
            for k in GEODESIC_COLUMNS[4:]:
                if k in m.geodesic:
                    v = float(m.geodesic[k][j])
                    row[k] = None if math.isnan(v) else v
            geo.append(row)
    return rows, geo


def _set_seeds(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - seeds code that uses the global generator
    torch.manual_seed(seed)


def train(config: TrainConfig | None = None, **overrides: Any) -> RunResult:
    """Train, measure and write a run directory (see the module docstring).

    Parameters
    ----------
    config : TrainConfig, optional
        Options; keyword ``overrides`` replace fields (``train(dataset="digits", epochs=5,
        out="runs/x")``).

    Returns
    -------
    RunResult

    Raises
    ------
    InputError
        Bad options.
    CheckpointError
        ``out`` already holds a checkpoint and ``resume`` is false, or the checkpoint was made
        with other options.
    DivergenceError
        The loss became non-finite; the message names the epoch and step, and
        ``out/checkpoints/last.pt`` still holds the last good epoch.
    BackendError
        CUDA asked for but unavailable.

    Notes
    -----
    At every measured epoch and layer ``l`` the metrics of MATH.md section 3, e.g.

    .. math:: \\mathrm{PFC1}(H_l) = \\operatorname{tr}\\Sigma_W(H_l)/\\operatorname{tr}\\Sigma_B(H_l),

    and along the line :math:`H(t) = (1-t) H_0 + t H_L` (the geodesic prediction).
    """
    config = replace(config or TrainConfig(), **overrides)
    cfg = resolve_config(config)
    ctx = dist_mod.setup(cfg.device)
    prev_det = torch.are_deterministic_algorithms_enabled()
    prev_threads = torch.get_num_threads()
    torch.use_deterministic_algorithms(True, warn_only=True)
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    try:
        return _train(cfg, ctx)
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
        ctx.cleanup()


def _train(cfg: TrainConfig, ctx: dist_mod.DistContext) -> RunResult:
    from . import data as data_mod

    out = Path(cfg.out)
    ckpt_path = out / "checkpoints" / "last.pt"
    world = ctx.world_size
    if cfg.batch_size % world:
        raise InputError(
            f"batch_size={cfg.batch_size} must be divisible by the number of processes {world}"
        )
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {str(out)!r} is a file; choose a folder for the run")
    # A folder that cannot be created or written fails now, not after loading the data.
    check_output_file(out / "config.json", "--out")
    if checkpoint_exists(ckpt_path) and not cfg.resume:
        raise CheckpointError(
            f"{out} already holds a run ({ckpt_path}); pass --resume to continue it or choose "
            "another --out"
        )
    config_dict = asdict(cfg)
    config_dict["milestones"] = list(cfg.milestones)
    # Everything about the checkpoint is settled before any file is written or data is read: a
    # refused resume leaves the run folder exactly as it was.
    state: dict[str, Any] | None = None
    if cfg.resume and checkpoint_exists(ckpt_path):
        state, used = load_latest_checkpoint(ckpt_path, required=_CHECKPOINT_KEYS)
        _check_resumable(state.get("config", {}), config_dict, used)
    dtype = torch.float64 if cfg.dtype == "float64" else torch.float32
    _set_seeds(cfg.seed)

    def load(split: str) -> Any:
        return data_mod.load_dataset(
            cfg.dataset,
            split=split,
            data_root=cfg.data_root,
            download=cfg.download,
            per_class=cfg.per_class,
            seed=cfg.seed,
        )

    if cfg.download and ctx.is_main:
        load("train")
    ctx.barrier()
    train_set = load("train")
    test_set = load("test") if cfg.eval_test else None
    K = int(train_set.num_classes)
    model = make_model(cfg, tuple(train_set.input_shape), K).to(device=ctx.device, dtype=dtype)
    net: nn.Module = model
    if ctx.distributed:
        if ctx.device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
        )
        model = net.module
    opt = torch.optim.SGD(
        net.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
    )
    sched = torch.optim.lr_scheduler.MultiStepLR(
        opt, milestones=list(cfg.milestones), gamma=cfg.lr_gamma
    )
    sampler = DistributedSampler(
        train_set, num_replicas=world, rank=ctx.rank, shuffle=True, seed=cfg.seed, drop_last=False
    )
    gen = torch.Generator().manual_seed(cfg.seed)
    train_loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size // world,
        sampler=sampler,
        num_workers=cfg.num_workers,
        generator=gen,
    )

    def shard_loader(ds: Any) -> DataLoader:
        idx = list(range(ctx.rank, len(ds), world))
        return DataLoader(
            Subset(ds, idx) if world > 1 else ds,
            batch_size=cfg.eval_batch_size,
            shuffle=False,
            num_workers=cfg.num_workers,
        )

    eval_loaders = {"train": shard_loader(train_set)}
    if test_set is not None:
        eval_loaders["test"] = shard_loader(test_set)
    layers = model.measured_layers()
    last = list(layers)[-1]

    if ctx.is_main:
        doc = {
            "config": config_dict,
            "versions": _versions(),
            "world_size": world,
            "num_classes": K,
            "input_shape": list(train_set.input_shape),
            "train_samples": len(train_set),
            "feature_dim": model.feature_dim,
            "model_kind": type(model).__name__,
            "blocks": len(model.blocks),
            "layers": layers,
            "model": repr(model),
        }
        atomic_write_text(out / "config.json", json.dumps(doc, indent=2, default=str) + "\n")

    rows: list[dict[str, Any]] = []
    geo_rows: list[dict[str, Any]] = []
    elapsed = 0.0
    start_epoch = 1
    train_acc_last: float | None = None
    if state is not None:
        try:
            model.load_state_dict(state["model"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            set_rng_state(state["rng"])
            rows, geo_rows = list(state["rows"]), list(state["geodesic_rows"])
            elapsed = float(state["elapsed_s"])
            start_epoch = int(state["epoch"]) + 1
        except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as exc:
            raise CheckpointError(
                f"the checkpoint in {ckpt_path.parent} does not fit this run ({type(exc).__name__}"
                f": {str(exc)[:300]}); delete it to start over or choose another --out"
            ) from exc
        train_acc_last = state.get("train_accuracy")

    def measure_all(epoch: int, extra: dict[str, Any]) -> float | None:
        W, b = model.measured_classifier()
        acc_out = None
        for split, loader in eval_loaders.items():
            m = measure_run(
                model,
                loader,
                layers,
                K,
                classifier={last: (W, b)},
                line=True,
                geodesic_grid=cfg.geodesic_points,
                geodesic_pass2_grid=cfg.geodesic_pass2_points,
                position=cfg.position,
                device=ctx.device,
                dtype=dtype,
                group=ctx.group,
                strict=False,
            )
            r, g = _rows_from(m, epoch, split, extra)
            rows.extend(r)
            geo_rows.extend(g)
            if split == "train":
                acc_out = m.accuracy
        return acc_out

    def write_outputs(epoch: int) -> None:
        if ctx.is_main:
            save_checkpoint(
                ckpt_path,
                {
                    "epoch": epoch,
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "rng": rng_state(),
                    "config": config_dict,
                    "rows": rows,
                    "geodesic_rows": geo_rows,
                    "elapsed_s": elapsed,
                    "train_accuracy": train_acc_last,
                },
            )
            atomic_write_text(out / "metrics.csv", _csv_text(rows, METRIC_COLUMNS))
            atomic_write_text(out / "geodesic.csv", _csv_text(geo_rows, GEODESIC_COLUMNS))
        ctx.barrier()

    t0 = time.perf_counter()
    if start_epoch == 1 and not rows:
        train_acc_last = measure_all(0, {"lr": opt.param_groups[0]["lr"]})
        elapsed += time.perf_counter() - t0
        write_outputs(0)

    bar = None
    if cfg.progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.epochs,
            initial=start_epoch - 1,
            desc=f"train {cfg.dataset}",
            unit="epoch",
            dynamic_ncols=True,
        )
    epochs_run = 0
    try:
        for epoch in range(start_epoch, cfg.epochs + 1):
            t_ep = time.perf_counter()
            sampler.set_epoch(epoch)
            lr_now = opt.param_groups[0]["lr"]
            net.train()
            tot = torch.zeros(3, dtype=torch.float64, device=ctx.device)
            for step, (x, y) in enumerate(train_loader):
                x = x.to(device=ctx.device, dtype=dtype)
                y = y.to(ctx.device)
                logits = net(x)
                if cfg.loss == "mse":
                    target = F.one_hot(y, K).to(logits.dtype)
                    loss = 0.5 * (logits - target).pow(2).sum(1).mean()
                else:
                    loss = F.cross_entropy(logits, y)
                stats = torch.stack(
                    [
                        loss.detach().to(torch.float64) * y.shape[0],
                        (logits.detach().argmax(1) == y).sum().to(torch.float64),
                        torch.tensor(float(y.shape[0]), dtype=torch.float64, device=ctx.device),
                    ]
                )
                if ctx.distributed:
                    torch.distributed.all_reduce(stats)
                if not bool(torch.isfinite(stats).all()):
                    raise DivergenceError(
                        f"training diverged: non-finite loss at epoch {epoch}, step {step} "
                        f"(lr={lr_now:g}); the last good checkpoint is {ckpt_path} (epoch "
                        f"{epoch - 1}); lower --lr and start again with a new --out"
                    )
                tot += stats
                opt.zero_grad(set_to_none=True)
                loss.backward()
                try:
                    opt.step()
                except RuntimeError as exc:
                    if "overflow" not in str(exc):
                        raise
                    # torch refuses an lr / weight decay that overflows the parameter dtype.
                    raise DivergenceError(
                        f"training diverged: the SGD step overflows {cfg.dtype} at epoch {epoch},"
                        f" step {step} (lr={lr_now:g}, weight_decay={cfg.weight_decay:g}); the "
                        f"last good checkpoint is {ckpt_path} (epoch {epoch - 1}); lower --lr"
                    ) from exc
            sched.step()
            if not all(bool(torch.isfinite(p).all()) for p in model.parameters()):
                raise DivergenceError(
                    f"training diverged: non-finite parameters after epoch {epoch} "
                    f"(lr={lr_now:g}); the last good checkpoint is {ckpt_path} (epoch "
                    f"{epoch - 1}); lower --lr"
                )
            train_loss, train_acc = float(tot[0] / tot[2]), float(tot[1] / tot[2])
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                extra = {"train_loss": train_loss, "train_acc": train_acc, "lr": lr_now}
                train_acc_last = measure_all(epoch, extra)
            elapsed += time.perf_counter() - t_ep
            write_outputs(epoch)
            epochs_run += 1
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss:.3g}", acc=f"{train_acc:.3f}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    if cfg.figures and ctx.is_main:
        from .figures import draw_figures
        from .report import write_report

        draw_figures(out)
        write_report(out)
    ctx.barrier()
    return RunResult(
        out_dir=out,
        config=cfg,
        metrics=list(rows),
        geodesic=list(geo_rows),
        epochs_run=epochs_run,
        train_accuracy=train_acc_last,
        elapsed_s=elapsed,
    )


_CHECKPOINT_KEYS = (
    "epoch",
    "model",
    "optimizer",
    "scheduler",
    "rng",
    "config",
    "rows",
    "geodesic_rows",
    "elapsed_s",
)


def _check_resumable(saved: dict[str, Any], now: dict[str, Any], path: Path) -> None:
    names = {f.name for f in fields(TrainConfig)} - _RESUME_FREE
    # a checkpoint written before an option existed ran with that option's default
    defaults = {f.name: f.default for f in fields(TrainConfig)}
    diff = [n for n in sorted(names) if saved.get(n, defaults.get(n)) != now.get(n)]
    if diff:
        detail = ", ".join(f"{n}: {saved.get(n)!r} -> {now.get(n)!r}" for n in diff)
        raise CheckpointError(
            f"cannot resume {path}: options differ from the checkpoint's ({detail}); resume with "
            "the original options or start a new --out"
        )
