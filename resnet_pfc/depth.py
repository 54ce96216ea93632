r"""Collapse against depth: LayerNorm ResNets and transformers, and the sphere-constrained UFM.

The claim under test (Sukenik, Lampert, Mondelli 2025, "Neural Collapse is Globally Optimal in
Deep Regularized ResNets and Transformers"): global optima of deep regularised ResNets and
transformers with LayerNorm are approximately collapsed, the approximation tightens as depth
grows, and large-depth training reduces to an unconstrained features model whose features lie
where LayerNorm puts them (zero mean across coordinates, norm :math:`\sqrt d`). Their
experiments show NC1-NC3 falling with depth, a log-log slope of about -0.3.

:func:`depth_study` trains every family of :data:`resnet_pfc.models.DEPTH_FAMILIES` at every depth
and seed with :func:`resnet_pfc.train.train` (cross entropy, SGD with momentum, weight decay on
every parameter, lr divided by 10 at 1/3 and 2/3 of the epochs) and measures every block's
output with the streaming accumulators (:func:`resnet_pfc.measure.measure`). Per cell
(family, depth, seed) it keeps the final metrics of every layer and the last layer's features
``H (N, d)``, classifier ``W (K, d)`` and bias ``b (K,)`` on the training set. Then

* **slopes**: for each family and last-layer metric ``m`` (NC1, NC2 equinorm, NC2
  equiangularity, NC3, PFC1-3) the least-squares fit
  :math:`\log m = a + s \log L` over all cells, with a percentile bootstrap interval for
  ``s`` that resamples the seeds of each depth with replacement (stratified by depth);
* **the reduction**: the network's last-layer ``(H, W, b)`` evaluated in the objective of the
  sphere-constrained (LayerNorm) UFM at the matching regularisation,

  .. math:: F(W, b, H) = \frac1N \sum_i \ell_{CE}(W h_i + b, y_i)
            + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_b}{2}\|b\|^2,
            \qquad h_i \in \{h: \textstyle\sum_j h_j = 0,\ \|h\| = \sqrt d\},

  with :math:`\lambda_W = \lambda_b` = the training weight decay (SGD's weight decay ``wd``
  minimises the loss plus :math:`(wd/2)\|\theta\|^2` over every parameter ``theta``, of which
  the UFM keeps the classifier's; the other parameters' penalty is what the reduction says
  vanishes with depth). The relative gap :math:`(F_{net} - F^*) / |F^*|` against
  :math:`F^*`, the LN-UFM optimum of :func:`ufm.solve` with ``features="layernorm"``, and the
  metrics of both side by side.

Output folder (every file written atomically; a cell is finished when its ``cell.json`` exists,
and a rerun skips it, so an interrupted study resumes cell by cell; an interrupted cell resumes
from its last epoch checkpoint)::

    config.json                       options and versions
    cells/<family>/L<depth>_s<seed>/  run/ (the training run directory), cell.json, last_layer.npz
    depth_layers.csv                  one row per (family, depth, seed, layer): final metrics
    depth_cells.csv                   one row per cell: last-layer metrics and the reduction
    depth_slopes.csv                  one row per (family, metric): slope, bootstrap interval
    figures/depth_metrics.png         last-layer metrics against depth (log-log), one column per family
    figures/depth_layers_<family>.png per-layer curves coloured by depth
    figures/depth_reduction.png       objective gap to the LN-UFM optimum against depth
    report.md                         "claim vs this run"

Presets (:data:`DEPTH_PRESETS`): ``"cpu"`` (digits, reduced epochs, about 12 minutes on two
idle cores with ``jobs=2``; see :data:`DEPTH_PRESETS` for the measured estimate), ``"paper"``
(the seed paper's settings as far as they are known: width 64, depths 2-34, weight decay 5e-3,
350 epochs, on a GPU) and ``"tiny"`` (the tutorial and the tests).

Size (over 500 lines): one study with one resumable pipeline -- its config and presets,
the cell runner, the LN-UFM comparison and the slope fits share the study's config and files;
its figures are in :mod:`resnet_pfc.depth_figures`.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ufm import io as ufm_io
from ufm.errors import InputError
from ufm.registry import NC2, PFC

from .config import TrainConfig, dataset_arg
from .families import DEPTH_FAMILIES
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
    "CLAIMED_SLOPE",
]

#: Last-layer metrics whose log-log slope against depth is fitted.
SLOPE_METRICS: tuple[str, ...] = ("nc1", *NC2, "nc3", *PFC)
#: The published slope of the NC metrics against depth on log-log axes (about -0.3).
CLAIMED_SLOPE = -0.3
_NC_CLAIM = ("nc1", *NC2, "nc3")
_METRICS = MEASURED_METRICS

_CELLS = "Every (family, depth, seed) is a cell."
_DROPS = "Divided by 10 at 1/3 and 2/3 of the epochs."

#: Named settings (``DepthConfig`` fields). ``cpu``: measured on this project's 2-core machine
#: with one thread at low load, one digits epoch (1347 samples, batch 128) costs about
#: 0.02 s + 0.005 s per block (``ln_resnet1``), 0.05 s + 0.006 s per block (``ln_resnet2``) and
#: 0.09 s per block (transformer, 4 tokens of 4x4 patches, width 64), plus tens of ms of
#: checkpointing. 3 seeds x depths (2, 3, 5, 8, 13, 21, 34) (86 blocks per sweep) x 60 / 40 epochs:
#: about 22 minutes of one core, 11-13 minutes with ``jobs=2`` on two idle cores (40 minutes were
#: measured with six other jobs on the machine; docs/depth.md).
DEPTH_PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "dataset": "digits",
        "depths": (2, 3, 5, 8, 13, 21, 34),
        "seeds": (0, 1, 2),
        "width": 64,
        "epochs": 60,
        "transformer_epochs": 40,
        "lr": 0.05,
        "transformer_lr": 0.05,
        "weight_decay": 5e-3,
        "patch": 4,
        "device": "cpu",
        "jobs": 2,
    },
    "paper": {
        "dataset": "mnist",
        "depths": (2, 3, 5, 8, 13, 21, 34),
        "seeds": (0, 1, 2, 3, 4),
        "width": 64,
        "epochs": 350,
        "transformer_epochs": 350,
        "lr": 0.05,
        "transformer_lr": 0.05,
        "weight_decay": 5e-3,
        "patch": 7,
        "device": "cuda",
    },
    "tiny": {
        "dataset": "digits",
        "families": ("ln_resnet1", "transformer"),
        "depths": (1, 2, 4),
        "seeds": (0, 1),
        "width": 16,
        "epochs": 4,
        "transformer_epochs": 3,
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
        "blocks per network", (2, 3, 5, 8, 13, 21, 34), nargs="+", doc=_CELLS
    )
    seeds: tuple[int, ...] = option(
        int, "training seeds", default=(0, 1, 2), low=0, nargs="+", doc=_CELLS
    )
    width: int = _count("residual-stream / token width d", 64)
    epochs: int = _count("epochs of the ResNets", 100)
    transformer_epochs: int = _count("epochs of the transformer", 60)
    lr: float = _rate("initial SGD learning rate of the ResNets", doc=_DROPS)
    transformer_lr: float = _rate("initial SGD learning rate of the transformer", doc=_DROPS)
    weight_decay: float = _rate(
        "weight decay on every parameter",
        5e-3,
        doc="Also the LN-UFM's ``lam_w = lam_b``.",
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
    threads: int = _count("torch threads per cell", 1)
    jobs: int = _count("cells trained in parallel, one process each", 1)
    bootstrap: int = option(int, "bootstrap resamples of each slope", default=2000, low=10)
    seed: int = option(int, "seed of the bootstrap and of the LN-UFM solve", default=0, low=0)
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
    if not str(cfg.out):
        raise InputError("out must name a folder")
    return replace(cfg, families=fams, depths=depths, seeds=seeds, out=str(cfg.out))


# ------------------------------------------------------------------------------------------
# one cell
# ------------------------------------------------------------------------------------------


def _cell_dir(cfg: DepthConfig, family: str, depth: int, seed: int) -> Path:
    return Path(cfg.out) / "cells" / family / f"L{depth:03d}_s{seed}"


def _train_config(cfg: DepthConfig, family: str, depth: int, seed: int) -> TrainConfig:
    tr = family == "transformer"
    epochs = cfg.transformer_epochs if tr else cfg.epochs
    return TrainConfig(
        dataset=cfg.dataset,
        out=str(_cell_dir(cfg, family, depth, seed) / "run"),
        model=family,
        blocks=depth,
        width=cfg.width,
        heads=cfg.heads,
        patch=cfg.patch if tr else None,
        epochs=epochs,
        lr=cfg.transformer_lr if tr else cfg.lr,
        momentum=cfg.momentum,
        weight_decay=cfg.weight_decay,
        batch_size=cfg.batch_size,
        eval_every=epochs,
        per_class=cfg.per_class,
        data_root=cfg.data_root,
        download=cfg.download,
        seed=seed,
        resume=True,
        device=cfg.device,
        threads=cfg.threads,
        geodesic_points=11,
        geodesic_pass2_points=3,
        progress=False,
        figures=False,
    )


def lnufm_objective(
    H: np.ndarray, y: np.ndarray, W: np.ndarray, b: np.ndarray, *, lam_w: float, lam_b: float
) -> float:
    r"""The LN-UFM objective (cross entropy) at given ``(W, b, H)``, in float64.

    .. math:: F = \frac1N \sum_i \ell_{CE}(W h_i + b, y_i)
              + \frac{\lambda_W}{2}\|W\|_F^2 + \frac{\lambda_b}{2}\|b\|^2

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
    Z = H @ W.T + b
    Zmax = Z.max(axis=1, keepdims=True)
    lse = np.log(np.exp(Z - Zmax).sum(axis=1)) + Zmax[:, 0]
    ce = float(np.mean(lse - Z[np.arange(len(y)), y]))
    return ce + 0.5 * lam_w * float(np.sum(W * W)) + 0.5 * lam_b * float(np.sum(b * b))


