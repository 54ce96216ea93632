r"""Collapse against depth: LayerNorm ResNets and transformers, at (or near) the regularised optimum.

The claim under test (Sukenik, Lampert, Mondelli 2025, "Neural Collapse is Globally Optimal in
Deep Regularized ResNets and Transformers"): *global optima* of deep regularised ResNets and
transformers with LayerNorm, trained with cross entropy or MSE, are approximately collapsed,
the approximation tightens as depth grows, and large-depth training reduces to an
unconstrained features model whose features lie where LayerNorm puts them (zero mean across
coordinates, norm :math:`\sqrt d`). The paper's abstract states no slope, and none is compared
here.

A trained network is an upper bound on its optimum, so the study records how far each cell is
from one. :func:`depth_study` trains every family of :data:`resnet_pfc.models.DEPTH_FAMILIES`
(``ln_resnet1``, ``ln_resnet2``, ``transformer`` with pre-LN blocks, ``transformer_post``,
``transformer_noaffine``) at every depth and seed with :func:`resnet_pfc.depth_train.train_cell`
(SGD with momentum and weight decay on every parameter, cross entropy or MSE, a constant
learning rate until a stationarity criterion holds or a cap, then a short anneal) and, per
cell (family, depth, seed, and initialisation: independent, or the warm start from the
shallower depth plus identity blocks):

* the **full regularised objective**
  :math:`F = \frac1N\sum_i \ell(f_\theta(x_i), y_i) + \frac{wd}{2}\|\theta\|^2` over every
  parameter, split into classifier, blocks, LayerNorm gains and shifts, and embedding
  (:func:`resnet_pfc.depth_train.full_objective`; :func:`recompute_objective` redoes it from the
  cell's saved ``weights.pt``), its trajectory, the weight-norm trajectories, the decay e-folds,
  and whether the stationarity criterion held;
* the **not-at-optimum flag**: zeroing a block makes it an identity at zero penalty, so the
  optimum of :math:`F` cannot rise with depth; a cell whose :math:`F` exceeds that of a
  shallower cell of the same family, seed and chain is flagged (:func:`_flag_not_at_optimum`),
  in the CSV, the report, the figures and the slope verdicts;
* the final metrics of every measured layer (streaming accumulators of :mod:`ufm.metrics`:
  NC1-NC4, PFC1-3, CDNV, the class-mean Gram eigenvalue ratio) and the law of data
  separation's per-layer rate of NC1 (:func:`ufm.separation_rate`);
* the last layer's features ``H (N, d)``, classifier ``W (K, d)`` and bias ``b (K,)`` in the
  LN-UFM objective (:func:`lnufm_objective`) against its optimum :math:`F^*`
  (:func:`ufm.solve` with ``features="layernorm"``): the relative gap counts the classifier's
  penalty only.

Then, per family, chain and last-layer metric, the least-squares slope of
:math:`\log m = a + s \log L` with a percentile bootstrap interval over seeds
(:func:`fit_slope`).

Output folder (every file written atomically; a cell is finished when its ``cell.json`` exists,
and a rerun skips it, so an interrupted study resumes cell by cell; an interrupted cell resumes
from its ``train_state.pt``)::

    config.json                       options and versions
    cells/<family>/L<depth>_s<seed>[_warm]/  cell.json, weights.pt, train_state.pt, last_layer.npz
    depth_cells.csv                   one row per cell: objective, flag, stationarity, metrics
    depth_layers.csv                  one row per (cell, layer): final metrics
    depth_trajectories.csv            per cell, every TRAJECTORY_EVERY-th epoch
    depth_slopes.csv                  one row per (family, chain, metric): slope, interval, verdict
    figures/depth_metrics.png         last-layer metrics against depth, flagged cells crossed
    figures/depth_objective.png       the full objective against depth, both chains
    figures/depth_trajectories.png    epoch objective and ||theta||^2 against the epoch
    figures/depth_layers_<family>.png per-layer curves coloured by depth
    figures/depth_reduction.png       objective gap to the LN-UFM optimum against depth
    report.md                         what was measured, the flags, the warm-start comparison

Presets (:data:`DEPTH_PRESETS`): ``"cpu"`` (digits, depths 2, 4, 8, three seeds, both
initialisations; see :data:`DEPTH_PRESETS` for the measured cost), ``"paper"`` (MNIST, the
paper's depths, long caps, on a GPU) and ``"tiny"`` (the tutorial and the tests).

Size (over 500 lines): one study with one resumable pipeline -- its config and presets,
the cell runner, the flags, the LN-UFM comparison, the slope fits and the report share the
study's config and files; the training loop is in :mod:`resnet_pfc.depth_train`, the figures
in :mod:`resnet_pfc.depth_figures`.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ufm import io as ufm_io
from ufm.errors import InputError
from ufm.losses import LOSSES, check_loss
from ufm.registry import NC2, PFC, SEPARATION
from ufm.threads import MAX_THREADS
from ufm.validate import SEED_MAX

from .config import MAX_BLOCKS, MAX_EPOCHS, MAX_WIDTH, dataset_arg
from .families import DEPTH_FAMILIES, TRANSFORMER_VARIANTS
from .options import check_fields, documented, option
from .runs import MEASURED_METRICS, versions

__all__ = [
    "DepthConfig",
    "DepthResult",
    "DEPTH_PRESETS",
    "depth_study",
    "depth_config",
    "run_cell",
    "fit_slope",
    "lnufm_objective",
    "SLOPE_METRICS",
    "recompute_objective",
    "load_cell_model",
    "summarise",
    "OPTIMUM_RTOL",
    "INITS",
]

#: Last-layer metrics whose log-log slope against depth is fitted.
SLOPE_METRICS: tuple[str, ...] = ("nc1", *SEPARATION, *NC2, "nc3", *PFC)
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
        "dataset": "digits",
        "depths": (2, 4, 8),
        "seeds": (0, 1, 2),
        "width": 64,
        "epochs": 100,
        "max_epochs": 300,
        "transformer_epochs": 60,
        "transformer_max_epochs": 150,
        "window": 20,
        "tol": 2e-3,
        "anneal_epochs": 20,
        "lr": 0.05,
        "transformer_lr": 0.05,
        "weight_decay": 5e-3,
        "patch": 4,
        "device": "cpu",
        "jobs": 2,
        "init": "both",
    },
    "paper": {
        "dataset": "mnist",
        "depths": (2, 3, 5, 8, 13, 21, 34),
        "seeds": (0, 1, 2, 3, 4),
        "width": 64,
        "epochs": 350,
        "max_epochs": 1000,
        "transformer_epochs": 350,
        "transformer_max_epochs": 1000,
        "window": 50,
        "tol": 1e-3,
        "anneal_epochs": 50,
        "lr": 0.05,
        "transformer_lr": 0.05,
        "weight_decay": 5e-3,
        "patch": 7,
        "device": "cuda",
        "init": "both",
    },
    "tiny": {
        "dataset": "digits",
        "families": ("ln_resnet1", "transformer"),
        "depths": (1, 2, 4),
        "seeds": (0, 1),
        "width": 16,
        "epochs": 4,
        "max_epochs": 6,
        "transformer_epochs": 3,
        "transformer_max_epochs": 4,
        "window": 2,
        "tol": 1e-2,
        "anneal_epochs": 1,
        "lr": 0.05,
        "transformer_lr": 0.05,
        "weight_decay": 5e-3,
        "per_class": 20,
        "patch": 4,
        "device": "cpu",
        "bootstrap": 200,
    },
}


def _count(help: str, default: int | None, **meta: Any) -> Any:
    """An integer option ``>= 1``."""
    return option(int, help, default=default, low=1, **meta)


def _rate(help: str, default: float = 0.05, **meta: Any) -> Any:
    """A learning rate or a weight decay: a number ``> 0``."""
    return option(float, help, default=default, low=0, positive=True, **meta)


@documented
@dataclass(frozen=True)
class DepthConfig:
    """Every option of a depth study (``pfc depth`` sets those declared for the command line).

    Each field carries its flag, bounds and help (:func:`resnet_pfc.options.option`): the
    command line, the checks of :func:`depth_config` and the list below come from them.
    """

    out: str = option(str, "output folder", default="runs/depth")
    dataset: str = option(
        dataset_arg, "training data", default="digits", doc="``digits`` is embedded."
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
    width: int = _count("residual-stream / token width d", 64, high=MAX_WIDTH)
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
    lr: float = _rate("SGD learning rate of the ResNets", doc=_DROPS)
    transformer_lr: float = _rate("SGD learning rate of the transformers", doc=_DROPS)
    weight_decay: float = _rate(
        "weight decay on every parameter",
        5e-3,
        doc="Also the LN-UFM's ``lam_w = lam_b``.",
    )
    loss: str = option(str, "training loss", default="ce", choices=LOSSES)
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
    momentum: float = option(float, "SGD momentum", default=0.9, low=0, high=1, command_line=False)
    batch_size: int = _count("SGD batch size", 128, command_line=False)
    per_class: int | None = _count(
        "balanced training subset: samples per class", None, shown="the whole training split"
    )
    heads: int = _count("transformer attention heads", 4, command_line=False)
    patch: int | None = _count(
        "transformer patch size", 4, shown="one token per image row", command_line=False
    )
    device: str = option(
        str,
        "training device",
        default="cpu",
        choices=("cpu", "cuda"),
        type="str",
        doc='``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (the command line offers the first two).',
    )
    threads: int = _count("torch threads per cell", 1, high=MAX_THREADS)
    jobs: int = _count("cells trained in parallel, one process each", 1, high=MAX_THREADS)
    bootstrap: int = option(
        int, "bootstrap resamples of each slope", default=2000, low=10, high=1_000_000
    )
    seed: int = option(
        int, "seed of the bootstrap and of the LN-UFM solve", default=0, low=0, high=SEED_MAX
    )
    progress: bool = option("no", "no progress bars", default=True)
    preset: str = option(
        str,
        "the preset of DEPTH_PRESETS the options started from",
        default="custom",
        command_line=False,
    )
    data_root: str | None = option(
        str, "folder with the torchvision data files", shown="$PFC_DATA_ROOT or ./data"
    )
    download: bool = option(bool, "download missing data with torchvision (network)", default=False)


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

    Raises
    ------
    InputError
        Unknown preset or field.
    """
    if preset not in DEPTH_PRESETS:
        raise InputError(f"preset must be one of {sorted(DEPTH_PRESETS)}, got {preset!r}")
    names = set(DepthConfig.__dataclass_fields__)
    bad = sorted(set(overrides) - names)
    if bad:
        raise InputError(f"unknown depth-study options {bad}; known: {sorted(names)}")
    opts = {**DEPTH_PRESETS[preset], **{k: v for k, v in overrides.items() if v is not None}}
    return _validate(DepthConfig(preset=preset, **opts))


