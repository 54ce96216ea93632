"""Stage ``train``: a network trained on real images, every layer measured.

:func:`train_network` also serves the ``deep`` stage (:mod:`pfc.stages.deep`).

Each writes the run directory of :func:`resnet_pfc.train` (``metrics.csv``, ``geodesic.csv``,
``figures/``, ``report.md``) under its folder, trained with the recipe of its
:class:`pfc.config.Network` (:func:`pfc.config.networks`: ``train/`` is the paper's fully
connected ResNet, ``deep/`` the deep LayerNorm ResNet; the recipes are chosen and measured in
``docs/demo_recipe.md``), and is resumed from its checkpoint when the study is. Both splits are
measured (the test split beside the training split). The stage document states whether the run
reached the terminal phase of training (TPT: 100% training accuracy, and a training loss that
kept falling after it got there), the final per-layer PFC1-3 and NC1 of both splits, whether
each decreases through every block, whether the last layer meets the collapse goals
(:func:`resnet_pfc.analysis.collapse_check`), the metrics that rose during training
(:func:`resnet_pfc.analysis.rising_metrics`), and the recipe next to the paper's
(:func:`pfc.config.recipe_vs_paper`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from resnet_pfc.analysis import collapse_check, layer_summary, rising_metrics, tpt_check
from resnet_pfc.checkpoint import checkpoint_exists
from resnet_pfc.runs import CHECKPOINT, read_csv
from resnet_pfc.train import train

from ..config import Network, StudyConfig, networks, recipe_vs_paper

__all__ = [
    "run",
]


def train_network(
    cfg: StudyConfig, net: Network, out: Path, say: Callable[[str], None]
) -> dict[str, Any]:
    """Train and measure ``net`` into ``out/<net.stage>``; return its stage document."""
    run_dir = out / net.stage
    tc = replace(net.train, out=str(run_dir), resume=checkpoint_exists(run_dir / CHECKPOINT))
    t = net.train
    say(
        f"training {net.title}: {net.architecture}, on {t.dataset} for {t.epochs} epochs "
        f"({t.loss} loss, lr {t.lr:g}, weight decay {t.weight_decay:g}, batch "
        f"{t.batch_size}, lr / 10 after epochs {', '.join(map(str, net.milestones))}), "
        f"measuring every block every {t.eval_every} epochs"
    )
    res = train(tc)
    rows = read_csv(run_dir / "metrics.csv")
    tpt = tpt_check(rows)
    summary = layer_summary(rows)
    collapse = collapse_check(summary)
    test = None
    if any(r["split"] == "test" for r in rows):
        test_summary = layer_summary(rows, split="test")
        final = [
            r for r in rows if r["split"] == "test" and r["epoch"] == test_summary["final_epoch"]
        ]
        test = {
            "summary": test_summary,
            "collapse": collapse_check(test_summary),
            "accuracy": min(final, key=lambda r: r["layer_index"]).get("accuracy"),
        }
    say(
        f"trained: training accuracy {tpt['train_accuracy_final']:.4f} (in TPT: "
        f"{'yes' if tpt['in_tpt'] else 'no'}); last layer "
        + ", ".join(f"{k.upper()} {v:.3g}" for k, v in collapse["last_layer"].items())
        + "; collapse goals met: "
        + ("yes" if collapse["collapse_goals_met"] else "no")
    )
    return {
        "stage": net.stage,
        "run_dir": net.stage,
        "dataset": cfg.dataset,
        "network": {
            "name": net.name,
            "title": net.title,
            "model": t.model,
            "architecture": net.architecture,
            "blocks": t.blocks,
            "width": t.width,
            "milestones": list(net.milestones),
        },
        "tpt": tpt,
        "summary": summary,
        "collapse": collapse,
        "test": test,
        "rising": rising_metrics(rows),
        "recipe": recipe_vs_paper(cfg, net),
        "elapsed_s": res.elapsed_s,
    }


def run(cfg: StudyConfig, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Stage ``train``: the paper's fully connected ResNet (see the module)."""
    return train_network(cfg, networks(cfg)[0], out, say)