def run_cell(cfg: DepthConfig, family: str, depth: int, seed: int) -> dict[str, Any]:
    """Train and measure one cell, or load it if its ``cell.json`` exists.

    Returns
    -------
    dict
        ``family, depth, seed, epochs, train_accuracy, train_loss, elapsed_s, last_layer``,
        ``layers`` (label -> final metrics), and the network's LN-UFM terms
        (``net_objective``, ``sphere_dev``: the largest relative deviation of a last-layer
        feature from LayerNorm's sphere, ``mean_abs``: the largest absolute coordinate mean).
    """
    cdir = _cell_dir(cfg, family, depth, seed)
    done = cdir / "cell.json"
    if done.is_file():
        return json.loads(done.read_text())
    import torch
    from torch.utils.data import DataLoader

    from . import data as data_mod
    from .config import resolve_config
    from .measure import LayerTaps
    from .runs import load_run
    from .train import train

    tcfg = _train_config(cfg, family, depth, seed)
    res = train(tcfg)
    rcfg = resolve_config(tcfg)
    final = max(r["epoch"] for r in res.metrics)
    rows = [r for r in res.metrics if r["epoch"] == final and r["split"] == "train"]
    layers = {
        r["layer"]: {k: r.get(k) for k in ("layer_index", "position", *_METRICS)} for r in rows
    }
    last = max(rows, key=lambda r: r["layer_index"])

    # The last layer's features on the training set, for the reduction.
    ds = data_mod.load_dataset(
        cfg.dataset,
        split="train",
        per_class=cfg.per_class,
        seed=seed,
        data_root=cfg.data_root,
    )
    K = int(ds.num_classes)
    _, model = load_run(tcfg.out)
    lmap = model.measured_layers()
    feats: list[np.ndarray] = []
    ys: list[np.ndarray] = []
    with (
        torch.no_grad(),
        LayerTaps(
            model,
            {last["layer"]: lmap[last["layer"]]},
            lambda _lab, h: feats.append(h.reshape(h.shape[0], -1).double().numpy()),
        ),
    ):
        for x, yb in DataLoader(ds, batch_size=512):
            model(x)
            ys.append(yb.numpy())
    H = np.concatenate(feats)
    y = np.concatenate(ys)
    W, b = (t.double().numpy() for t in model.measured_classifier())
    d = H.shape[1]
    norms = np.linalg.norm(H, axis=1)
    net_obj = lnufm_objective(H, y, W, b, lam_w=cfg.weight_decay, lam_b=cfg.weight_decay)
    buf = io.BytesIO()
    np.savez_compressed(buf, H=H.astype(np.float32), y=y, W=W, b=b)
    ufm_io.atomic_write_bytes(cdir / "last_layer.npz", buf.getvalue())
    cell = {
        "family": family,
        "depth": depth,
        "seed": seed,
        "epochs": final,
        "lr": rcfg.lr,
        "train_accuracy": last.get("accuracy"),
        "train_loss": last.get("loss"),
        "elapsed_s": res.elapsed_s,
        "last_layer": last["layer"],
        "layers": layers,
        "num_samples": int(len(y)),
        "num_classes": K,
        "feature_dim": d,
        "net_objective": net_obj,
        "net_ce": lnufm_objective(H, y, W, b, lam_w=0.0, lam_b=0.0),
        "net_w_norm2": float(np.sum(W * W)),
        "net_b_norm2": float(np.sum(b * b)),
        "sphere_dev": float(np.max(np.abs(norms / math.sqrt(d) - 1.0))),
        "mean_abs": float(np.max(np.abs(H.mean(axis=1)))),
    }
    ufm_io.atomic_write_text(done, json.dumps(cell, indent=1, default=float) + "\n")
    return cell


