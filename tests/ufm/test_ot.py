"""ufm.ot_profile against cases with known answers and a brute-force reference."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ufm import OTProfile, ot_profile
from ufm.errors import InputError

pytest.importorskip("ot")


def _cloud(N=40, d=3, seed=0):
    return np.random.default_rng(seed).standard_normal((N, d))


def _brute_w2sq(A, B):
    """W2^2 of uniform measures of equal size: the best permutation (Birkhoff-von Neumann)."""
    N = len(A)
    return min(
        np.mean(np.sum((A - B[list(p)]) ** 2, axis=1)) for p in itertools.permutations(range(N))
    )


def test_translated_cloud_plan_is_the_identity_and_cost_the_shift():
    A = _cloud()
    shift = np.array([1.0, -2.0, 0.5])
    prof = ot_profile([A, A + shift])
    assert isinstance(prof, OTProfile)
    np.testing.assert_allclose(prof.total_w2sq, shift @ shift, rtol=1e-12)
    np.testing.assert_allclose(prof.total_identity_cost, shift @ shift, rtol=1e-12)
    np.testing.assert_allclose(prof.total_diagonal_mass, 1.0, rtol=1e-12)
    np.testing.assert_allclose(prof.plan_gap, 0.0, atol=1e-12)
    assert prof.converged


def test_permuted_cloud_costs_nothing_but_the_identity_coupling_does():
    A = _cloud(N=30)
    perm = np.roll(np.arange(30), 1)  # no fixed point
    shift = np.array([0.0, 3.0, 0.0])
    prof = ot_profile({"in": A, "out": A[perm] + shift})
    assert prof.layers == ("in", "out")
    np.testing.assert_allclose(prof.total_w2sq, 9.0, rtol=1e-12)  # the translation only
    np.testing.assert_allclose(prof.total_diagonal_mass, 0.0, atol=1e-12)
    ident = np.mean(np.sum((A[perm] + shift - A) ** 2, axis=1))
    np.testing.assert_allclose(prof.total_identity_cost, ident, rtol=1e-12)
    assert prof.plan_gap > 0.5


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_w2_matches_brute_force_over_permutations(seed):
    rng = np.random.default_rng(seed)
    A, B = rng.standard_normal((6, 2)), 2.0 * rng.standard_normal((6, 2)) + 1.0
    prof = ot_profile([A, B], from_first=False)
    np.testing.assert_allclose(prof.total_w2sq, _brute_w2sq(A, B), rtol=1e-10)
    assert prof.from_first_w2sq is None and prof.geodesic_deviation is None


def test_mccann_interpolation_is_a_constant_speed_geodesic():
    # B = T(A) with T = grad of a convex function (a positive-definite linear map plus a shift)
    # is the optimal map; (1 - t) A + t B at equal t is the geodesic with equal steps
    A = _cloud(N=50, d=2, seed=3)
    S = np.array([[2.0, 0.3], [0.3, 1.0]])
    B = A @ S + np.array([1.0, -1.0])
    layers = [(1 - t) * A + t * B for t in np.linspace(0.0, 1.0, 6)]
    prof = ot_profile(layers)
    assert prof.step_spread < 1e-9
    assert abs(prof.path_ratio - 1.0) < 1e-9
    assert prof.geodesic_deviation < 1e-9
    np.testing.assert_allclose(prof.step_diagonal_mass, 1.0, rtol=1e-12)
    rows = prof.rows()
    np.testing.assert_allclose(
        [r["from_first_w2sq"] for r in rows], [r["geodesic_w2sq"] for r in rows], rtol=1e-9
    )


def test_unequal_steps_are_seen():
    A = _cloud()
    shift = np.array([1.0, 0.0, 0.0])
    prof = ot_profile([A, A + 0.1 * shift, A + shift])  # steps 0.1 and 0.9
    np.testing.assert_allclose(prof.step_w2, [0.1, 0.9], rtol=1e-10)
    np.testing.assert_allclose(prof.step_spread, 0.8, rtol=1e-10)
    np.testing.assert_allclose(prof.geodesic_deviation, 0.4, rtol=1e-10)  # |0.1 - 0.5| / 1
    np.testing.assert_allclose(prof.path_ratio, 1.0, rtol=1e-10)


def test_subsample_is_seeded_and_the_same_in_every_layer():
    A = _cloud(N=60)
    shift = np.array([0.0, 0.0, 2.0])
    p1 = ot_profile([A, A + shift], max_samples=20, seed=5)
    p2 = ot_profile([A, A + shift], max_samples=20, seed=5)
    assert p1.n_samples == 20 and p1.params["N"] == 60
    np.testing.assert_array_equal(p1.indices, p2.indices)
    assert np.all(np.diff(p1.indices) > 0)
    np.testing.assert_allclose(p1.total_w2sq, 4.0, rtol=1e-12)
    np.testing.assert_allclose(p1.total_diagonal_mass, 1.0, rtol=1e-12)
    assert ot_profile([A, A + shift], max_samples=None).indices is None


def test_scale_free_at_extreme_magnitudes():
    # the cost matrix is built on rescaled data: entries near 1e150 square to 1e300 (sums of
    # them would overflow) and entries near 1e-170 square to subnormals (the plan would be lost)
    A = _cloud()
    big = ot_profile([A * 1e150, (A + 1.0) * 1e150])
    np.testing.assert_allclose(big.total_w2sq / 1e300, 3.0, rtol=1e-10)
    perm = np.roll(np.arange(len(A)), 3)
    tiny = ot_profile([A * 1e-170, (A[perm] + 1.0) * 1e-170])
    np.testing.assert_allclose(tiny.total_diagonal_mass, 0.0, atol=1e-12)  # the permutation found
    assert np.isfinite(tiny.total_w2sq)


def test_torch_input():
    torch = pytest.importorskip("torch")
    A = _cloud()
    prof = ot_profile([torch.from_numpy(A), torch.from_numpy(A + 1.0)])
    np.testing.assert_allclose(prof.total_w2sq, 3.0, rtol=1e-12)


@pytest.mark.parametrize(
    "layers, match",
    [
        ([np.zeros((4, 2))], "at least 2 layers"),
        ([np.zeros((4, 2)), np.zeros((4, 3))], "one feature dimension"),
        ([np.zeros((4, 2)), np.zeros((5, 2))], "same N samples"),
        ([np.zeros((4, 2)), np.full((4, 2), np.nan)], "non-finite"),
        ([np.zeros(4), np.zeros(4)], r"shape \(N, d\)"),
        ("ab", "sequence or a mapping"),
    ],
)
def test_bad_layers_are_input_errors(layers, match):
    with pytest.raises(InputError, match=match):
        ot_profile(layers)


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"max_samples": 1}, "max_samples"),
        ({"seed": -1}, "seed"),
        ({"num_iter_max": 0}, "num_iter_max"),
    ],
)
def test_bad_options_are_input_errors(kw, match):
    A = _cloud()
    with pytest.raises(InputError, match=match):
        ot_profile([A, A], **kw)


def _claims(layers, **tol):
    from ufm import ot_claims

    return {c["name"]: c for c in ot_claims(ot_profile(layers), **tol)}


def test_ot_claims_hold_on_a_constant_speed_translation():
    X = np.random.default_rng(0).standard_normal((60, 3))
    c = _claims([X, X + 1.0, X + 2.0, X + 3.0])
    assert all(v["held"] for v in c.values())
    np.testing.assert_allclose(c["geodesic"]["measured"], 1.0, rtol=1e-9)


def test_each_ot_claim_can_fail():
    X = np.random.default_rng(1).standard_normal((60, 3))
    # a block that permutes the samples: the identity coupling is not optimal
    assert _claims([X, X[::-1] + 0.01, X + 2.0])["identity_optimal"]["held"] is False
    # unequal steps along a straight line
    c = _claims([X, X + 1.0, X + 1.1])
    assert c["equal_steps"]["held"] is False and c["geodesic"]["held"] is True
    # a detour: spread out and come back
    c = _claims([X, 3.0 * X, X + 0.1])
    assert c["geodesic"]["held"] is False and c["geodesic"]["measured"] > 10


def test_ot_claims_tolerances_decide_and_are_checked():
    from ufm import ot_claims

    X = np.random.default_rng(2).standard_normal((40, 2))
    p = ot_profile([X, X + 1.0, X + 1.5])  # steps 1 and 0.5: spread 1/3
    spread = {c["name"]: c for c in ot_claims(p, spread=0.5)}["equal_steps"]
    assert spread["held"] is True and spread["threshold"] == 0.5
    assert {c["name"]: c for c in ot_claims(p, spread=0.3)}["equal_steps"]["held"] is False
    for bad in (0.0, -1.0, float("nan"), float("inf"), True, "0.1"):
        with pytest.raises(InputError, match="spread"):
            ot_claims(p, spread=bad)
    with pytest.raises(InputError, match="OTProfile"):
        ot_claims({"layers": ()})


def test_complex_layers_are_refused():
    X = np.random.default_rng(3).standard_normal((10, 2))
    with pytest.raises(InputError, match="complex"):
        ot_profile([X + 0j, X + 1])
