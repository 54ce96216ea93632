"""Figures of the depth study (PNG, written atomically) from its cell and layer rows.

* ``figures/depth_metrics.png``: each last-layer metric (rows: NC1, CDNV, NC2 equinorm, NC2
  equiangularity, NC3, PFC1) against depth on log-log axes, one column per family; one marker
  per independent (depth, seed) cell, the median over seeds as a line, and a red cross on each
  cell that is *not at its optimum* (its full objective exceeds a shallower cell's).
* ``figures/depth_objective.png``: the full regularised objective against depth, one column per
  family, independent cells (blue) and the warm-start chain (orange), flagged cells crossed.
* ``figures/depth_trajectories.png``: the epoch objective and ``||theta||^2`` of every cell
  against the epoch, one column per family, coloured by depth.
* ``figures/depth_layers_<family>.png``: final metrics of every measured layer against its
  relative position, one curve per depth (median over seeds), coloured by depth.
* ``figures/depth_reduction.png``: relative objective gap of the network's last layer to the
  LN-UFM optimum against depth (log-log), one marker per (depth, seed), one colour per family.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ufm import io as ufm_io
from ufm.registry import CORE, LOG_SCALE

from .depth_config import SHOWN_SLOPES

__all__ = []

DEPTH_FIG_METRICS = tuple(m for m in SHOWN_SLOPES if m != "gram_eig_ratio")
LAYER_FIG_METRICS = CORE
_TITLES = {
    "nc1": "NC1",
    "cdnv": "CDNV",
    "nc2_equinorm": "NC2 equinorm",
    "nc2_equiangular": "NC2 equiangularity",
    "nc3": "NC3",
    "pfc1": "PFC1",
    "pfc2": "PFC2",
    "pfc3": "PFC3 = 1 - NCC acc.",
}


def _num(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _depth_ticks(ax: Any, depths: Sequence[int]) -> None:
    from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator

    ax.xaxis.set_major_locator(FixedLocator(list(depths)))
    ax.xaxis.set_major_formatter(lambda v, _pos: f"{v:g}")
    ax.xaxis.set_minor_locator(NullLocator())
    ax.xaxis.set_minor_formatter(NullFormatter())


def draw_depth_figures(
    out: str | Path,
    cells: list[dict[str, Any]],
    layers: list[dict[str, Any]],
    families: Sequence[str],
    *,
    trajectories: list[dict[str, Any]] | None = None,
) -> list[Path]:
    """Draw the depth study's figures under ``out/figures`` (see the module docstring).

    Parameters
    ----------
    out : path
        The study folder.
    cells : list of dict
        Rows of ``depth_cells.csv``.
    layers : list of dict
        Rows of ``depth_layers.csv``.
    families : sequence of str
    trajectories : list of dict, optional
        Rows of ``depth_trajectories.csv`` (adds ``depth_trajectories.png``).

    Returns
    -------
    list of Path
        The files written (none when there is no cell).
    """
    if not cells:
        return []
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    out = Path(out)
    written: list[Path] = []
    fams = [f for f in families if any(c["family"] == f for c in cells)]
    # 1. last-layer metrics against depth
    nr, nc = len(DEPTH_FIG_METRICS), len(fams)
    fig, axes = plt.subplots(
        nr, nc, figsize=(3.6 * nc, 2.6 * nr), layout="constrained", squeeze=False
    )
    for j, f in enumerate(fams):
        fc = [c for c in cells if c["family"] == f and c.get("init", "independent") != "warm"]
        for i, m in enumerate(DEPTH_FIG_METRICS):
            ax = axes[i, j]
            pts = [(c["depth"], c.get(m)) for c in fc if _num(c.get(m)) and c.get(m) > 0]
            if pts:
                xs, ys = zip(*pts, strict=True)
                ax.plot(xs, ys, "o", color="tab:blue", alpha=0.5, ms=4, label="cells")
                ds = sorted(set(xs))
                med = [float(np.median([y for x, y in pts if x == d])) for d in ds]
                ax.plot(ds, med, "-", color="tab:blue", label="median")
                bad = [
                    (c["depth"], c[m])
                    for c in fc
                    if c.get("not_at_optimum") and (c["depth"], c.get(m)) in pts
                ]
                if bad:
                    bx, by = zip(*bad, strict=True)
                    ax.plot(bx, by, "x", color="red", ms=7, label="not at its optimum")
                ax.set_xscale("log")
                ax.set_yscale("log")
                _depth_ticks(ax, ds)
            ax.grid(alpha=0.3, which="both")
            if i == 0:
                ax.set_title(f, fontsize=10)
            if j == 0:
                ax.set_ylabel(_TITLES[m])
            if i == nr - 1:
                ax.set_xlabel("depth (blocks)")
    axes[0, 0].legend(fontsize=7)
    fig.suptitle("last-layer collapse against depth (log-log)")
    written.append(ufm_io.save_png(fig, out / "figures" / "depth_metrics.png", dpi=100))
    plt.close(fig)
    written += _objective_figures(out, cells, fams, trajectories or [])
    # 2. per-layer curves coloured by depth
    cmap = plt.get_cmap("viridis")
    for f in fams:
        fl = [r for r in layers if r["family"] == f and r.get("init", "independent") != "warm"]
        depths = sorted({r["depth"] for r in fl})
        fig, axes = plt.subplots(
            1,
            len(LAYER_FIG_METRICS),
            figsize=(4 * len(LAYER_FIG_METRICS), 3.4),
            layout="constrained",
        )
        for ax, m in zip(axes, LAYER_FIG_METRICS, strict=True):
            for k, d in enumerate(depths):
                rd = [r for r in fl if r["depth"] == d and _num(r.get(m))]
                idx = sorted({r["layer_index"] for r in rd})
                if not idx:
                    continue
                xs = [
                    float(np.median([r["position"] for r in rd if r["layer_index"] == i]))
                    for i in idx
                ]
                ys = [float(np.median([r[m] for r in rd if r["layer_index"] == i])) for i in idx]
                if m in LOG_SCALE:
                    ys = [max(v, 1e-12) for v in ys]
                ax.plot(
                    xs,
                    ys,
                    "-",
                    marker=".",
                    ms=3,
                    color=cmap(k / max(len(depths) - 1, 1)),
                    label=f"L={d}",
                )
            if m in LOG_SCALE:
                ax.set_yscale("log")
            ax.set_title(_TITLES[m], fontsize=10)
            ax.set_xlabel("relative position of the layer")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=7, ncol=2)
        fig.suptitle(f"{f}: every measured layer at the end of training (median over seeds)")
        written.append(ufm_io.save_png(fig, out / "figures" / f"depth_layers_{f}.png", dpi=100))
        plt.close(fig)
    # 3. the reduction
    gaps = [
        c
        for c in cells
        if _num(c.get("objective_gap_rel")) and c.get("init", "independent") != "warm"
    ]
    if gaps:
        fig, ax = plt.subplots(figsize=(5.5, 4), layout="constrained")
        for k, f in enumerate(fams):
            pts = [(c["depth"], c["objective_gap_rel"]) for c in gaps if c["family"] == f]
            if not pts:
                continue
            xs, ys = zip(*pts, strict=True)
            color = plt.get_cmap("tab10")(k)
            ax.plot(xs, [max(v, 1e-12) for v in ys], "o", alpha=0.5, color=color, ms=4)
            ds = sorted(set(xs))
            med = [max(float(np.median([y for x, y in pts if x == d])), 1e-12) for d in ds]
            ax.plot(ds, med, "-", color=color, label=f)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _depth_ticks(ax, sorted({c["depth"] for c in gaps}))
        ax.set_xlabel("depth (blocks)")
        ax.set_ylabel("(F_net - F*) / |F*|")
        ax.set_title("last layer vs the LN-UFM optimum")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
        written.append(ufm_io.save_png(fig, out / "figures" / "depth_reduction.png", dpi=100))
        plt.close(fig)
    return written


def _objective_figures(
    out: Path, cells: list[dict[str, Any]], fams: list[str], traj: list[dict[str, Any]]
) -> list[Path]:
    """``depth_objective.png`` and (with trajectories) ``depth_trajectories.png``."""
    import matplotlib.pyplot as plt

    written: list[Path] = []
    fig, axes = plt.subplots(
        1, len(fams), figsize=(3.8 * len(fams), 3.4), layout="constrained", squeeze=False
    )
    for j, f in enumerate(fams):
        ax = axes[0, j]
        fam = [c for c in cells if c["family"] == f and _num(c.get("full_objective"))]
        first = min((c["depth"] for c in fam), default=0)
        for init, color in (("independent", "tab:blue"), ("warm", "tab:orange")):
            # the warm chain starts at the shallowest independent cell
            fc = [
                c
                for c in fam
                if (c.get("init") or "independent") == init
                or (init == "warm" and c["depth"] == first)
            ]
            if init == "warm" and not any(c.get("init") == "warm" for c in fc):
                continue
            if not fc:
                continue
            xs = [c["depth"] for c in fc]
            ys = [c["full_objective"] for c in fc]
            ax.plot(xs, ys, "o", color=color, alpha=0.5, ms=4)
            ds = sorted(set(xs))
            med = [
                float(np.median([c["full_objective"] for c in fc if c["depth"] == d])) for d in ds
            ]
            ax.plot(ds, med, "-", color=color, label=init)
            bad = [c for c in fc if c.get("not_at_optimum")]
            if bad:
                ax.plot(
                    [c["depth"] for c in bad],
                    [c["full_objective"] for c in bad],
                    "x",
                    color="red",
                    ms=8,
                    label=f"not at its optimum ({init})",
                )
        if fam:
            ax.set_xscale("log")
            _depth_ticks(ax, sorted({c["depth"] for c in fam}))
        ax.set_title(f, fontsize=10)
        ax.set_xlabel("depth (blocks)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0, 0].set_ylabel("loss + wd/2 ||theta||^2")
    fig.suptitle(
        "full regularised objective after training (cannot rise with depth at the optimum)"
    )
    written.append(ufm_io.save_png(fig, out / "figures" / "depth_objective.png", dpi=100))
    plt.close(fig)
    if not traj:
        return written
    cmap = plt.get_cmap("viridis")
    fig, axes = plt.subplots(
        2, len(fams), figsize=(3.8 * len(fams), 5.6), layout="constrained", squeeze=False
    )
    for j, f in enumerate(fams):
        ft = [r for r in traj if r["family"] == f]
        depths = sorted({r["depth"] for r in ft})
        for k, d in enumerate(depths):
            for init, ls in (("independent", "-"), ("warm", ":")):
                for s in sorted({r["seed"] for r in ft}):
                    rs = [
                        r
                        for r in ft
                        if r["depth"] == d
                        and r["seed"] == s
                        and (r.get("init") or "independent") == init
                    ]
                    if not rs:
                        continue
                    color = cmap(k / max(len(depths) - 1, 1))
                    lab = (
                        f"L={d}" + (" warm" if init == "warm" else "")
                        if s == min(r["seed"] for r in ft)
                        else None
                    )
                    ep = [r["epoch"] for r in rs]
                    axes[0, j].plot(
                        ep, [r["objective"] for r in rs], ls, color=color, lw=0.8, label=lab
                    )
                    axes[1, j].plot(ep, [r["norm2"] for r in rs], ls, color=color, lw=0.8)
        axes[0, j].set_title(f, fontsize=10)
        axes[0, j].set_yscale("log")
        axes[1, j].set_yscale("log")
        axes[1, j].set_xlabel("epoch")
        axes[0, j].grid(alpha=0.3)
        axes[1, j].grid(alpha=0.3)
        axes[0, j].legend(fontsize=6, ncol=2)
    axes[0, 0].set_ylabel("epoch objective")
    axes[1, 0].set_ylabel("||theta||^2")
    fig.suptitle("training trajectories (solid: independent, dotted: warm start)")
    written.append(ufm_io.save_png(fig, out / "figures" / "depth_trajectories.png", dpi=100))
    plt.close(fig)
    return written
