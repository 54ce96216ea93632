"""The paper's Fig. 2 and Fig. 3 from a run directory (PNG, written atomically).

* ``figures/fig2_<split>.png`` (Fig. 2): each metric against the epoch, one line per measured
  layer (darker = deeper).
* ``figures/fig3_<split>.png`` (Fig. 3): the metrics of the final epoch against the layers'
  relative positions (markers), with the geodesic prediction along
  :math:`H(t) = (1-t) H_0 + t H_L` as a line.
* ``figures/heatmap_<split>.png``: one layer x epoch heat map per metric (log colour scale),
  readable for any depth (Fig. 2's one-line-per-layer gets crowded beyond about ten layers).

Every training-time figure marks the lr drops (grey dotted lines, the ``milestones`` of the
run's ``config.json``) and the start of the terminal phase (green dashed line: the first
measured epoch from which the training accuracy stays at 100%). PFC1 and NC1 span decades and
are drawn on a log axis; the accuracy is drawn on a logit axis, so that 0.99 -> 0.999 -> 1 is
visible (100% is drawn at 1 - 1e-4). :func:`draw_network_comparison` puts the final per-layer
curves of several runs (networks of different depths) on one axis per metric, against the
relative position l/L.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from ufm.errors import CheckpointError, InputError
from ufm.io import atomic_write_bytes
from ufm.registry import CORE

from .analysis import tpt_check
from .runs import SPLITS, read_csv, read_run_config

__all__ = [
    "draw_figures",
    "draw_network_comparison",
]

FIG2_METRICS = (*CORE, "nc2_equiangular", "accuracy")
FIG3_METRICS = CORE
HEATMAP_METRICS = CORE
_LOG = {"pfc1", "nc1"}
#: Accuracy 1 (and 0) drawn at this distance from the end of the logit axis.
_ACC_CLIP = 1e-4
#: Smallest value of a heat map's log colour scale (PFC3 reaches 0 exactly).
_HEAT_FLOOR = 1e-4
_TITLES = {
    "pfc1": "PFC1 = tr Σ_W / tr Σ_B",
    "pfc2": "PFC2 (distance to simplex ETF)",
    "pfc3": "PFC3 = 1 − NCC accuracy",
    "nc1": "NC1 = tr(Σ_W Σ_B⁺)/K",
    "nc2_equiangular": "NC2 equiangularity",
    "accuracy": "accuracy of the network",
}


def _save(fig: Any, path: Path) -> Path:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    return atomic_write_bytes(path, buf.getvalue())


def _figure_path(run: Path, stem: str, split: str) -> Path:
    """``run/figures/<stem>_<split>.png``; ``split`` must be one of :data:`SPLITS` (the rows
    are checked when read; this keeps a crafted value from ever naming a file elsewhere)."""
    if split not in SPLITS:
        raise CheckpointError(
            f"split {split!r} in {run / 'metrics.csv'} is not one of {list(SPLITS)}; rerun the "
            "training"
        )
    return run / "figures" / f"{stem}_{split}.png"


def _ok(v: Any) -> bool:
    return isinstance(v, int | float) and v == v


def _plot_points(ax: Any, pts: list[tuple[float, float]], key: str, fmt: str, **kw: Any) -> None:
    """Plot ``(x, y)`` pairs (nothing when empty); log-axis metrics are floored at 1e-12."""
    if not pts:
        return
    xs, ys = zip(*pts, strict=True)
    if key in _LOG:
        ys = tuple(max(v, 1e-12) for v in ys)
    ax.plot(xs, ys, fmt, **kw)


def _events(run: Path, rows: list[dict[str, Any]]) -> tuple[list[float], float | None]:
    """The run's lr drops (epochs) and the start of its terminal phase (or None)."""
    cfg = read_run_config(run / "config.json").get("config")
    ms = cfg.get("milestones") if isinstance(cfg, dict) else None
    drops = [float(m) for m in ms or () if isinstance(m, int | float)]
    tpt = None
    if any(r["split"] == "train" for r in rows):
        tpt = tpt_check(rows).get("tpt_epoch")
    return drops, tpt


def _mark(ax: Any, drops: list[float], tpt: float | None) -> None:
    for i, m in enumerate(drops):
        ax.axvline(m, color="0.45", ls=":", lw=1, label="lr / 10" if i == 0 else None)
    if tpt is not None:
        ax.axvline(tpt, color="tab:green", ls="--", lw=1, label="TPT starts")


