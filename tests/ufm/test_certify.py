"""The UFM certificate (ufm.certify): convex bound, exactness, reconstruction, bad input.

Independent references: a brute-force multi-start scipy L-BFGS on (W, b, H) with its own
objective (tests/reference_problems.py), the un-reduced (K, N) nuclear-norm problem, a direct
SVD check of the balanced-factor identity, and finite differences for the polishing gradient.
"""

from __future__ import annotations

import numpy as np
import pytest
import reference_problems as REF
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import class_counts, log_uniform, seeds

import ufm
from ufm import Certificate, InputError, certify
from ufm.certify import balanced_factors
from ufm.engine.convex import certify_constants, value_and_grad
from ufm.engine.options import DEFAULT_LAM_B, DEFAULT_LAM_H, DEFAULT_LAM_W
from ufm.metrics import pfc1, pfc2

RTOL = 1e-6  # the certificate's promise: optimum to 1e-6 relative


def _nuclear(A):
    return float(np.linalg.svd(A, compute_uv=False).sum())


# ------------------------------------------------------------------ balanced-factor identity


#: Both sides of the identity range over the same problems: ``Z (K, N)``, penalties over five
#: decades, a seed for the random factors.
FACTOR_PROBLEMS = {
    "K": class_counts(5),
    "N": st.integers(2, 7),
    "lw": log_uniform(1e-4, 1e1),
    "lh": log_uniform(1e-4, 1e1),
    "seed": seeds,
}


@settings(max_examples=40, deadline=None)
@given(d=st.integers(1, 6), **FACTOR_PROBLEMS)
def test_penalty_dominates_nuclear_norm(K, N, d, lw, lh, seed):
    rng = np.random.default_rng(seed)
    W, H = rng.standard_normal((K, d)), rng.standard_normal((N, d))
    lhs = lw / 2 * np.sum(W**2) + lh / (2 * N) * np.sum(H**2)
    rhs = np.sqrt(lw * lh / N) * _nuclear(W @ H.T)
    assert lhs >= rhs * (1 - 1e-12)


@settings(max_examples=40, deadline=None)
@given(**FACTOR_PROBLEMS)
def test_balanced_factors_attain_equality(K, N, lw, lh, seed):
    rng = np.random.default_rng(seed)
    Z = rng.standard_normal((K, N))
    d = K + 1  # d >= rank Z: the factorisation is exact
    W, H = balanced_factors(Z, d, lam_w=lw, lam_h=lh)
    assert W.shape == (K, d) and H.shape == (N, d)
    np.testing.assert_allclose(W @ H.T, Z, atol=1e-12)
    lhs = lw / 2 * np.sum(W**2) + lh / (2 * N) * np.sum(H**2)
    np.testing.assert_allclose(lhs, np.sqrt(lw * lh / N) * _nuclear(Z), rtol=1e-12)


def test_balanced_factors_truncate_to_d():
    Z = np.diag([3.0, 2.0, 1.0])
    W, H = balanced_factors(Z, 2, lam_w=1.0, lam_h=3.0)
    # best rank-2 approximation: the smallest singular value is dropped
    np.testing.assert_allclose(W @ H.T, np.diag([3.0, 2.0, 0.0]), atol=1e-12)


# ------------------------------------------------------------------ polishing gradient


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("bias", [True, False])
def test_value_and_grad_matches_reference_and_finite_differences(loss, bias):
    rng = np.random.default_rng(3)
    K, N, d = 3, 5, 4
    W, H, X = rng.standard_normal((K, d)), rng.standard_normal((N, d)), rng.standard_normal((N, d))
    b = rng.standard_normal(K) if bias else None
    y = np.array([0, 1, 2, 1, 0])
    kw = dict(X=X, lam=0.7, lam_w=0.3, lam_h=0.2, lam_b=0.1, loss=loss)
    f, gW, gb, gH = value_and_grad(W, b, H, y, **kw)
    fr = REF.reference_objective(W, b, H, y, **kw)[0]
    np.testing.assert_allclose(f, fr, rtol=1e-13)
    np.testing.assert_allclose(f, ufm.objective(W, b, H, y, **kw), rtol=1e-13)
    eps = 1e-6
    for A, gA in [(W, gW), (H, gH)] + ([(b, gb)] if bias else []):
        for idx in [(0,), (1,)] if A.ndim == 1 else [(0, 0), (1, 2), (2, 3)]:
            A[idx] += eps
            fp = value_and_grad(W, b, H, y, **kw)[0]
            A[idx] -= 2 * eps
            fm = value_and_grad(W, b, H, y, **kw)[0]
            A[idx] += eps
            np.testing.assert_allclose(gA[idx], (fp - fm) / (2 * eps), rtol=1e-6, atol=1e-9)


