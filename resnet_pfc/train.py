r"""Train a ResNet with the paper's recipe and measure every block's collapse while it trains.

Recipe (PFC paper Sec. IV-A, MATH.md section 8; every item is a
:class:`resnet_pfc.config.TrainConfig` field): cross entropy, SGD with momentum 0.9 and weight
decay 5e-4 (applied to every parameter, as in Papyan et al.), global batch 128, 350 epochs,
learning rate divided by 10 after epochs ``round(E/3)`` and ``round(2E/3)`` (117 and 233 for 350
epochs). The initial learning rates were lost from the paper's text; this project uses 0.01 for
the fully connected MNIST model and 0.05 for the conv models (*convention*; pass ``lr`` to change
it). The embedded ``digits`` preset is tuned for speed instead (FC width 256, 4 blocks, 60
epochs, lr 0.1, measured every 5 epochs): it reaches 100% training accuracy within about 10
epochs; lr 0.3 diverges on it. ``mnist_5k`` (5000 real MNIST images, :mod:`resnet_pfc.data`)
uses the MNIST preset and the MNIST model of Table I (FC, 10 blocks, width 1000).

``loss="mse"`` replaces cross entropy by the squared error of MATH.md,
:math:`\frac{1}{N}\sum_i \tfrac12 \|z_i - e_{y_i}\|^2` (``z_i`` the logits, ``e_y`` one-hot),
the loss of Han et al. (2022) under which neural collapse is also the global optimum; the
demo uses it (see ``docs/demo_recipe.md``).

Every ``eval_every`` epochs (and at epoch 0, the initialisation, and at the last epoch) the
measured layers -- the input of the measured stage and the output of each block -- are measured on
the training set (and the test set when ``eval_test``) with :func:`resnet_pfc.measure.measure_model`:
two extra forward passes, all layers at once, ``O(K d)`` memory per layer, plus the geodesic
prediction between the first and last layer. The last layer gets NC3 and NC4 with the classifier
(exact for the conv models too, see :meth:`ConvResNet.measured_classifier`).

The run directory and its files are described in :mod:`resnet_pfc.runs`.

Determinism: seeds for Python, NumPy and torch, ``torch.use_deterministic_algorithms`` during the
run, and a sample order that depends only on ``(seed, epoch)`` (see
:mod:`resnet_pfc.distributed`). Two runs with the same config on the same machine and thread
count give identical ``metrics.csv``; a run killed at any time and resumed with ``resume=True``
continues from the last checkpoint and ends with the same files as an uninterrupted run.

Layout: :func:`train` sets up the process (:func:`_setup`: checkpoint, data, model, optimiser),
then alternates :func:`_train_epoch` and :func:`_measure`, writing the run files after every
epoch (:func:`_write_outputs`).

One set-up, one epoch, one measurement and the run-file writing, each in its own function.
"""

from __future__ import annotations

import contextlib
import json
import random
import time
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, Subset

from ufm.cli import check_output_file, one_line
from ufm.errors import (
    CheckpointError,
    DegenerateInputError,
    DivergenceError,
    InputError,
    PFCError,
)
from ufm.io import atomic_write_text, run_lock, write_csv

