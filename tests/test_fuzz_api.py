"""Property-based fuzz suite of the public Python API (issue 12).

hypothesis generates valid and invalid arguments -- array shapes (empty, 1-D, 3-D), dtypes (int,
bool, complex, str, object), NaN/inf entries, scales ``10**s`` for ``s`` in ``[-200, 200]``, labels
with gaps, negatives, floats or strings, ``K`` as int/float/str, penalties that are negative, zero,
huge, strings or NaN, unknown or mismatched methods and losses, negative seeds -- for the public
entry points of :mod:`ufm`, :mod:`mufm`, :mod:`proofs_check` and :func:`resnet_pfc.data.load_dataset`,
and asserts the rule of the API:

* a call either raises an instance of :class:`ufm.errors.PFCError` (never a raw numpy, scipy,
  torch, ``KeyError``, ``IndexError``, ``ZeroDivisionError`` or ``AttributeError``), or returns a
  result that passes a cheap independent sanity check (metrics finite and in their ranges; solver
  objective finite and non-negative; for valid metric inputs, equality with a direct ``d x d``
  float64 reference computed here);
* every call ends within a time bound.

The fast profile (default run) stays under about 40 s; the ``slow``-marked tests run the same
properties on many more examples. Examples are derandomised (seeded, no database) so that CI is
reproducible.
"""

from __future__ import annotations

import math
import time
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import mufm
import proofs_check
import ufm
from resnet_pfc.data import load_dataset
from ufm.errors import PFCError

#: Seconds one call may take (the machine running the tests may be busy).
TIME_LIMIT_S = 30.0


def _profile(n: int) -> settings:
    return settings(
        max_examples=n,
        deadline=None,  # the time bound is asserted per call below (wall clock, load-tolerant)
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )


def _call(fn, *args, **kwargs):
    """Run ``fn``; return ``(ok, result)``; a non-toolkit exception fails the test."""
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn(*args, **kwargs)
        ok = True
    except PFCError as exc:
        assert str(exc), "a toolkit error must carry a message"
        out, ok = exc, False
    elapsed = time.perf_counter() - t0
    event(f"{getattr(fn, '__qualname__', 'call')}: {'ok' if ok else type(out).__name__}")
    assert elapsed < TIME_LIMIT_S, f"{getattr(fn, '__name__', fn)} took {elapsed:.1f} s"
    return ok, out


# ------------------------------------------------------------------------------------------------
# an independent d x d float64 reference (MATH.md sections 2-3)
# ------------------------------------------------------------------------------------------------
def _reference(H, y, K):
    H = np.asarray(H, dtype=np.float64)
    N, d = H.shape
    mu = np.array([H[y == k].mean(axis=0) for k in range(K)])
    mu_g = H.mean(axis=0)
    R = H - mu[y]
    sw = R.T @ R / N
    M = (mu - mu_g).T
    sb = M @ M.T / K
    G = M.T @ M
    etf = (np.eye(K) - np.ones((K, K)) / K) / math.sqrt(K - 1)
    dist = ((H[:, None, :] - mu[None, :, :]) ** 2).sum(-1)
    acc = float(np.mean(dist.argmin(axis=1) == y))
    return {
        "pfc1": np.trace(sw) / np.trace(sb),
        "pfc2": np.linalg.norm(G / np.linalg.norm(G) - etf),
        "pfc3": 1.0 - acc,
        "dist": dist,
    }


# ------------------------------------------------------------------------------------------------
# strategies
# ------------------------------------------------------------------------------------------------
_BAD_NUMBERS = st.sampled_from(
    [-1.0, 0.0, 1e300, float("nan"), float("inf"), "0.1", None, -1e-3, True, [0.1], 1e12]
)
_SCALES = st.integers(-200, 200).map(lambda s: 10.0**s)


@st.composite
def valid_features(draw, max_n=24, max_d=6, max_k=4):
    """Well-separated labelled features: every class present, d >= 2, K >= 2."""
    K = draw(st.integers(2, max_k))
    n = draw(st.integers(2 * K, max_n))
    d = draw(st.integers(2, max_d))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    y = np.concatenate([np.arange(K), rng.integers(0, K, n - K)])
    centres = 3.0 * rng.standard_normal((K, d))
    H = centres[y] + rng.standard_normal((n, d))
    return H, y, K


