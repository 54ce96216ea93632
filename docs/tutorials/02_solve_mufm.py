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
# relaxation (an SDP, with cvxpy): a lower bound on the global optimum. It is exact only when a
# feasible point built from the relaxed solution attains the bound within rtol (default 1e-6),
# checked in the original scale; otherwise cert.message gives both numbers. Keep N small (the
# default limit is 60 samples).
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

# --- 5. Large N: sufficient statistics, streaming, a lam sweep from one pass ----------------
# For MSE the features have a closed form given (W, b) (MATH.md sec. 5):
#   h_i = (W^T W + mu I)^{-1} (W^T (e_{y_i} - b) + lam x_i),  mu = lam + lam_h,
# and the reduced objective
#   f(W, b) = 1/2 tr[(I + W W^T / mu)^{-1} S(W, b)] + c_X + lam_w/2 ||W||^2 + lam_b/2 ||b||^2
# needs only the class counts, per-class sums and the second moment of x. mufm.solve's default
# method="suffstats" builds them in one pass and runs trust-region Newton on the K*d + K
# variables (exact Hessian-vector products, then a second-order check that escapes saddles).
# The accumulator takes batches (a network layer's features never need to be stored), merges
# shards, all-reduces across processes, and serves every lam of a sweep.
from ufm import SufficientStatistics, solve_statistics  # noqa: E402

Xb, yb = mufm.make_data(K=4, n=500, d=16, noise=0.4, seed=2)
stats = SufficientStatistics(K=4)
for i in range(0, len(yb), 256):  # streaming batches
    stats.update(Xb[i : i + 256], yb[i : i + 256])
for lam in (0.01, 0.1, 1.0):
    sol = solve_statistics(stats, lam=lam)
    print(
        f"lam = {lam}: objective {sol.objective:.10f}, {sol.status}, metrics",
        {k: round(v, 4) for k, v in sol.class_metrics(stats).items()},
    )
H_star = sol.features(Xb, yb)  # one more streaming pass gives the features, if needed
