"""Stage 1, ``train/``: a fully connected ResNet trained on real images, every layer measured.

The run directory of :func:`resnet_pfc.train` (``metrics.csv``, ``geodesic.csv``,
``figures/fig2_train.png``, ``figures/fig3_train.png``, ``report.md``), trained with the study's
recipe (:data:`pfc.config.FULL`, chosen and measured in ``docs/demo_recipe.md``) and resumed
from its checkpoint when the study is. The stage document states whether the run reached the
terminal phase of training (TPT: 100% training accuracy, and a training loss that kept falling
after it got there), the final per-layer PFC1-3 and NC1 on the training split, whether each
decreases strictly through every block, whether the last layer meets the collapse goals
(:func:`resnet_pfc.analysis.collapse_check`), and the recipe next to the paper's
(:func:`pfc.config.recipe_vs_paper`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnet_pfc.analysis import collapse_check, layer_summary, tpt_check
from resnet_pfc.checkpoint import checkpoint_exists
from resnet_pfc.config import TrainConfig
from resnet_pfc.runs import CHECKPOINT, read_csv
from resnet_pfc.train import train

from ..config import StudyConfig, milestones, recipe_vs_paper

__all__ = ["run"]


def run(cfg: StudyConfig, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Train and measure into ``out/train``; return the stage document (see the module)."""
    run = out / "train"
    # options the study shares with the trainer under the same name, then the renamed ones
    same = ("dataset", "blocks", "width", "epochs", "lr", "loss", "weight_decay", "batch_size")
    same += ("eval_every", "seed", "threads", "progress")
    tc = TrainConfig(
        **{k: getattr(cfg, k) for k in same},
        out=str(run),
        model="fc",
        milestones=milestones(cfg),
        per_class=cfg.train_per_class,
        resume=checkpoint_exists(run / CHECKPOINT),
        figures=True,
    )
    say(
        f"training a fully connected ResNet ({cfg.blocks} blocks, width {cfg.width}) on "
        f"{cfg.dataset} for {cfg.epochs} epochs ({cfg.loss} loss, weight decay "
        f"{cfg.weight_decay:g}, batch {cfg.batch_size}), measuring every block every "
        f"{cfg.eval_every} epochs"
    )
    res = train(tc)
    rows = read_csv(run / "metrics.csv")
    tpt = tpt_check(rows)
    summary = layer_summary(rows)
    collapse = collapse_check(summary)
    say(
        f"trained: training accuracy {tpt['train_accuracy_final']:.4f}, training loss "
        f"{tpt['train_loss_final']:.3g} (in TPT: {tpt['in_tpt']}); last layer "
        + ", ".join(f"{k.upper()} {v:.3g}" for k, v in collapse["last_layer"].items())
        + "; strictly decreasing: "
        + ", ".join(f"{k.upper()} {v}" for k, v in collapse["strictly_decreasing"].items())
    )
    return {
        "stage": "train",
        "run_dir": "train",
        "tpt": tpt,
        "summary": summary,
        "collapse": collapse,
        "recipe": recipe_vs_paper(cfg),
        "elapsed_s": res.elapsed_s,
    }