@st.composite
def any_features(draw):
    """Features and labels, valid or broken in one of many ways; K possibly given."""
    H, y, K = draw(valid_features())
    H = H * draw(_SCALES)
    kind = draw(
        st.sampled_from(
            [
                "valid",
                "empty",
                "1d",
                "3d",
                "int",
                "bool",
                "complex",
                "str",
                "object",
                "nan",
                "inf",
                "labels_gap",
                "labels_neg",
                "labels_float",
                "labels_str",
                "labels_short",
                "labels_2d",
                "one_class",
                "means_coincide",
                "constant",
                "labels_huge",
                "d1",
                "n_equals_K",
                "uint8",
                "float16",
            ]
        )
    )
    if kind == "empty":
        H, y = H[:0], y[:0]
    elif kind == "1d":
        H = H[:, 0]
    elif kind == "3d":
        H = H[:, :, None]
    elif kind == "int":
        H = np.round(H / max(np.abs(H).max(), 1e-300) * 50).astype(np.int64)
    elif kind == "bool":
        H = H > 0
    elif kind == "complex":
        H = H.astype(np.complex128)
    elif kind == "str":
        H = H.astype(str)
    elif kind == "object":
        H = H.astype(object)
    elif kind == "nan":
        H = H.copy()
        H[0, 0] = np.nan
    elif kind == "inf":
        H = H.copy()
        H[-1, -1] = -np.inf
    elif kind == "labels_gap":
        y = np.where(y == 0, 0, y + 1)
    elif kind == "labels_neg":
        y = y - 1
    elif kind == "labels_float":
        y = y + draw(st.sampled_from([0.0, 0.5]))
    elif kind == "labels_str":
        y = np.array([f"c{v}" for v in y])
    elif kind == "labels_short":
        y = y[:-1]
    elif kind == "labels_2d":
        y = y[:, None]
    elif kind == "one_class":
        y = np.zeros_like(y)
    elif kind == "means_coincide":
        H = H - np.array([H[y == k].mean(axis=0) for k in range(K)])[y]
    elif kind == "constant":
        H = np.ones_like(H) * 3.0
    elif kind == "labels_huge":
        y = y.copy()
        y[-1] = 10**12
    elif kind == "d1":
        H = H[:, :1]
    elif kind == "n_equals_K":
        H, y = H[:K], y[:K]
    elif kind == "uint8":
        y = y.astype(np.uint8)
    elif kind == "float16":
        H = (H / np.abs(H).max()).astype(np.float16)
    K_arg = draw(
        st.one_of(
            st.none(),
            st.just(K),
            st.sampled_from([0, 1, -2, K + 1, float(K), 2.5, "4", np.int64(K), True, 10**9, 2**63]),
        )
    )
    return kind, H, y, K, K_arg


# ------------------------------------------------------------------------------------------------
# properties: metrics
# ------------------------------------------------------------------------------------------------
def _metrics_property(case):
    kind, H, y, K, K_arg = case
    ok, out = _call(ufm.collapse_metrics, H, y, K=K_arg)
    if not ok:
        return
    for key in ("pfc1", "nc1", "pfc2", "pfc3", "ncc_accuracy"):
        if key in out:
            assert math.isfinite(out[key]), (kind, key, out[key])
    assert out["pfc1"] >= 0 and out["nc1"] >= -1e-12
    assert 0.0 <= out["pfc3"] <= 1.0 and 0.0 <= out["ncc_accuracy"] <= 1.0
    if kind == "valid" and (K_arg is None or K_arg == K) and not isinstance(K_arg, (bool, str)):
        ref = _reference(H / np.abs(H).max(), y, K)
        assert math.isclose(out["pfc1"], ref["pfc1"], rel_tol=1e-6, abs_tol=1e-12)
        assert math.isclose(out["pfc2"], ref["pfc2"], rel_tol=1e-6, abs_tol=1e-9)
        # NCC ties (two class means equidistant) may break either way.
        d = np.sort(ref["dist"], axis=1)
        if np.all(d[:, 1] - d[:, 0] > 1e-9 * d[:, 1]):
            assert math.isclose(out["pfc3"], ref["pfc3"], abs_tol=1e-12)
    else:
        # a non-valid case may only succeed where the data are in fact valid
        assert kind in (
            "valid",
            "int",
            "labels_float",
            "labels_gap",
            "object",
            "d1",
            "n_equals_K",
            "uint8",
            "float16",
            "bool",
        ), (kind, out)


_PER_METRIC = [
    ("pfc1", lambda H, y, W, b, K: ufm.pfc1(H, y, K=K), (0.0, math.inf)),
    ("pfc2", lambda H, y, W, b, K: ufm.pfc2(H, y, K=K), (0.0, 2.0 + 1e-9)),
    ("pfc3", lambda H, y, W, b, K: ufm.pfc3(H, y, K=K), (0.0, 1.0)),
    ("nc1", lambda H, y, W, b, K: ufm.nc1(H, y, K=K), (-1e-12, math.inf)),
    ("nc2", lambda H, y, W, b, K: ufm.nc2(H, y, K=K), (0.0, math.inf)),
    ("nc3", lambda H, y, W, b, K: ufm.nc3(H, y, W, K=K), (0.0, 4.0 + 1e-9)),
    ("nc4", lambda H, y, W, b, K: ufm.nc4(H, y, W, b, K=K), (0.0, 1.0)),
]