def _validate(cfg: DepthConfig) -> DepthConfig:
    fams = tuple(cfg.families)
    if not fams or any(f not in DEPTH_FAMILIES for f in fams):
        raise InputError(f"families must be a non-empty subset of {DEPTH_FAMILIES}, got {fams}")
    depths = tuple(sorted({int(d) for d in cfg.depths}))
    seeds = tuple(sorted({int(s) for s in cfg.seeds}))
    if not depths or depths[0] < 1:
        raise InputError(f"depths must be positive integers, got {cfg.depths}")
    if not seeds or seeds[0] < 0:
        raise InputError(f"seeds must be non-negative integers, got {cfg.seeds}")
    # every bounded field against its option's bounds; a device cuda:N is not a choice of the
    # command line but trains (TrainConfig checks it)
    check_fields(cfg, skip=("device",))
    for lo, hi in (("epochs", "max_epochs"), ("transformer_epochs", "transformer_max_epochs")):
        if getattr(cfg, hi) < getattr(cfg, lo):
            raise InputError(
                f"{hi}={getattr(cfg, hi)} must be >= {lo}={getattr(cfg, lo)} (the cap on the "
                "epochs cannot be below the minimum); raise it"
            )
    if not str(cfg.out):
        raise InputError("out must name a folder")
    return replace(cfg, families=fams, depths=depths, seeds=seeds, out=str(cfg.out))


# ------------------------------------------------------------------------------------------
# one cell
# ------------------------------------------------------------------------------------------


def _cell_dir(
    cfg: DepthConfig, family: str, depth: int, seed: int, init: str = "independent"
) -> Path:
    tail = "_warm" if init == "warm" else ""
    return Path(cfg.out) / "cells" / family / f"L{depth:03d}_s{seed}{tail}"


def _is_transformer(family: str) -> bool:
    return family in TRANSFORMER_VARIANTS


def _build_kwargs(cfg: DepthConfig, family: str) -> dict[str, Any]:
    """The keywords of :func:`resnet_pfc.models.build_depth_model` besides family and depth."""
    kw: dict[str, Any] = {"width": cfg.width}
    if _is_transformer(family):
        kw |= {"heads": cfg.heads, "patch": cfg.patch}
    return kw


def _warm_base(cfg: DepthConfig, family: str, depth: int) -> int | None:
    """The depth a warm cell starts from (the next shallower one), or None for the shallowest."""
    below = [d for d in cfg.depths if d < depth]
    return max(below) if below else None


