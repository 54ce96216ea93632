"""Tutorial 1: collapse metrics of your own features, in numpy and in torch.

Run it with ``.venv/bin/python docs/tutorials/01_metrics.py``; the test suite executes it too.

Features are *samples first*: ``H`` has shape ``(N, d)`` (flatten conv features with
``H.reshape(N, -1)``), labels ``y`` have shape ``(N,)`` with values ``0..K-1``.
"""

import numpy as np
import torch
from sklearn.datasets import load_digits

from ufm.metrics import CollapseAccumulator, collapse_metrics, simplex_etf
from ufm.registry import CORE, METRICS

# --- 1. One call on in-memory features (numpy) ---------------------------------------------
# The handwritten digits ship inside scikit-learn: 1797 images of 8 x 8 pixels, 10 classes.
X, y = load_digits(return_X_y=True)
m = collapse_metrics(X, y)
print("digits, input layer:")
for key in CORE:  # the metrics reported across depth: pfc1, pfc2, pfc3, nc1
    print(f"  {key:5s} = {m[key]:.4f}   ({METRICS[key].description})")
# Every metric's name, label, description and direction lives in ufm.registry. PFC1, PFC2,
# PFC3 and NC1 all fall to 0 under neural collapse.

# --- 2. Perfectly collapsed features are an ETF: every metric is 0 --------------------------
# The ETF is centred with equal class weights, while mu_G weighs classes by their size, so use
# a balanced label vector here (digits has 174 to 183 images per class).
etf = simplex_etf(10, 64, seed=0, scale=3.0)  # rows: 10 centred class means in R^64
y_bal = np.repeat(np.arange(10), 170)
collapsed = etf[y_bal] + 5.0  # every sample sits on its class mean; any offset
m_collapsed = collapse_metrics(collapsed, y_bal)
print("collapsed:", {k: round(m_collapsed[k], 12) for k in CORE})
assert m_collapsed["pfc2"] < 1e-9 and m_collapsed["pfc1"] < 1e-20

# --- 3. The same in torch (CPU here; a CUDA tensor stays on its GPU) -------------------------
Ht = torch.tensor(X, dtype=torch.float32)
yt = torch.tensor(y)
m_torch = collapse_metrics(Ht, yt)
print(f"torch float32 pfc1 = {m_torch['pfc1']:.6f} (numpy float64: {m['pfc1']:.6f})")
assert abs(m_torch["pfc1"] - m["pfc1"]) < 1e-5 * m["pfc1"]

# --- 4. With a classifier: self-duality (NC3) and classifier/NCC agreement (NC4) ------------
W = np.linalg.lstsq(X - X.mean(0), np.eye(10)[y] - 0.1, rcond=None)[0].T  # a linear probe (K, d)
m_w = collapse_metrics(X, y, W=W)
print(f"with a least-squares probe: nc3 = {m_w['nc3']:.3f}, nc4 = {m_w['nc4']:.3f}")

# --- 5. Streaming: features that arrive in batches (a network's layer) ----------------------
# Memory is O(K d) whatever N is; nothing d x d is ever formed. Two passes: the first gathers
# counts, means and scatter; NCC accuracy and NC1 need the final means, hence a second pass.
acc = CollapseAccumulator(K=10)
batches = [(X[i : i + 128], y[i : i + 128]) for i in range(0, len(y), 128)]
for Hb, yb in batches:
    acc.update(Hb, yb)
acc.end_first_pass()
for Hb, yb in batches:
    acc.update(Hb, yb)
m_stream = acc.compute()
print(f"streaming nc1 = {m_stream['nc1']:.12f}, batch nc1 = {m['nc1']:.12f}")
np.testing.assert_allclose(m_stream["nc1"], m["nc1"], rtol=1e-12)
# Shards (other data loaders, other processes) combine with acc.merge(other) or, under
# torch.distributed, acc.all_reduce().