def _per_metric_property(case, which, W_kind):
    kind, H, y, K, K_arg = case
    name, fn, (lo, hi) = _PER_METRIC[which]
    d = H.shape[1] if getattr(H, "ndim", 0) >= 2 else 3
    rng = np.random.default_rng(0)
    W = {
        "ok": rng.standard_normal((K, d)),
        "T": rng.standard_normal((d, K)),
        "zero": np.zeros((K, d)),
        "nan": np.full((K, d), np.nan),
        "str": "W",
        "1d": np.ones(d),
    }[W_kind]
    b = {"ok": np.zeros(K), "T": np.zeros(K + 1), "zero": None, "nan": np.full(K, np.nan)}.get(
        W_kind, "b"
    )
    ok, out = _call(fn, H, y, W, b, K_arg)
    if ok:
        vals = out if isinstance(out, tuple) else (out,)
        for v in vals:
            assert math.isfinite(v), (name, kind, W_kind, out)
            assert lo <= v <= hi, (name, kind, W_kind, out)


@pytest.mark.parametrize("which", range(len(_PER_METRIC)), ids=[m[0] for m in _PER_METRIC])
@_profile(30)
@given(case=any_features(), W_kind=st.sampled_from(["ok", "ok", "T", "zero", "nan", "str", "1d"]))
def test_fuzz_per_metric(which, case, W_kind):
    _per_metric_property(case, which, W_kind)


@_profile(200)
@given(case=any_features())
def test_fuzz_collapse_metrics(case):
    _metrics_property(case)


@_profile(60)
@given(data=valid_features(), s=st.integers(-150, 150))
def test_fuzz_metrics_scale_invariant(data, s):
    """The metrics are scale-invariant across [1e-150, 1e150] (issue 12)."""
    _scale_invariance(data, s)


def _scale_invariance(data, s):
    H, y, K = data
    ok, base = _call(ufm.collapse_metrics, H, y)
    assert ok, base
    ok, scaled = _call(ufm.collapse_metrics, H * 10.0**s, y)
    assert ok, (s, scaled)
    for key in ("pfc1", "pfc2", "pfc3", "nc1"):
        assert math.isclose(scaled[key], base[key], rel_tol=1e-6, abs_tol=1e-9), (key, s)


# ------------------------------------------------------------------------------------------------
# geometry helpers
# ------------------------------------------------------------------------------------------------
_INTS = st.one_of(
    st.integers(2, 8),
    st.integers(2, 8),
    st.integers(-3, 8),
    st.sampled_from([2.0, 2.5, "3", None, True, np.int64(3), 10**6, 2**40]),
)
_GOOD_OR_BAD = st.one_of(st.sampled_from([0.5, 1.0, 0.0]), _BAD_NUMBERS)


@_profile(100)
@given(K=_INTS, d=_INTS, seed=st.one_of(st.none(), st.integers(-5, 5)), scale=_GOOD_OR_BAD)
def test_fuzz_simplex_etf(K, d, seed, scale):
    ok, M = _call(ufm.simplex_etf, K, d, seed=seed, scale=scale)
    if seed is not None and seed < 0:
        assert not ok, f"seed={seed} must be refused"
    if ok:
        M = np.asarray(M, dtype=np.float64)
        assert np.all(np.isfinite(M))
        assert M.ndim == 2


@_profile(60)
@given(
    data=valid_features(),
    n_layers=st.integers(0, 3),
    eps=_BAD_NUMBERS | st.floats(0, 1),
    mode=st.sampled_from(["index", "distance", "bogus", 3]),
    bad=st.sampled_from(["none", "shape", "nan", "str", "generator", "int", "scaled"]),
    s=st.integers(-200, 200),
)
def test_fuzz_layer_functions(data, n_layers, eps, mode, bad, s):
    H, y, K = data
    rng = np.random.default_rng(1)
    layers = [H + 0.1 * i * rng.standard_normal(H.shape) for i in range(n_layers)]
    if bad == "shape" and layers:
        layers[-1] = layers[-1][:, :1]
    elif bad == "nan" and layers:
        layers[0] = layers[0].copy()
        layers[0][0, 0] = np.nan
    elif bad == "str":
        layers = "layers"
    elif bad == "int":
        layers = 3
    elif bad == "scaled":
        layers = [h * 10.0**s for h in layers]
    if bad == "generator":
        # a generator is consumed once: either refused clearly or measured like the list
        ok_g, depth_g = _call(ufm.effective_depth, (h for h in layers), y, epsilon=eps)
        ok_l, depth_l = _call(ufm.effective_depth, layers, y, epsilon=eps)
        assert not ok_g or (ok_l and depth_g == depth_l)
        ok_g, pos_g = _call(ufm.relative_position, (h for h in layers), mode=mode)
        ok_l, pos_l = _call(ufm.relative_position, layers, mode=mode)
        assert not ok_g or (ok_l and np.allclose(pos_g, pos_l, equal_nan=False))
    ok, depth = _call(ufm.effective_depth, layers, y, epsilon=eps)
    if bad in ("str", "int") or (bad == "nan" and layers):
        assert not ok, f"effective_depth must refuse layers={bad!r}"
    if ok:
        assert depth is None or (isinstance(depth, int) and 0 <= depth <= len(layers))
    ok, pos = _call(ufm.relative_position, layers, mode=mode)
    if mode not in ("index", "distance") or bad in ("str", "int"):
        assert not ok, f"relative_position must refuse mode={mode!r}, layers={bad!r}"
    if ok:
        pos = np.asarray(pos, dtype=np.float64)
        assert np.all(np.isfinite(pos))
    X = layers[0] if isinstance(layers, list) and layers else H
    ok, a = _call(ufm.alignment, H, X)
    if ok:
        assert -1 - 1e-12 <= a <= 1 + 1e-12


