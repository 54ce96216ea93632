"""Tutorial 7: the deep UFM -- L linear or ReLU layers on free features.

Run it with ``.venv/bin/python docs/tutorials/07_deep_ufm.py`` (about 10 s on a CPU); the
test suite executes it too.

``ufm.solve_deep`` minimises
``(1/N) sum_i [loss(W_L s(... s(W_1 h_i)), y_i) + lam_h/2 ||h_i||^2] + sum_l lam_l/2 ||W_l||^2``
with ``s`` the identity or the ReLU. For linear layers and MSE the global optimum is known in
closed form (``ufm.deep_linear_optimum``: one scalar equation per class); every layer's class
means then form an orthogonal frame (deep neural collapse). With ReLU the same value is reached
by the deep-collapse candidate; it is optimal for two classes (Sukenik et al. 2023) but can be
beaten by low-rank solutions for more classes (Sukenik et al. 2024).
"""

import warnings

import numpy as np

import ufm

# --- 1. Deep linear: the solver meets the closed form, every layer collapses ------------------
counts = [6, 3, 1]  # imbalanced works too
y = np.repeat(["a", "b", "c"], counts)
res = ufm.solve_deep(y, L=3, d=4, lam_w=1e-3, lam_h=1e-3, starts=2)
opt = ufm.deep_linear_optimum(counts, L=3, lam_w=1e-3, lam_h=1e-3)
print(res)
print(f"closed form {opt.objective:.12f}  solver {res.objective:.12f}")
for l, (F, m) in enumerate(zip(res.features, res.metrics, strict=True)):
    mu = np.stack([F[res.y == k].mean(0) for k in range(3)])
    cos = (mu @ mu.T) / np.outer(np.linalg.norm(mu, axis=1), np.linalg.norm(mu, axis=1))
    off = np.abs(cos - np.eye(3)).max()
    print(f"layer {l}: PFC1 {m['pfc1']:.1e}, class means orthogonal up to |cos| {off:.1e}")

# Balancedness of a stationary point: lam_l ||W_l||^2 is the same for every layer and equals
# lam_h ||H||^2 / N.
print("lam_l ||W_l||^2:", [round(1e-3 * float(np.sum(W**2)), 8) for W in res.W],
      "lam_h ||H||^2/N:", round(1e-3 * float(np.sum(res.H**2)) / res.N, 8))  # fmt: skip

# --- 2. Binary ReLU: deep neural collapse is optimal ----------------------------------------
y2 = np.repeat([0, 1], 3)
r2 = ufm.solve_deep(
    y2, L=3, d=4, lam_w=1e-2, lam_h=1e-2, activation="relu", starts=6, max_iter=3000
)
dnc = ufm.deep_linear_optimum([3, 3], L=3, lam_w=1e-2, lam_h=1e-2).objective
print(f"K = 2, ReLU: best start {r2.objective:.10f}, DNC value {dnc:.10f}; all starts:",
      np.round(r2.objectives, 6))  # fmt: skip

# --- 3. K = 4, four ReLU layers: a solution below the deep-collapse value ----------------------
# The default start (init="balanced") is the deep-collapse candidate itself, a stationary point;
# a random start finds a lower solution whose class means lose rank in a middle layer.
y4 = np.repeat(np.arange(4), 2)
with warnings.catch_warnings():
    warnings.simplefilter("ignore", ufm.ConvergenceWarning)  # ReLU kinks slow L-BFGS down
    r4 = ufm.solve_deep(
        y4, L=4, d=4, lam_w=3e-3, lam_h=3e-3, activation="relu", max_iter=2000, init="random"
    )
dnc4 = ufm.deep_linear_optimum([2] * 4, L=4, lam_w=3e-3, lam_h=3e-3).objective
ranks = [int(np.linalg.matrix_rank(np.stack([F[y4 == k].mean(0) for k in range(4)]), tol=1e-3))
         for F in r4.features]  # fmt: skip
print(f"K = 4, ReLU: solver {r4.objective:.6f} vs DNC {dnc4:.6f} "
      f"({100 * (r4.objective / dnc4 - 1):+.2f}%); class-mean ranks per layer {ranks}")  # fmt: skip