from . import distributed as dist_mod
from .checkpoint import (
    checkpoint_exists,
    load_latest_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from .config import TrainConfig, check_resumable, make_model, resolve_config
from .figures import draw_figures
from .measure import measure_model
from .memory import check_model_fits
from .models import MeasuredModel
from .report import write_report
from .runs import (
    CHECKPOINT,
    CONFIG_JSON,
    GEODESIC_COLUMNS,
    GEODESIC_CSV,
    METRIC_COLUMNS,
    METRICS_CSV,
    check_rows,
    rows_from_measurement,
    torch_dtype,
    versions,
)

__all__ = ["RunResult", "train"]


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
        with _writer_lock(cfg, ctx):
            return _train(cfg, ctx)
    except (RuntimeError, MemoryError) as exc:
        if isinstance(exc, PFCError) or not _out_of_memory(exc):
            raise
        raise InputError(
            f"out of memory ({one_line(exc)[:160]}): the model or a batch does not fit this "
            f"machine (width={cfg.width}, blocks={cfg.blocks}, batch_size={cfg.batch_size}, "
            f"eval_batch_size={cfg.eval_batch_size}); use smaller values"
        ) from exc
    finally:
        torch.use_deterministic_algorithms(prev_det)
        torch.set_num_threads(prev_threads)
        ctx.cleanup()


def _out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is an allocation failure (torch reports those as RuntimeError)."""
    text = str(exc).lower()
    return isinstance(exc, MemoryError) or "out of memory" in text or "can't allocate" in text


def _writer_lock(cfg: TrainConfig, ctx: dist_mod.DistContext) -> Any:
    """The run folder's lock (:func:`ufm.io.run_lock`, held by the main process): a second
    ``train`` into the same ``out`` is refused while this one runs."""
    if not ctx.is_main:
        return contextlib.nullcontext()
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {str(out)!r} is a file; choose a folder for the run")
    # A folder that cannot be created or written fails with a clear message before the lock.
    check_output_file(out / CONFIG_JSON, "--out")
    return run_lock(out, option="--out", command="pfc train")


@dataclass
class _Run:
    """Everything one process holds while it trains (made by :func:`_setup`)."""

    cfg: TrainConfig
    ctx: dist_mod.DistContext
    out: Path
    ckpt_path: Path
    config_dict: dict[str, Any]
    dtype: torch.dtype
    num_classes: int
    model: MeasuredModel
    net: nn.Module
    opt: torch.optim.Optimizer
    sched: Any
    sampler: DistributedSampler
    train_loader: DataLoader
    eval_loaders: dict[str, DataLoader]
    layers: dict[str, Any]
    rows: list[dict[str, Any]] = field(default_factory=list)
    geo_rows: list[dict[str, Any]] = field(default_factory=list)
    elapsed: float = 0.0
    start_epoch: int = 1
    train_acc_last: float | None = None


def _open_run_folder(
    cfg: TrainConfig, ctx: dist_mod.DistContext
) -> tuple[Path, Path, dict[str, Any], dict[str, Any] | None]:
    """Check the run folder and read the checkpoint to resume, before any file is written."""
    out = Path(cfg.out)
    ckpt_path = out / CHECKPOINT
    world = ctx.world_size
    if cfg.batch_size % world:
        raise InputError(
            f"batch_size={cfg.batch_size} must be divisible by the number of processes {world}"
        )
    if out.exists() and not out.is_dir():
        raise CheckpointError(f"--out {str(out)!r} is a file; choose a folder for the run")
    # A folder that cannot be created or written fails now, not after loading the data.
    check_output_file(out / CONFIG_JSON, "--out")
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
        check_resumable(state.get("config", {}), config_dict, used)
    return out, ckpt_path, config_dict, state


def _load_data(cfg: TrainConfig, ctx: dist_mod.DistContext) -> tuple[Any, Any]:
    """The training set and (when ``eval_test``) the test set; rank 0 downloads first."""
    from . import data as data_mod

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
    return load("train"), (load("test") if cfg.eval_test else None)


def _setup(cfg: TrainConfig, ctx: dist_mod.DistContext) -> _Run:
    """Check the folder, load the data, build model, optimiser, schedule and loaders, write
    config.json and restore the checkpoint when resuming."""
    out, ckpt_path, config_dict, state = _open_run_folder(cfg, ctx)
    dtype = torch_dtype(cfg.dtype)
    world = ctx.world_size
    _set_seeds(cfg.seed)
    train_set, test_set = _load_data(cfg, ctx)
    K = int(train_set.num_classes)
    if cfg.device == "cpu":  # CUDA reports its own out-of-memory errors (see train())
        check_model_fits(
            lambda: make_model(cfg, tuple(train_set.input_shape), K),
            dtype,
            sizes=f"model={cfg.model}, width={cfg.width}, blocks={cfg.blocks}",
            fix="use a smaller --width or --blocks",
        )
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
    train_loader = DataLoader(
        train_set,
        batch_size=cfg.batch_size // world,
        sampler=sampler,
        num_workers=cfg.num_workers,
        generator=torch.Generator().manual_seed(cfg.seed),
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
    if ctx.is_main:
        doc = {
            "config": config_dict,
            "versions": versions(),
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
        atomic_write_text(out / CONFIG_JSON, json.dumps(doc, indent=2, default=str) + "\n")
    run = _Run(
        cfg=cfg,
        ctx=ctx,
        out=out,
        ckpt_path=ckpt_path,
        config_dict=config_dict,
        dtype=dtype,
        num_classes=K,
        model=model,
        net=net,
        opt=opt,
        sched=sched,
        sampler=sampler,
        train_loader=train_loader,
        eval_loaders=eval_loaders,
        layers=layers,
    )
    if state is not None:
        _restore(run, state)
    return run


def _restore(run: _Run, state: dict[str, Any]) -> None:
    """Load a checkpoint's model, optimiser, schedule, RNG state and rows into ``run``."""
    try:
        run.model.load_state_dict(state["model"])
        run.opt.load_state_dict(state["optimizer"])
        run.sched.load_state_dict(state["scheduler"])
        # the checkpoint's milestones came back with the schedule's state; an extended run
        # (more epochs, the same milestones up to the old end: check_resumable) adds later ones
        run.sched.milestones = Counter(run.cfg.milestones)
        set_rng_state(state["rng"])
        run.rows, run.geo_rows = list(state["rows"]), list(state["geodesic_rows"])
        # the rows come back into metrics.csv and the figure file names: same checks as a read
        check_rows(run.rows, where=f"the checkpoint {run.ckpt_path} (metrics rows)")
        check_rows(run.geo_rows, where=f"the checkpoint {run.ckpt_path} (geodesic rows)")
        run.elapsed = float(state["elapsed_s"])
        run.start_epoch = int(state["epoch"]) + 1
    except (KeyError, IndexError, RuntimeError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"the checkpoint in {run.ckpt_path.parent} does not fit this run ("
            f"{type(exc).__name__}: {str(exc)[:300]}); delete it to start over or choose "
            "another --out"
        ) from exc
    run.train_acc_last = state.get("train_accuracy")


def _measure(run: _Run, epoch: int, extra: dict[str, Any]) -> float | None:
    """Measure every layer on every evaluated split, append the rows; the training-set
    accuracy (eval mode)."""
    ctx = run.ctx
    acc_out = None
    for split, loader in run.eval_loaders.items():
        try:
            m = measure_model(
                run.model, loader, run.cfg, device=ctx.device, dtype=run.dtype, group=ctx.group
            )
        except DegenerateInputError:
            raise
        except InputError as exc:
            if epoch == 0:
                raise
            # The parameters are finite (checked after the epoch) and so is the data: features
            # that are not mean the last steps blew the weights up, i.e. the run diverged.
            what = (
                "are not finite (NaN or inf: they overflowed)"
                if "non-finite" in str(exc)
                else f"cannot be measured ({one_line(exc)[:200]})"
            )
            raise DivergenceError(
                f"training diverged: after epoch {epoch} ({_lr_text(run, extra.get('lr'))}) "
                f"the features of the {split} split {what}; the learning "
                f"rate is too large for this model and data; {_last_good(run, epoch)}; lower "
                "--lr (e.g. by 10x) and start again with a new --out"
            ) from exc
        r, g = rows_from_measurement(m, epoch, split, extra)
        run.rows.extend(r)
        run.geo_rows.extend(g)
        if split == "train":
            acc_out = m.accuracy
    return acc_out


def _lr_text(run: _Run, lr_now: Any) -> str:
    """``lr=...`` of a divergence message, with the initial --lr when a milestone changed it."""
    text = f"lr={float(lr_now):g}" if isinstance(lr_now, int | float) else "lr unknown"
    if not isinstance(lr_now, int | float) or float(lr_now) != float(run.cfg.lr):
        text += f", initial --lr {float(run.cfg.lr):g}"
    return text


def _last_good(run: _Run, epoch: int) -> str:
    return f"the last good checkpoint is {run.ckpt_path} (epoch {epoch - 1})"


def _write_outputs(run: _Run, epoch: int) -> None:
    """Checkpoint, metrics.csv and geodesic.csv after ``epoch`` (rank 0), then a barrier."""
    if run.ctx.is_main:
        save_checkpoint(
            run.ckpt_path,
            {
                "epoch": epoch,
                "model": run.model.state_dict(),
                "optimizer": run.opt.state_dict(),
                "scheduler": run.sched.state_dict(),
                "rng": rng_state(),
                "config": run.config_dict,
                "rows": run.rows,
                "geodesic_rows": run.geo_rows,
                "elapsed_s": run.elapsed,
                "train_accuracy": run.train_acc_last,
            },
        )
        write_csv(run.out / METRICS_CSV, METRIC_COLUMNS, run.rows)
        write_csv(run.out / GEODESIC_CSV, GEODESIC_COLUMNS, run.geo_rows)
    run.ctx.barrier()


def _loss(logits: torch.Tensor, y: torch.Tensor, loss: str, K: int) -> torch.Tensor:
    if loss == "mse":
        target = F.one_hot(y, K).to(logits.dtype)
        return 0.5 * (logits - target).pow(2).sum(1).mean()
    return F.cross_entropy(logits, y)


def _train_epoch(run: _Run, epoch: int) -> tuple[float, float]:
    """One epoch of SGD; the mean training loss and accuracy over the epoch (all processes).

    Raises
    ------
    DivergenceError
        A non-finite loss, an overflowing step, or non-finite parameters after the epoch.
    """
    cfg, ctx = run.cfg, run.ctx
    run.sampler.set_epoch(epoch)
    lr_now = run.opt.param_groups[0]["lr"]
    good = _last_good(run, epoch)
    lr_text = _lr_text(run, lr_now)
    run.net.train()
    tot = torch.zeros(3, dtype=torch.float64, device=ctx.device)
    for step, (x, y) in enumerate(run.train_loader):
        x = x.to(device=ctx.device, dtype=run.dtype)
        y = y.to(ctx.device)
        logits = run.net(x)
        loss = _loss(logits, y, cfg.loss, run.num_classes)
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
                f"({lr_text}); {good}; lower --lr (e.g. by 10x) and start again with a new --out"
            )
        tot += stats
        run.opt.zero_grad(set_to_none=True)
        loss.backward()
        try:
            run.opt.step()
        except RuntimeError as exc:
            if "overflow" not in str(exc):
                raise
            # torch refuses an lr / weight decay that overflows the parameter dtype.
            raise DivergenceError(
                f"training diverged: the SGD step overflows {cfg.dtype} at epoch {epoch},"
                f" step {step} ({lr_text}, weight_decay={cfg.weight_decay:g}); {good}; "
                "lower --lr"
            ) from exc
    run.sched.step()
    if not all(bool(torch.isfinite(p).all()) for p in run.model.parameters()):
        raise DivergenceError(
            f"training diverged: non-finite parameters after epoch {epoch} "
            f"({lr_text}); {good}; lower --lr (e.g. by 10x) and start again with a new --out"
        )
    return float(tot[0] / tot[2]), float(tot[1] / tot[2])