# ------------------------------------------------------------------------------------------------
# streaming: CollapseAccumulator and SufficientStatistics
# ------------------------------------------------------------------------------------------------
@_profile(80)
@given(
    data=valid_features(),
    K_arg=st.sampled_from(["K", 1, 0, 2.0, "3", None]),
    batches=st.integers(1, 3),
    misuse=st.sampled_from(
        [
            "none",
            "none",
            "compute_early",
            "skip_end",
            "other_pass2",
            "nan_batch",
            "bad_labels",
            "merge_other_K",
            "state_bad",
            "state_roundtrip",
            "update_after_compute",
        ]
    ),
)
def test_fuzz_accumulator(data, K_arg, batches, misuse):
    H, y, K = data
    K_use = K if K_arg == "K" else K_arg
    ok, acc = _call(ufm.CollapseAccumulator, K_use)
    assert ok == (K_arg == "K"), f"K={K_arg!r} must be refused (an integer >= 2 is needed)"
    if not ok:
        return
    parts = np.array_split(np.arange(len(y)), batches)

    def feed(HH, yy):
        for p in parts:
            ok, _ = _call(acc.update, HH[p], yy[p])
            if not ok:
                return False
        return True

    if misuse == "compute_early":
        assert not _call(acc.compute)[0], "compute() before any data must be refused"
        return
    if misuse == "nan_batch":
        H = H.copy()
        H[0, 0] = np.nan
    if misuse == "bad_labels":
        y = y + K
    fed = feed(H, y)
    if misuse in ("nan_batch", "bad_labels"):
        assert not fed, f"{misuse}: the batch must be refused"
        return
    assert fed, "valid batches must be accepted"
    if misuse != "skip_end":
        assert _call(acc.end_first_pass)[0]
    if misuse == "other_pass2":
        H2 = np.random.default_rng(5).standard_normal(H.shape) * 40
        if not feed(H2, y):
            return
        ok, out = _call(acc.compute)
        assert not ok, "a second pass over different data must be refused"
        return
    assert feed(H, y)
    if misuse == "merge_other_K":
        ok, other = _call(ufm.CollapseAccumulator, K + 1)
        assert ok
        assert not _call(acc.merge, other)[0], "merging another K must be refused"
        assert not _call(acc.merge, "acc")[0], "merging a non-accumulator must be refused"
        return
    if misuse == "state_bad":
        ok, sd = _call(acc.state_dict)
        assert ok
        short = dict(sd)
        short.pop(next(iter(short)))
        negative = {**sd, "counts": -sd["counts"]}  # a tampered state dict
        for bad in (short, negative, {"junk": 1}, "junk"):
            ok, _ = _call(ufm.CollapseAccumulator.from_state_dict, bad)
            assert not ok, "a damaged state dict must be refused"
        return
    if misuse == "state_roundtrip":
        ok, sd = _call(acc.state_dict)
        assert ok
        ok, acc = _call(ufm.CollapseAccumulator.from_state_dict, sd)
        assert ok
    ok, out = _call(acc.compute)
    if misuse == "update_after_compute":
        # compute() is a snapshot: more data may follow (the state keeps accumulating)
        assert _call(acc.update, H[:2], y[:2])[0]
    if ok:
        assert misuse in ("none", "state_roundtrip", "update_after_compute", "skip_end"), misuse
        ref = _reference(H, y, K)
        assert math.isclose(out["pfc1"], ref["pfc1"], rel_tol=1e-6)
        assert math.isclose(out["pfc2"], ref["pfc2"], rel_tol=1e-6, abs_tol=1e-9)


@_profile(50)
@given(
    data=valid_features(),
    K_arg=st.sampled_from(["K", 1, 0, 2.5, "3", None]),
    gram=st.sampled_from(["auto", "dense", "bogus", 3]),
    misuse=st.sampled_from(["none", "nan", "labels", "merge", "state", "state_bad"]),
)
def test_fuzz_sufficient_statistics(data, K_arg, gram, misuse):
    H, y, K = data
    ok, S = _call(ufm.SufficientStatistics, K if K_arg == "K" else K_arg, gram=gram)
    assert ok == (K_arg == "K" and gram in ("auto", "dense")), (K_arg, gram)
    if not ok:
        return
    if misuse == "nan":
        H = H.copy()
        H[1, 1] = np.inf
    if misuse == "labels":
        y = -y  # some labels negative (every class is present)
    fed = _call(S.update, H, y)[0]
    assert fed == (misuse not in ("nan", "labels")), misuse
    if not fed:
        return
    if misuse == "merge":
        ok, T = _call(ufm.SufficientStatistics, K + 1)
        assert ok
        assert not _call(S.merge, T)[0], "merging another K must be refused"
        assert not _call(S.merge, "S")[0], "merging a non-statistics must be refused"
    if misuse in ("state", "state_bad"):
        ok, sd = _call(S.state_dict)
        assert ok
        if misuse == "state_bad":
            for bad in (
                {k: v for i, (k, v) in enumerate(sd.items()) if i},
                {**sd, "counts": -sd["counts"]},
                {**sd, "sq": -1.0},
            ):
                assert not _call(ufm.SufficientStatistics.from_state_dict, bad)[0]
        else:
            ok, back = _call(ufm.SufficientStatistics.from_state_dict, sd)
            assert ok and np.array_equal(back.counts, S.counts)
    assert _call(S.check_ready)[0], "every class is present"