def lnufm_objective(
    H: np.ndarray,
    y: np.ndarray,
    W: np.ndarray,
    b: np.ndarray,
    *,
    lam_w: float,
    lam_b: float,
    loss: str = "ce",
) -> float:
    r"""The LN-UFM objective at given ``(W, b, H)``, in float64.

    .. math:: F = \frac1N \sum_i \ell(W h_i + b, y_i)
              + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_b}{2}\|b\|^2

    with :math:`\ell` the cross entropy (``loss="ce"``) or :math:`\tfrac12\|z - e_y\|^2`
    (``loss="mse"``, as training uses it).

    Parameters
    ----------
    H : ndarray of shape (N, d)
    y : ndarray of shape (N,)
    W : ndarray of shape (K, d)
    b : ndarray of shape (K,)
    lam_w, lam_b : float

    Returns
    -------
    float
        No feature penalty: on LayerNorm's sphere ``||h||`` is fixed.
    """
    H = np.asarray(H, dtype=np.float64)
    W = np.asarray(W, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    loss = check_loss(loss)
    Z = H @ W.T + b
    pen = 0.5 * lam_w * float(np.sum(W * W)) + 0.5 * lam_b * float(np.sum(b * b))
    if loss == "mse":
        T = np.zeros_like(Z)
        T[np.arange(len(y)), y] = 1.0
        return 0.5 * float(np.mean(np.sum((Z - T) ** 2, axis=1))) + pen
    Zmax = Z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(Z - Zmax).sum(axis=1)) + Zmax[:, 0]
    ce = float(np.mean(lse - Z[np.arange(len(y)), y]))
    return ce + 0.5 * lam_w * float(np.sum(W * W)) + 0.5 * lam_b * float(np.sum(b * b))


def _load_train(cfg: DepthConfig, seed: int) -> Any:
    from . import data as data_mod

    return data_mod.load_dataset(
        cfg.dataset,
        split="train",
        per_class=cfg.per_class,
        seed=seed,
        data_root=cfg.data_root,
        download=cfg.download,
    )


def load_cell_model(cell_dir: str | Path) -> Any:
    """The trained network of a finished cell, rebuilt from its ``weights.pt``.

    Returns
    -------
    MeasuredModel
        In ``eval()`` mode, float32, on the CPU.

    Raises
    ------
    CheckpointError
        No readable ``weights.pt`` in ``cell_dir``.
    """
    from .checkpoint import load_checkpoint
    from .models import build_depth_model

    st = load_checkpoint(Path(cell_dir) / "weights.pt")
    b = st["build"]
    model = build_depth_model(
        b["family"],
        tuple(b["input_shape"]),
        int(b["num_classes"]),
        blocks=int(b["depth"]),
        **b["kwargs"],
    )
    model.load_state_dict(st["model"])
    return model.eval()


def recompute_objective(cell_dir: str | Path) -> dict[str, float]:
    r"""Recompute a finished cell's full regularised objective from its saved weights.

    Reads ``cell.json`` (data set, ``per_class``, seed, loss, weight decay) and ``weights.pt``,
    reloads the training split with :func:`resnet_pfc.data.load_dataset` exactly as training
    did, and evaluates :func:`resnet_pfc.depth_train.full_objective`: ``eval()`` mode, float32
    forward, float64 loss averaged over the ``N`` training samples, plus
    :math:`\tfrac{wd}{2}\|\theta\|^2` over every parameter in float64.

    Returns
    -------
    dict
        As :func:`resnet_pfc.depth_train.full_objective` (``objective``, ``loss``, ``penalty``,
        ``norm2_<part>``, ...); ``objective`` equals the cell's recorded ``full_objective``.
    """
    from .data import load_dataset
    from .depth_train import full_objective

    cell = json.loads((Path(cell_dir) / "cell.json").read_text())
    ds = load_dataset(
        cell["dataset"],
        split="train",
        per_class=cell["per_class"],
        seed=cell["seed"],
        data_root=cell.get("data_root"),
    )
    model = load_cell_model(cell_dir)
    return full_objective(
        model,
        ds.x,
        ds.y,
        weight_decay=cell["weight_decay"],
        loss=cell["loss"],
        num_classes=int(ds.num_classes),
    )


