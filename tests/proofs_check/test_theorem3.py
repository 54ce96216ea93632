import numpy as np
import pytest
from hypothesis import given

import mufm
from proofs_check import analyze_multilayer, check_theorem3, solve_multilayer_joint
from proofs_check.instances import MUFMInstance, gaussian_data, random_mufm_instance
from proofs_check.strategies import mufm_instances, property_settings
from proofs_check.theorem3 import multilayer_value_and_grad, solve_reduced
from ufm.objective import objective as f_reduced

# profiles registered in conftest.py; HYPOTHESIS_PROFILE=slow selects the long one
SETTINGS = property_settings()


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("bias", [True, False])
def test_gradient_matches_finite_differences(loss, bias):
    rng = np.random.default_rng(0)
    L, N, d, K = 3, 6, 3, 3
    X = rng.standard_normal((N, d))
    y = np.arange(N) % K
    Hs, W = rng.standard_normal((L, N, d)), rng.standard_normal((K, d))
    b = rng.standard_normal(K) if bias else None
    kw = dict(lam=0.7, lam_w=0.05, lam_h=0.1, lam_b=0.03, loss=loss)
    _, gH, gW, gb = multilayer_value_and_grad(Hs, W, b, X, y, **kw)
    eps = 1e-6

    def fd(arr, idx):
        old = arr[idx]
        arr[idx] = old + eps
        fp = multilayer_value_and_grad(Hs, W, b, X, y, **kw)[0]
        arr[idx] = old - eps
        fm = multilayer_value_and_grad(Hs, W, b, X, y, **kw)[0]
        arr[idx] = old
        return (fp - fm) / (2 * eps)

    for idx in [(0, 1, 2), (2, 5, 0), (1, 3, 1)]:
        np.testing.assert_allclose(gH[idx], fd(Hs, idx), rtol=1e-6, atol=1e-8)
    for idx in [(0, 0), (2, 1)]:
        np.testing.assert_allclose(gW[idx], fd(W, idx), rtol=1e-6, atol=1e-8)
    if bias:
        np.testing.assert_allclose(gb[1], fd(b, (1,)), rtol=1e-6, atol=1e-8)


def test_value_matches_library_objectives():
    rng = np.random.default_rng(1)
    L, N, d, K = 4, 6, 3, 2
    X = rng.standard_normal((N, d))
    y = np.arange(N) % K
    H = rng.standard_normal((N, d))
    W, b = rng.standard_normal((K, d)), rng.standard_normal(K)
    kw = dict(lam=0.3, lam_w=0.02, lam_h=0.0, lam_b=0.01, loss="mse")
    lifted = np.stack([X + (l / L) * (H - X) for l in range(1, L + 1)])
    F = multilayer_value_and_grad(lifted, W, b, X, y, **kw)[0]
    np.testing.assert_allclose(F, f_reduced(W, b, H, y, X=X, **kw), rtol=1e-13)
    layers = [X, *lifted]
    np.testing.assert_allclose(F, mufm.multilayer_objective(layers, y, W, b, **kw), rtol=1e-13)
    # off the line the multilayer value is larger (Cauchy-Schwarz)
    other = lifted + 0.1 * rng.standard_normal(lifted.shape)
    other[-1] = H
    assert multilayer_value_and_grad(other, W, b, X, y, **kw)[0] > F


@SETTINGS
@given(mufm_instances())
def test_theorem3_property(inst):
    rec = analyze_multilayer(inst, n_restarts=2)
    assert rec["status"] in ("confirmed", "inconclusive"), rec
    assert rec["identity_err"] < 1e-10
    assert rec["cs_gap"] > -1e-10
    if rec["status"] == "confirmed":
        assert rec["spacing_err"] < 1e-5 and abs(rec["value_gap"]) < 1e-7


def test_joint_solver_reaches_reduced_optimum_and_line():
    X = gaussian_data(np.random.default_rng(2), 3, 3, 4)
    inst = MUFMInstance(X=X, lam=1.0, lam_w=0.01, lam_b=0.0, L=3)
    sol = solve_multilayer_joint(inst, seed=0)
    red = mufm.solve(X, lam=1.0, lam_w=0.01, lam_b=0.0, tol=1e-10)
    np.testing.assert_allclose(sol["value"], red.objective, rtol=1e-8)
    layers = red.layers(3)
    for l in range(1, 4):
        np.testing.assert_allclose(sol["Hs"][l - 1], layers[l], atol=1e-5)


def test_check_theorem3_and_degenerate():
    r = check_theorem3(4, seed=0, degenerate_rate=0.5)
    assert r.n_tried == 4 and r.ok
    assert r.n_assumptions_met + sum(r.outside.values()) == 4
    inst = random_mufm_instance(np.random.default_rng(0), degenerate="no_transport")
    assert analyze_multilayer(inst)["reason"].startswith("lam = 0")


def test_instance_penalties_are_the_solve_keywords():
    X = np.arange(12.0).reshape(2, 2, 3)
    inst = MUFMInstance(X=X, lam=1.0, lam_w=0.01, lam_b=0.2, lam_h=0.3, loss="ce", L=2)
    assert inst.penalties() == {"lam_w": 0.01, "lam_h": 0.3, "lam_b": 0.2, "loss": "ce"}
    r = solve_reduced(inst, 1.0, tol=1e-8, max_iter=50)
    assert {k: r.params[k] for k in inst.penalties()} == inst.penalties()
    assert solve_reduced(inst, 1.0, tol=1e-8, max_iter=50, loss="mse").params["loss"] == "mse"
