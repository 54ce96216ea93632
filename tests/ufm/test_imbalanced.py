"""Known geometry of the imbalanced UFM: minority collapse (Fang et al. 2021), the SELI of
cross entropy at vanishing regularisation (Thrampoulidis et al. 2022), and the minority
threshold of bias-free MSE.

The global optima are certified independently of the solver (``ufm.certify``, cvxpy); the
solver must agree with them.
"""

from __future__ import annotations

import math
import warnings

import cvxpy as cp
import numpy as np
import pytest

import ufm


def _minority_cosine(W: np.ndarray) -> float:
    V = W[2:] / np.linalg.norm(W[2:], axis=1, keepdims=True)
    return float(V[0] @ V[1])


def test_minority_collapse_with_the_imbalance_ratio():
    """Two majority classes with R samples each, two minority classes with one each (Fang et
    al.'s setting, cross entropy, no bias). Balanced (R = 1): the classifiers form a simplex ETF
    (cosine -1/3). As R grows the two minority classifiers turn towards one vector: their cosine
    rises monotonically towards 1 (measured: -0.333, 0.167, 0.712, 0.950, 0.994 for R = 1, 10,
    100, 1e3, 1e4 at lam = 1e-2)."""
    lam = 1e-2
    cos = []
    for R in [1, 10, 100, 1000, 10_000]:
        y = np.repeat(np.arange(4), [R, R, 1, 1])
        kw = dict(d=4, lam_w=lam, lam_h=lam, loss="ce", bias=False)
        cert = ufm.certify(y, **kw)  # the global optimum, from cvxpy
        with warnings.catch_warnings():
            # minority collapse makes Sigma_B rank-deficient (a RankWarning of the metrics)
            warnings.simplefilter("ignore", ufm.RankWarning)
            warnings.simplefilter("error", ufm.ConvergenceWarning)
            res = ufm.solve(y, tol=1e-10, **kw)
        assert res.objective == pytest.approx(cert.optimum, rel=1e-6)
        c = _minority_cosine(cert.W)
        assert _minority_cosine(res.W) == pytest.approx(c, abs=1e-4)
        cos.append(c)
    assert cos[0] == pytest.approx(-1 / 3, abs=1e-6)
    assert np.all(np.diff(cos) > 0.02), cos
    assert cos[-1] > 0.98, cos


def test_mse_minority_classifier_vanishes_at_the_threshold():
    """Bias-free MSE: class k keeps a non-zero classifier iff n_k > N lam_w lam_h (singular-value
    thresholding); just below and above the threshold."""
    counts = np.array([40, 10, 3])
    N = counts.sum()
    for n_min, zero in [(3, False), (2, True)]:
        c = counts.copy()
        c[-1] = n_min
        lam = math.sqrt(2.5 / c.sum())  # N lam^2 = 2.5: between 2 and 3
        y = np.repeat(np.arange(3), c)
        res = ufm.solve(y, d=3, lam_w=lam, lam_h=lam, loss="mse", bias=False, tol=1e-10)
        norm = np.linalg.norm(res.W[-1])
        assert (norm < 1e-6) == zero, (n_min, norm)
    assert N == 53


def _sel(counts):
    K = len(counts)
    y = np.repeat(np.arange(K), counts)
    return y, np.eye(K)[y] - 1.0 / K  # (N, K): logits of the simplex-encoded labels


def test_uf_svm_solution_is_the_sel_matrix():
    """Thrampoulidis et al., Thm: the unconstrained-features SVM (min nuclear norm of the logits
    subject to unit margins; class-reduced as in ufm.certify) is solved by the SEL matrix
    Z = (I - 11^T/K) Y^T whatever the class sizes: checked here with cvxpy."""
    for counts in [(5, 5, 5), (10, 10, 1), (20, 3, 2, 1)]:
        K = len(counts)
        C = cp.Variable((K, K))  # logits of class k in column k
        D = np.diag(np.sqrt(counts))
        cons = [C[k, k] - C[c, k] >= 1 for k in range(K) for c in range(K) if c != k]
        cp.Problem(cp.Minimize(cp.normNuc(C @ D)), cons).solve(solver="CLARABEL")
        np.testing.assert_allclose(C.value, np.eye(K) - 1.0 / K, atol=1e-6)


def test_ce_logits_align_with_seli_as_regularisation_vanishes():
    """Cross entropy, no bias, imbalanced (10, 10, 1): the regularised optimum's logits approach
    the SEL direction as lam -> 0, at the logarithmic rate of the regularisation path
    (distance ~ c / log(1/lam), measured c = 0.56..0.64 for lam = 1e-2..1e-6). Balanced
    classes are on the SEL direction at every lam (exact ETF)."""
    y, S = _sel((10, 10, 1))
    S = S / np.linalg.norm(S)
    dist = []
    for lam in [1e-2, 1e-4, 1e-6]:
        kw = dict(d=3, lam_w=lam, lam_h=lam, loss="ce", bias=False)
        res = ufm.solve(y, tol=1e-10, **kw)
        assert res.converged
        Z = res.H @ res.W.T
        dist.append(np.linalg.norm(Z / np.linalg.norm(Z) - S))
    dist = np.array(dist)
    assert np.all(np.diff(dist) < 0), dist
    c = dist * np.log(1 / np.array([1e-2, 1e-4, 1e-6]))
    assert np.all((c > 0.3) & (c < 1.0)), c
    yb, Sb = _sel((4, 4, 4))
    res = ufm.solve(yb, d=3, lam_w=1e-3, lam_h=1e-3, loss="ce", bias=False, tol=1e-10)
    Z = res.H @ res.W.T
    assert np.linalg.norm(Z / np.linalg.norm(Z) - Sb / np.linalg.norm(Sb)) < 1e-6
