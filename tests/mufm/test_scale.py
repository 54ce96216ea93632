"""mufm.solve's `scale` option and the ScaleWarning: lam means the same across data scales."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

import mufm
from mufm.solve import data_scale
from ufm.errors import InputError, ScaleWarning


def _data(scale: float, seed: int = 0):
    rng = np.random.default_rng(seed)
    K, n, d = 3, 6, 5
    X = rng.standard_normal((K, n, d)) + 2.0 * rng.standard_normal((K, 1, d))
    X = X.reshape(K * n, d)
    X = X / (np.linalg.norm(X) / np.sqrt(K * n))  # RMS row norm 1
    return scale * X, np.repeat(np.arange(K), n)


def test_data_scale_is_the_rms_row_norm_without_overflow():
    X, _ = _data(3.0)
    np.testing.assert_allclose(data_scale(X), np.sqrt((X**2).sum(1).mean()), rtol=1e-12)
    np.testing.assert_allclose(data_scale(X * 1e200), 3e200, rtol=1e-12)
    assert data_scale(np.zeros((4, 2))) == 1.0


def test_raw_scale_warns_with_the_numbers_and_the_suggestion():
    X, y = _data(62.0)
    with pytest.warns(
        ScaleWarning,
        match=r"RMS row norm is 62.*lam=0\.1 acts like lam=384.*scale='rms'.*lam=2\.6e-05",
    ):
        res = mufm.solve(X, y, lam=0.1)
    assert res.params["lam"] == 0.1  # default behaviour unchanged


def test_tiny_scale_warns_too():
    X, y = _data(0.01)
    with pytest.warns(ScaleWarning, match="barely tied to X"):
        mufm.solve(X, y, lam=0.1)


def test_unit_scale_does_not_warn():
    X, y = _data(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScaleWarning)
        mufm.solve(X, y, lam=0.1)
        mufm.solve(X * 20.0, y, lam=0.1)  # s^2 = 400 < 1e3


@pytest.mark.parametrize("s", [62.0, 0.01])
def test_rms_scale_is_the_unit_scale_problem_mapped_back(s):
    X1, y = _data(1.0)
    ref = mufm.solve(X1, y, lam=0.1, lam_w=1e-2, lam_h=1e-3)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ScaleWarning)
        res = mufm.solve(X1 * s, y, lam=0.1, lam_w=1e-2, lam_h=1e-3, scale="rms")
    np.testing.assert_allclose(res.params["lam"], 0.1 / s**2, rtol=1e-12)
    np.testing.assert_allclose(res.params["lam_w"], 1e-2 * s**2, rtol=1e-12)
    # equal problems up to the solvers' tolerance (tol=1e-8 on the gradient in each scaling)
    np.testing.assert_allclose(res.H, s * ref.H, rtol=1e-5, atol=1e-7 * s)
    np.testing.assert_allclose(res.W, ref.W / s, rtol=1e-5, atol=1e-7 / s)
    np.testing.assert_allclose(res.b, ref.b, rtol=1e-5, atol=1e-6)


def test_rms_changes_the_answer_on_raw_data():
    X, y = _data(62.0)
    with pytest.warns(ScaleWarning):
        raw = mufm.solve(X, y, lam=0.1)
    rel = mufm.solve(X, y, lam=0.1, scale="rms")
    # as given, H stays at X; relative to the scale, H moves as it does on unit-scale data
    assert np.abs(raw.H - X).max() < 1e-2 * np.abs(rel.H - X).max()


@pytest.mark.parametrize("bad", ["RMS", "unit", None, 1])
def test_bad_scale_is_an_input_error(bad):
    X, y = _data(1.0)
    with pytest.raises(InputError, match="scale must be one of"):
        mufm.solve(X, y, scale=bad)


def test_bad_lam_still_reported_by_the_solver_with_scale_rms():
    X, y = _data(1.0)
    with pytest.raises(InputError, match="lam"):
        mufm.solve(X, y, lam=-1.0, scale="rms")


@pytest.mark.parametrize("c", [1e-200, 1e-160, 1e-10, 1e10, 1e140])
def test_scale_warning_at_extreme_scales_names_finite_or_exact_numbers(c):
    # s^2 under- or overflows here; the warning must not divide by it (ZeroDivisionError before)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((18, 5)) * c, np.arange(18) % 3
    with pytest.warns(ScaleWarning, match=r"lam=0\.1 acts like lam=\d"):
        r = mufm.solve(X, y, lam=0.1)
    assert np.all(np.isfinite(r.H))


def test_rms_scale_refuses_coefficients_beyond_the_float_range():
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((18, 5)) * 1e-200, np.arange(18) % 3
    with pytest.raises(InputError, match="scale='rms' cannot rescale.*divide X"):
        mufm.solve(X, y, lam=0.1, scale="rms")
