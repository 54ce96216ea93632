"""Tutorial 2: solve the multilayer unconstrained feature model (MUFM), certify it, sweep lam.

Run it with ``.venv/bin/python docs/tutorials/02_solve_mufm.py`` (about 15 s on a CPU); the
test suite executes it too. Figures go to ``$PFC_TUTORIAL_OUT`` (default: a temporary folder).

The MUFM (MATH.md section 5) ties the last-layer features ``H`` to the data ``X`` by a transport
cost ``(lam/2) ||h_i - x_i||^2`` instead of letting them float freely as in the UFM. Small
``lam`` lets the features collapse towards a simplex ETF; large ``lam`` keeps them near the
data, yet more collapsed than it (Theorem 4).
"""

import os
import tempfile

import numpy as np

import mufm
import ufm

# --- 1. Solve MUFM in five lines -------------------------------------------------------------
# Balanced data of shape (K, n, d): class centres on the unit sphere plus Gaussian noise.
X, y = mufm.make_data(K=4, n=30, d=8, noise=0.4, seed=0)
res = mufm.solve(X, y, lam=1.0, lam_w=5e-3)
print(res)
print(f"PFC1 of the data {ufm.pfc1(X, y):.3f} -> of the MUFM solution {res.metrics['pfc1']:.3f}")

# --- 2. Its layers (Theorem 3) ---------------------------------------------------------------
# The L-layer problem with the discretised kinetic energy is solved by equal steps on the
# straight line from x_i to h_i; result.layers(L) returns [X, H_1, ..., H_L = H], and the
# L-layer objective evaluated on them equals the one-layer optimum for every L.
layers = res.layers(5)
for L in (1, 5, 20):
    f_L = mufm.multilayer_objective(
        res.layers(L), res.y, res.W, res.b, lam=1.0, lam_w=5e-3, lam_b=res.params["lam_b"]
    )
    print(f"L = {L:2d}: multilayer objective {f_L:.12f} (one-layer optimum {res.objective:.12f})")
print("PFC1 across the 5 layers:", np.round([ufm.pfc1(H, y) for H in layers], 3))

# --- 3. Certify it on a small problem --------------------------------------------------------
# mufm.certify lifts the problem to the Gram matrix of (w_k, h_i, x_i) and solves the convex
# relaxation (an SDP, with cvxpy): a lower bound on the global optimum, exact when the relaxed
# solution has rank <= d. Keep N small (the default limit is 60 samples).
Xs, ys = mufm.make_data(K=3, n=4, d=6, noise=0.3, seed=1)
small = mufm.solve(Xs, ys, lam=10.0, lam_w=1e-2)
cert = mufm.certify(small)
print(cert.summary())
print("solver certified globally optimal within 1e-6:", cert.certifies(1e-6))

# The UFM has an exact convex reformulation whenever d >= K (nuclear norm), for any N.
ucert = ufm.certify(ufm.solve(ys, d=6, lam_w=1e-2, lam_h=1e-2))
print(ucert.summary())

# --- 4. Sweep lam: from the ETF to the data (the paper's Fig. 5) ----------------------------
out = os.environ.get("PFC_TUTORIAL_OUT") or tempfile.mkdtemp(prefix="pfc_tutorial2_")
exp = mufm.run_experiment(out, K=4, n=30, d=8, noise=0.4, lams=np.logspace(-3, 2, 6))
for i, lam in enumerate(exp.sweep["lam"]):
    print(
        f"lam = {lam:8.3f}: PFC1 {exp.sweep['pfc1'][i]:.3f}  PFC2 {exp.sweep['pfc2'][i]:.3f}"
        f"  alignment with data {exp.sweep['alignment'][i]:.4f}"
    )
print("figures and tables written to", out, ":", sorted(p.name for p in exp.paths.values()))