# ------------------------------------------------------------------------------------------------
# solvers and certificates
# ------------------------------------------------------------------------------------------------
def _labels(draw):
    K = draw(st.integers(2, 3))
    n = draw(st.integers(1, 3))
    y = np.repeat(np.arange(K), n)
    kind = draw(st.sampled_from(["ok", "ok", "ok", "gap", "neg", "str", "float", "one", "empty"]))
    if kind == "gap":
        y = y * 2
    elif kind == "neg":
        y = y - 1
    elif kind == "str":
        y = y.astype(str)
    elif kind == "float":
        y = y + 0.5
    elif kind == "one":
        y = np.zeros(3, dtype=int)
    elif kind == "empty":
        y = y[:0]
    return K, y


_PENALTY = st.one_of(st.sampled_from([5e-4, 1e-2]), _BAD_NUMBERS)


_SOLVE_BAD = {
    "d": [1, 0, -1, 2.5, "3", None],
    "lam_w": [-1.0, 1e300, float("nan"), "0.1", None, [0.1], 1e12, float("inf")],
    "lam_h": [-1.0, 1e300, float("nan"), "0.1", 1e12],
    "lam_b": [-1.0, 1e300, float("nan"), "0.1", None, 1e12],
    "loss": ["hinge", 3, "MSE", ""],
    "method": ["bogus", "", 3],
    "seed": [-1, 2.5, "0", None],
    "features": ["bogus", "", None],
    "max_iter": [0, -5, 2.5, "9"],
    "bias": ["yes", None],
}


@st.composite
def ufm_solve_args(draw):
    """Valid arguments, then (usually) one field replaced by a bad value."""
    K, y = _labels(draw)
    args = dict(
        y=y,
        d=draw(st.sampled_from([K, K + 1, K - 1, 2 * K])),
        lam_w=draw(st.sampled_from([5e-4, 1e-2, 0.0, 1e-1])),
        lam_h=draw(st.sampled_from([None, 5e-4, 1e-2])),
        lam_b=draw(st.sampled_from([5e-4, 1e-2, 0.0])),
        loss=draw(st.sampled_from(["mse", "ce"])),
        bias=draw(st.booleans()),
        method=draw(st.sampled_from([None, None, "lbfgs", "gd", "suffstats"])),
        seed=draw(st.integers(0, 10)),
        features=draw(st.sampled_from(["free", "free", "layernorm"])),
        max_iter=draw(st.sampled_from([None, 300])),
    )
    bad = draw(st.sampled_from([None, None, None, *_SOLVE_BAD]))
    if bad is not None:
        args[bad] = draw(st.sampled_from(_SOLVE_BAD[bad]))
    return args


@_profile(60)
@given(args=ufm_solve_args())
def test_fuzz_ufm_solve(args):
    _ufm_solve_property(args)


def _ufm_solve_property(args):
    y = args.pop("y")
    ok, res = _call(ufm.solve, y, **args)
    if ok:
        assert math.isfinite(res.objective) and res.objective >= 0, res.objective


@st.composite
def mufm_args(draw):
    K, y = _labels(draw)
    d = draw(st.sampled_from([K, K + 1]))
    rng = np.random.default_rng(draw(st.integers(0, 100)))
    X = rng.standard_normal((len(y), d)) * draw(st.sampled_from([1.0, 1.0, 1e-120, 1e100]))
    shape = draw(st.sampled_from(["ok", "ok", "ok", "1d", "nan", "zeros", "T", "str"]))
    if shape == "1d":
        X = X[:, 0]
    elif shape == "nan" and X.size:
        X[0, 0] = np.nan
    elif shape == "zeros":
        X = np.zeros_like(X)
    elif shape == "T":
        X = X.T
    elif shape == "str":
        X = X.astype(str)
    return X, y


@_profile(40)
@given(
    data=mufm_args(),
    lam=_PENALTY,
    loss=st.sampled_from(["mse", "mse", "ce", "bogus"]),
    method=st.sampled_from([None, None, "lbfgs", "bogus"]),
    seed=st.sampled_from([0, -1]),
)
def test_fuzz_mufm_solve(data, lam, loss, method, seed):
    X, y = data
    ok, res = _call(mufm.solve, X, y, lam=lam, loss=loss, method=method, seed=seed, max_iter=500)
    if seed < 0 or loss == "bogus" or method == "bogus":
        assert not ok, f"seed={seed}, loss={loss!r}, method={method!r} must be refused"
    if ok:
        assert math.isfinite(res.objective) and res.objective >= 0, res.objective