# ------------------------------------------------------------------ the bound against brute force


TINY = [
    ("mse", True, dict(lam_w=1e-2, lam_h=1e-2, lam_b=1e-3)),
    ("mse", False, dict(lam_w=5e-3, lam_h=2e-2)),
    ("ce", True, dict(lam_w=1e-2, lam_h=1e-2, lam_b=1e-2)),
    ("ce", False, dict(lam_w=2e-2, lam_h=5e-3)),
]


@pytest.mark.parametrize("loss,bias,kw", TINY, ids=[f"{a}-bias{b}" for a, b, _ in TINY])
def test_certified_optimum_matches_brute_force(loss, bias, kw):
    y = np.array([0, 0, 1, 1, 1, 2, 2])  # unbalanced on purpose
    cert = certify(y, d=3, loss=loss, bias=bias, **kw)
    assert cert.exact and cert.tight
    best = REF.brute_force(y, 3, loss=loss, bias=bias, starts=6, **kw)
    # brute force can only find feasible points: never below the bound (solver accuracy aside)
    assert best >= cert.bound - 1e-6 * abs(cert.bound)  # the bound is accurate to ~1e-6
    np.testing.assert_allclose(best, cert.optimum, rtol=RTOL)
    np.testing.assert_allclose(cert.reconstruction_value, cert.optimum, rtol=1e-12)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_class_reduction_equals_full_problem(loss):
    y = np.array([0, 1, 1, 2, 2, 2, 0, 1])
    kw = dict(d=3, lam_w=1e-2, lam_h=3e-2, lam_b=1e-2, loss=loss)
    red = certify(y, **kw)
    full = certify(y, reduce=False, **kw)
    np.testing.assert_allclose(red.bound, full.bound, rtol=1e-6)
    np.testing.assert_allclose(red.optimum, full.optimum, rtol=1e-9)


def test_mse_optimum_is_simplex_etf():
    K, n = 4, 5
    y = np.repeat(np.arange(K), n)
    cert = certify(y, d=6, lam_w=1e-2, lam_h=1e-2, lam_b=1e-3)
    assert cert.exact and cert.rank == K - 1  # bias absorbs the mean: rank K - 1
    assert pfc1(cert.H, y) < 1e-10 and pfc2(cert.H, y) < 1e-6
    # W is collapsed too: its rows are (up to scale) the centred class means (self-duality)
    M = np.stack([cert.H[y == k].mean(0) for k in range(K)])
    M -= M.mean(0)
    Wc = cert.W - cert.W.mean(0)
    cos = np.sum(Wc * M) / (np.linalg.norm(Wc) * np.linalg.norm(M))
    assert cos > 1 - 1e-8


def test_mse_closed_form_without_bias():
    # Balanced MSE UFM without bias: with Z = C E and N = K n the convex problem reads
    # (1/(2K)) ||C - I||_F^2 + sqrt(lam_w lam_h / K) ||C||_*, whose minimiser is singular-value
    # thresholding of I at tau = sqrt(K lam_w lam_h): C = (1 - tau) I, value tau^2/2 + tau(1-tau).
    K, n, lw, lh = 3, 4, 1e-2, 4e-2
    y = np.repeat(np.arange(K), n)
    cert = certify(y, d=K, lam_w=lw, lam_h=lh, bias=False)
    tau = np.sqrt(K * lw * lh)
    np.testing.assert_allclose(cert.optimum, tau**2 / 2 + tau * (1 - tau), rtol=1e-10)
    np.testing.assert_allclose(cert.spectrum, np.full(K, np.sqrt(n) * (1 - tau)), rtol=1e-6)


