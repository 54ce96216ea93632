"""Tutorial 6: the imbalanced UFM -- any labels, minority collapse, SELI, closed forms.

Run it with ``.venv/bin/python docs/tutorials/06_imbalanced.py`` (a few seconds on a CPU); the
test suite executes it too.

``ufm.solve`` takes any hashable labels (strings, integers with gaps, booleans), maps them to
``0..K-1`` in sorted order like scikit-learn's ``LabelEncoder`` and reports them back in
``result.classes``. Classes may have different sizes: the imbalanced UFM of Fang et al. (PNAS
2021), Thrampoulidis et al. (NeurIPS 2022) and Hong and Ling (2023). Its global optimum is
still certified by the nuclear-norm reformulation (``ufm.certify``), and the bias-free MSE
model has a closed form (``ufm.deep_linear_optimum`` with ``L = 1``).
"""

import math

import numpy as np

import ufm

# --- 1. Labels as they come -------------------------------------------------------------------
y = np.array(["cat"] * 30 + ["dog"] * 8 + ["axolotl"] * 2)
res = ufm.solve(y, d=3, lam_w=1e-2, lam_h=1e-2, loss="ce")
print(res)
print("classes:", res.classes, "| sizes:", np.bincount(res.y))
assert (res.classes[res.y] == y).all()  # the codes map back to your labels
cert = ufm.certify(res)  # the convex certificate handles the class sizes
print(f"certified gap {res.objective - cert.optimum:.2e} (exact: {cert.exact})")

# --- 2. Bias-free MSE: singular-value thresholding -----------------------------------------
# The optimum's logits of class k are a_k / sqrt(n_k) e_k with
# a_k = (sqrt(n_k) - sqrt(N lam_w lam_h))_+ : a class with n_k <= N lam_w lam_h is switched off.
counts = [30, 6, 1]
lam = 0.2
opt = ufm.deep_linear_optimum(counts, L=1, lam_w=lam, lam_h=lam)
y = np.repeat(["major", "middle", "minor"], counts)
res = ufm.solve(y, d=3, lam_w=lam, lam_h=lam, loss="mse", bias=False)
print(f"closed form {opt.objective:.12f}  solver {res.objective:.12f}")
print(
    "threshold N lam^2 =",
    sum(counts) * lam**2,
    "| classifier norms:",
    np.linalg.norm(res.W, axis=1).round(4),
)

# --- 3. Minority collapse (Fang et al.) ----------------------------------------------------
# Two majority classes with R samples, two minority classes with one: as R grows the two
# minority classifiers turn into one vector (cosine -> 1); balanced, they form a simplex ETF.
for R in [1, 10, 100, 1000]:
    yR = np.repeat(np.arange(4), [R, R, 1, 1])
    W = ufm.solve(yR, d=4, lam_w=1e-2, lam_h=1e-2, loss="ce", bias=False).W
    V = W[2:] / np.linalg.norm(W[2:], axis=1, keepdims=True)
    print(f"R = {R:5d}: cosine of the minority classifiers {V[0] @ V[1]:+.3f}")

# --- 4. SELI (Thrampoulidis et al.) --------------------------------------------------------
# With cross entropy and vanishing regularisation the logits align with the simplex-encoded
# labels Z = (I - 11^T/K) Y^T whatever the class sizes, at a logarithmic rate.
counts = [10, 10, 1]
y = np.repeat(np.arange(3), counts)
S = np.eye(3)[y] - 1 / 3
for lam in [1e-2, 1e-4, 1e-6]:
    r = ufm.solve(y, d=3, lam_w=lam, lam_h=lam, loss="ce", bias=False)
    Z = r.H @ r.W.T
    dist = np.linalg.norm(Z / np.linalg.norm(Z) - S / np.linalg.norm(S))
    print(
        f"lam = {lam:.0e}: distance to SELI {dist:.4f} (x log(1/lam) = {dist * math.log(1 / lam):.3f})"
    )
