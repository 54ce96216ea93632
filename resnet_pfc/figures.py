"""The paper's Fig. 2 and Fig. 3 from a run directory (PNG, written atomically).

* ``figures/fig2_<split>.png`` (Fig. 2): each metric against the epoch, one line per measured
  layer (darker = deeper).
* ``figures/fig3_<split>.png`` (Fig. 3): the metrics of the final epoch against the layers'
  relative positions (markers), with the geodesic prediction along
  :math:`H(t) = (1-t) H_0 + t H_L` as a line.

PFC1 and NC1 span decades and are drawn on a log axis.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

from ufm.errors import CheckpointError
from ufm.registry import CORE

from .checkpoint import atomic_write_bytes
from .runs import read_csv

__all__ = ["draw_figures", "FIG2_METRICS", "FIG3_METRICS"]

FIG2_METRICS = (*CORE, "nc2_equiangular", "accuracy")
FIG3_METRICS = CORE
_LOG = {"pfc1", "nc1"}
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


def draw_figures(run_dir: str | os.PathLike[str]) -> list[Path]:
    """Draw Fig. 2 and Fig. 3 for every split found in ``run_dir/metrics.csv``.

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
    geo = read_csv(run / "geodesic.csv") if (run / "geodesic.csv").is_file() else []
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
            ax.grid(alpha=0.3)
        axes.flat[0].legend(fontsize=7, ncol=2)
        fig.suptitle(f"{run.name}: collapse metrics of each layer during training ({split})")
        written.append(_save(fig, run / "figures" / f"fig2_{split}.png"))
        plt.close(fig)
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
        written.append(_save(fig, run / "figures" / f"fig3_{split}.png"))
        plt.close(fig)
    return written