def test_d_smaller_than_K_is_flagged_not_exact():
    y = np.repeat(np.arange(4), 3)
    kw = dict(lam_w=1e-2, lam_h=1e-2, lam_b=1e-3)
    cert = certify(y, d=2, **kw)
    assert not cert.exact and not cert.tight and cert.optimum is None
    assert cert.rank == 3 > 2
    assert cert.reconstruction_value > cert.bound * (1 + 1e-3)  # a genuine gap
    best = REF.brute_force(y, 2, starts=6, **kw)
    assert cert.bound <= best <= cert.reconstruction_value * (1 + 1e-9)
    assert "lower bound" in cert.summary()


def test_d_smaller_than_K_can_still_be_exact():
    # with a bias the optimum has rank K - 1, so d = K - 1 is attained
    y = np.repeat(np.arange(4), 3)
    cert = certify(y, d=3, lam_w=1e-2, lam_h=1e-2, lam_b=1e-3)
    assert cert.exact and cert.rank == 3


def test_solution_gap_and_certifies():
    y = np.repeat(np.arange(3), 3)
    kw = dict(d=3, lam_w=1e-2, lam_h=1e-2, lam_b=1e-3)
    base = certify(y, **kw)
    good = certify(y, solution=(base.W, base.b, base.H), **kw)
    assert good.certifies(1e-9) and abs(good.rel_gap) < 1e-12
    bad = certify(y, solution=(base.W, base.b, 1.1 * base.H), **kw)
    assert bad.gap > 0 and not bad.certifies(1e-6)
    np.testing.assert_allclose(
        bad.value,
        REF.reference_objective(
            base.W, base.b, 1.1 * base.H, y, **{k: v for k, v in kw.items() if k != "d"}
        )[0],
        rtol=1e-12,
    )


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_certify_a_solve_result(loss):
    y = np.repeat(np.arange(3), 4)
    res = ufm.solve(y, d=4, lam_w=1e-2, lam_h=1e-2, lam_b=1e-3, loss=loss)
    cert = certify(res)
    assert isinstance(cert, Certificate) and cert.family == "ufm"
    assert cert.params["lam_b"] == 1e-3 and cert.params["loss"] == loss
    assert cert.certifies(RTOL), cert.summary()


def test_certify_result_without_bias_ignores_zero_b():
    y = np.repeat(np.arange(3), 2)
    res = ufm.solve(y, d=3, lam_w=1e-2, lam_h=1e-2, bias=False)
    cert = certify(res)
    assert cert.b is None and cert.params["bias"] is False and cert.certifies(RTOL)


def test_torch_labels_and_solution():
    y = torch.tensor([0, 0, 1, 1, 2, 2])
    base = certify(y, d=3, lam_w=1e-2, lam_h=1e-2, lam_b=0.0)
    sol = tuple(torch.as_tensor(a) for a in (base.W, base.b, base.H))
    cert = certify(y, d=3, lam_w=1e-2, lam_h=1e-2, lam_b=0.0, solution=sol)
    assert cert.certifies(1e-9)


def test_scs_agrees_with_clarabel():
    import cvxpy as cp

    if "SCS" not in cp.installed_solvers():  # a cvxpy dependency, but installs can lack it
        pytest.skip("SCS is not installed")
    y = np.repeat(np.arange(3), 3)
    a = certify(y, d=3, lam_w=1e-2, lam_h=1e-2, solver="CLARABEL")
    b = certify(y, d=3, lam_w=1e-2, lam_h=1e-2, solver="scs")
    assert b.solver == "SCS"
    np.testing.assert_allclose(a.bound, b.bound, rtol=1e-5)
    np.testing.assert_allclose(a.optimum, b.optimum, rtol=1e-9)  # both polished to the optimum


def test_summary_and_params():
    cert = certify(np.repeat(np.arange(2), 2), d=2, lam_w=1e-2, lam_h=1e-2)
    text = cert.summary()
    assert "global optimum" in text and "CLARABEL" in text
    assert cert.params["K"] == 2 and cert.params["N"] == 4 and cert.solve_time >= 0
    assert np.all(np.diff(cert.spectrum) <= 0)  # descending