def run_cell(
    cfg: DepthConfig, family: str, depth: int, seed: int, init: str = "independent"
) -> dict[str, Any]:
    """Train and measure one cell, or load it if its ``cell.json`` exists.

    ``init="warm"``: start from the finished cell of the next shallower depth of
    ``cfg.depths`` (same family and seed; its warm cell, or the independent one at the
    shallowest depth), trained first if needed, plus identity blocks
    (:func:`resnet_pfc.depth_train.warm_start`); at the shallowest depth the warm cell is the
    independent one.

    Returns
    -------
    dict
        ``family, depth, seed, init, epochs, criterion_met, stationary_epoch, efolds,
        full_objective`` (and its parts), ``objective_init``, ``train_accuracy``,
        ``train_loss``, ``elapsed_s``, ``last_layer``, ``layers`` (label -> final metrics),
        ``separation_rate``/``separation_r2``, ``trajectory``, and the network's LN-UFM terms
        (``net_objective``, ``sphere_dev``: the largest relative deviation of a last-layer
        feature from LayerNorm's sphere, ``mean_abs``: the largest absolute coordinate mean).
    """
    if init not in ("independent", "warm"):
        raise InputError(f"init must be 'independent' or 'warm', got {init!r}")
    base = _warm_base(cfg, family, depth) if init == "warm" else None
    if init == "warm" and base is None:
        return run_cell(cfg, family, depth, seed)
    cdir = _cell_dir(cfg, family, depth, seed, init)
    done = cdir / "cell.json"
    if done.is_file():
        return json.loads(done.read_text())
    if base is not None:
        prev_init = "warm" if _warm_base(cfg, family, base) is not None else "independent"
        run_cell(cfg, family, base, seed, prev_init)
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from ufm.metrics import separation_rate

    from .checkpoint import save_checkpoint
    from .depth_train import full_objective, train_cell, warm_start
    from .measure import LayerTaps, measure
    from .memory import check_model_fits
    from .models import build_depth_model

    torch.set_num_threads(cfg.threads)
    ds = _load_train(cfg, seed)
    K = int(ds.num_classes)
    shape = tuple(ds.input_shape)
    kw = _build_kwargs(cfg, family)
    torch.manual_seed(seed)
    check_model_fits(
        lambda: build_depth_model(family, shape, K, blocks=depth, **kw),
        torch.float32,
        sizes=f"family={family}, depth={depth}, width={cfg.width}",
        fix="use a smaller --width or --depths",
    )
    if base is None:
        model = build_depth_model(family, shape, K, blocks=depth, **kw)
    else:
        prev = load_cell_model(_cell_dir(cfg, family, base, seed, prev_init))
        model = warm_start(prev, family, depth, input_shape=shape, num_classes=K, **kw)
    model = model.to(cfg.device)
    x, y = ds.x, ds.y
    wd = cfg.weight_decay
    init_obj = full_objective(model, x, y, weight_decay=wd, loss=cfg.loss, num_classes=K)
    tr = _is_transformer(family)
    fit = train_cell(
        model,
        x,
        y,
        num_classes=K,
        loss=cfg.loss,
        lr=cfg.transformer_lr if tr else cfg.lr,
        momentum=cfg.momentum,
        weight_decay=wd,
        batch_size=cfg.batch_size,
        min_epochs=cfg.transformer_epochs if tr else cfg.epochs,
        max_epochs=cfg.transformer_max_epochs if tr else cfg.max_epochs,
        window=cfg.window,
        tol=cfg.tol,
        anneal_epochs=cfg.anneal_epochs,
        seed=seed,
        checkpoint=cdir / "train_state.pt",
    )
    model = model.cpu().eval()
    obj = full_objective(model, x, y, weight_decay=wd, loss=cfg.loss, num_classes=K)
    build = {
        "family": family,
        "depth": depth,
        "input_shape": list(shape),
        "num_classes": K,
        "kwargs": kw,
    }
    save_checkpoint(cdir / "weights.pt", {"model": model.state_dict(), "build": build})

    loader = DataLoader(TensorDataset(x, y), batch_size=512)
    lmap = model.measured_layers()
    last = list(lmap)[-1]
    meas = measure(
        model, loader, lmap, K, classifier={last: model.measured_classifier()}, strict=False
    )
    labels = list(lmap)
    layers = {
        lab: {"layer_index": i, "position": meas.positions.get(lab), **meas.layers[lab]}
        for i, lab in enumerate(labels)
    }
    # The law of data separation over the residual stream ("input", "block1".."blockB").
    stream = [lab for lab in labels if lab == "input" or lab.startswith("block")]
    D = [layers[lab].get("nc1") for lab in stream]
    sep_rate = sep_r2 = math.nan
    if all(_is_num(v) and v > 0 and math.isfinite(v) for v in D) and len(D) >= 2:
        sf = separation_rate(D)
        sep_rate, sep_r2 = sf.rate, sf.r2

    # The last layer's features on the training set, for the reduction.
    feats: list[np.ndarray] = []
    with (
        torch.no_grad(),
        LayerTaps(
            model,
            {last: lmap[last]},
            lambda _lab, h: feats.append(h.reshape(h.shape[0], -1).double().numpy()),
        ),
    ):
        for xb, _ in loader:
            model(xb)
    H = np.concatenate(feats)
    yn = y.numpy()
    W, b = (t.double().numpy() for t in model.measured_classifier())
    d = H.shape[1]
    norms = np.linalg.norm(H, axis=1)
    lw = dict(lam_w=wd, lam_b=wd, loss=cfg.loss)
    buf = io.BytesIO()
    np.savez_compressed(buf, H=H.astype(np.float32), y=yn, W=W, b=b)
    ufm_io.atomic_write_bytes(cdir / "last_layer.npz", buf.getvalue())
    cell = {
        "family": family,
        "depth": depth,
        "seed": seed,
        "init": init,
        "warm_from": base,
        "dataset": cfg.dataset,
        "per_class": cfg.per_class,
        "data_root": cfg.data_root,
        "loss": cfg.loss,
        "weight_decay": wd,
        "epochs": fit.epochs,
        "criterion_met": fit.criterion_met,
        "stationary_epoch": fit.stationary_epoch,
        "efolds": fit.efolds,
        "lr": cfg.transformer_lr if tr else cfg.lr,
        "full_objective": obj["objective"],
        **{f"full_{k}": v for k, v in obj.items() if k != "objective"},
        "objective_init": init_obj["objective"],
        "train_accuracy": obj["accuracy"],
        "train_loss": obj["loss"],
        "elapsed_s": fit.elapsed_s,
        "last_layer": last,
        "layers": layers,
        "separation_rate": sep_rate,
        "separation_r2": sep_r2,
        "num_samples": int(len(yn)),
        "num_classes": K,
        "feature_dim": d,
        "net_objective": lnufm_objective(H, yn, W, b, **lw),
        "net_ce": lnufm_objective(H, yn, W, b, lam_w=0.0, lam_b=0.0, loss=cfg.loss),
        "net_w_norm2": float(np.sum(W * W)),
        "net_b_norm2": float(np.sum(b * b)),
        "sphere_dev": float(np.max(np.abs(norms / math.sqrt(d) - 1.0))),
        "mean_abs": float(np.max(np.abs(H.mean(axis=1)))),
        "trajectory": fit.trajectory,
    }
    ufm_io.atomic_write_text(done, json.dumps(ufm_io.jsonable(cell), indent=1) + "\n")
    return cell


def _cell_worker(args: tuple[Any, ...]) -> dict[str, Any]:
    return run_cell(*args)


# ------------------------------------------------------------------------------------------
# statistics
# ------------------------------------------------------------------------------------------


