"""ufm.solve: every method reaches the same collapsed optimum; backends agree; bad input."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import mufm
import ufm
from ufm import BackendError, ConvergenceWarning, DegenerateInputError, InputError, RankWarning
from ufm.metrics import simplex_etf
from ufm.objective import objective

Y = np.repeat(np.arange(3), 2)
KW = dict(lam_w=0.05, lam_h=0.05, lam_b=0.05)
LOOSE = dict(tol=1e-6)  # gd: enough for a relative objective error far below 1e-6


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("bias", [True, False])
def test_methods_reach_same_optimum(loss, bias):
    ref = ufm.solve(Y, d=4, loss=loss, bias=bias, **KW)
    assert ref.status == "converged" and ref.converged and ref.grad_norm <= 1e-8
    for method in ("gd",):
        res = ufm.solve(Y, d=4, loss=loss, bias=bias, method=method, **KW, **LOOSE)
        assert res.converged, res
        np.testing.assert_allclose(res.objective, ref.objective, rtol=1e-6)
        # the UFM optimum is unique up to rotation: compare rotation-invariant quantities
        np.testing.assert_allclose(res.H @ res.W.T, ref.H @ ref.W.T, atol=1e-4)
        np.testing.assert_allclose(res.b, ref.b, atol=1e-4)


@pytest.mark.parametrize("loss", ["mse", "ce"])
def test_optimum_is_collapsed_simplex_etf(loss):
    res = ufm.solve(
        np.repeat(np.arange(4), 3),
        d=6,
        loss=loss,
        lam_w=1e-3,
        lam_h=1e-3,
        lam_b=1e-3,
        tol=1e-11 if loss == "mse" else 1e-9,
    )
    assert res.converged
    assert res.metrics["pfc1"] < 1e-10
    assert res.metrics["pfc2"] < 1e-6
    assert res.metrics["ncc_accuracy"] == 1.0
    assert res.metrics["nc3"] < 1e-6  # self-duality: W^T parallel to the centred means
    # objective equals the public evaluator; the optimum beats an explicit ETF guess
    np.testing.assert_allclose(
        objective(res.W, res.b, res.H, res.y, lam_w=1e-3, lam_h=1e-3, lam_b=1e-3, loss=loss),
        res.objective,
        rtol=1e-13,
    )
    M = simplex_etf(4, 6, seed=0)
    guess = objective(
        M, np.zeros(4), M[res.y], res.y, lam_w=1e-3, lam_h=1e-3, lam_b=1e-3, loss=loss
    )
    assert res.objective < guess


def test_over_regularised_ufm_collapses_to_zero_and_metrics_are_empty():
    # with large penalties the global minimiser is W = 0, H = 0 (Zhu et al.; MATH.md sec. 6)
    res = ufm.solve(Y, d=4, lam_w=1.0, lam_h=1.0, lam_b=0.0)
    assert res.converged
    assert np.abs(res.H).max() < 1e-6 and np.abs(res.W).max() < 1e-6
    np.testing.assert_allclose(res.objective, 0.5 * (1 - 1 / 3), rtol=1e-9)


def test_numpy_and_torch_agree():
    r_np = ufm.solve(Y, d=4, **KW)
    r_t = ufm.solve(torch.as_tensor(Y), d=4, **KW)
    assert r_t.backend == "torch" and isinstance(r_t.H, torch.Tensor)
    assert r_np.backend == "numpy" and isinstance(r_np.H, np.ndarray)
    assert r_t.H.dtype == torch.float64
    np.testing.assert_allclose(r_t.objective, r_np.objective, rtol=1e-12)
    np.testing.assert_allclose(r_t.H.numpy(), r_np.H, atol=1e-7)
    r_t2 = ufm.solve(Y, d=4, backend="torch", device="cpu", loss="ce", **KW)
    r_np2 = ufm.solve(Y, d=4, loss="ce", **KW)
    np.testing.assert_allclose(r_t2.objective, r_np2.objective, rtol=1e-12)


def test_float32_within_float32_tolerance():
    r64 = ufm.solve(torch.as_tensor(Y), d=4, **KW)
    r32 = ufm.solve(torch.as_tensor(Y), d=4, dtype=torch.float32, **KW)
    assert r32.H.dtype == torch.float32 and r32.params["tol"] == 1e-4
    assert r32.converged
    np.testing.assert_allclose(r32.objective, r64.objective, rtol=1e-5)
    np.testing.assert_allclose((r32.H @ r32.W.T).double(), r64.H @ r64.W.T, atol=1e-3)


def test_result_fields_and_history():
    res = ufm.solve(Y, d=4, **KW)
    assert res.W.shape == (3, 4) and res.b.shape == (3,) and res.H.shape == (6, 4)
    assert res.X is None
    assert res.history["objective"].shape == res.history["grad_norm"].shape == (res.n_iter + 1,)
    assert np.all(np.diff(res.history["objective"]) <= 1e-15)
    assert res.params["lam_h"] == 0.05 and res.params["method"] == "suffstats"
    assert "UFM" in repr(res) and "converged" in repr(res)
    with pytest.raises(InputError, match="UFM result"):
        res.layers(3)
    with pytest.raises(Exception):  # frozen
        res.objective = 0.0
    nb = ufm.solve(Y, d=4, bias=False, **KW)
    assert np.all(nb.b == 0)


def test_status_is_the_enum_and_compares_to_strings():
    res = ufm.solve(Y, d=4, **KW)
    assert res.status is ufm.Status.CONVERGED and res.status == "converged"
    short = ufm.solve(Y, d=4, method="gd", max_iter=3, **KW)
    assert short.status is ufm.Status.MAX_ITER and not short.converged


@pytest.mark.parametrize("method", ["suffstats", "lbfgs", "lbfgs-h", None])
def test_step_is_refused_outside_gd(method):
    with pytest.raises(InputError, match="step applies to method='gd' only"):
        ufm.solve(Y, d=4, method=method, step=0.1, **KW)
    with pytest.raises(InputError, match="step"):
        ufm.solve(Y, d=4, features="layernorm", step=0.1)
    with pytest.raises(InputError, match="step"):
        ufm.solve(Y, d=4, method="gd", step=-1.0, **KW)


def test_flow_is_not_a_solve_method_and_max_iter_counts_iterations():
    # the gradient flow is one API, mufm.gradient_flow (a trajectory over [0, t_max])
    with pytest.raises(InputError, match="method must be one of"):
        ufm.solve(Y, d=4, method="flow", **KW)
    for method in ("suffstats", "lbfgs", "gd"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = ufm.solve(Y, d=4, method=method, max_iter=2, tol=1e-300, **KW)
        assert res.n_iter <= 2 and res.params["max_iter"] == 2
        assert len(res.history["objective"]) <= 3  # the start plus one entry per iteration


def test_seed_reproducible_and_matters():
    a = ufm.solve(Y, d=4, seed=3, **KW)
    b = ufm.solve(Y, d=4, seed=3, **KW)
    c = ufm.solve(Y, d=4, seed=4, **KW)
    np.testing.assert_array_equal(a.H, b.H)
    assert not np.allclose(a.H, c.H)
    np.testing.assert_allclose(a.objective, c.objective, rtol=1e-10)


def test_verbose_progress_bar(capsys):
    res = ufm.solve(Y, d=4, verbose=True, **KW)
    assert res.converged
    assert "it" in capsys.readouterr().err


# ------------------------------------------------------------------------------- bad input
def test_max_iter_reached_status_and_warning():
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        res = ufm.solve(Y, d=4, max_iter=3, **KW)
    assert res.status == "max_iter" and not res.converged and res.n_iter == 3
    with pytest.warns(ConvergenceWarning):
        res = ufm.solve(Y, d=4, method="gd", max_iter=5, **KW)
    assert res.status == "max_iter"


def test_d_too_small_for_etf():
    y = np.repeat(np.arange(4), 2)
    with pytest.raises(InputError, match="K-1"):
        ufm.solve(y, d=2)
    with pytest.warns(RankWarning, match="K-1"):
        ufm.solve(y, d=3, bias=False, lam_w=0.01, lam_h=0.01)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # unpenalised bias + MSE: the ETF fits in K-1 dims
        res = ufm.solve(y, d=3, lam_b=0.0, lam_w=0.01, lam_h=0.01)
    assert res.metrics["pfc2"] < 1e-6


@pytest.mark.parametrize(
    "kw, match",
    [
        (dict(lam_w=-1.0), "lam_w"),
        (dict(lam_w=0.0), "lam_w"),
        (dict(lam_h=0.0), "lam_h"),
        (dict(lam_h=float("nan")), "lam_h"),
        (dict(lam_b=float("inf")), "lam_b"),
        (dict(lam_b=-0.1), "lam_b"),
        (dict(loss="ce", lam_b=0.0), "lam_b"),
        (dict(loss="l1"), "loss"),
        (dict(method="newton"), "method"),
        (dict(backend="jax"), "backend"),
        (dict(backend="numpy", device="cuda"), "CPU only"),
        (dict(backend="numpy", dtype="float32"), "float64"),
        (dict(backend="torch", dtype="float16"), "dtype"),
        (dict(max_iter=0), "max_iter"),
        (dict(tol=-1.0), "tol"),
        (dict(d=0), "d"),
        (dict(d=2.5), "d"),
        (dict(seed=-1), "seed"),
        (dict(bias="yes"), "bias"),
    ],
)
def test_bad_options(kw, match):
    args = dict(d=4)
    args.update(kw)
    with pytest.raises(InputError, match=match):
        ufm.solve(Y, **args)


@pytest.mark.parametrize(
    "y, err, match",
    [
        (np.zeros(4, dtype=int), DegenerateInputError, "K=2"),
        (np.array(["a", "a"]), DegenerateInputError, "K=1"),
        (np.array([0.0, 1.5]), InputError, "integer"),
        (np.array([0.0, np.nan]), InputError, "integer"),
        (np.array([1j, 2j]), InputError, "complex"),
        (np.zeros((2, 2), dtype=int), InputError, "1-d"),
        (np.array([], dtype=int), InputError, "empty"),
        ([[1], [2], [1]], InputError, "1-d"),
        (np.array([{}, {}], dtype=object), InputError, "unhashable"),
    ],
)
def test_bad_labels(y, err, match):
    with pytest.raises(err, match=match):
        ufm.solve(y, d=4)


def test_cuda_without_gpu_is_backend_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BackendError, match="cuda"):
        ufm.solve(Y, d=4, device="cuda")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    r_cpu = ufm.solve(Y, d=4, **KW)
    r_gpu = ufm.solve(Y, d=4, device="cuda", **KW)
    assert r_gpu.H.device.type == "cuda"
    np.testing.assert_allclose(r_gpu.objective, r_cpu.objective, rtol=1e-10)


@pytest.mark.parametrize("name", ["lam_w", "lam_h", "lam_b"])
@pytest.mark.parametrize("value", [1e25, 1e300])
def test_penalties_beyond_the_limit_are_refused(name, value):
    # lam_w and lam_h are limited through sqrt(lam_w lam_h) (scale-free), lam_b as it is
    y = np.repeat(np.arange(3), 5)
    with pytest.raises(InputError, match=name):
        ufm.solve(y, d=4, **{name: value})


def test_ufm_penalty_limit_is_scale_free():
    # lam_w a^2, lam_h / a^2 is the same UFM: accepted and equal whatever a (issue 20)
    y = np.repeat(np.arange(3), 5)
    r0 = ufm.solve(y, d=4, lam_w=5e-3, lam_h=5e-3)
    r = ufm.solve(y, d=4, lam_w=5e-3 * 2.0**60, lam_h=5e-3 * 2.0**-60)
    assert r.converged and r.params["scale"] == 2.0**30
    np.testing.assert_allclose(r.objective, r0.objective, rtol=1e-10)


def test_penalty_at_the_limit_gives_the_zero_classifier_limit():
    # lam_w = 1e10: W = 0 to float64 precision; b is the ridge mean of the one-hot targets
    y = np.repeat(np.arange(3), 5)
    r = ufm.solve(y, d=4, lam_w=1e10, lam_b=0.0)
    np.testing.assert_allclose(r.objective, 0.5 * (1 - 1 / 3), rtol=1e-6)


def test_penalty_limit_follows_the_data_scale():
    # X * a with lam_w * a^2 is the same problem: accepted; the same lam_w on unscaled data is not
    X = np.random.default_rng(0).standard_normal((3, 4, 5)) + 2 * np.eye(3, 5)[:, None, :]
    a = 1e20
    res = mufm.solve(X * a, lam=0.1 / a**2, lam_w=5e-3 * a**2)
    assert res.converged
    with pytest.raises(InputError, match="lam_w"):
        mufm.solve(X, lam=0.1, lam_w=5e-3 * a**2)


def test_huge_free_feature_dimension_is_refused_up_front():
    import time

    t = time.perf_counter()
    with pytest.raises(InputError, match="d=10000000"):
        ufm.solve(np.repeat(np.arange(3), 4), d=10**7)
    assert time.perf_counter() - t < 5


def test_tiny_data_with_default_penalties_is_solved_not_refused():
    X = np.random.default_rng(0).standard_normal((3, 4, 5)) + 2 * np.eye(3, 5)[:, None, :]
    res = mufm.solve(X * 1e-100, lam=0.1)
    assert np.isfinite(res.objective) and all(np.isfinite(v) for v in res.metrics.values())


def test_torch_input_runs_on_its_own_device_unless_told_otherwise():
    """resolve_backend: no device given -> the torch input's device (found by a failing GPU
    check: a CUDA tensor was solved on the CPU); an explicit device wins; numpy -> CPU."""
    from ufm.engine.options import resolve_backend

    with pytest.raises(BackendError, match="meta"):
        resolve_backend(None, None, None, input_is_torch=True, input_device=torch.device("meta"))
    be = resolve_backend(None, "cpu", None, input_is_torch=True, input_device="meta")
    assert be.device == torch.device("cpu")
    be = resolve_backend(None, None, None, input_is_torch=False, input_device="meta")
    assert be.name == "numpy"
    be = resolve_backend(None, None, None, input_is_torch=True, input_device=torch.device("cpu"))
    assert be.device == torch.device("cpu")