def _cell_worker(args: tuple[DepthConfig, str, int, int]) -> dict[str, Any]:
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
    key = {"counts": counts, "d": d, "lam": cfg.weight_decay}
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
        loss="ce",
        lam_w=cfg.weight_decay,
        lam_b=cfg.weight_decay,
        seed=cfg.seed,
    )
    K = len(counts)
    etf = ufm.layernorm_etf_optimum(K, d, loss="ce", lam_w=cfg.weight_decay, lam_b=cfg.weight_decay)
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


def _csv(rows: list[dict[str, Any]], columns: Sequence[str]) -> str:
    return ufm_io.csv_text(columns, ([r.get(c) for c in columns] for r in rows))


_CELL_COLUMNS = (
    "family",
    "depth",
    "seed",
    "epochs",
    "lr",
    "last_layer",
    "train_accuracy",
    "train_loss",
    *(m for m in _METRICS),
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
_LAYER_COLUMNS = ("family", "depth", "seed", "layer", "layer_index", "position", *_METRICS)
_SLOPE_COLUMNS = ("family", "metric", "slope", "lo", "hi", "intercept", "n", "verdict")


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
    doc = {"config": asdict(cfg), "versions": versions()}
    ufm_io.atomic_write_text(out / "config.json", json.dumps(doc, indent=2, default=str) + "\n")
    todo = [(f, L, s) for f in cfg.families for L in cfg.depths for s in cfg.seeds]
    # Most expensive first, so that parallel workers finish together.
    todo.sort(key=lambda c: -(c[1] * (6 if c[0] == "transformer" else 1)))
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc="depth study", unit="cell", dynamic_ncols=True)

    def tick(c: tuple[str, int, int]) -> None:
        if bar is not None:
            bar.set_postfix(cell=f"{c[0]} L={c[1]} s={c[2]}")
            bar.update(1)

    try:
        if cfg.jobs == 1:
            for c in todo:
                run_cell(cfg, *c)
                tick(c)
        else:
            import multiprocessing as mp
            from concurrent.futures import ProcessPoolExecutor, as_completed

            with ProcessPoolExecutor(cfg.jobs, mp_context=mp.get_context("spawn")) as ex:
                futs = {ex.submit(_cell_worker, (cfg, *c)): c for c in todo}
                for fu in as_completed(futs):
                    fu.result()
                    tick(futs[fu])
    finally:
        if bar is not None:
            bar.close()
    return summarise(cfg)


