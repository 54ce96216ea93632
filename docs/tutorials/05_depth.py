"""Tutorial 5: collapse against depth, and the distance to the sphere-constrained UFM.

Run it with ``.venv/bin/python docs/tutorials/05_depth.py`` (about 15 s of CPU time); the test
suite executes it too. Output goes to ``$PFC_TUTORIAL_OUT`` (default: a temporary folder).

The seed paper (Sukenik, Lampert, Mondelli 2025) proves that deep regularised ResNets and
transformers with LayerNorm are approximately collapsed at their global optima, more so as depth
grows, and that their last layer then solves an unconstrained feature model whose features lie on
LayerNorm's sphere (zero mean across coordinates, norm sqrt(d)). This tutorial runs a tiny depth
sweep end to end: a LayerNorm ResNet and a pre-LN transformer at depths 1, 2 and 4, two seeds
each, a few epochs on a balanced subset of the embedded digits, and records each cell's full
regularised objective, whether it is at its optimum, CDNV and the rest. It is far too short for
the claim to show (the CPU preset, ``pfc depth``, is the real experiment: see docs/depth.md); it
shows the machinery and where every number lands.
"""

import csv
import os
import tempfile
from pathlib import Path

import numpy as np

import ufm
from resnet_pfc.depth import depth_config, depth_study, fit_slope
from resnet_pfc.models import build_depth_model

out = Path(os.environ.get("PFC_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="pfc_tutorial_05_"))

# --- 1. The models: every block's output is measured -----------------------------------------
# LNResNet: h_l = LN(h_{l-1} + f_l(h_{l-1})); measured layers "input", "block1".."blockB" all lie
# on LayerNorm's sphere; the classifier acts on the last one. The transformer's measured layers are
# token means of the residual stream, then "final" = LN(token mean), the classifier's input.
for family in ("ln_resnet1", "ln_resnet2", "transformer"):
    m = build_depth_model(family, (1, 8, 8), 10, blocks=3, width=16, heads=2, patch=4)
    print(f"{family:12s} measured layers: {list(m.measured_layers())}")

# --- 2. A tiny sweep (the "tiny" preset: 2 families x 3 depths x 2 seeds = 12 cells) ---------
cfg = depth_config("tiny", out=str(out / "depth"), progress=False)
res = depth_study(cfg)
print(f"\n{len(res.cells)} cells written to {res.out_dir}; missing: {res.missing}")

# Each cell is resumable: rerunning skips the finished ones (each has a cell.json).
again = depth_study(cfg)
assert [c["net_objective"] for c in again.cells] == [c["net_objective"] for c in res.cells]

# --- 3. The slopes: log(metric) = a + s log(depth), bootstrap over seeds ---------------------
for s in res.slopes:
    if s["metric"] in ("nc1", "nc3"):
        print(
            f"{s['family']:12s} {s['metric']:4s} slope {s['slope']:+.3f} "
            f"[{s['lo']:+.3f}, {s['hi']:+.3f}]  -> {s['verdict']}"
        )
# fit_slope is a plain function: on an exact power law the interval has zero width.
fit = fit_slope([2, 2, 4, 4, 8, 8], [2.0**-0.3, 2.0**-0.3, 4.0**-0.3, 4.0**-0.3, 0.535, 0.536])
print(f"power law with slope -0.3 (plus noise): fitted {fit['slope']:+.3f}")

# --- 4. Is a cell at its optimum? The full regularised objective ------------------------------
# F = mean loss + wd/2 ||theta||^2 over every parameter; an identity block costs nothing, so the
# optimum cannot rise with depth, and a cell above a shallower one is flagged "not at its optimum".
with open(res.out_dir / "depth_cells.csv") as f:
    rows = list(csv.DictReader(f))
for r in rows[:4]:
    print(
        f"{r['family']:12s} L={r['depth']} seed {r['seed']}: F {float(r['full_objective']):.4f} "
        f"(classifier {float(r['full_penalty_classifier']):.3f}, blocks "
        f"{float(r['full_penalty_blocks']):.3f}), stationary {r['criterion_met']}, "
        f"not at its optimum: {r['not_at_optimum']}"
    )
# The recorded value is reproducible from the saved weights:
from resnet_pfc.depth import recompute_objective  # noqa: E402

cell0 = (
    res.out_dir / "cells" / rows[0]["family"] / f"L{int(rows[0]['depth']):03d}_s{rows[0]['seed']}"
)
assert abs(recompute_objective(cell0)["objective"] - float(rows[0]["full_objective"])) < 1e-9

# --- 5. The reduction: the network's last layer in the LN-UFM objective ----------------------
# F_net = mean CE(W h_i + b) + lam/2 ||W||^2 + lam/2 ||b||^2 with the network's own (H, W, b);
# F* = the LN-UFM optimum at lam = the training weight decay (a simplex ETF on the sphere).
with open(res.out_dir / "depth_cells.csv") as f:
    rows = list(csv.DictReader(f))
for r in rows[:4]:
    print(
        f"{r['family']:12s} L={r['depth']} seed {r['seed']}: F_net {float(r['net_objective']):.4f}"
        f"  F* {float(r['lnufm_objective']):.4f}  gap {float(r['objective_gap_rel']):.3g}"
    )
assert all(float(r["objective_gap_rel"]) > -1e-6 for r in rows)  # F* is a global minimum

# The optimum itself, in closed form for balanced classes, and the solver agreeing with it:
opt = ufm.layernorm_etf_optimum(
    10, cfg.train.width, loss="ce", lam_w=cfg.train.weight_decay, lam_b=cfg.train.weight_decay
)
y = np.repeat(np.arange(10), 5)
sol = ufm.solve(
    y,
    d=cfg.train.width,
    features="layernorm",
    loss="ce",
    lam_w=cfg.train.weight_decay,
    lam_b=cfg.train.weight_decay,
    seed=0,
)
print(
    f"\nLN-UFM optimum: closed form {opt.objective:.6f} ({opt.structure}), solver "
    f"{sol.objective:.6f}, NC1 of the solver's features {sol.metrics['nc1']:.1e}"
)

print("\nfigures:", sorted(p.name for p in (res.out_dir / "figures").glob("*.png")))
print(
    (res.out_dir / "report.md")
    .read_text()
    .split("## Collapse against depth, as measured")[0][-900:]
)
