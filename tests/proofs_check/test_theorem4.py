import numpy as np
import pytest

import mufm
from proofs_check import analyze_mufm, check_theorem4, reduced_mse_flow
from proofs_check.instances import MUFMInstance, gaussian_data, random_mufm_instance
from ufm.errors import InputError
from ufm.metrics import collapse_metrics


def test_reference_flow_matches_library_flow():
    X = gaussian_data(np.random.default_rng(0), 3, 3, 4)
    Xf, y = X.reshape(9, 4), np.repeat(np.arange(3), 3)
    ref = reduced_mse_flow(Xf, y, lam_w=0.01, lam_b=0.0, t_max=5.0, n_eval=11)
    lib = mufm.gradient_flow(Xf, y, lam_w=0.01, lam_b=0.0, t_max=5.0, n_eval=11, rtol=1e-10)
    np.testing.assert_allclose(ref["tr_sigma_w"], lib.tr_sigma_w, rtol=1e-6)
    np.testing.assert_allclose(ref["tr_sigma_b"], lib.tr_sigma_b, rtol=1e-6)
    # traces against the metrics module
    m = collapse_metrics(ref["Hs"][-1], y)
    np.testing.assert_allclose(ref["tr_sigma_w"][-1], m["tr_sigma_w"], rtol=1e-10)
    assert np.all(np.diff(ref["tr_sigma_w"]) <= 0) and np.all(np.diff(ref["tr_sigma_b"]) >= 0)


def test_non_collapse_identity_at_the_optimum():
    """(lam I + W^T W) dH = lam dX for the within-class deviations (the non-collapse proof)."""
    X = gaussian_data(np.random.default_rng(1), 3, 4, 5)
    lam = 0.5
    res = mufm.solve(X, lam=lam, lam_w=0.01, lam_b=0.0, tol=1e-11)
    Xf, y = X.reshape(12, 5), np.repeat(np.arange(3), 4)
    H, W = np.asarray(res.H), np.asarray(res.W)
    dX = Xf - np.stack([Xf[y == k].mean(0) for k in range(3)])[y]
    dH = H - np.stack([H[y == k].mean(0) for k in range(3)])[y]
    np.testing.assert_allclose(dH @ (lam * np.eye(5) + W.T @ W), lam * dX, atol=1e-7)


def test_analyze_one_instance():
    inst = random_mufm_instance(np.random.default_rng(3))
    rec = analyze_mufm(inst, n_bisect=6)
    assert rec["status"] == "confirmed", rec
    assert rec["min_pfc1_solution"] > 0
    assert rec["flow_max_rel_increase_trsw"] <= 1e-7


def test_threshold_found_inside_range():
    # with a narrow range starting at lam_min where the inequality fails? here it holds
    # everywhere in [1e-3, 1e3]; the bisection then reports lam_min
    inst = random_mufm_instance(np.random.default_rng(4))
    rec = analyze_mufm(inst, lam_min=1e-2, lam_max=10.0, n_bisect=4, flow=False)
    assert rec["lam0"] is not None and 1e-2 <= rec["lam0"] <= 10.0


def test_check_theorem4_and_degenerate():
    r = check_theorem4(3, seed=0, n_bisect=4)
    assert r.ok and r.n_tried == 3
    inst = random_mufm_instance(np.random.default_rng(0), degenerate="collapsed")
    assert analyze_mufm(inst, flow=False)["reason"].startswith("collapsed data")
    with pytest.raises(InputError):
        analyze_mufm(MUFMInstance(X=inst.X, lam=1.0, lam_w=0.01, loss="ce"))
