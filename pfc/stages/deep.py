"""Stage ``deep``: the deep LayerNorm ResNet, trained and measured like the ``train`` stage.

Trains the second network of :func:`pfc.config.networks` into ``deep/`` with
:func:`pfc.stages.train.train_network` (same stage document), then draws the final per-layer
curves of both networks on one axis per metric (``deep/networks.png``,
:func:`resnet_pfc.figures.draw_network_comparison`). With ``--no-deep`` the stage writes only
``{"stage": "deep", "skipped": true}``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from resnet_pfc.figures import draw_network_comparison

from ..config import StudyConfig, networks
from .train import train_network

__all__ = ["run"]


def run(cfg: StudyConfig, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Train and measure the deep LayerNorm ResNet; draw both networks' final curves."""
    nets = networks(cfg)
    if len(nets) < 2:
        say("deep LayerNorm ResNet skipped (--no-deep)")
        return {"stage": "deep", "skipped": True}
    doc = train_network(cfg, nets[1], out, say)
    draw_network_comparison({n.title: out / n.stage for n in nets}, out / "deep" / "networks.png")
    return doc