def _load_cells(cfg: DepthConfig) -> tuple[list[dict[str, Any]], list[tuple[str, int, int]]]:
    cells, missing = [], []
    for f in cfg.families:
        for L in cfg.depths:
            for s in cfg.seeds:
                p = _cell_dir(cfg, f, L, s) / "cell.json"
                if p.is_file():
                    cells.append(json.loads(p.read_text()))
                else:
                    missing.append((f, L, s))
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
    opt_cache: dict[tuple[int, int], dict[str, Any]] = {}
    for c in cells:
        for lab, m in c["layers"].items():
            layer_rows.append(
                {"family": c["family"], "depth": c["depth"], "seed": c["seed"], "layer": lab, **m}
            )
        row = {k: c.get(k) for k in _CELL_COLUMNS if k in c}
        row.update(c["layers"][c["last_layer"]])
        key = (c["seed"], c["feature_dim"])
        if key not in opt_cache:
            npz = np.load(_cell_dir(cfg, c["family"], c["depth"], c["seed"]) / "last_layer.npz")
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
    cell_rows.sort(key=lambda r: (r["family"], r["depth"], r["seed"]))
    layer_rows.sort(key=lambda r: (r["family"], r["depth"], r["seed"], r["layer_index"]))
    ufm_io.atomic_write_text(out / "depth_layers.csv", _csv(layer_rows, _LAYER_COLUMNS))
    ufm_io.atomic_write_text(out / "depth_cells.csv", _csv(cell_rows, _CELL_COLUMNS))
    slopes: list[dict[str, Any]] = []
    for f in cfg.families:
        fr = [r for r in cell_rows if r["family"] == f]
        for m in (*SLOPE_METRICS, "objective_gap_rel"):
            pts = [(r["depth"], r.get(m)) for r in fr if _is_num(r.get(m))]
            fit = fit_slope(
                [p[0] for p in pts],
                [p[1] for p in pts],
                bootstrap=cfg.bootstrap,
                seed=cfg.seed,
            )
            slopes.append({"family": f, "metric": m, **fit, "verdict": _verdict(fit)})
    ufm_io.atomic_write_text(out / "depth_slopes.csv", _csv(slopes, _SLOPE_COLUMNS))
    from .depth_figures import draw_depth_figures

    draw_depth_figures(out, cell_rows, layer_rows, cfg.families)
    report = _report(cfg, cell_rows, slopes, missing)
    ufm_io.atomic_write_text(out / "report.md", report)
    return DepthResult(out_dir=out, cells=cell_rows, slopes=slopes, missing=missing, report=report)


