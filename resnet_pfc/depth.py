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

The options and presets live in :mod:`resnet_pfc.depth_config`, the report in
:mod:`resnet_pfc.depth_report`, the training loop in :mod:`resnet_pfc.depth_train`, the
figures in :mod:`resnet_pfc.depth_figures`; this module runs the cells and the study.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from ufm import io as ufm_io
from ufm.errors import InputError
from ufm.losses import check_loss
from ufm.options import with_options
from ufm.registry import SEPARATION

from .depth_config import (
    DEPTH_PRESETS,
    INITS,
    OPTIMUM_RTOL,
    PARTS,
    SLOPE_METRICS,
    TRAIN_OPTIONS,
    DepthConfig,
    DepthResult,
    depth_config,
    is_number,
    validate_depth_config,
)
from .depth_report import report_text
from .depth_report import verdict as slope_verdict
from .families import TRANSFORMER_VARIANTS
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
    "recompute_objective",
    "summarise",
    "INITS",
]

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
    kw: dict[str, Any] = {"width": cfg.train.width}
    if _is_transformer(family):
        kw |= {"heads": cfg.train.heads, "patch": cfg.train.patch}
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
        cfg.train.dataset,
        split="train",
        per_class=cfg.train.per_class,
        seed=seed,
        data_root=cfg.train.data_root,
        download=cfg.train.download,
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

    torch.set_num_threads(cfg.train.threads)
    ds = _load_train(cfg, seed)
    K = int(ds.num_classes)
    shape = tuple(ds.input_shape)
    kw = _build_kwargs(cfg, family)
    torch.manual_seed(seed)
    check_model_fits(
        lambda: build_depth_model(family, shape, K, blocks=depth, **kw),
        torch.float32,
        sizes=f"family={family}, depth={depth}, width={cfg.train.width}",
        fix="use a smaller --width or --depths",
    )
    if base is None:
        model = build_depth_model(family, shape, K, blocks=depth, **kw)
    else:
        prev = load_cell_model(_cell_dir(cfg, family, base, seed, prev_init))
        model = warm_start(prev, family, depth, input_shape=shape, num_classes=K, **kw)
    model = model.to(cfg.train.device)
    x, y = ds.x, ds.y
    wd = cfg.train.weight_decay
    init_obj = full_objective(model, x, y, weight_decay=wd, loss=cfg.train.loss, num_classes=K)
    tr = _is_transformer(family)
    fit = train_cell(
        model,
        x,
        y,
        num_classes=K,
        loss=cfg.train.loss,
        lr=cfg.transformer_lr if tr else cfg.train.lr,
        momentum=cfg.train.momentum,
        weight_decay=wd,
        batch_size=cfg.train.batch_size,
        min_epochs=cfg.transformer_epochs if tr else cfg.epochs,
        max_epochs=cfg.transformer_max_epochs if tr else cfg.max_epochs,
        window=cfg.window,
        tol=cfg.tol,
        anneal_epochs=cfg.anneal_epochs,
        seed=seed,
        checkpoint=cdir / "train_state.pt",
    )
    model = model.cpu().eval()
    obj = full_objective(model, x, y, weight_decay=wd, loss=cfg.train.loss, num_classes=K)
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
    if all(is_number(v) and v > 0 and math.isfinite(v) for v in D) and len(D) >= 2:
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
    lw = dict(lam_w=wd, lam_b=wd, loss=cfg.train.loss)
    buf = io.BytesIO()
    np.savez_compressed(buf, H=H.astype(np.float32), y=yn, W=W, b=b)
    ufm_io.atomic_write_bytes(cdir / "last_layer.npz", buf.getvalue())
    cell = {
        "family": family,
        "depth": depth,
        "seed": seed,
        "init": init,
        "warm_from": base,
        "dataset": cfg.train.dataset,
        "per_class": cfg.train.per_class,
        "data_root": cfg.train.data_root,
        "loss": cfg.train.loss,
        "weight_decay": wd,
        "epochs": fit.epochs,
        "criterion_met": fit.criterion_met,
        "stationary_epoch": fit.stationary_epoch,
        "efolds": fit.efolds,
        "lr": cfg.transformer_lr if tr else cfg.train.lr,
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
        "net_ce": lnufm_objective(H, yn, W, b, lam_w=0.0, lam_b=0.0, loss=cfg.train.loss),
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
    key = {"counts": counts, "d": d, "lam": cfg.train.weight_decay, "loss": cfg.train.loss}
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
        loss=cfg.train.loss,
        lam_w=cfg.train.weight_decay,
        lam_b=cfg.train.weight_decay,
        seed=cfg.seed,
    )
    K = len(counts)
    etf = ufm.layernorm_etf_optimum(
        K, d, loss=cfg.train.loss, lam_w=cfg.train.weight_decay, lam_b=cfg.train.weight_decay
    )
    out = {
        "key": key,
        "objective": float(res.objective),
        "etf_objective": float(etf.objective),
        "etf_certified": bool(etf.optimal),
        "metrics": {k: float(v) for k, v in dict(res.metrics).items() if is_number(v)},
        "status": str(getattr(res, "status", "")),
    }
    ufm_io.atomic_write_text(path, json.dumps(out, indent=1) + "\n")
    return out