def _train(cfg: TrainConfig, ctx: dist_mod.DistContext) -> RunResult:
    run = _setup(cfg, ctx)
    t0 = time.perf_counter()
    if run.start_epoch == 1 and not run.rows:
        run.train_acc_last = _measure(run, 0, {"lr": run.opt.param_groups[0]["lr"]})
        run.elapsed += time.perf_counter() - t0
        _write_outputs(run, 0)

    bar = None
    if cfg.progress and ctx.is_main:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=cfg.epochs,
            initial=run.start_epoch - 1,
            desc=f"train {cfg.dataset}",
            unit="epoch",
            dynamic_ncols=True,
            disable=None,  # no carriage-return redraws when the output is not a terminal
        )
    epochs_run = 0
    try:
        for epoch in range(run.start_epoch, cfg.epochs + 1):
            t_ep = time.perf_counter()
            lr_now = run.opt.param_groups[0]["lr"]
            train_loss, train_acc = _train_epoch(run, epoch)
            if epoch % cfg.eval_every == 0 or epoch == cfg.epochs:
                extra = {"train_loss": train_loss, "train_acc": train_acc, "lr": lr_now}
                run.train_acc_last = _measure(run, epoch, extra)
            run.elapsed += time.perf_counter() - t_ep
            _write_outputs(run, epoch)
            epochs_run += 1
            if bar is not None:
                bar.set_postfix(loss=f"{train_loss:.3g}", acc=f"{train_acc:.3f}")
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()

    if cfg.figures and ctx.is_main:
        draw_figures(run.out)
        write_report(run.out)
    ctx.barrier()
    return RunResult(
        out_dir=run.out,
        config=cfg,
        metrics=list(run.rows),
        geodesic=list(run.geo_rows),
        epochs_run=epochs_run,
        train_accuracy=run.train_acc_last,
        elapsed_s=run.elapsed,
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
