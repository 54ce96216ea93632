"""The MUFM certificate (mufm.certify): Gram-matrix SDP bound, tightness, reconstruction.

Independent references: the full ``(K + 2N)`` Gram-matrix SDP written directly with cvxpy (the
certificate solves an equivalent smaller, chordal form), and a brute-force multi-start scipy
L-BFGS on (W, b, H) (tests/reference_problems.py).
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import reference_problems as REF
import torch

import mufm
import ufm
from ufm import Certificate, InputError

RTOL = 1e-6


def _data(K, n, d, seed=0, noise=0.3):
    return REF.sphere_data(K, n, d, noise=noise, seed=seed)


class _no_check:
    def __enter__(self):
        import warnings

        self._cm = warnings.catch_warnings()
        self._cm.__enter__()
        warnings.simplefilter("ignore", UserWarning)

    def __exit__(self, *exc):
        return self._cm.__exit__(*exc)


def _full_gram_sdp(X, y, *, lam, lam_w, lam_h, lam_b, loss, bias):
    """MATH.md section 6 as written: PSD Gram of (w_k, h_i, x_i) with x-block = X X^T."""
    N, _ = X.shape
    K = int(y.max()) + 1
    m = K + 2 * N
    G = cp.Variable((m, m), PSD=True)
    w, h, x = slice(0, K), slice(K, K + N), slice(K + N, m)
    Z = G[w, h]
    Y = np.eye(K)[y].T
    logits = Z
    b = None
    if bias:
        b = cp.Variable(K)
        logits = Z + cp.reshape(b, (K, 1), order="F") @ np.ones((1, N))
    if loss == "mse":
        data = 0.5 * cp.sum_squares(logits - Y)
    else:
        data = cp.sum(cp.log_sum_exp(logits, axis=0)) - cp.sum(cp.multiply(Y, logits))
    hh, hx, xx = cp.diag(G[h, h]), cp.diag(G[h, x]), np.sum(X * X, axis=1)
    f = (data + lam_h / 2 * cp.sum(hh) + lam / 2 * cp.sum(hh - 2 * hx + xx)) / N
    f = f + lam_w / 2 * cp.trace(G[w, w])
    if bias:
        f = f + lam_b / 2 * cp.sum_squares(b)
    prob = cp.Problem(cp.Minimize(f), [G[x, x] == X @ X.T])
    prob.solve(solver="CLARABEL")
    return prob.value


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_chordal_form_equals_full_gram_sdp(loss):
    X = _data(2, 3, 4, seed=5).reshape(6, 4)
    y = np.repeat(np.arange(2), 3)
    kw = dict(lam=0.5, lam_w=2e-2, lam_h=1e-2, lam_b=1e-2, loss=loss, bias=True)
    cert = mufm.certify(X, y, **kw)
    np.testing.assert_allclose(cert.bound, _full_gram_sdp(X, y, **kw), rtol=1e-6)


def test_loose_relaxation_is_still_a_bound_and_equals_full_sdp():
    # standard-normal data, MSE, moderate lam: the relaxation has rank > d (not tight)
    X = np.random.default_rng(0).standard_normal((3, 3, 3))
    kw = dict(lam=1.0, lam_w=1e-2, lam_h=0.0, lam_b=5e-4, loss="mse", bias=True)
    cert = mufm.certify(X, **kw)
    Xf, y = X.reshape(9, 3), np.repeat(np.arange(3), 3)
    # the full-size reference SDP is solved less accurately here (CLARABEL reports
    # "inaccurate" on it): agreement to 3e-5 relative
    with _no_check():
        full = _full_gram_sdp(Xf, y, **kw)
    np.testing.assert_allclose(cert.bound, full, rtol=3e-5)
    best = REF.brute_force(y, 3, X=Xf, starts=4, **kw)
    assert cert.bound <= best * (1 + 1e-6)
    assert best <= cert.reconstruction_value * (1 + 1e-9)
    if not cert.exact:
        assert cert.rank > 3 and not cert.tight and cert.optimum is None
        assert "lower bound" in cert.summary()


CASES = [
    # (K, n, d, lam, loss, bias, seed): every one certified exact
    (2, 2, 6, 1.0, "mse", True, 0),  # rank(X) + K = 6 <= d: exact by theory
    (3, 2, 4, 10.0, "mse", True, 1),
    (2, 3, 3, 0.3, "ce", True, 2),
    (3, 2, 3, 1.0, "ce", False, 3),
]


@pytest.mark.parametrize("K,n,d,lam,loss,bias,seed", CASES)
def test_certified_optimum_matches_brute_force(K, n, d, lam, loss, bias, seed):
    X = _data(K, n, d, seed=seed)
    kw = dict(lam=lam, lam_w=1e-2, lam_h=0.0, lam_b=1e-3, loss=loss, bias=bias)
    cert = mufm.certify(X, **kw)
    assert cert.exact, cert.summary()
    y = np.repeat(np.arange(K), n)
    best = REF.brute_force(y, d, X=X.reshape(K * n, d), starts=4, **kw)
    assert best >= cert.bound - 1e-6 * abs(cert.bound)  # the bound is accurate to ~1e-6
    np.testing.assert_allclose(best, cert.optimum, rtol=RTOL)
    # the reconstructed point is feasible, in the original coordinates, and optimal
    f = REF.reference_objective(
        cert.W,
        cert.b,
        cert.H,
        y,
        X=X.reshape(K * n, d),
        **{k: v for k, v in kw.items() if k != "bias"},
    )[0]
    np.testing.assert_allclose(f, cert.optimum, rtol=1e-12)


def test_exact_by_theory_when_rank_plus_K_fits():
    X = _data(2, 2, 6, seed=0)  # rank(X) = 4, K = 2
    cert = mufm.certify(X, lam=1.0, lam_w=1e-2)
    assert cert.params["rank_X"] == 4 and cert.exact and cert.tight
    assert cert.rank <= 4 + 2


def test_certify_a_solve_result_and_layers():
    X = _data(3, 2, 4, seed=1)
    res = mufm.solve(X, lam=10.0, lam_w=1e-2, lam_b=1e-3)
    cert = mufm.certify(res)
    assert isinstance(cert, Certificate) and cert.family == "mufm"
    assert cert.params["lam"] == 10.0 and cert.params["N"] == 6
    assert cert.certifies(RTOL), cert.summary()


def test_solution_tuple_and_gap():
    X = _data(2, 2, 3, seed=4)
    base = mufm.certify(X, lam=1.0, lam_w=1e-2, loss="ce")
    shifted = (base.W, base.b, base.H + 0.1)
    cert = mufm.certify(X, lam=1.0, lam_w=1e-2, loss="ce", solution=shifted)
    assert cert.gap > 0 and not cert.certifies()
    same = mufm.certify(X, lam=1.0, lam_w=1e-2, loss="ce", solution=(base.W, base.b, base.H))
    assert same.certifies(1e-9)


def test_samples_first_input_with_labels_and_torch():
    X = _data(2, 3, 3, seed=6)
    a = mufm.certify(X, lam=0.5, lam_w=1e-2)
    Xf = torch.as_tensor(X.reshape(6, 3))
    y = torch.tensor([0, 0, 0, 1, 1, 1])
    b = mufm.certify(Xf, y, lam=0.5, lam_w=1e-2)
    np.testing.assert_allclose(a.bound, b.bound, rtol=1e-9)


def test_spectrum_and_rank_reported():
    cert = mufm.certify(_data(2, 2, 3, seed=7), lam=1.0, lam_w=1e-2)
    s = cert.spectrum
    assert np.all(s >= 0) and np.all(np.diff(s) <= 1e-12)
    assert cert.rank == int(np.count_nonzero(s > 1e-6 * max(s.max(), 1.0)))


# ------------------------------------------------------------------ refusals and bad input


def test_too_many_samples_is_refused_with_advice():
    X = np.zeros((3, 25, 2)) + np.arange(3)[:, None, None]
    with pytest.raises(InputError, match=r"N = 75 samples exceeds the limit max_n = 60") as e:
        mufm.certify(X, lam=1.0)
    assert "class-balanced subsample" in str(e.value)
    # configurable
    with pytest.raises(InputError, match="max_n = 10"):
        mufm.certify(X[:, :4], lam=1.0, max_n=10)


X0 = np.random.default_rng(0).standard_normal((2, 2, 3))


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((X0,), dict(lam=0.0), "lam must be > 0"),
        ((X0,), dict(lam=-1.0), "lam must be > 0"),
        ((X0,), dict(lam_w=0.0), "lam_w must be > 0"),
        ((X0,), dict(lam_h=-1.0), "lam_h must be >= 0"),
        ((X0,), dict(lam_b=float("inf")), "lam_b must be finite"),
        ((X0,), dict(loss="l1"), "loss must be"),
        ((X0,), dict(bias=1), "bias must be True or False"),
        ((X0,), dict(max_n=0), "max_n must be >= 1"),
        ((X0,), dict(solver="GUROBI_NOT_HERE"), "solver must be None"),
        ((X0, np.array([0, 0, 1, 1])), {}, "labels implied; do not pass y"),
        ((X0.reshape(4, 3),), {}, "pass its labels y"),
        ((X0.reshape(4, 3), np.array([0, 1, 1])), {}, "4 rows"),
        ((np.full((2, 2, 3), np.nan),), {}, "non-finite"),
        ((np.zeros((1, 3, 2)),), {}, "at least K=2"),
        ((np.zeros((4,)),), {}, "shape"),
    ],
)
def test_bad_input(args, kwargs, match):
    with pytest.raises(InputError, match=match):
        mufm.certify(*args, **kwargs)


def test_result_refusals():
    res = mufm.solve(X0, lam=1.0)
    with pytest.raises(InputError, match="do not also pass"):
        mufm.certify(res, lam=1.0)
    ures = ufm.solve(np.array([0, 0, 1, 1]), d=2)
    with pytest.raises(InputError, match="ufm.certify"):
        mufm.certify(ures)
    with pytest.raises(InputError, match="W \\(2, 3\\)"):
        mufm.certify(X0, solution=(np.zeros((3, 3)), np.zeros(2), np.zeros((4, 3))))


# ------------------------------------------------------------- issue 12: valid or refused
def test_huge_lam_is_refused_not_a_negative_optimal_bound():
    X = np.random.default_rng(0).standard_normal((3, 4, 5))
    with pytest.raises(InputError, match="1e6"):
        mufm.certify(X, lam=1e12)
    with pytest.raises(InputError, match="scale"):
        mufm.certify(X * 1e100)


def test_size_guard_gives_memory_and_time_estimates():
    X = np.random.default_rng(0).standard_normal((10, 100, 64))
    with pytest.raises(InputError, match=r"GiB.* s "):
        mufm.certify(X, max_n=10**6)
    with pytest.raises(InputError, match=r"max_n.*GiB|GiB.*max_n"):
        mufm.certify(X)


def test_bound_checked_against_provable_facts():
    from ufm.engine.convex import check_bound
    from ufm.errors import SolverError

    check_bound(0.1, 0.1 + 1e-9, 0.2, "mufm")  # fine
    with pytest.raises(SolverError, match="non-negative"):
        check_bound(-0.344, 0.09, None, "mufm")
    with pytest.raises(SolverError, match="feasible point"):
        check_bound(0.5, 0.09, None, "mufm")
    with pytest.raises(SolverError, match="given solution"):
        check_bound(0.1, 0.1, 0.05, "mufm")


def test_zero_data_certified_optimum_matches_solver():
    X = np.zeros((4, 5, 8))
    cert = mufm.certify(X)
    res = mufm.solve(X)
    assert res.converged and res.objective == pytest.approx(cert.optimum, rel=1e-6)