# ------------------------------------------------------------------------------------------
# the study
# ------------------------------------------------------------------------------------------


_CELL_METRICS = (*MEASURED_METRICS, *SEPARATION)
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
    *(f"full_penalty_{p}" for p in PARTS),
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
    *(f"norm2_{p}" for p in PARTS),
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
        Default: the ``"cpu"`` preset. Keyword ``overrides`` replace fields (``train`` may be
        a mapping of some training options: :func:`ufm.options.with_options`).

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
    cfg = validate_depth_config(with_options(config or depth_config("cpu"), overrides))
    out = Path(cfg.out)
    # one writer per study folder: a second depth study into it is refused while this one runs
    with ufm_io.run_lock(out, option="--out", command="pfc depth"):
        return _depth_study(cfg, out)


def _depth_study(cfg: DepthConfig, out: Path) -> DepthResult:
    """The body of :func:`depth_study`, run while holding the study folder's lock."""
    # the training options the cells use (TRAIN_OPTIONS); the others of TrainConfig keep their
    # defaults (validate_depth_config) or are set per cell, so they are not recorded
    config = asdict(cfg) | {"train": {k: getattr(cfg.train, k) for k in TRAIN_OPTIONS}}
    doc = {"config": config, "versions": versions()}
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
    cfg = validate_depth_config(config)
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
                pts = [(r["depth"], r.get(m)) for r in fr if is_number(r.get(m))]
                fit = fit_slope(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    bootstrap=cfg.bootstrap,
                    seed=cfg.seed,
                )
                verdict = slope_verdict(fit)
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
    report = report_text(cfg, cell_rows, slopes, missing)
    ufm_io.atomic_write_text(out / "report.md", report)
    return DepthResult(out_dir=out, cells=cell_rows, slopes=slopes, missing=missing, report=report)


#: ``depth_trajectories.csv`` keeps the first epoch, every this-many-th and the last of each
#: cell (each cell's ``cell.json`` has every epoch).
TRAJECTORY_EVERY = 5


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
            and is_number(o.get("full_objective"))
            and (
                _chain(o) == chain
                or (chain == "warm" and o["depth"] == first and _chain(o) == "independent")
            )
        ]
        best = min(shallower) if shallower else None
        r["shallower_best_objective"] = best
        v = r.get("full_objective")
        r["not_at_optimum"] = bool(
            best is not None and is_number(v) and v > best * (1 + OPTIMUM_RTOL)
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
            lam_w=cfg.train.weight_decay,
            lam_b=cfg.train.weight_decay,
            loss=cfg.train.loss,
        )
    )


def _lnufm_optimum_or_none(cfg: DepthConfig, y: np.ndarray, d: int) -> dict[str, Any] | None:
    if d < int(np.max(y)) + 1:
        return None  # the LN-UFM needs d >= K (the report says so)
    return _lnufm_optimum(cfg, y, d)
