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


# ------------------------------------------- issue 20: exact only when verified; rescaling
def test_exact_only_when_the_feasible_point_attains_the_bound():
    """A bound below the feasible point beyond rtol is inexact, even where theory says tight."""
    from ufm.engine.convex import conclude

    X = REF.sphere_data(3, 2, 8, noise=0.3, seed=0).reshape(6, 8)
    y = np.repeat(np.arange(3), 2)
    r = mufm.solve(X, y, lam=0.5)
    kw = {"X": X, "lam": 0.5, "lam_w": 5e-4, "lam_h": 0.0, "lam_b": 5e-4, "loss": "mse"}
    W, b, H = (np.asarray(v, dtype=np.float64) for v in (r.W, r.b, r.H))
    common = dict(
        family="mufm", theory_exact=True, rank=2, d=8, spectrum=np.ones(2), recon=(W, b, H),
        y=np.asarray(y), kw=kw, solution=None, solved=("CLARABEL", "optimal", 0.0), params={},
    )  # fmt: skip
    low = conclude(bound=0.87 * r.objective, **common)
    assert not low.exact and not low.tight and low.optimum is None
    assert f"{low.bound:.10g}" in low.message and f"{low.reconstruction_value:.10g}" in low.message
    assert "inexact" in low.message and "INEXACT" in low.summary()
    assert low.params["theory_exact"] and low.params["verified_rel_gap"] > 0.1
    ok = conclude(bound=r.objective * (1 - 1e-9), **common)
    assert ok.exact and ok.tight and ok.optimum == pytest.approx(r.objective, rel=1e-9)
    # the tolerance is the caller's: 13% is accepted at rtol=0.2
    assert conclude(bound=0.87 * r.objective, rtol=0.2, **common).exact


def test_rtol_and_verbose_are_validated():
    with pytest.raises(InputError, match="rtol"):
        mufm.certify(X0, rtol=0.0)
    with pytest.raises(InputError, match="verbose"):
        mufm.certify(X0, verbose="yes")


def test_verbose_shows_progress(capsys):
    X = REF.sphere_data(3, 2, 4, noise=0.3, seed=1)
    mufm.certify(X, lam=0.5, verbose=True)
    err = capsys.readouterr().err
    assert "mufm.certify" in err and "conic solve" in err


def test_automatic_progress_stays_out_of_logs(capsys, monkeypatch):
    # verbose=None shows progress for long solves on a terminal only: a log (not a tty, as
    # capsys) gets no carriage-return lines
    import ufm.engine.convex as convex

    monkeypatch.setattr(convex, "PROGRESS_SECONDS", -1.0)  # every solve counts as long
    X = REF.sphere_data(3, 2, 4, noise=0.3, seed=1)
    mufm.certify(X, lam=0.5)
    assert "conic solve" not in capsys.readouterr().err


def test_huge_lam_gives_a_valid_certificate_and_huge_lam_h_is_refused():
    # the displacement form u = h - x has no ||x||^2 cancellation in the transport term
    X = np.random.default_rng(0).standard_normal((3, 4, 5))
    c = mufm.certify(X, lam=1e12)
    assert -1e-9 <= c.bound <= c.reconstruction_value * (1 + 1e-6) + 1e-12
    with pytest.raises(InputError, match="1e6"):
        mufm.certify(X, lam=0.1, lam_h=1e12)


def _certify_scaled(X, a, lam=0.5, lam_w=5e-4):
    with _no_check():
        r = mufm.solve(X * a, lam=lam / a**2, lam_w=lam_w * a**2)
        return r, mufm.certify(r)


def _check_scaled(a, seed):
    from hypothesis import assume

    X = REF.sphere_data(3, 2, 10, noise=0.5, seed=seed)  # rank(X) + K <= d: tight
    assume(np.isfinite(0.5 / a**2) and 0.5 / a**2 > 0 and np.isfinite(5e-4 * a**2))
    r0, c0 = _certify_scaled(X, 1.0)
    r, c = _certify_scaled(X, a)
    np.testing.assert_allclose(r.objective, r0.objective, rtol=1e-9)
    np.testing.assert_allclose(np.asarray(r.H) / a, np.asarray(r0.H), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(c.bound, c0.bound, rtol=1e-6)
    np.testing.assert_allclose(c.reconstruction_value, c0.reconstruction_value, rtol=1e-9)
    assert c.exact == c0.exact and c.tight == c0.tight
    assert c.exact, c.summary()  # this well-posed problem certifies at every scale
    # the feasible points agree to the conic solver's accuracy (values to 1e-9 above)
    np.testing.assert_allclose(c.H / a, c0.H, atol=1e-4 * np.abs(c0.H).max())
    np.testing.assert_allclose(c.W * a, c0.W, atol=1e-4 * np.abs(c0.W).max())


try:
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import strategies as st

    _scale = st.floats(-60.0, 60.0).map(lambda u: float(2.0**u))

    _no_shrink = (Phase.explicit, Phase.reuse, Phase.generate)  # each example is an SDP

    @settings(
        max_examples=4, deadline=None, phases=_no_shrink,
        suppress_health_check=[HealthCheck.too_slow],
    )  # fmt: skip
    @given(a=_scale, seed=st.integers(0, 3))
    def test_certify_is_scale_equivariant(a, seed):
        _check_scaled(a, seed)

    @pytest.mark.slow
    @settings(
        max_examples=40, deadline=None, phases=_no_shrink,
        suppress_health_check=[HealthCheck.too_slow],
    )  # fmt: skip
    @given(a=_scale, seed=st.integers(0, 50))
    def test_certify_is_scale_equivariant_many(a, seed):
        _check_scaled(a, seed)

except ImportError:  # pragma: no cover - hypothesis is a test dependency
    pass


@pytest.mark.slow
def test_digits_certificate_is_never_below_its_own_feasible_point():
    """Issue 20's worst finding: digits, 2 per class, lam=0.1; SCS claimed a bound 14% below."""
    datasets = pytest.importorskip("sklearn.datasets")
    Xd, yd = datasets.load_digits(return_X_y=True)
    idx = np.concatenate([np.flatnonzero(yd == k)[:2] for k in range(10)])
    r = mufm.solve(Xd[idx].astype(float), yd[idx], lam=0.1)
    for solver in (None, "SCS"):
        with _no_check():
            c = mufm.certify(r, solver=solver)
        rel = (c.reconstruction_value - c.bound) / c.reconstruction_value
        assert c.bound <= c.reconstruction_value * (1 + 1e-5)
        if c.exact:
            assert rel <= c.params["rtol"] and c.optimum <= r.objective * (1 + 1e-6)
        else:
            assert c.optimum is None and not c.tight and "inexact" in c.message