def draw_figures(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw Fig. 2, Fig. 3 and the heat maps for every split in ``run_dir/metrics.csv``.

    Returns
    -------
    list of Path
        The PNG files written under ``run_dir/figures``.

    Raises
    ------
    CheckpointError
        If ``run_dir`` has no metrics.csv.
    """
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    run = Path(run_dir)
    mpath = run / "metrics.csv"
    if not mpath.is_file():
        raise CheckpointError(f"{run} has no metrics.csv; is it a run directory?")
    rows = read_csv(mpath)
    if not rows:
        raise CheckpointError(
            f"{mpath} has no rows: the run has not measured any epoch yet; train (or resume) it"
        )
    geo = read_csv(run / "geodesic.csv") if (run / "geodesic.csv").is_file() else []
    drops, tpt = _events(run, rows)
    written: list[Path] = []
    for split in sorted({r["split"] for r in rows}):
        srows = [r for r in rows if r["split"] == split]
        layers = sorted({(r["layer_index"], r["layer"]) for r in srows})
        n = len(layers)
        cmap = plt.get_cmap("viridis")
        # Fig. 2
        fig, axes = plt.subplots(2, 3, figsize=(13, 7), layout="constrained")
        for ax, key in zip(axes.flat, FIG2_METRICS, strict=True):
            for i, (idx, lab) in enumerate(layers):
                pts = [
                    (r["epoch"], r[key])
                    for r in srows
                    if r["layer_index"] == idx and _ok(r.get(key))
                ]
                if key == "accuracy" and i > 0:
                    continue  # one curve: the network's accuracy does not depend on the layer
                if not pts:
                    continue
                xs, ys = zip(*sorted(pts), strict=True)
                if key in _LOG:
                    ys = [max(v, 1e-12) for v in ys]
                if key == "accuracy":
                    ys = [min(max(v, _ACC_CLIP), 1 - _ACC_CLIP) for v in ys]
                ax.plot(
                    xs,
                    ys,
                    color=cmap(i / max(n - 1, 1)),
                    label="network" if key == "accuracy" else lab,
                )
            ax.set_title(_TITLES[key], fontsize=10)
            ax.set_xlabel("epoch")
            if key in _LOG:
                ax.set_yscale("log")
            if key == "accuracy":
                ax.set_yscale("logit")
                ax.set_title(_TITLES[key] + " (logit axis)", fontsize=10)
            _mark(ax, drops, tpt)
            ax.grid(alpha=0.3)
        if n <= 12:
            axes.flat[0].legend(fontsize=7, ncol=2)
        else:
            sm = plt.cm.ScalarMappable(cmap=cmap, norm=plt.Normalize(0, n - 1))
            fig.colorbar(sm, ax=axes, label="layer (0 = stage input)", shrink=0.6)
        axes.flat[-1].legend(fontsize=7)
        fig.suptitle(f"{run.name}: collapse metrics of each layer during training ({split})")
        written.append(_save(fig, _figure_path(run, "fig2", split)))
        plt.close(fig)
        written.append(_heatmap(plt, run, split, srows, layers, drops, tpt))
        # Fig. 3
        final = max(r["epoch"] for r in srows)
        frows = sorted((r for r in srows if r["epoch"] == final), key=lambda r: r["layer_index"])
        grows = sorted(
            (g for g in geo if g["split"] == split and g["epoch"] == final), key=lambda g: g["t"]
        )
        fig, axes = plt.subplots(
            1, len(FIG3_METRICS), figsize=(4 * len(FIG3_METRICS), 3.6), layout="constrained"
        )
        for ax, key in zip(axes, FIG3_METRICS, strict=True):
            line = [(g["t"], g[key]) for g in grows if _ok(g.get(key))]
            _plot_points(ax, line, key, "-", color="tab:blue", label="geodesic prediction")
            pts = [(r["position"], r[key]) for r in frows if _ok(r.get(key))]
            _plot_points(ax, pts, key, "o", color="tab:red", label="layers")
            ax.set_title(_TITLES[key], fontsize=10)
            ax.set_xlabel("relative position")
            if key in _LOG:
                ax.set_yscale("log")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{run.name}: final epoch {final} across layers ({split})")
        written.append(_save(fig, _figure_path(run, "fig3", split)))
        plt.close(fig)
    return written


def _heatmap(
    plt: Any,
    run: Path,
    split: str,
    srows: list[dict[str, Any]],
    layers: list[tuple[int, str]],
    drops: list[float],
    tpt: float | None,
) -> Path:
    """One layer x epoch heat map per metric (log colour scale), lr drops and TPT marked."""
    import numpy as np
    from matplotlib.colors import LogNorm

    epochs = sorted({r["epoch"] for r in srows})
    idx = {e: i for i, e in enumerate(epochs)}
    lidx = {li: j for j, (li, _) in enumerate(layers)}
    fig, axes = plt.subplots(
        1, len(HEATMAP_METRICS), figsize=(4.2 * len(HEATMAP_METRICS), 3.8), layout="constrained"
    )
    # cell edges half-way between measured epochs, so that uneven spacing is drawn as it is
    ex = np.asarray(epochs, dtype=float)
    mids = (ex[1:] + ex[:-1]) / 2 if len(ex) > 1 else ex
    step = ex[1] - ex[0] if len(ex) > 1 else 1.0
    xedges = np.concatenate([[ex[0] - step / 2], mids, [ex[-1] + step / 2]])
    yedges = np.arange(len(layers) + 1) - 0.5
    for ax, key in zip(axes, HEATMAP_METRICS, strict=True):
        grid = np.full((len(layers), len(epochs)), np.nan)
        for r in srows:
            v = r.get(key)
            if _ok(v):
                grid[lidx[r["layer_index"]], idx[r["epoch"]]] = max(float(v), _HEAT_FLOOR)
        finite = grid[np.isfinite(grid)]
        if finite.size:
            lo, hi = float(finite.min()), float(finite.max())
            norm = LogNorm(vmin=lo, vmax=max(hi, lo * 1.0001))
            mesh = ax.pcolormesh(xedges, yedges, np.ma.masked_invalid(grid), norm=norm,
                                 cmap="magma_r")  # fmt: skip
            fig.colorbar(mesh, ax=ax, shrink=0.85)
        _mark(ax, drops, tpt)
        ax.set_title(_TITLES[key] + (f" (≥ {_HEAT_FLOOR:g})" if key == "pfc3" else ""),
                     fontsize=10)  # fmt: skip
        ax.set_xlabel("epoch")
        ax.set_ylabel("layer (0 = stage input)")
    axes[0].legend(fontsize=7, loc="upper right")
    fig.suptitle(f"{run.name}: every layer during training, log colour scale ({split})")
    path = _save(fig, _figure_path(run, "heatmap", split))
    plt.close(fig)
    return path


def draw_network_comparison(
    runs: dict[str, str | os.PathLike[str]], path: str | os.PathLike[str]
) -> Path:
    """The final per-layer PFC1-3 and NC1 of several runs on one axis per metric.

    Parameters
    ----------
    runs : dict
        Label -> run directory (each with ``metrics.csv``); runs of different depths are put
        on a common axis, the relative position ``l / L`` of each layer.
    path : path-like
        The PNG written (atomically).

    Returns
    -------
    Path

    Raises
    ------
    InputError
        ``runs`` is empty.
    CheckpointError
        A run directory without metrics.csv.
    """
    if not runs:
        raise InputError("runs must name at least one run directory (label -> folder)")
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1, len(FIG3_METRICS), figsize=(4.2 * len(FIG3_METRICS), 4.4), layout="constrained"
    )
    colours = plt.get_cmap("tab10")
    for i, (name, run_dir) in enumerate(runs.items()):
        mpath = Path(run_dir) / "metrics.csv"
        if not mpath.is_file():
            raise CheckpointError(f"{run_dir} has no metrics.csv; is it a run directory?")
        rows = read_csv(mpath)
        for split, style in (("train", "-o"), ("test", "--")):
            srows = [r for r in rows if r["split"] == split]
            if not srows:
                continue
            final = max(r["epoch"] for r in srows)
            fr = sorted((r for r in srows if r["epoch"] == final), key=lambda r: r["layer_index"])
            depth = max(r["layer_index"] for r in fr) or 1
            for ax, key in zip(axes, FIG3_METRICS, strict=True):
                pts = [(r["layer_index"] / depth, r[key]) for r in fr if _ok(r.get(key))]
                if not pts:
                    continue
                xs, ys = zip(*pts, strict=True)
                if key in _LOG or key == "pfc3":
                    ys = tuple(max(v, _HEAT_FLOOR) for v in ys)
                ax.plot(xs, ys, style, color=colours(i), ms=3, lw=1.4,
                        label=f"{name} ({split}, {depth} blocks)")  # fmt: skip
    for ax, key in zip(axes, FIG3_METRICS, strict=True):
        ax.set_title(_TITLES[key] + (f" (≥ {_HEAT_FLOOR:g})" if key == "pfc3" else ""),
                     fontsize=10)  # fmt: skip
        ax.set_xlabel("relative position l / L")
        ax.set_yscale("log")
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=2, fontsize=8)
    fig.suptitle("final epoch: every layer of each network (solid: training set, dashed: test set)")
    out = _save(fig, Path(path))
    plt.close(fig)
    return out