def _check_certificate(cert):
    """A returned certificate is valid: 0 <= bound <= the objective of its feasible point."""
    assert math.isfinite(cert.bound) and math.isfinite(cert.reconstruction_value), cert
    tol = 1e-6 * max(1.0, abs(cert.reconstruction_value))
    assert cert.bound >= -tol, ("a negative lower bound of a non-negative objective", cert.bound)
    assert cert.bound <= cert.reconstruction_value + tol, (cert.bound, cert.reconstruction_value)
    if cert.exact:
        assert cert.optimum is not None and math.isfinite(cert.optimum)


@_profile(40)
@given(
    args=ufm_solve_args(),
    reduce=st.booleans(),
    solver=st.sampled_from([None, None, "bogus"]),
)
def test_fuzz_ufm_certify(args, reduce, solver):
    ok, cert = _call(
        ufm.certify,
        args["y"],
        d=args["d"],
        lam_w=args["lam_w"],
        lam_b=args["lam_b"],
        loss=args["loss"] if args["loss"] != "ce" else "mse",
        solver=solver,
        reduce=reduce,
    )
    if solver == "bogus":
        assert not ok, "an unknown solver must be refused"
    if ok:
        _check_certificate(cert)


@_profile(30)
@given(data=mufm_args(), lam=_PENALTY, max_n=st.sampled_from([60, 0, -1, "9"]))
def test_fuzz_mufm_certify(data, lam, max_n):
    X, y = data
    ok, cert = _call(mufm.certify, X, y, lam=lam, max_n=max_n)
    if max_n in (-1, "9"):
        assert not ok, f"max_n={max_n!r} must be refused"
    if ok:
        _check_certificate(cert)


@_profile(15)
@given(
    data=mufm_args(),
    lam_w=_PENALTY,
    t_max=st.sampled_from([1.0, 0.0, -1.0, float("nan"), "1"]),
    n_eval=st.sampled_from([5, 1, 0, -3, 2.5]),
)
def test_fuzz_gradient_flow(data, lam_w, t_max, n_eval):
    X, y = data
    ok, flow = _call(mufm.gradient_flow, X, y, lam_w=lam_w, t_max=t_max, n_eval=n_eval)
    if t_max != 1.0 or n_eval != 5:
        assert not ok, f"t_max={t_max!r}, n_eval={n_eval!r} must be refused"
    if ok:
        assert flow.objective.shape == (5,) and np.all(np.isfinite(flow.objective))
        assert np.all(np.diff(flow.objective) <= 1e-7 * abs(flow.objective[0]))


@_profile(60)
@given(
    K=_INTS,
    n=_INTS,
    d=_INTS,
    noise=_GOOD_OR_BAD,
    seed=st.sampled_from([0, -1, 2.5, None, "1"]),
)
def test_fuzz_make_data(K, n, d, noise, seed):
    ok, out = _call(mufm.make_data, K, n, d, noise=noise, seed=seed)
    if seed != 0:
        assert not ok, f"seed={seed!r} must be refused"
    if ok:
        X, y = out
        assert np.all(np.isfinite(X)) and X.shape[0] == y.shape[0]


# ------------------------------------------------------------------------------------------------
# proofs_check and resnet_pfc
# ------------------------------------------------------------------------------------------------
_THEOREMS = [
    proofs_check.check_theorem1,
    proofs_check.check_theorem2,
    proofs_check.check_theorem3,
    proofs_check.check_theorem4,
]


@pytest.mark.parametrize("which", range(4), ids=["t1", "t2", "t3", "t4"])
@_profile(8)
@given(
    instances=st.sampled_from([1, 0, -1, 1.5, "2", None]),
    seed=st.sampled_from([0, -1, None, "x", 2.5]),
    rate=st.sampled_from([0.1, -0.5, 1.5, float("nan"), "0.1"]),
)
def test_fuzz_check_theorems(which, instances, seed, rate):
    fn = _THEOREMS[which]
    kwargs = {"seed": seed, "degenerate_rate": rate}
    if which == 3:
        kwargs.update(flow=False, per_decade=1)
    ok, res = _call(fn, instances, **kwargs)
    valid = instances in (1, 0) and seed in (0, None) and rate == 0.1
    if not (instances in (1, 0) and seed in (0, None) and type(instances) is int):
        assert not ok, f"instances={instances!r}, seed={seed!r} must be refused"
    if isinstance(rate, str) or not 0 <= float(rate) <= 1:
        assert not ok, f"degenerate_rate={rate!r} must be refused"
    if ok:
        assert valid and res.n_tried == instances


