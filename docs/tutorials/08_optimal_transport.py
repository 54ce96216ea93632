"""Tutorial 8: optimal transport between a network's layers (POT) against Theorem 3.

Run it with ``.venv/bin/python docs/tutorials/08_optimal_transport.py`` (a few seconds on a
CPU); the test suite executes it too.

Theorem 3 says the MUFM's layers are the constant-speed Wasserstein-2 geodesic from the data to
the collapsed features; the paper's premise is that a trained ResNet approximates such a path.
``ufm.ot_profile`` transports every layer to the next (and the first to each) exactly with POT's
network simplex, and ``ufm.ot_claims`` turns the profile into three verdicts that can each fail:
the network's own map between consecutive layers is an optimal plan, the steps are equal, and
the steps add up to W2(first, last) (a geodesic, not a detour). ``pfc ot RUN_DIR`` does the same
for a trained run, and ``pfc demo`` reports it for both of its networks.
"""

import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import mufm  # noqa: E402
import ufm  # noqa: E402

# --- 1. The MUFM's own layers: a geodesic by construction ------------------------------------
rng = np.random.default_rng(0)
X = rng.standard_normal((3, 40, 6))  # balanced data, K = 3 classes of 40 samples in d = 6
res = mufm.solve(X, lam=0.1)
layers = res.layers(8)  # h^l = x + (l/L)(h* - x), Theorem 3's straight line
prof = ufm.ot_profile(layers)
for c in ufm.ot_claims(prof):
    print(f"{c['name']:>17}: measured {c['measured']:.4g}, threshold {c['threshold']:.4g}, "
          f"held {c['held']}")  # fmt: skip
assert all(c["held"] for c in ufm.ot_claims(prof))

# --- 2. A network that takes a detour ------------------------------------------------------
# Features that first spread out and then come back end where the MUFM's do, but the path is
# longer than W2(first, last): the geodesic claim fails, and says by how much.
H = np.asarray(res.H)
x0 = X.reshape(-1, 6)
detour = [x0, 2.5 * x0, 2.5 * H, H]
bad = {c["name"]: c for c in ufm.ot_claims(ufm.ot_profile(detour))}
print("detour: path ratio", round(bad["geodesic"]["measured"], 3), "held", bad["geodesic"]["held"])
assert bad["geodesic"]["held"] is False

# --- 3. The profile as a figure --------------------------------------------------------------
L = len(prof.step_w2sq)
fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(range(1, L + 1), prof.step_w2, "o-", label="W2(layer l-1, layer l)")
ax.axhline(prof.total_w2 / L, color="k", ls="--", label="geodesic's equal step")
ax.set_xlabel("layer l")
ax.legend()
out = Path(tempfile.mkdtemp()) / "ot_steps.png"
fig.savefig(out)
print("figure:", out)
