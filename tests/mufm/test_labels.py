"""mufm.solve takes any hashable class labels, like ufm.solve: codes in result.y, labels in
result.classes, and the same solution as with the codes."""

from __future__ import annotations

import numpy as np
import pytest

import mufm
from ufm.errors import DegenerateInputError, InputError


@pytest.mark.parametrize(
    "labels",
    [np.array(["cat", "dog", "eel"]), np.array([-3, 4, 11]), np.array([0.0, 2.0, 5.0])],
)
def test_any_labels_give_the_codes_solution(labels):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((24, 5)), np.arange(24) % 3
    ref = mufm.solve(X, y, lam=0.1)
    res = mufm.solve(X, labels[y], lam=0.1)
    np.testing.assert_array_equal(res.classes, labels)
    np.testing.assert_array_equal(res.classes[np.asarray(res.y)], labels[y])
    np.testing.assert_allclose(res.objective, ref.objective, rtol=1e-12)
    np.testing.assert_allclose(res.H, ref.H, rtol=1e-10, atol=1e-12)


def test_balanced_input_reports_integer_classes():
    X = np.random.default_rng(1).standard_normal((3, 4, 5))
    np.testing.assert_array_equal(mufm.solve(X, lam=0.1).classes, np.arange(3))


def test_bad_labels_are_refused():
    X = np.random.default_rng(2).standard_normal((6, 3))
    with pytest.raises(DegenerateInputError):
        mufm.solve(X, np.array(["a"] * 6), lam=0.1)
    with pytest.raises(InputError, match="y"):
        mufm.solve(X, np.array([0.5, 1, 0, 1, 0, 1]), lam=0.1)
    with pytest.raises(InputError, match="y"):
        mufm.solve(X, np.array(["a", "b"] * 2), lam=0.1)


def test_labels_leave_the_features_deferred_and_checked():
    # the classes are attached without forming H: a later change of X is still detected
    rng = np.random.default_rng(3)
    X, y = rng.standard_normal((30, 4)), np.array(["a", "b", "c"] * 10)
    res = mufm.solve(X, y, lam=0.1)
    assert not res.formed("H")
    X[0, 0] += 1.0
    with pytest.raises(InputError, match="changed in place"):
        res.H  # noqa: B018