def _net_objective_on_sphere(cfg: DepthConfig, cell: dict[str, Any]) -> float:
    """The network's last layer in the LN-UFM objective, its features projected exactly onto
    the sphere first (LayerNorm's ``eps`` shrinks their norms by a relative ~1e-5)."""
    import ufm

    z = np.load(_cell_dir(cfg, cell["family"], cell["depth"], cell["seed"]) / "last_layer.npz")
    Hn = ufm.layernorm_normalize(z["H"].astype(np.float64))
    return float(
        ufm.layernorm_objective(
            z["W"], z["b"], Hn, z["y"], lam_w=cfg.weight_decay, lam_b=cfg.weight_decay, loss="ce"
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


def _report(
    cfg: DepthConfig,
    cells: list[dict[str, Any]],
    slopes: list[dict[str, Any]],
    missing: list[tuple[str, int, int]],
) -> str:
    lines = [
        "# Collapse against depth",
        "",
        f"Preset `{cfg.preset}`: data set `{cfg.dataset}`, families {', '.join(cfg.families)}, "
        f"depths {list(cfg.depths)}, seeds {list(cfg.seeds)}, width {cfg.width}, weight decay "
        f"{cfg.weight_decay:g}, epochs {cfg.epochs} (ResNets) / {cfg.transformer_epochs} "
        f"(transformer), lr {cfg.lr:g} / {cfg.transformer_lr:g}, batch {cfg.batch_size}.",
        "",
        "## Claim vs this run",
        "",
        "Claim (Sukenik, Lampert, Mondelli 2025): NC metrics of the last layer fall with depth; "
        f"published log-log slope about {CLAIMED_SLOPE}. Below: the least-squares slope of "
        "log(metric) against log(depth) over all cells, its 95% bootstrap interval (seeds "
        "resampled within each depth), and the verdict: *falls* (interval below 0), *rises* "
        "(above 0) or *no clear trend*.",
        "",
        "| family | metric | slope | 95% interval | cells | NC falls with depth? | "
        f"interval contains {CLAIMED_SLOPE}? |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in slopes:
        if s["metric"] not in _NC_CLAIM:
            continue
        held = {"falls": "held", "rises": "not held (rises)", "no clear trend": "not held"}
        contains = "yes" if _is_num(s["lo"]) and s["lo"] <= CLAIMED_SLOPE <= s["hi"] else "no"
        lines.append(
            f"| {s['family']} | {s['metric']} | {_g(s['slope'])} | "
            f"[{_g(s['lo'])}, {_g(s['hi'])}] | {s['n']} | "
            f"{held.get(s['verdict'], s['verdict'])} | "
            f"{contains if math.isfinite(s['slope']) else 'n/a'} |"
        )
    lines += [
        "",
        "Other last-layer metrics (PFC1-3) and the LN-UFM objective gap:",
        "",
        "| family | metric | slope | 95% interval | cells | verdict |",
        "|---|---|---|---|---|---|",
    ]
    for s in slopes:
        if s["metric"] in _NC_CLAIM:
            continue
        lines.append(
            f"| {s['family']} | {s['metric']} | {_g(s['slope'])} | "
            f"[{_g(s['lo'])}, {_g(s['hi'])}] | {s['n']} | {s['verdict']} |"
        )
    lines += [
        "",
        "## The reduction: distance to the sphere-constrained UFM optimum",
        "",
        "Relative objective gap (F_net - F*)/|F*| of the network's last-layer (H, W, b) in the "
        f"LN-UFM objective (cross entropy, lam_w = lam_b = {cfg.weight_decay:g}), median over "
        "seeds, with the last layer's NC1 and the LN-UFM optimum's NC1 side by side.",
        "",
        "| family | depth | train acc | gap | NC1 net | NC1 LN-UFM | NC3 net | NC3 LN-UFM | "
        "sphere dev |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for f in cfg.families:
        for L in cfg.depths:
            rs = [r for r in cells if r["family"] == f and r["depth"] == L]
            if not rs:
                continue

            def med(k: str, rs: list[dict[str, Any]] = rs) -> float:
                v = [r[k] for r in rs if _is_num(r.get(k))]
                return float(np.median(v)) if v else math.nan

            lines.append(
                f"| {f} | {L} | {_g(med('train_accuracy'), '.4f')} | "
                f"{_g(med('objective_gap_rel'))} | {_g(med('nc1'))} | {_g(med('lnufm_nc1'))} | "
                f"{_g(med('nc3'))} | {_g(med('lnufm_nc3'))} | {_g(med('sphere_dev'))} |"
            )
    opt_file = Path(cfg.out) / "lnufm_optimum.json"
    if opt_file.is_file():
        opt = json.loads(opt_file.read_text())
        lines += [
            "",
            f"F* = {opt['objective']:.6g}: `ufm.solve(y, d={opt['key']['d']}, "
            f"features='layernorm', loss='ce', lam_w={cfg.weight_decay:g}, "
            f"lam_b={cfg.weight_decay:g})` on the training labels (status {opt['status']}); "
            f"the balanced closed form `ufm.layernorm_etf_optimum` gives "
            f"{opt['etf_objective']:.6g} (certified optimal: {opt['etf_certified']}; exact "
            f"for balanced classes, here class sizes {min(opt['key']['counts'])}.."
            f"{max(opt['key']['counts'])}). F_net puts the network's last-layer "
            "features through `ufm.layernorm_normalize` first (LayerNorm's eps shrinks norms "
            "by ~1e-5) and uses its classifier (W, b) as they are. The other parameters' weight "
            "decay is not counted: the reduction says their share vanishes with depth.",
        ]
    if not any(_is_num(r.get("lnufm_objective")) for r in cells):
        lines += ["", "(No LN-UFM comparison: it needs width >= number of classes.)"]
    lines += ["", "## Cells", ""]
    total = len(cfg.families) * len(cfg.depths) * len(cfg.seeds)
    lines.append(f"{len(cells)} of {total} cells finished.")
    if missing:
        lines.append(
            "Missing (family, depth, seed): "
            + ", ".join(f"({f}, {L}, {s})" for f, L, s in missing)
            + ". Rerun the same command to finish them."
        )
    lines.append("")
    return "\n".join(lines)
