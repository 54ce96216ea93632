"""ufm.solve with any hashable labels (LabelEncoder semantics) and imbalanced classes."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import seeds

import ufm
from ufm.validate import encode_labels

KW = dict(d=4, lam_w=1e-2, lam_h=1e-2)


@pytest.mark.parametrize(
    "y, classes",
    [
        (["cat", "dog", "dog", "bird"], ["bird", "cat", "dog"]),
        (np.array([1, 0, 2, 0]), [0, 1, 2]),  # already 0..K-1: the counting fast path
        (torch.tensor([1, 0, 1]), [0, 1]),
        (np.array([0, 2, 2]), [0, 2]),  # a gap: the sorting path
        ([3, 3, 7, 9], [3, 7, 9]),
        ([-1, 5, -1], [-1, 5]),
        ([2.0, 0.0, 2.0], [0, 2]),
        ([True, False, False], [False, True]),
        (["a", 1, "a"], ["a", 1]),  # incomparable: order of first appearance
        (torch.tensor([5, 1, 1]), [1, 5]),
    ],
)
def test_encode_labels_like_label_encoder(y, classes):
    codes, got = encode_labels(y)
    assert list(got) == classes
    assert codes.dtype == torch.int64
    back = got[codes.numpy()]
    orig = y.numpy() if isinstance(y, torch.Tensor) else np.asarray(y, dtype=object)
    assert [a == b for a, b in zip(back, orig, strict=True)] == [True] * len(orig)


def test_string_labels_solve_the_same_problem_as_codes():
    names = np.array(["zebra", "ant", "ant", "zebra", "moth", "ant"])
    r = ufm.solve(names, **KW)
    assert list(r.classes) == ["ant", "moth", "zebra"]
    np.testing.assert_array_equal(r.classes[r.y], names)
    ref = ufm.solve(np.array([2, 0, 0, 2, 1, 0]), **KW)
    assert r.objective == pytest.approx(ref.objective, rel=1e-12)
    assert r.converged


def test_gaps_and_torch_labels():
    r = ufm.solve(torch.tensor([10, 10, 30, 30, 20]), **KW)
    assert r.backend == "torch" and list(r.classes) == [10, 20, 30]
    assert r.y.tolist() == [0, 0, 2, 2, 1]


def test_layernorm_path_reports_classes():
    r = ufm.solve(["b", "a", "b", "a"], d=4, features="layernorm", max_iter=200)
    assert list(r.classes) == ["a", "b"]


@settings(max_examples=12, deadline=None)
@given(
    counts=st.lists(st.integers(1, 6), min_size=2, max_size=4),
    seed=seeds,
    loss=st.sampled_from(["mse", "ce"]),
)
def test_renaming_and_permuting_classes_keeps_the_optimum(counts, seed, loss):
    """The optimum depends on the class sizes only: relabel the classes by any names in any
    order and the objective is the same (the certificate of the original labels is the reference)."""
    y = np.repeat(np.arange(len(counts)), counts)
    rng = np.random.default_rng(seed)
    names = np.array([f"c{v}" for v in rng.permutation(100)[: len(counts)]])
    kw = dict(d=len(counts), lam_w=1e-2, lam_h=1e-2, loss=loss, bias=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = ufm.solve(names[y][rng.permutation(y.size)], tol=1e-10, **kw)
    opt = ufm.certify(y, **kw).optimum
    assert r.objective == pytest.approx(opt, rel=1e-6)


@pytest.mark.parametrize("loss", ["mse", "ce"])
@pytest.mark.parametrize("bias", [True, False])
def test_imbalanced_reaches_certificate(loss, bias):
    y = np.array(["maj"] * 20 + ["mid"] * 5 + ["min"] * 2)
    kw = dict(d=3, lam_w=1e-2, lam_h=1e-2, loss=loss, bias=bias)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        r = ufm.solve(y, **kw)
    cert = ufm.certify(r.y, **kw)
    assert cert.exact and r.objective == pytest.approx(cert.optimum, rel=1e-6)


def test_with_classes_keeps_deferred_fields_and_shares_arrays():
    from ufm.result import Deferred, SolveResult, with_classes

    calls = []
    W = np.ones((2, 3))
    res = SolveResult(
        W=W, b=np.zeros(2), H=Deferred(lambda: calls.append(1) or np.zeros((4, 3))),
        y=np.array([0, 1, 0, 1]), X=None, objective=0.0, grad_norm=0.0, status=ufm.Status.CONVERGED,
        converged=True, n_iter=0, history={}, metrics={}, method="lbfgs", backend="numpy",
    )  # fmt: skip
    out = with_classes(res, np.array(["x", "y"]))
    assert calls == [] and not out.formed("H") and out.W is W
    assert list(out.classes) == ["x", "y"] and res.classes is None
    assert out.H.shape == (4, 3) and calls == [1]


def test_with_classes_needs_a_result():
    from ufm.result import with_classes

    with pytest.raises(ufm.InputError, match="SolveResult"):
        with_classes({"W": None}, np.array(["a", "b"]))


def test_is_real_numeric_accepts_integer_and_float_data_only():
    import torch

    from ufm.validate import is_real_numeric

    real = [np.zeros(3), np.arange(3), [1, 2.5], 3.0, torch.zeros(2), torch.arange(2), np.uint8(4)]
    not_real = [
        np.zeros(2, dtype=complex), torch.zeros(2, dtype=torch.complex64), np.array([True]),
        torch.tensor([True]), [True, False], True, "1.0", b"1", np.array(["1"]),
        np.array([None]), [[1, 2], [3]],
    ]  # fmt: skip
    assert all(is_real_numeric(x) for x in real)
    assert not any(is_real_numeric(x) for x in not_real)
