r"""Stage ``ot``: optimal transport between the layers of each trained network (POT).

Theorem 3 says the MUFM's layers are the constant-speed geodesic of the kinetic transport cost;
the study's premise is that a trained ResNet approximates such a geodesic. For each network of
:func:`pfc.config.networks` that was trained (stages ``train`` and ``deep``), the features of
every layer of one width on the training split (:func:`pfc.features.load_run_features`; a seeded
subset of :data:`OT_SAMPLES` samples, the same in every layer) go to :func:`ufm.ot_profile`, and
:func:`ufm.ot_claims` gives three verdicts, each of which can fail: the network's own map is an
optimal transport map between consecutive layers, the steps are equal, and the summed steps equal
:math:`W_2(\mu_0, \mu_L)` (a geodesic). Writes ``ot/profile.csv`` (one row per network and
layer) and ``ot/steps.png``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from ufm.io import save_png, write_csv
from ufm.ot import OT_TOLERANCES, ot_claims, ot_profile

from ..config import StudyConfig, networks
from ..features import load_run_features

__all__ = ["run", "OT_SAMPLES"]

#: Samples transported per network: the exact network simplex grows like ``N^3``; 500 samples
#: keep the stage to a few seconds for the 35 layers of the deep network (measured in
#: docs/demo_recipe.md).
OT_SAMPLES = 500

_COLUMNS = (
    "network",
    "layer",
    "index",
    "step_w2sq",
    "step_identity_cost",
    "step_diagonal_mass",
    "from_first_w2sq",
    "geodesic_w2sq",
)


def run(cfg: StudyConfig, out: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """Profile every trained network's layers into ``out/ot``; return the stage document."""
    entries: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []
    profiles = {}
    for net in networks(cfg):
        run_dir = out / net.stage
        if not (run_dir / "config.json").is_file():
            continue
        say(f"optimal transport between the layers of the {net.title}")
        feats, _, _ = load_run_features(run_dir)
        names = list(feats)
        d = feats[names[-1]].shape[1]
        kept = {k: v for k, v in feats.items() if v.shape[1] == d}
        prof = ot_profile(kept, max_samples=OT_SAMPLES, seed=cfg.seed)
        profiles[net.title] = prof
        claims = ot_claims(prof)
        entries[net.name] = {
            "stage": net.stage,
            "title": net.title,
            "left_out": [k for k in names if k not in kept],
            "summary": prof.summary(),
            "claims": claims,
        }
        rows += [{"network": net.name, **r} for r in prof.rows()]
    do = out / "ot"
    write_csv(do / "profile.csv", _COLUMNS, rows)
    if profiles:
        _draw(profiles, do / "steps.png")
    return {
        "stage": "ot",
        "max_samples": OT_SAMPLES,
        "seed": cfg.seed,
        "tolerances": dict(OT_TOLERANCES),
        "networks": entries,
    }


def _draw(profiles: dict[str, Any], path: Path) -> None:
    """Per network: the W2 steps against the equal-step line, and W2 from the first layer
    against the geodesic's (l/L) W2(first, last)."""
    fig = Figure(figsize=(10, 3.4 * len(profiles)), layout="constrained")
    for i, (title, p) in enumerate(profiles.items()):
        L = len(p.step_w2sq)
        ax = fig.add_subplot(len(profiles), 2, 2 * i + 1)
        ax.plot(range(1, L + 1), p.step_w2, "o-", label="W2(layer l-1, layer l)")
        ax.axhline(p.total_w2 / L, color="k", ls="--", lw=1, label="geodesic's equal step")
        ax.set_xlabel("block l")
        ax.set_title(f"{title}: steps", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        ax = fig.add_subplot(len(profiles), 2, 2 * i + 2)
        if p.from_first_w2sq is not None:
            ax.plot(range(L + 1), np.sqrt(p.from_first_w2sq), "o-", label="W2(layer 0, layer l)")
        ax.plot(
            range(L + 1), np.arange(L + 1) / L * p.total_w2, "k--", lw=1, label="(l/L) W2(0, L)"
        )
        ax.set_xlabel("layer l")
        ax.set_title(f"{title}: distance from layer 0", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Wasserstein-2 profile of the trained networks' layers (Theorem 3)")
    save_png(fig, path)
