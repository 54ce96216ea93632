"""Tutorial 9: what ``lam`` means when the data are not of unit scale (``mufm.solve(scale=...)``).

Run it with ``.venv/bin/python docs/tutorials/09_lam_scale.py`` (a few seconds on a CPU); the
test suite executes it too.

The MUFM's transport term is ``(lam / 2) ||h - x||^2`` and the classifier's penalty
``(lam_w / 2) ||W||^2``: their weight against the fit term depends on the data's scale. The
problem is scale-equivariant, so data of RMS row norm ``s`` with ``(lam, lam_w)`` is the
unit-scale problem with ``(lam s^2, lam_w / s^2)``. With raw pixel values (``s`` about 60),
``lam = 0.1`` acts like ``lam = 380`` on unit-scale data: the features barely move from the data.
By default ``mufm.solve`` says so with a ``ScaleWarning``; ``scale="rms"`` makes the
coefficients relative to the data's scale.
"""

import warnings

import numpy as np
from sklearn.datasets import load_digits

import mufm
import ufm

digits = load_digits()
X, y = digits.data[:300], digits.target[:300]  # raw pixels 0..16, 10 classes
s = float(np.sqrt((X**2).sum(1).mean()))  # the RMS row norm
print("RMS row norm s =", round(s, 2))

# --- 1. As given: lam acts hundreds of times stronger, and a ScaleWarning says so -----------
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    raw = mufm.solve(X, y, lam=0.1)
msgs = [str(w.message) for w in caught if issubclass(w.category, ufm.ScaleWarning)]
print("warning:", msgs[0][:160], "...")
data_pfc1 = ufm.collapse_metrics(X, y)["pfc1"]
print(f"PFC1 of the data {data_pfc1:.3f}, of the solution {raw.metrics['pfc1']:.3f}")

# --- 2. scale="rms": lam means what it means on unit-scale data ---------------------------
rel = mufm.solve(X, y, lam=0.1, scale="rms")
print(f"scale='rms': PFC1 {rel.metrics['pfc1']:.4f}")
assert rel.metrics["pfc1"] < 0.5 * raw.metrics["pfc1"]

# --- 3. It is exactly the unit-scale problem, mapped back ------------------------------------
unit = mufm.solve(X / s, y, lam=0.1)
np.testing.assert_allclose(np.asarray(rel.H) / s, np.asarray(unit.H), rtol=1e-6, atol=1e-9)
print("scale='rms' equals solving X / s and multiplying the features by s")