def fit_slope(
    depths: Sequence[float],
    values: Sequence[float],
    *,
    bootstrap: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    r"""Least-squares slope of :math:`\log v` against :math:`\log L`, with a bootstrap interval.

    .. math:: \hat s = \arg\min_{a, s} \sum_c (\log v_c - a - s \log L_c)^2

    The interval is the percentile interval of ``bootstrap`` refits on resamples that draw,
    for each depth separately, as many cells as it has, with replacement (a stratified
    bootstrap over seeds; depths with one cell contribute it unchanged).

    Parameters
    ----------
    depths, values : sequence of float, same length
        One entry per cell; values must be > 0 (non-positive and non-finite ones are dropped).
    bootstrap : int
    seed : int
    level : float

    Returns
    -------
    dict
        ``slope, lo, hi, intercept, n`` (NaN where fewer than two distinct depths remain).
    """
    L = np.asarray(depths, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if L.shape != v.shape:
        raise InputError(f"depths and values must have the same length, got {L.shape}, {v.shape}")
    ok = np.isfinite(v) & (v > 0) & np.isfinite(L) & (L > 0)
    L, v = L[ok], v[ok]
    nan = {"slope": math.nan, "lo": math.nan, "hi": math.nan, "intercept": math.nan, "n": len(L)}
    if len(np.unique(L)) < 2:
        return nan
    x, z = np.log(L), np.log(v)
    s, a = np.polyfit(x, z, 1)
    groups = [np.flatnonzero(L == u) for u in np.unique(L)]
    rng = np.random.default_rng(seed)
    boots = np.empty(bootstrap)
    for i in range(bootstrap):
        idx = np.concatenate([g[rng.integers(0, len(g), len(g))] for g in groups])
        boots[i] = np.polyfit(x[idx], z[idx], 1)[0]
    q = (1 - level) / 2
    lo, hi = np.quantile(boots, [q, 1 - q])
    return {"slope": float(s), "lo": float(lo), "hi": float(hi), "intercept": float(a), "n": len(L)}


def _lnufm_optimum(cfg: DepthConfig, y: np.ndarray, d: int) -> dict[str, Any]:
    """The LN-UFM optimum at ``lam_w = lam_b = weight_decay`` (cached in the output folder)."""
    path = Path(cfg.out) / "lnufm_optimum.json"
    counts = np.bincount(y).tolist()
    key = {"counts": counts, "d": d, "lam": cfg.weight_decay, "loss": cfg.loss}
    if path.is_file():
        saved = json.loads(path.read_text())
        if saved.get("key") == key:
            return saved
    import ufm

    res = ufm.solve(
        y,
        d=d,
        features="layernorm",
        method="lbfgs",
        loss=cfg.loss,
        lam_w=cfg.weight_decay,
        lam_b=cfg.weight_decay,
        seed=cfg.seed,
    )
    K = len(counts)
    etf = ufm.layernorm_etf_optimum(
        K, d, loss=cfg.loss, lam_w=cfg.weight_decay, lam_b=cfg.weight_decay
    )
    out = {
        "key": key,
        "objective": float(res.objective),
        "etf_objective": float(etf.objective),
        "etf_certified": bool(etf.optimal),
        "metrics": {k: float(v) for k, v in dict(res.metrics).items() if _is_num(v)},
        "status": str(getattr(res, "status", "")),
    }
    ufm_io.atomic_write_text(path, json.dumps(out, indent=1) + "\n")
    return out


def _is_num(v: Any) -> bool:
    return isinstance(v, int | float | np.floating | np.integer) and not isinstance(v, bool)


# ------------------------------------------------------------------------------------------
# the study
# ------------------------------------------------------------------------------------------


_PARTS = ("classifier", "blocks", "layernorm", "embedding")  # resnet_pfc.depth_train.PARTS
_CELL_METRICS = (*_METRICS, *SEPARATION)
_CELL_COLUMNS = (
    "family",
    "depth",
    "seed",
    "init",
    "warm_from",
    "loss",
    "epochs",
    "criterion_met",
    "stationary_epoch",
    "efolds",
    "lr",
    "full_objective",
    "shallower_best_objective",
    "not_at_optimum",
    "full_loss",
    "full_penalty",
    *(f"full_penalty_{p}" for p in _PARTS),
    "full_norm2",
    "objective_init",
    "last_layer",
    "train_accuracy",
    "train_loss",
    *_CELL_METRICS,
    "separation_rate",
    "separation_r2",
    "net_objective",
    "lnufm_objective",
    "lnufm_etf_objective",
    "objective_gap_rel",
    "net_ce",
    "net_w_norm2",
    "net_b_norm2",
    "sphere_dev",
    "mean_abs",
    *(f"lnufm_{m}" for m in SLOPE_METRICS),
    "elapsed_s",
)
_LAYER_COLUMNS = (
    "family",
    "depth",
    "seed",
    "init",
    "layer",
    "layer_index",
    "position",
    *_CELL_METRICS,
)
_TRAJ_COLUMNS = (
    "family",
    "depth",
    "seed",
    "init",
    "epoch",
    "phase",
    "lr",
    "train_loss",
    "train_acc",
    "norm2",
    "objective",
    "efolds",
    "rel_objective",
    "rel_norm2",
    *(f"norm2_{p}" for p in _PARTS),
)
_SLOPE_COLUMNS = (
    "family",
    "init",
    "metric",
    "slope",
    "lo",
    "hi",
    "intercept",
    "n",
    "flagged_depths",
    "verdict",
)


def depth_study(config: DepthConfig | None = None, **overrides: Any) -> DepthResult:
    """Run (or resume) a depth study and write its CSV files, figures and report.

    Parameters
    ----------
    config : DepthConfig, optional
        Default: the ``"cpu"`` preset. Keyword ``overrides`` replace fields.

    Returns
    -------
    DepthResult

    Raises
    ------
    InputError
        Bad options.

    Notes
    -----
    Per family and last-layer metric, the fitted slope ``s`` of
    :math:`\\log m = a + s \\log L` and its bootstrap interval (:func:`fit_slope`); per cell,
    the LN-UFM relative objective gap :math:`(F_{net} - F^*)/|F^*|`.
    """
    cfg = _validate(replace(config or depth_config("cpu"), **overrides))
    out = Path(cfg.out)
    # one writer per study folder: a second depth study into it is refused while this one runs
    with ufm_io.run_lock(out, option="--out", command="pfc depth"):
        return _depth_study(cfg, out)


def _depth_study(cfg: DepthConfig, out: Path) -> DepthResult:
    """The body of :func:`depth_study`, run while holding the study folder's lock."""
    doc = {"config": asdict(cfg), "versions": versions()}
    ufm_io.atomic_write_text(out / "config.json", json.dumps(doc, indent=2, default=str) + "\n")
    warm_only = set(_warm_families(cfg)) if cfg.init == "warm" else set()
    todo: list[tuple[Any, ...]] = [
        (f, L, s, "independent")
        for f in cfg.families
        for L in cfg.depths
        for s in cfg.seeds
        if f not in warm_only or L == cfg.depths[0]
    ]
    # Most expensive first, so that parallel workers finish together.
    todo.sort(key=lambda c: -(c[1] * (6 if _is_transformer(c[0]) else 1)))
    # A warm chain is one task per (family, seed): its deepest cell trains the shallower ones
    # first, in order (each starts from the one before).
    chains = [
        (f, cfg.depths[-1], s, "warm")
        for f in _warm_families(cfg)
        for s in cfg.seeds
        if len(cfg.depths) > 1
    ]
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=len(todo) + len(chains), desc="depth study", unit="task", dynamic_ncols=True
        )

    def tick(c: tuple[Any, ...]) -> None:
        if bar is not None:
            bar.set_postfix(cell=f"{c[0]} L={c[1]} s={c[2]} {c[3]}")
            bar.update(1)

    try:
        for tasks in (todo, chains):  # the chains start from the independent shallowest cells
            if cfg.jobs == 1:
                for c in tasks:
                    run_cell(cfg, *c)
                    tick(c)
                continue
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(cfg.jobs, mp_context=mp.get_context("spawn")) as ex:
                futs = {ex.submit(_cell_worker, (cfg, *c)): c for c in tasks}
                for fu in as_completed(futs):
                    fu.result()
                    tick(futs[fu])
    finally:
        if bar is not None:
            bar.close()
    return summarise(cfg)


def _warm_families(cfg: DepthConfig) -> tuple[str, ...]:
    """The families of ``cfg`` that get a warm-start chain."""
    from .depth_train import WARM_FAMILIES

    if cfg.init == "independent":
        return ()
    return tuple(f for f in cfg.families if f in WARM_FAMILIES)


def _load_cells(cfg: DepthConfig) -> tuple[list[dict[str, Any]], list[tuple[Any, ...]]]:
    cells, missing = [], []
    warm = _warm_families(cfg)
    for f in cfg.families:
        for L in cfg.depths:
            for s in cfg.seeds:
                deeper = _warm_base(cfg, f, L) is not None
                inits = [] if cfg.init == "warm" and f in warm and deeper else ["independent"]
                if f in warm and deeper:
                    inits.append("warm")
                for init in inits:
                    p = _cell_dir(cfg, f, L, s, init) / "cell.json"
                    if p.is_file():
                        cells.append(json.loads(p.read_text()))
                    else:
                        missing.append((f, L, s) if init == "independent" else (f, L, s, init))
    return cells, missing


def summarise(config: DepthConfig) -> DepthResult:
    """Write the CSV files, figures and report from the finished cells (any subset).

    Cells not yet finished are listed in :attr:`DepthResult.missing` and in the report.
    """
    cfg = _validate(config)
    out = Path(cfg.out)
    cells, missing = _load_cells(cfg)
    layer_rows: list[dict[str, Any]] = []
    cell_rows: list[dict[str, Any]] = []
    traj_rows: list[dict[str, Any]] = []
    opt_cache: dict[tuple[int, int], dict[str, Any] | None] = {}
    for c in cells:
        c.setdefault("init", "independent")
        key3 = {"family": c["family"], "depth": c["depth"], "seed": c["seed"], "init": c["init"]}
        for lab, m in c["layers"].items():
            layer_rows.append({**key3, "layer": lab, **m})
        tr = c.get("trajectory") or {}
        n_ep = len(tr.get("epoch", []))
        for i in range(n_ep):
            # every TRAJECTORY_EVERY-th epoch and the last (cell.json keeps every epoch)
            if tr["epoch"][i] % TRAJECTORY_EVERY == 0 or i == n_ep - 1 or i == 0:
                traj_rows.append({**key3, **{k: v[i] for k, v in tr.items()}})
        row = {k: c.get(k) for k in _CELL_COLUMNS if k in c}
        row.update(c["layers"][c["last_layer"]])
        key = (c["seed"], c["feature_dim"])
        if key not in opt_cache:
            npz = np.load(
                _cell_dir(cfg, c["family"], c["depth"], c["seed"], c["init"]) / "last_layer.npz"
            )
            opt_cache[key] = _lnufm_optimum_or_none(cfg, npz["y"], c["feature_dim"])
        opt = opt_cache[key]
        if opt is not None:
            row["net_objective"] = _net_objective_on_sphere(cfg, c)
            row["lnufm_objective"] = opt["objective"]
            row["lnufm_etf_objective"] = opt.get("etf_objective")
            row["objective_gap_rel"] = (row["net_objective"] - opt["objective"]) / abs(
                opt["objective"]
            )
            for m in SLOPE_METRICS:
                row[f"lnufm_{m}"] = opt["metrics"].get(m)
        cell_rows.append(row)
    _flag_not_at_optimum(cell_rows, cfg)
    order = {"independent": 0, "warm": 1}
    cell_rows.sort(key=lambda r: (r["family"], order[r["init"]], r["depth"], r["seed"]))
    layer_rows.sort(
        key=lambda r: (r["family"], order[r["init"]], r["depth"], r["seed"], r["layer_index"])
    )
    traj_rows.sort(key=lambda r: (r["family"], order[r["init"]], r["depth"], r["seed"], r["epoch"]))
    ufm_io.write_csv(out / "depth_layers.csv", _LAYER_COLUMNS, layer_rows)
    ufm_io.write_csv(out / "depth_cells.csv", _CELL_COLUMNS, cell_rows)
    ufm_io.write_csv(out / "depth_trajectories.csv", _TRAJ_COLUMNS, traj_rows)
    slopes: list[dict[str, Any]] = []
    for f in cfg.families:
        for init in ("independent", "warm"):
            fr = [
                r
                for r in cell_rows
                if r["family"] == f
                and (_chain(r) == init or (init == "warm" and r["depth"] == cfg.depths[0]))
            ]
            if init == "warm" and not any(r["init"] == "warm" for r in fr):
                continue
            flagged = sorted({r["depth"] for r in fr if r.get("not_at_optimum")})
            for m in (*SLOPE_METRICS, "full_objective", "objective_gap_rel"):
                pts = [(r["depth"], r.get(m)) for r in fr if _is_num(r.get(m))]
                fit = fit_slope(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    bootstrap=cfg.bootstrap,
                    seed=cfg.seed,
                )
                verdict = _verdict(fit)
                if flagged and m != "full_objective":
                    verdict += f" (not at its optimum: depth {', '.join(map(str, flagged))})"
                slopes.append(
                    {
                        "family": f,
                        "init": init,
                        "metric": m,
                        **fit,
                        "flagged_depths": " ".join(map(str, flagged)),
                        "verdict": verdict,
                    }
                )
    ufm_io.write_csv(out / "depth_slopes.csv", _SLOPE_COLUMNS, slopes)
    from .depth_figures import draw_depth_figures

    draw_depth_figures(out, cell_rows, layer_rows, cfg.families, trajectories=traj_rows)
    report = _report(cfg, cell_rows, slopes, missing)
    ufm_io.atomic_write_text(out / "report.md", report)
    return DepthResult(out_dir=out, cells=cell_rows, slopes=slopes, missing=missing, report=report)


#: ``depth_trajectories.csv`` keeps the first epoch, every this-many-th and the last of each
#: cell (each cell's ``cell.json`` has every epoch).
TRAJECTORY_EVERY = 5

#: A cell is "not at its optimum" when its full objective exceeds the lowest full objective of
#: a shallower cell of its family, seed and chain by more than this relative tolerance (float32
#: round-off of the forward pass; an identity block reproduces the shallower objective to ~1e-7).
OPTIMUM_RTOL = 1e-5


def _chain(row: dict[str, Any]) -> str:
    """The chain a cell belongs to: ``"warm"`` for warm cells, else ``"independent"``.

    The shallowest depth's independent cell starts the warm chain too (see
    :func:`_flag_not_at_optimum`)."""
    return row.get("init") or "independent"


def _flag_not_at_optimum(rows: list[dict[str, Any]], cfg: DepthConfig) -> None:
    """Set ``shallower_best_objective`` and ``not_at_optimum`` on every row, in place.

    Zeroing a block's parameters makes it an identity at zero penalty (in every family with an
    identity block; see :data:`resnet_pfc.depth_train.WARM_FAMILIES`), so the optimum of the
    full objective cannot rise with depth: a cell whose full objective exceeds that of a
    shallower cell of the same family and seed (and chain: independent cells among themselves;
    warm cells against their chain, which starts at the shallowest independent cell) by more
    than :data:`OPTIMUM_RTOL` is not at its optimum. For ``transformer_post`` (no identity
    block) the same comparison is made and the flag means the same for the independent chain,
    though the monotonicity argument does not hold exactly there; the report says so.
    """
    first = cfg.depths[0]
    for r in rows:
        chain = _chain(r)
        shallower = [
            o["full_objective"]
            for o in rows
            if o["family"] == r["family"]
            and o["seed"] == r["seed"]
            and o["depth"] < r["depth"]
            and _is_num(o.get("full_objective"))
            and (
                _chain(o) == chain
                or (chain == "warm" and o["depth"] == first and _chain(o) == "independent")
            )
        ]
        best = min(shallower) if shallower else None
        r["shallower_best_objective"] = best
        v = r.get("full_objective")
        r["not_at_optimum"] = bool(
            best is not None and _is_num(v) and v > best * (1 + OPTIMUM_RTOL)
        )


def _net_objective_on_sphere(cfg: DepthConfig, cell: dict[str, Any]) -> float:
    """The network's last layer in the LN-UFM objective, its features projected exactly onto
    the sphere first (LayerNorm's ``eps`` shrinks their norms by a relative ~1e-5)."""
    import ufm

    cdir = _cell_dir(
        cfg, cell["family"], cell["depth"], cell["seed"], cell.get("init", "independent")
    )
    z = np.load(cdir / "last_layer.npz")
    Hn = ufm.layernorm_normalize(z["H"].astype(np.float64))
    return float(
        ufm.layernorm_objective(
            z["W"],
            z["b"],
            Hn,
            z["y"],
            lam_w=cfg.weight_decay,
            lam_b=cfg.weight_decay,
            loss=cfg.loss,
        )
    )


def _lnufm_optimum_or_none(cfg: DepthConfig, y: np.ndarray, d: int) -> dict[str, Any] | None:
    if d < int(np.max(y)) + 1:
        return None  # the LN-UFM needs d >= K (the report says so)
    return _lnufm_optimum(cfg, y, d)


def _verdict(fit: dict[str, float]) -> str:
    if not math.isfinite(fit["slope"]):
        return "not fitted"
    if fit["hi"] < 0:
        return "falls"
    if fit["lo"] > 0:
        return "rises"
    return "no clear trend"


def _g(v: Any, spec: str = ".3g") -> str:
    return format(v, spec) if _is_num(v) and v == v else "n/a"


def _groups(
    cfg: DepthConfig, cells: list[dict[str, Any]]
) -> Iterator[tuple[str, str, int, list[dict[str, Any]]]]:
    """The cells of each (family, initialisation, depth) that has any, in report order."""
    for f in cfg.families:
        for init in ("independent", "warm"):
            for L in cfg.depths:
                rs = [
                    c for c in cells if c["family"] == f and c["depth"] == L and c["init"] == init
                ]
                if rs:
                    yield f, init, L, rs


def _med(rows: list[dict[str, Any]], k: str) -> float:
    v = [r[k] for r in rows if _is_num(r.get(k)) and r[k] == r[k]]
    return float(np.median(v)) if v else math.nan


def _report(
    cfg: DepthConfig,
    cells: list[dict[str, Any]],
    slopes: list[dict[str, Any]],
    missing: list[tuple[Any, ...]],
) -> str:
    flagged = [r for r in cells if r.get("not_at_optimum")]
    lines = [
        "# Collapse against depth",
        "",
        f"Preset `{cfg.preset}`: data set `{cfg.dataset}`, loss `{cfg.loss}`, families "
        f"{', '.join(cfg.families)}, depths {list(cfg.depths)}, seeds {list(cfg.seeds)}, width "
        f"{cfg.width}, weight decay {cfg.weight_decay:g} on every parameter, SGD momentum "
        f"{cfg.momentum:g}, batch {cfg.batch_size}, lr {cfg.lr:g} (ResNets) / "
        f"{cfg.transformer_lr:g} (transformers), constant for at least {cfg.epochs} / "
        f"{cfg.transformer_epochs} epochs, then until stationary (relative change of the epoch "
        f"objective and of ||theta||^2 between the means of the last {cfg.window} epochs and "
        f"the {cfg.window} before < {cfg.tol:g}) or a cap of {cfg.max_epochs} / "
        f"{cfg.transformer_max_epochs} epochs, then {cfg.anneal_epochs} epochs at lr/10. "
        f"Initialisation: `{cfg.init}`.",
        "",
        "Everything below is measured in these SGD runs, at this budget: the theorem under test "
        "(Sukenik, Lampert, Mondelli 2025) is about *global optima* of the regularised "
        "objective, and a trained network is an upper bound on its optimum, not the optimum.",
        "",
        "## Are the cells at their optimum?",
        "",
        "Full objective F = mean loss + wd/2 ||theta||^2 over *every* parameter (classifier, "
        "blocks, LayerNorm gains and shifts, embedding), evaluated after training on the whole "
        "training split (`resnet_pfc.depth.recompute_objective` redoes it from the saved "
        "weights). Zeroing a block makes it an identity at zero penalty, so the optimum of F "
        "cannot rise with depth: a cell whose F exceeds that of a shallower cell of the same "
        f"family, seed and chain (by more than a relative {OPTIMUM_RTOL:g}) is **not at its "
        "optimum**.",
        "",
    ]
    if flagged:
        lines.append(
            f"**{len(flagged)} of {len(cells)} cells are not at their optimum**: "
            + ", ".join(
                f"{r['family']} L={r['depth']} s={r['seed']}"
                + (" (warm)" if r["init"] == "warm" else "")
                for r in flagged
            )
            + ". Their NC values describe where SGD stopped, not the optimum the theorem is "
            "about, and the slope verdicts of their families say so."
        )
    else:
        lines.append(
            f"No cell is flagged: in every chain F does not rise with depth ({len(cells)} cells)."
        )
    lines += [
        "",
        "Median over seeds. F parts: wd/2 ||.||^2 of the classifier, the blocks, the LayerNorm "
        "gains and shifts, the embedding. e-folds: sum over steps of lr wd/(1-momentum). "
        "stationary: seeds whose criterion held before the cap.",
        "",
        "| family | init | depth | F | loss | classifier | blocks | LayerNorm | embedding | "
        "epochs | e-folds | stationary | flagged |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f, init, L, rs in _groups(cfg, cells):
        met = sum(bool(r.get("criterion_met")) for r in rs)
        nfl = sum(bool(r.get("not_at_optimum")) for r in rs)
        lines.append(
            f"| {f} | {init} | {L} | {_g(_med(rs, 'full_objective'), '.4g')} | "
            f"{_g(_med(rs, 'full_loss'), '.3g')} | "
            + " | ".join(_g(_med(rs, f"full_penalty_{p}"), ".3g") for p in _PARTS)
            + f" | {_g(_med(rs, 'epochs'), '.0f')} | {_g(_med(rs, 'efolds'), '.2g')} | "
            f"{met}/{len(rs)} | {nfl}/{len(rs)} |"
        )
    warm_rows = [r for r in cells if r["init"] == "warm"]
    if warm_rows:
        lines += [
            "",
            "### Warm start against independent training",
            "",
            "Warm: depth L starts from the trained next-shallower cell (same family and seed) "
            "plus identity blocks with every parameter 0 (the same full objective at the "
            "start), then trains with the same schedule. Median over seeds; "
            "F_indep - F_warm > 0 means independent training stopped higher.",
            "",
            "| family | depth | F independent | F warm | F_indep - F_warm | NC1 independent | "
            "NC1 warm | CDNV independent | CDNV warm |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for f in cfg.families:
            for L in cfg.depths:
                ri = [
                    r
                    for r in cells
                    if r["family"] == f and r["depth"] == L and r["init"] == "independent"
                ]
                rw = [r for r in warm_rows if r["family"] == f and r["depth"] == L]
                if not ri or not rw:
                    continue
                di = _med(ri, "full_objective") - _med(rw, "full_objective")
                lines.append(
                    f"| {f} | {L} | {_g(_med(ri, 'full_objective'), '.4g')} | "
                    f"{_g(_med(rw, 'full_objective'), '.4g')} | {_g(di, '.3g')} | "
                    f"{_g(_med(ri, 'nc1'))} | {_g(_med(rw, 'nc1'))} | "
                    f"{_g(_med(ri, 'cdnv'))} | {_g(_med(rw, 'cdnv'))} |"
                )
        lines += [
            "",
            "Zero is a stationary point of an inserted ResNet block's parameters (ReLU'(0) = 0; "
            "a zero first layer passes no gradient to the second), so in the ResNets the "
            "inserted blocks stay identities and the warm chain is the shallowest network "
            "trained longer; in the pre-LN transformers the inserted blocks' biases move.",
        ]
    if "transformer_post" in cfg.families:
        lines += [
            "",
            "`transformer_post` (post-LN blocks) has no identity block (a zero block maps every "
            "token to 0, a unit-gain LayerNorm does not fix the stream), so its objective need "
            "not be monotone at the optimum; its flag compares it with shallower cells all the "
            "same, and it has no warm chain.",
        ]
    lines += [
        "",
        "## Collapse against depth, as measured",
        "",
        "The paper's statement (Sukenik, Lampert, Mondelli 2025, abstract): global optima of "
        "deep regularised ResNets and transformers with LayerNorm are approximately collapsed, "
        "the approximation getting tighter as depth grows. It states no slope; none is "
        "compared here. Below: the least-squares slope of log(metric) against log(depth) over "
        "the cells of each family and chain, its 95% bootstrap interval (seeds resampled "
        "within each depth) and the verdict: *falls* (interval below 0), *rises* (above 0) or "
        "*no clear trend*, with the depths whose cells are not at their optimum.",
        "",
        "| family | init | metric | slope | 95% interval | cells | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    shown = ("nc1", "cdnv", "gram_eig_ratio", *NC2, "nc3", "pfc1", "full_objective")
    for s in slopes:
        if s["metric"] not in shown:
            continue
        lines.append(
            f"| {s['family']} | {s['init']} | {s['metric']} | {_g(s['slope'])} | "
            f"[{_g(s['lo'])}, {_g(s['hi'])}] | {s['n']} | {s['verdict']} |"
        )
    lines += [
        "",
        "Other slopes (PFC2, PFC3, the LN-UFM objective gap) are in `depth_slopes.csv`.",
        "",
        "Last-layer NC1, CDNV (Galanti et al. 2022; does not invert Sigma_B) and the "
        "class-mean Gram eigenvalue ratio (largest / smallest nonzero eigenvalue; 1 at a "
        "simplex ETF), median over seeds, and the law of data separation's fitted per-layer "
        "ratio of NC1 over the residual stream (He and Su 2023; R^2 of the log-linear fit):",
        "",
        "| family | init | depth | train acc | NC1 | CDNV | eig ratio | NC3 | sep. ratio | "
        "sep. R^2 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for f, init, L, rs in _groups(cfg, cells):
        lines.append(
            f"| {f} | {init} | {L} | {_g(_med(rs, 'train_accuracy'), '.4f')} | "
            f"{_g(_med(rs, 'nc1'))} | {_g(_med(rs, 'cdnv'))} | "
            f"{_g(_med(rs, 'gram_eig_ratio'))} | {_g(_med(rs, 'nc3'))} | "
            f"{_g(_med(rs, 'separation_rate'))} | {_g(_med(rs, 'separation_r2'))} |"
        )
    lines += [
        "",
        "## The last layer against the LN-UFM optimum",
        "",
        "Relative gap (F_net - F*)/|F*| of the network's last-layer (H, W, b) in the LN-UFM "
        f"objective (loss `{cfg.loss}`, lam_w = lam_b = {cfg.weight_decay:g}; this counts the "
        "classifier's penalty only, so it cannot reveal the other parts' penalty: see the full "
        "objective above), median over seeds.",
        "",
        "| family | init | depth | gap | NC1 net | NC1 LN-UFM | NC3 net | sphere dev |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f, init, L, rs in _groups(cfg, cells):
        lines.append(
            f"| {f} | {init} | {L} | {_g(_med(rs, 'objective_gap_rel'))} | "
            f"{_g(_med(rs, 'nc1'))} | {_g(_med(rs, 'lnufm_nc1'))} | "
            f"{_g(_med(rs, 'nc3'))} | {_g(_med(rs, 'sphere_dev'))} |"
        )
    opt_file = Path(cfg.out) / "lnufm_optimum.json"
    if opt_file.is_file():
        opt = json.loads(opt_file.read_text())
        lines += [
            "",
            f"F* = {opt['objective']:.6g}: `ufm.solve(y, d={opt['key']['d']}, "
            f"features='layernorm', loss='{cfg.loss}', lam_w={cfg.weight_decay:g}, "
            f"lam_b={cfg.weight_decay:g})` on the training labels (status {opt['status']}); "
            f"the balanced closed form `ufm.layernorm_etf_optimum` gives "
            f"{_g(opt.get('etf_objective'), '.6g')} (certified optimal: "
            f"{opt.get('etf_certified')}; exact for balanced classes, here class sizes "
            f"{min(opt['key']['counts'])}..{max(opt['key']['counts'])}). F_net puts the "
            "network's last-layer features through `ufm.layernorm_normalize` first.",
        ]
    if not any(_is_num(r.get("lnufm_objective")) for r in cells):
        lines += ["", "(No LN-UFM comparison: it needs width >= number of classes.)"]
    lines += ["", "## Cells", ""]
    lines.append(f"{len(cells)} of {len(cells) + len(missing)} cells finished.")
    if missing:
        lines.append(
            "Missing (family, depth, seed[, init]): "
            + ", ".join("(" + ", ".join(map(str, m)) + ")" for m in missing)
            + ". Rerun the same command to finish them."
        )
    lines.append("")
    return "\n".join(lines)