@_profile(20)
@given(
    name=st.sampled_from(["bogus", "", 3, None, "CIFAR10", "mnist", "cifar10"]),
    split=st.sampled_from(["train", "test", "val", "", 1, None]),
    per_class=st.sampled_from([None, 0, -1, 2.5, "3"]),
)
def test_fuzz_load_dataset(name, split, per_class, tmp_path_factory):
    root = tmp_path_factory.mktemp("data")  # empty: nothing to read, no download allowed
    _call(load_dataset, name, split=split, data_root=root, download=False, per_class=per_class)


# ------------------------------------------------------------------------------------------------
# slow profile: the same properties on many more examples
# ------------------------------------------------------------------------------------------------
@pytest.mark.slow
@_profile(600)
@given(case=any_features())
def test_fuzz_collapse_metrics_slow(case):
    _metrics_property(case)


@pytest.mark.slow
@_profile(200)
@given(data=valid_features(max_n=60, max_d=12, max_k=6), s=st.integers(-150, 150))
def test_fuzz_metrics_scale_invariant_slow(data, s):
    _scale_invariance(data, s)


@pytest.mark.slow
@_profile(150)
@given(args=ufm_solve_args())
def test_fuzz_ufm_solve_slow(args):
    _ufm_solve_property(args)


# ------------------------------------------------------------------------------------------------
# regressions found by this fuzz suite
# ------------------------------------------------------------------------------------------------
def test_regression_certify_empty_labels():
    """ufm.certify(np.array([], int), ...) raised a raw torch RuntimeError (min of empty)."""
    with pytest.raises(ufm.errors.InputError, match="empty"):
        ufm.certify(np.array([], dtype=np.int64), d=2, reduce=False)


@pytest.mark.parametrize("instances", [1.5, "2", None, True])
def test_regression_check_theorem_instances_not_a_count(instances):
    """check_theorem2(1.5) raised a raw TypeError ('float' object is not iterable)."""
    with pytest.raises(ufm.errors.InputError, match="instances"):
        proofs_check.check_theorem2(instances)


def test_regression_simplex_etf_negative_seed():
    """simplex_etf(K, d, seed=-1) raised numpy's raw ValueError."""
    with pytest.raises(ufm.errors.InputError, match="seed"):
        ufm.simplex_etf(3, 3, seed=-1)


@_profile(30)
@given(data=valid_features(), s=st.integers(-150, 150), batches=st.integers(1, 3))
def test_fuzz_accumulator_scale_invariant(data, s, batches):
    """The two-pass accumulator agrees with the batch metrics on data scaled by 10**s."""
    H, y, K = data
    Hs = H * 10.0**s
    ok, want = _call(ufm.collapse_metrics, H, y)
    assert ok, want
    acc = ufm.CollapseAccumulator(K)
    parts = np.array_split(np.arange(len(y)), batches)
    for p in parts:
        acc.update(Hs[p], y[p])
    acc.end_first_pass()
    for p in parts:
        acc.update(Hs[p], y[p])
    ok, got = _call(acc.compute)
    assert ok, (s, got)
    for key in ("pfc1", "pfc2", "nc1"):
        assert math.isclose(got[key], want[key], rel_tol=1e-5, abs_tol=1e-9), (key, s)
    assert math.isclose(got["pfc3"], want["pfc3"], abs_tol=1e-12)


@pytest.mark.slow
@_profile(150)
@given(
    data=mufm_args(),
    lam=_PENALTY,
    loss=st.sampled_from(["mse", "mse", "ce", "bogus"]),
    method=st.sampled_from([None, None, "lbfgs", "gd", "bogus"]),
    seed=st.sampled_from([0, 1, -1]),
)
def test_fuzz_mufm_solve_slow(data, lam, loss, method, seed):
    test_fuzz_mufm_solve.hypothesis.inner_test(data, lam, loss, method, seed)


@pytest.mark.slow
@_profile(150)
@given(args=ufm_solve_args(), reduce=st.booleans(), solver=st.sampled_from([None, "bogus"]))
def test_fuzz_ufm_certify_slow(args, reduce, solver):
    test_fuzz_ufm_certify.hypothesis.inner_test(args, reduce, solver)


@pytest.mark.slow
@_profile(100)
@given(data=mufm_args(), lam=_PENALTY, max_n=st.sampled_from([60, 0, -1, "9"]))
def test_fuzz_mufm_certify_slow(data, lam, max_n):
    test_fuzz_mufm_certify.hypothesis.inner_test(data, lam, max_n)


@_profile(60)
@given(
    data=valid_features(),
    X_kind=st.sampled_from(["same", "scaled", "zero", "T", "1d", "complex", "nan", "str", "short"]),
    s=st.integers(-150, 150),
)
def test_fuzz_alignment(data, X_kind, s):
    """alignment(H, X) is a cosine in [-1, 1], scale-invariant, or a toolkit error."""
    H, y, K = data
    X = {
        "same": H,
        "scaled": -H * 10.0**s,
        "zero": np.zeros_like(H),
        "T": H.T,
        "1d": H[:, 0],
        "complex": H.astype(complex),
        "nan": np.where(H > 1, np.nan, H),
        "str": H.astype(str),
        "short": H[:-1],
    }[X_kind]
    ok, a = _call(ufm.alignment, H * 10.0**s, X)
    if ok:
        assert math.isfinite(a) and -1 - 1e-9 <= a <= 1 + 1e-9, (X_kind, a)
        if X_kind == "same":
            assert math.isclose(a, 1.0, rel_tol=1e-9)
        if X_kind == "scaled":
            assert math.isclose(a, -1.0, rel_tol=1e-9)