# ------------------------------------------------------------------ bad input


Y = np.repeat(np.arange(3), 2)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(d=0), "d must be >= 1"),
        (dict(d=2.5), "d must be an integer"),
        (dict(d=3, lam_w=0.0), "lam_w must be > 0"),
        (dict(d=3, lam_h=-1.0), "lam_h must be > 0"),
        (dict(d=3, lam_h=float("nan")), "lam_h must be finite"),
        (dict(d=3, lam_b=-1e-3), "lam_b must be >= 0"),
        (dict(d=3, loss="hinge"), "loss must be 'mse' or 'ce'"),
        (dict(d=3, bias="yes"), "bias must be True or False"),
        (dict(d=3, solver="NOPE"), "solver must be None"),
        (dict(d=3, rank_tol=0.0), "rank_tol must be > 0"),
        (dict(), "needs the feature dimension d"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(InputError, match=match):
        certify(Y, **kwargs)


@pytest.mark.parametrize(
    "y,match",
    [
        (np.zeros(4, dtype=int), "at least K=2"),
        (np.array(["a", "a"]), "at least K=2"),  # labels with gaps are classes now
        (np.array([0.5, 1.0]), "integer"),
        (np.array([[0, 1]]), "1-d array"),
        (np.array([1j, 2j]), "complex"),
    ],
)
def test_bad_labels(y, match):
    with pytest.raises(InputError, match=match):
        certify(y, d=2)


def test_any_labels_certify_the_same_problem():
    """String labels and integer labels with gaps are mapped to 0..K-1 as in ufm.solve."""
    a = certify(np.array(["x", "x", "z", "z", "y", "y"]), d=3, lam_w=1e-2, lam_h=1e-2)
    b = certify(np.array([0, 0, 7, 7, -2, -2]), d=3, lam_w=1e-2, lam_h=1e-2)
    c = certify(np.array([0, 0, 2, 2, 1, 1]), d=3, lam_w=1e-2, lam_h=1e-2)
    assert a.optimum == pytest.approx(c.optimum, rel=1e-8)
    assert b.optimum == pytest.approx(c.optimum, rel=1e-8)


def test_bad_solutions():
    W, b, H = np.zeros((3, 3)), np.zeros(3), np.zeros((6, 3))
    with pytest.raises(InputError, match="W \\(3, 3\\) and H \\(6, 3\\)"):
        certify(Y, d=3, solution=(W, b, H[:5]))
    with pytest.raises(InputError, match="b is None"):
        certify(Y, d=3, solution=(W, None, H))
    with pytest.raises(InputError, match="b must have shape"):
        certify(Y, d=3, solution=(W, np.zeros(2), H))
    with pytest.raises(InputError, match="non-finite"):
        certify(Y, d=3, solution=(W, b, np.full((6, 3), np.nan)))
    with pytest.raises(InputError, match="tuple \\(W, b, H\\)"):
        certify(Y, d=3, solution="best")


def test_result_with_problem_keywords_is_refused():
    res = ufm.solve(Y, d=3, lam_w=1e-2, lam_h=1e-2)
    with pytest.raises(InputError, match="do not also pass"):
        certify(res, d=3)


def test_mufm_result_is_refused():
    import mufm

    res = mufm.solve(np.random.default_rng(0).standard_normal((2, 2, 3)), lam=1.0)
    with pytest.raises(InputError, match="mufm.certify"):
        certify(res)


def test_unreduced_size_guard_refuses_before_allocating():
    """ufm.certify(y, d=6, reduce=False) used to hang at N=180 and allocate 35 GB at N=360."""
    import time

    for n in (30, 60):
        t = time.perf_counter()
        with pytest.raises(InputError, match=r"GiB.*reduce=True"):
            certify(np.repeat(np.arange(6), n), d=6, reduce=False)
        assert time.perf_counter() - t < 1


def test_certificate_to_dict_is_json_ready_and_status_is_the_enum():
    import json

    cert = certify(np.repeat(np.arange(3), 2), d=3, lam_w=1e-2, lam_h=1e-2)
    assert cert.status is ufm.Status.OPTIMAL and cert.status == "optimal"
    dd = cert.to_dict()
    back = json.loads(json.dumps(dd))
    assert back["status"] == "optimal" and back["family"] == "ufm"
    assert back["bound"] == cert.bound and back["exact"] is True
    np.testing.assert_array_equal(np.asarray(back["W"]), cert.W)
    np.testing.assert_array_equal(np.asarray(back["spectrum"]), cert.spectrum)
    assert back["params"]["d"] == 3 and set(back) >= {"gap", "rel_gap", "H", "b", "solve_time"}


def test_certify_constants_defaults_and_ranges():
    got = certify_constants(None, None, None, None, None, lam_h_default=DEFAULT_LAM_H)
    assert got == (DEFAULT_LAM_W, DEFAULT_LAM_H, DEFAULT_LAM_B, "mse", True)
    assert certify_constants(1.0, 0.0, 0.0, "ce", False, lam_h_default=0.0) == (
        1.0, 0.0, 0.0, "ce", False,
    )  # fmt: skip
    # loss names are spelled exactly everywhere (ufm.losses.check_loss), with the spelling to use
    with pytest.raises(InputError, match="write 'ce'"):
        certify_constants(1.0, 0.0, 0.0, "CE", False, lam_h_default=0.0)
    bad = [
        dict(lam_w=0.0), dict(lam_w=float("nan")), dict(lam_b=-1.0), dict(loss="hinge"),
        dict(bias="yes"), dict(lam_h=-1.0),
    ]  # fmt: skip
    for kw in bad:
        args = {"lam_w": None, "lam_h": None, "lam_b": None, "loss": None, "bias": None} | kw
        name = next(iter(kw))
        with pytest.raises(InputError, match=name):
            certify_constants(**args, lam_h_default=0.0)
    # lam_h = 0 is refused only where the default is positive (the UFM)
    with pytest.raises(InputError, match="lam_h"):
        certify_constants(1.0, 0.0, 0.0, "mse", True, lam_h_default=DEFAULT_LAM_H)


# ------------------------------------------- issue 20: exact only when verified; rescaling
def _ufm_scaled(a, seed):
    y = np.random.default_rng(seed).integers(0, 3, 9)
    y[:3] = [0, 1, 2]
    return ufm.certify(y, d=4, lam_w=5e-3 * a * a, lam_h=5e-3 / a / a)


try:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    @settings(
        max_examples=5, deadline=None, phases=(Phase.explicit, Phase.generate),
        suppress_health_check=[HealthCheck.too_slow],
    )  # fmt: skip
    @given(u=st.floats(-60.0, 60.0), seed=st.integers(0, 5))
    def test_ufm_certify_is_scale_equivariant(u, seed):
        a = 2.0**u
        c0, c = _ufm_scaled(1.0, seed), _ufm_scaled(a, seed)
        assert c.exact and c0.exact and c.tight == c0.tight
        np.testing.assert_allclose(c.bound, c0.bound, rtol=1e-7)
        np.testing.assert_allclose(c.reconstruction_value, c0.reconstruction_value, rtol=1e-7)
        Z, Z0 = c.W @ c.H.T, c0.W @ c0.H.T  # logits: scale-free
        np.testing.assert_allclose(Z, Z0, atol=1e-5 * np.abs(Z0).max())
        assert c.params["scale"] == pytest.approx(a, rel=0.42)  # power of two nearest a

except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass


def test_ufm_certificate_not_exact_when_bound_is_below_the_feasible_point():
    from ufm.engine.convex import conclude

    y = np.repeat(np.arange(3), 3)
    c0 = ufm.certify(y, d=4, lam_w=5e-3, lam_h=5e-3)
    kw = {"lam_w": 5e-3, "lam_h": 5e-3, "lam_b": c0.params["lam_b"], "loss": "mse"}
    c = conclude(
        family="ufm", bound=0.9 * c0.bound, theory_exact=True, rank=2, d=4,
        spectrum=np.ones(2), recon=(c0.W, c0.b, c0.H), y=y, kw=kw, solution=None,
        solved=("CLARABEL", "optimal", 0.0), params={},
    )  # fmt: skip
    assert not c.exact and not c.tight and c.optimum is None and "inexact" in c.message
