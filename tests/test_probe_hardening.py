"""Extra probes of issue 20 (bad values, extreme scales, NaN/inf, wrong dtypes and shapes,
sizes that exhaust memory) against public functions of ufm, mufm and proofs_check: each was a
raw exception, a silent inf or a hang, and is now a clear toolkit error (or a correct result)."""

from __future__ import annotations

import numpy as np
import pytest

import mufm
import proofs_check as pc
import ufm
from ufm.errors import InputError, PFCError, SolverError

RNG = np.random.default_rng(0)
H = RNG.standard_normal((12, 4))
Y = np.arange(12) % 3


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: pc.count_roots(None, 0, 1), "p must be a sequence"),
        (lambda: pc.certify_sign(None), "p must be a sequence"),
        (lambda: pc.isolate_roots(np.ones((2, 2))), "1-d sequence"),
        (lambda: pc.pfc1_closed_form([0.5], "1", 1.0, 1.0, 1.0), "a must be a real number"),
        (lambda: pc.pfc1_closed_form([0.5], None, 1.0, 1.0, 1.0), "a must be a real number"),
        (lambda: pc.pfc1_closed_form([[1, 2], [3]], 1.0, 1.0, 1.0, 1.0), "t must be a real"),
        (lambda: pc.pfc1_closed_form([np.nan], 1.0, 1.0, 1.0, 1.0), "t must hold finite"),
        (lambda: pc.reduced_mse_flow(None, Y, lam_w=0.01), "X"),
        (lambda: pc.reduced_mse_flow(H[:, 0], Y, lam_w=0.01), r"X must have shape \(N, d\)"),
        (lambda: pc.reduced_mse_flow(H * np.inf, Y, lam_w=0.01), "non-finite"),
        (lambda: pc.reduced_mse_flow(H, Y, lam_w=0.01, n_eval=10**9), "n_eval"),  # hung
        (lambda: pc.reduced_mse_flow(H, Y, lam_w=-1.0), "lam_w"),
        (lambda: pc.check_theorem3(0, n_restarts=-1), "n_restarts must be >= 1"),
        (lambda: pc.check_theorem3(0, n_restarts="1"), "n_restarts must be an integer"),
        (lambda: ufm.alignment([[1, 2], [3]], H), "H"),  # ragged: raw numpy ValueError
        (lambda: mufm.make_data(3, 2, 4, noise=1e308), "noise=1e\\+308 overflows"),  # -inf data
        (lambda: ufm.SufficientStatistics(10**12), "K=1,000,000,000,000 classes"),
        (lambda: ufm.CollapseAccumulator(10**12), "K=1,000,000,000,000 classes"),
        (lambda: ufm.SufficientStatistics(10**5).update(np.zeros((2, 10**5)), [0, 1]), "limit"),
        (lambda: ufm.layernorm_etf_optimum(10**6, 10**6), "above the limit"),  # MemoryError
        (lambda: ufm.layernorm_etf_optimum(3, 4, lam_w=1e308), "lam_w=1e\\+308 is too large"),
    ],
)
def test_probe_refused_clearly(call, match):
    with pytest.raises(InputError, match=match):
        call()


def test_gradient_flow_at_float64_limit_is_a_solver_error():
    """|X| ~ 1e300 raised scipy's raw ValueError from inside the integrator."""
    with pytest.raises(SolverError, match="rescale the data"):
        mufm.gradient_flow(H * 1e300, Y, n_eval=3)


@pytest.mark.parametrize("s", [1e-300, 1e-310, 1e300])
@pytest.mark.filterwarnings("ignore::ufm.errors.PFCWarning")
def test_extreme_scales_give_finite_results_or_clear_errors(s):
    for call in (
        lambda: ufm.collapse_metrics(H * s, Y)["pfc1"],
        lambda: ufm.alignment(H * s, H),
        lambda: ufm.layernorm_normalize(H * s),
        lambda: ufm.relative_position([H * s, 2 * H * s, 3 * H * s], mode="distance"),
    ):
        with np.errstate(all="ignore"):
            try:
                out = call()
            except PFCError:
                continue
        assert np.all(np.isfinite(out))


def test_reduced_mse_flow_still_agrees_with_the_library_flow():
    Xf = RNG.standard_normal((12, 4))
    ref = pc.reduced_mse_flow(Xf, Y, lam_w=0.01, t_max=2.0, n_eval=5)
    lib = mufm.gradient_flow(Xf, Y, lam_w=0.01, lam_b=0.0, t_max=2.0, n_eval=5, rtol=1e-10)
    np.testing.assert_allclose(ref["tr_sigma_w"], lib.tr_sigma_w, rtol=1e-6)