@_profile(40)
@given(
    data=valid_features(),
    W_kind=st.sampled_from(["ok", "T", "nan", "str", "zero", "1d"]),
    b_kind=st.sampled_from(["none", "ok", "long", "nan", "str"]),
)
def test_fuzz_accumulator_with_classifier(data, W_kind, b_kind):
    """CollapseAccumulator(K, W=, b=) reports nc3/nc4 in range, or raises a toolkit error."""
    H, y, K = data
    d = H.shape[1]
    rng = np.random.default_rng(2)
    W = {
        "ok": rng.standard_normal((K, d)),
        "T": rng.standard_normal((d, K)),
        "nan": np.full((K, d), np.nan),
        "str": "W",
        "zero": np.zeros((K, d)),
        "1d": np.ones(d),
    }[W_kind]
    b = {"none": None, "ok": np.zeros(K), "long": np.zeros(K + 2), "nan": np.full(K, np.nan)}.get(
        b_kind, "b"
    )
    ok, acc = _call(ufm.CollapseAccumulator, K, W=W, b=b)
    if not ok:
        return
    for _ in range(2):
        if not _call(acc.update, H, y)[0]:
            return
        if not acc.__dict__.get("_h_fuzz_ended"):
            if not _call(acc.end_first_pass)[0]:
                return
            acc.__dict__["_h_fuzz_ended"] = True
    ok, out = _call(acc.compute)
    if ok:
        assert W_kind in ("ok", "T") and b_kind in ("none", "ok"), (W_kind, b_kind, out)
        if "nc3" in out:
            assert math.isfinite(out["nc3"]) and 0 <= out["nc3"] <= 4 + 1e-9
        if "nc4" in out:
            assert 0 <= out["nc4"] <= 1


def test_regression_nc3_zero_classifier():
    """nc3(H, y, zeros) returned NaN silently (0/0); now a DegenerateInputError."""
    H, y = mufm.make_data(3, 5, 4, seed=1)
    with pytest.raises(ufm.errors.DegenerateInputError, match="W is all zeros"):
        ufm.nc3(H, y, np.zeros((3, 4)))
    acc = ufm.CollapseAccumulator(3, W=np.zeros((3, 4)))
    acc.update(H, y).end_first_pass().update(H, y)
    with pytest.raises(ufm.errors.DegenerateInputError):
        acc.compute()


@pytest.mark.parametrize("s", [-200, -100, 100, 200])
def test_regression_nc3_scaled_classifier(s):
    """nc3 is scale-free in W: ||W|| no longer under/overflows at W ~ 1e-200 or 1e200."""
    H, y = mufm.make_data(3, 5, 4, seed=1)
    W = np.random.default_rng(0).standard_normal((3, 4))
    want = ufm.nc3(H, y, W)
    assert math.isclose(ufm.nc3(H, y, W * 10.0**s), want, rel_tol=1e-9)


@pytest.mark.parametrize("s", [-200, -120, 0, 120, 200])
def test_regression_geometry_scale_free(s):
    """alignment and relative_position(mode='distance') at 1e-200 said 'all zeros' / 'last
    layer equals the first' (underflow) and at 1e200 returned NaN (overflow)."""
    H, _ = mufm.make_data(3, 5, 4, seed=1)
    c = 10.0**s
    assert math.isclose(ufm.alignment(H * c, -H * c), -1.0, rel_tol=1e-12)
    pos = ufm.relative_position([H * c, 2 * H * c, 3 * H * c], mode="distance")
    np.testing.assert_allclose(pos, [0.0, 0.5, 1.0], rtol=1e-12)


def test_regression_layers_as_iterables():
    """effective_depth / relative_position on a generator raised a raw TypeError (len())."""
    H, y = mufm.make_data(3, 5, 4, seed=1)
    assert ufm.effective_depth((h for h in [H, H]), y, epsilon=1.0) == 0
    np.testing.assert_allclose(ufm.relative_position(h for h in [H, H]), [0.0, 1.0])
    with pytest.raises(ufm.errors.InputError, match="layers"):
        ufm.effective_depth(3, y)


def test_regression_size_guards():
    """simplex_etf(10**6, 10**6) and make_data(10**5, 10**5, 10**5) raised MemoryError."""
    with pytest.raises(ufm.errors.InputError, match="GiB"):
        ufm.simplex_etf(10**6, 10**6)
    with pytest.raises(ufm.errors.InputError, match="GiB"):
        mufm.make_data(10**5, 10**5, 10**5)
