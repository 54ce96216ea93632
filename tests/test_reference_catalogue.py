"""Every solver method reaches the certified optimum of every catalogue problem.

The catalogue (tests/reference_problems.py) holds UFM and MUFM problems whose global optimum is
certified by the convex relaxations (ufm.certify / mufm.certify). Requirement: every method --
``lbfgs``, ``gd`` and the torch backend -- ends within 1e-6 relative of it, and UFM
optima are collapsed (PFC1, PFC2 < 1e-6).

Run time: the default profile runs ``lbfgs`` on every problem and ``torch`` and
``gd`` on the problems where they take a few seconds at most; the remaining (problem, method)
pairs are marked ``slow``. Plain gradient descent needs up to 5e5 iterations here (about 4 min
for ``ufm_ce_bias_K4``), so its slow runs use ``max_iter=1_000_000``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import reference_problems as REF

CATALOGUE = REF.CATALOGUE

RTOL = 1e-6

# The default profile runs lbfgs everywhere and the other methods on this representative subset
# (each under ~2 s on one core); every other (problem, method) pair is marked slow. Measured with
# gradient descent: 1.7e5-5.2e5 iterations (18-224 s) on the slow problems.
FAST = {
    ("ufm_mse_nobias_K3", "gd"),
    ("ufm_mse_nobias_K3", "torch"),
    ("ufm_ce_nobias_K3", "torch"),
    ("mufm_mse_K3n4d6_lam10", "gd"),
    ("mufm_mse_K3n4d6_lam10", "torch"),
    ("mufm_mse_K2n3d8_lam1", "torch"),
    ("ufm_imb_mse_nobias_K3", "torch"),
    ("ufm_imb_ce_nobias_K4", "torch"),
}
GD_WITHIN_DEFAULT_BUDGET = {
    "mufm_mse_K2n3d8_lam1",
    "ufm_mse_bias_K4",
    "mufm_mse_K3n4d6_lam10",
    "ufm_mse_nobias_K3",
}

METHODS = {
    "suffstats": {"method": "suffstats"},
    "lbfgs": {"method": "lbfgs"},
    "gd": {"method": "gd"},
    "torch": {"method": "lbfgs", "backend": "torch"},
}


def _cases():
    for prob in CATALOGUE:
        for label in METHODS:
            if label == "suffstats" and prob.kwargs["loss"] != "mse":
                continue
            fast = label in ("lbfgs", "suffstats") or (prob.name, label) in FAST
            marks = [] if fast else [pytest.mark.slow]
            yield pytest.param(prob, label, marks=marks, id=f"{prob.name}-{label}")


def test_catalogue_is_certified_exactly():
    names = [p.name for p in CATALOGUE]
    assert len(names) == len(set(names))
    assert {p.family for p in CATALOGUE} == {"ufm", "mufm"}
    for p in CATALOGUE:
        cert = p.certificate()
        assert cert.exact, f"{p.name}: {cert.summary()}"
        # the certified optimum is attained by a feasible point and sits on the convex bound
        assert abs(cert.optimum - cert.bound) <= RTOL * cert.bound
        assert cert.optimum > 0


def test_catalogue_covers_losses_bias_and_sizes():
    ufm_kinds = {
        (p.kwargs["loss"], p.kwargs.get("bias", True)) for p in CATALOGUE if p.family == "ufm"
    }
    assert ufm_kinds == {("mse", True), ("mse", False), ("ce", True), ("ce", False)}
    mufm = [p for p in CATALOGUE if p.family == "mufm"]
    assert len({(p.K, p.n, p.d) for p in mufm}) >= 3
    assert len({p.kwargs["lam"] for p in mufm}) >= 3
    assert {p.kwargs["loss"] for p in mufm} == {"mse", "ce"}


@pytest.mark.parametrize("prob,label", list(_cases()))
def test_method_reaches_certified_optimum(prob, label):
    opts = dict(METHODS[label])
    if label == "gd" and prob.name not in GD_WITHIN_DEFAULT_BUDGET:
        opts["max_iter"] = 1_000_000  # the default 1e5 is not enough on these
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a ConvergenceWarning fails the test loudly
        res = prob.solve(**opts)
    assert res.converged, f"{prob.name} {label}: {res!r}"
    rel = (res.objective - prob.optimum) / prob.optimum
    assert abs(rel) <= RTOL, f"{prob.name} {label}: relative gap {rel:.2e}"
    cert = prob.certificate()
    # cross-check with the certificate's own evaluation of the solution
    assert rel >= -RTOL and float(res.objective) >= cert.bound * (1 - RTOL)


MSE = [p for p in CATALOGUE if p.kwargs["loss"] == "mse"]


@pytest.mark.parametrize("prob", MSE, ids=lambda p: p.name)
def test_mse_methods_agree_to_1e10(prob):
    """The statistics solver, L-BFGS on H and the joint certificate agree to 1e-10 relative."""
    a = prob.solve(method="suffstats", tol=1e-11)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # L-BFGS may stall at round-off near 1e-12
        b = prob.solve(method="lbfgs-h", tol=1e-11)
    assert a.converged and b.grad_norm < 1e-10, (a, b)
    assert abs(a.objective - b.objective) <= 1e-10 * abs(b.objective), (a.objective, b.objective)
    # the objective of the returned (W, b, H), evaluated independently
    ref = REF.reference_objective
    X = None if prob.X is None else prob.X.reshape(-1, prob.d)
    kw = {k: v for k, v in prob.kwargs.items() if k not in ("loss", "bias")}
    bias = prob.kwargs.get("bias", True)
    f = ref(a.W, a.b if bias else None, a.H, a.y, X=X, **kw)[0]
    assert abs(f - a.objective) <= 1e-12 * abs(f)
    cert = prob.certificate()
    assert a.objective >= cert.bound * (1 - 1e-7)


@pytest.mark.parametrize("prob", [p for p in CATALOGUE if p.etf], ids=lambda p: p.name)
def test_ufm_optimum_is_collapsed(prob):
    cert = prob.certificate()
    from ufm.metrics import pfc1, pfc2

    assert pfc1(cert.H, prob.y) < 1e-6 and pfc2(cert.H, prob.y) < 1e-6
    res = prob.solve(method="lbfgs", tol=1e-10)
    assert res.metrics["pfc1"] < 1e-6 and res.metrics["pfc2"] < 1e-6, res.metrics


IMBALANCED = [p for p in CATALOGUE if p.counts is not None]


def test_catalogue_has_imbalanced_problems_of_every_kind():
    kinds = {(p.kwargs["loss"], p.kwargs.get("bias", True)) for p in IMBALANCED}
    assert kinds == {("mse", True), ("mse", False), ("ce", True), ("ce", False)}
    assert all(len(set(p.counts)) > 1 for p in IMBALANCED)


@pytest.mark.parametrize(
    "prob",
    [p for p in IMBALANCED if p.kwargs == {**p.kwargs, "loss": "mse", "bias": False}],
    ids=lambda p: p.name,
)
def test_imbalanced_mse_closed_form_equals_certificate(prob):
    """Bias-free MSE: the certified optimum (cvxpy) equals the closed form of singular-value
    thresholding, a_k = (sqrt(n_k) - sqrt(N lam_w lam_h))_+ (ufm.deep_linear_optimum, L = 1)."""
    import ufm

    kw = prob.kwargs
    opt = ufm.deep_linear_optimum(prob.counts, L=1, lam_w=kw["lam_w"], lam_h=kw["lam_h"])
    N = sum(prob.counts)
    a = np.maximum(np.sqrt(prob.counts) - np.sqrt(N * kw["lam_w"] * kw["lam_h"]), 0.0)
    np.testing.assert_allclose(opt.singular_values, a, rtol=1e-12)
    assert abs(opt.objective - prob.optimum) <= 1e-7 * prob.optimum
    res = prob.solve(tol=1e-10)
    # the logits of class k are a_k / sqrt(n_k) e_k: zero for a thresholded minority class
    Z = res.H @ res.W.T
    for k, n in enumerate(prob.counts):
        want = np.broadcast_to(np.eye(prob.K)[k] * a[k] / np.sqrt(n), (n, prob.K))
        np.testing.assert_allclose(Z[res.y == k], want, atol=1e-6)
