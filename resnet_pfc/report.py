r"""``report.md`` of a run: is each metric monotone across the layers, and the effective depth.

For the final epoch of each split the report lists every measured layer's metrics and states, per
metric, whether it decreases monotonically with depth (the PFC conjecture: every PFC metric
decreases during the forward propagation). "Strictly" means every block lowers it; "weakly" allows
ties (e.g. PFC3 stuck at 0 once the NCC classifies every sample); otherwise the report names the
first block where it rises. The empirical :math:`\epsilon`-effective depth (Galanti et al.) is

.. math:: \min\{\, l : 1 - \mathrm{NCC}(H_l) \le \epsilon \,\},

computed by :func:`ufm.metrics.effective_depth` from the layers' NCC errors (PFC3).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from ufm.errors import CheckpointError, InputError
from ufm.io import atomic_write_text
from ufm.metrics import effective_depth
from ufm.registry import LAYER

from .analysis import monotonicity
from .runs import read_csv, read_run_config

__all__ = [
    "write_report",
]

#: Metrics whose monotone decrease the report checks (PFC metrics first).
REPORT_METRICS = LAYER


def _g(v: Any) -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4g}"


def write_report(run_dir: str | os.PathLike[str], *, epsilon: float | None = None) -> Path:
    """Write ``run_dir/report.md`` from metrics.csv (atomically) and return its path.

    Parameters
    ----------
    run_dir : path
    epsilon : float, optional
        Effective-depth threshold; default the run's ``epsilon`` option (0.01).

    Raises
    ------
    CheckpointError
        If ``run_dir`` has no metrics.csv.
    """
    run = Path(run_dir)
    if not (run / "metrics.csv").is_file():
        raise CheckpointError(f"{run} has no metrics.csv; is it a run directory?")
    rows = read_csv(run / "metrics.csv")
    doc: dict[str, Any] = read_run_config(run / "config.json")
    cfg: dict[str, Any] = doc.get("config", {})
    if epsilon is None:
        epsilon = cfg.get("epsilon", 0.01)
        if (
            isinstance(epsilon, bool)
            or not isinstance(epsilon, int | float)
            or not 0 <= epsilon <= 1
        ):
            raise InputError(
                f"{str(run / 'config.json')!r}: config.epsilon must be a number in [0, 1], got "
                f"{str(epsilon)[:40]!r}; the file was damaged or edited: rerun the training"
            )
        epsilon = float(epsilon)
    lines = [f"# Run report: {run.name}", ""]
    if cfg:
        lines += [
            f"Data set `{cfg.get('dataset')}` ({doc.get('train_samples')} training samples), "
            f"model {doc.get('model_kind')} with {doc.get('blocks')} blocks of feature dimension "
            f"d = {doc.get('feature_dim')}, {cfg.get('epochs')} epochs, lr {cfg.get('lr')}, "
            f"weight decay {cfg.get('weight_decay')}, seed {cfg.get('seed')}, "
            f"{doc.get('world_size', 1)} process(es).",
            "",
        ]
    for split in sorted({r["split"] for r in rows}):
        srows = [r for r in rows if r["split"] == split]
        final = max(r["epoch"] for r in srows)
        fr = sorted((r for r in srows if r["epoch"] == final), key=lambda r: r["layer_index"])
        lines += [f"## {split} split, final epoch {final}", ""]
        acc = fr[0].get("accuracy")
        if acc is not None:
            lines += [f"Network accuracy on this split: {acc:.4f}.", ""]
        keys = [k for k in REPORT_METRICS if any(r.get(k) is not None for r in fr)]
        lines.append("| layer | position | " + " | ".join(keys) + " |")
        lines.append("|---" * (len(keys) + 2) + "|")
        for r in fr:
            lines.append(
                f"| {r['layer']} | {_g(r['position'])} | "
                + " | ".join(_g(r.get(k)) for k in keys)
                + " |"
            )
        lines += ["", "Does each metric decrease monotonically across the measured layers?", ""]
        for k in keys:
            kind, at = monotonicity([r.get(k) for r in fr])
            text = {
                "strict": "yes, strictly (every block lowers it)",
                "weak": "yes, weakly (non-increasing, with ties)",
                "undefined": "undefined (missing values)",
            }.get(kind, f"no: it rises at {fr[at]['layer'] if at is not None else '?'}")
            lines.append(f"- **{k}**: {text}")
        errs = [r.get("pfc3") for r in fr]
        if all(e is not None and not math.isnan(e) for e in errs):
            depth = effective_depth([min(max(e, 0.0), 1.0) for e in errs], epsilon=epsilon)
            where = (
                "none of the layers" if depth is None else f"layer {depth} ({fr[depth]['layer']})"
            )
            lines += [
                "",
                f"Empirical effective depth (epsilon = {epsilon:g}, smallest layer whose NCC error "
                f"is at most epsilon): {where}; the stage has {len(fr) - 1} blocks.",
            ]
        lines.append("")
    return atomic_write_text(run / "report.md", "\n".join(lines))
