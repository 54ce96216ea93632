"""The streaming statistics' state, declared once: SufficientStatistics (ufm.suffstats.STATE),
CollapseAccumulator (PASS1_TENSORS, PASS2_*) and LineAccumulator (its accumulators' state
dicts): the state dict holds exactly the declared state, round-trips, is checked key by key,
and merging shards equals one pass over their union."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ufm import SufficientStatistics
from ufm.errors import InputError
from ufm.metrics import CollapseAccumulator, LineAccumulator
from ufm.metrics import line as line_module
from ufm.metrics.accumulator import (
    PASS1_TENSORS,
    PASS2_OPTIONAL,
    PASS2_SCALARS,
    PASS2_TENSORS,
    REQUIRED,
    SETTINGS,
    in_units,
)
from ufm.suffstats import SETTINGS as SUFF_SETTINGS
from ufm.suffstats import STATE

K = 3


def _data(n=24, d=4, seed=0):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % K
    A = rng.standard_normal((n, d)) + 2.0 * np.eye(K, d)[y]
    return A, 0.3 * A + rng.standard_normal((n, d)), y


# ------------------------------------------------------------------------------------------
# SufficientStatistics
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gram", ["auto", "dense"])
@pytest.mark.parametrize("n", [3, 24])  # rows kept (N <= d) and the dense moment
def test_suffstats_state_dict_is_the_declared_state_and_round_trips(gram, n):
    X, _, y = _data(n=n, d=6)
    st = SufficientStatistics(K, gram=gram).update(X, y)
    sd = st.state_dict()
    assert set(sd) == {"K", "gram", "d", "rows", *(name for name, _, _ in STATE)}
    back = SufficientStatistics.from_state_dict(sd)
    for name, shape, kind in STATE:
        a, b = getattr(st, name), getattr(back, name)
        if a is None:
            assert b is None and kind == "moment"
            continue
        np.testing.assert_array_equal(a, b, err_msg=name)
        assert np.shape(a) == shape(K, 6)
    assert len(back.rows) == len(st.rows)


def test_suffstats_state_dict_checks_each_declared_entry():
    X, _, y = _data()
    sd = SufficientStatistics(K).update(X, y).state_dict()
    for name, shape, _ in STATE:
        bad = dict(sd)
        bad[name] = np.zeros((7,) + shape(K, 4))  # wrong shape
        with pytest.raises(InputError, match=repr(name)):
            SufficientStatistics.from_state_dict(bad)
    neg = dict(sd, sq=-1.0)
    with pytest.raises(InputError, match="'sq'"):
        SufficientStatistics.from_state_dict(neg)
    with pytest.raises(InputError, match="'counts'"):
        SufficientStatistics.from_state_dict(dict(sd, counts=sd["counts"] + 0.5))
    missing = {k: v for k, v in sd.items() if k != "sums"}
    with pytest.raises(InputError, match="keys"):
        SufficientStatistics.from_state_dict(missing)


def test_suffstats_state_dict_refuses_a_wrong_dtype_or_missing_key_by_name():
    X, _, y = _data()
    sd = SufficientStatistics(K).update(X, y).state_dict()
    assert set(sd) == {*SUFF_SETTINGS, "rows", *(name for name, _, _ in STATE)}
    for name, _, _ in STATE:
        if sd[name] is None:
            continue
        v = np.asarray(sd[name])
        # complex lost its imaginary part with a warning; strings were parsed; booleans read as 0/1
        for wrong in (v.astype(complex), v.astype(str), v.astype(bool), str(v)):
            with pytest.raises(InputError, match=repr(name)):
                SufficientStatistics.from_state_dict(dict(sd, **{name: wrong}))
    for key in sd:
        with pytest.raises(InputError, match=f"missing \\[{key!r}\\]"):
            SufficientStatistics.from_state_dict({k: v for k, v in sd.items() if k != key})


@pytest.mark.parametrize("cut", [2, 12])
def test_suffstats_merge_of_shards_equals_one_pass(cut):
    X, _, y = _data(d=6)
    one = SufficientStatistics(K).update(X, y)
    a = SufficientStatistics(K).update(X[:cut], y[:cut])
    b = SufficientStatistics(K).update(X[cut:], y[cut:])
    a.merge(b)
    a.densify()
    one.densify()
    for name, _, _ in STATE:
        np.testing.assert_allclose(getattr(a, name), getattr(one, name), rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------------------------------
# CollapseAccumulator
# ------------------------------------------------------------------------------------------


def test_accumulator_state_dict_holds_the_declared_state():
    A, _, y = _data()
    acc = CollapseAccumulator(K).update(A, y).end_first_pass().update(A, y)
    declared = {n for n, _, _ in PASS1_TENSORS} | {n for n, _, _ in PASS2_TENSORS}
    declared |= set(PASS2_SCALARS) | {key for key, _, _ in SETTINGS}
    assert set(acc.state_dict()) == declared  # a new field cannot be left out of the tables
    assert set(CollapseAccumulator(K).state_dict()) == declared  # before data too
    assert set(PASS2_OPTIONAL) <= {n for n, _, _ in PASS2_TENSORS}
    for key, attr, _ in SETTINGS:  # each setting is an attribute the state dict reads
        assert hasattr(acc, attr), key


@pytest.mark.parametrize("phase", [1, 2])
def test_accumulator_state_dict_round_trips_bit_for_bit(phase):
    A, _, y = _data()
    acc = CollapseAccumulator(K).update(A, y)
    if phase == 2:
        acc.end_first_pass().update(A, y)
    back = CollapseAccumulator.from_state_dict(acc.state_dict())
    sd, sd2 = acc.state_dict(), back.state_dict()
    assert set(sd) == set(sd2)
    for k, v in sd.items():
        if isinstance(v, torch.Tensor):
            assert torch.equal(v, sd2[k]) and v.dtype == sd2[k].dtype, k
        else:
            assert v == sd2[k], k
    assert back.compute() == acc.compute()


@pytest.mark.parametrize("phase", [1, 2])
def test_a_restored_accumulator_never_writes_into_the_callers_state_dict(phase):
    # pass 2 adds in place: a restored accumulator that held the state dict's own tensors
    # changed a checkpoint kept in memory when it went on with pass 2
    A, _, y = _data()
    acc = CollapseAccumulator(K).update(A, y)
    if phase == 2:
        acc.end_first_pass()
    sd = acc.state_dict()
    before = {k: v.clone() for k, v in sd.items() if isinstance(v, torch.Tensor)}
    CollapseAccumulator.from_state_dict(sd).update(A, y)
    for k, v in before.items():
        assert torch.equal(sd[k], v), k


def test_accumulator_state_dict_refuses_a_wrong_shape_dtype_or_missing_key_by_name():
    A, _, y = _data()
    sd = CollapseAccumulator(K).update(A, y).end_first_pass().update(A, y).state_dict()
    required = [k for k, _, v in SETTINGS if v is REQUIRED] + [n for n, _, _ in PASS1_TENSORS]
    required += [n for n, _, _ in PASS2_TENSORS if n not in PASS2_OPTIONAL] + list(PASS2_SCALARS)
    for key in required:
        with pytest.raises(InputError, match=repr(key)):
            CollapseAccumulator.from_state_dict({k: v for k, v in sd.items() if k != key})
    for name, _, _ in PASS1_TENSORS + PASS2_TENSORS:
        with pytest.raises(InputError, match=name):
            CollapseAccumulator.from_state_dict(dict(sd, **{name: sd[name][..., :1, None]}))
    for name, _, kind in PASS1_TENSORS + PASS2_TENSORS:
        wrong = sd[name].to(torch.complex128)
        with pytest.raises(InputError, match=repr(name)):
            CollapseAccumulator.from_state_dict(dict(sd, **{name: wrong}))
    for phase in (2.0, True, "2"):  # 2.0 and True were read as a pass
        with pytest.raises(InputError, match="'phase'"):
            CollapseAccumulator.from_state_dict(dict(sd, phase=phase))
    # an older state dict without the optional entries still loads, with the same metrics
    old = {k: v for k, v in sd.items() if k not in PASS2_OPTIONAL}
    old = {k: v for k, v in old.items() if k in required or k in ("scale_exp", "maxabs")}
    assert CollapseAccumulator.from_state_dict(old).compute() == (
        CollapseAccumulator.from_state_dict(sd).compute()
    )


@pytest.mark.parametrize("phase", [1, 2])
def test_accumulator_merge_of_shards_equals_one_pass(phase):
    A, _, y = _data(n=30)
    one = CollapseAccumulator(K).update(A, y)
    a = CollapseAccumulator(K).update(A[:11], y[:11])
    a.merge(CollapseAccumulator(K).update(A[11:], y[11:]))
    for name, _, _ in PASS1_TENSORS:
        torch.testing.assert_close(getattr(a, name), getattr(one, name), rtol=1e-12, atol=1e-12)
    if phase == 2:
        one.end_first_pass().update(A, y)
        a.end_first_pass()
        b = CollapseAccumulator.from_state_dict(a.state_dict())  # the same frozen means
        a.update(A[:11], y[:11])
        a.merge(b.update(A[11:], y[11:]))
        for name, _, _ in PASS2_TENSORS:
            torch.testing.assert_close(getattr(a, name), getattr(one, name), rtol=1e-12, atol=1e-12)
        for name in PASS2_SCALARS:
            assert getattr(a, name) == getattr(one, name), name
    ra, ro = a.compute(), one.compute()
    for k in ro:
        np.testing.assert_allclose(ra[k], ro[k], rtol=1e-10, atol=1e-12, err_msg=k)


def test_add_second_pass_is_the_public_entry_from_frozen_means():
    A, _, y = _data(n=30)
    ref = CollapseAccumulator(K).update(A, y).end_first_pass().update(A, y)
    # a second pass computed elsewhere against the same frozen means, added through the entry
    acc = CollapseAccumulator.from_state_dict(ref.state_dict())
    other = CollapseAccumulator.from_state_dict(
        dict(
            acc.state_dict(),
            **{n: torch.zeros_like(acc.state_dict()[n]) for n, _, _ in PASS2_TENSORS},
            n2=0,
            correct=0,
            mismatch=0,
        )
    )
    part = {n: getattr(acc, n).clone() for n, _, _ in PASS2_TENSORS}
    part.update({n: getattr(acc, n) for n in PASS2_SCALARS})
    assert other.add_second_pass(part).compute() == ref.compute()
    with pytest.raises(InputError, match="'S'"):
        other.add_second_pass({k: v for k, v in part.items() if k != "S"})
    with pytest.raises(InputError, match="'ss2'"):
        other.add_second_pass(dict(part, ss2=torch.zeros(K + 1, dtype=torch.float64)))
    with pytest.raises(InputError, match="end_first_pass"):
        CollapseAccumulator(K).update(A, y).add_second_pass(part)
    # the fingerprint may be left out (the statistics route): counts2 is still needed
    fresh = CollapseAccumulator.from_state_dict(other.state_dict())
    fresh.add_second_pass({k: v for k, v in part.items() if k not in ("fp_sum", "fp_sq")})
    with pytest.raises(InputError, match="counts2"):
        fresh.add_second_pass({k: v for k, v in part.items() if k != "counts2"})


def test_in_units_multiplies_once_per_power_without_overflow():
    t = torch.tensor([1e-300, 3.0], dtype=torch.float64)
    f = 2.0**-600  # f * f underflows to 0; (t * f) * f does not lose the first entry to it
    assert in_units(t, "count", f) is t
    np.testing.assert_array_equal(in_units(t, "sum", 2.0), t * 2.0)
    big = in_units(torch.tensor([2.0**-1000], dtype=torch.float64), "squares", 2.0**600)
    assert big.item() == 2.0**200  # (x * f) * f; f * f = inf would have made it inf


def test_accumulator_auto_scale_survives_the_state_dict():
    A, _, y = _data()
    acc = CollapseAccumulator(K, auto_scale=False).update(A, y)
    assert CollapseAccumulator.from_state_dict(acc.state_dict())._auto_scale is False
    with pytest.raises(InputError, match="auto_scale"):
        CollapseAccumulator.from_state_dict(dict(acc.state_dict(), auto_scale="no"))


# ------------------------------------------------------------------------------------------
# LineAccumulator
# ------------------------------------------------------------------------------------------


def _same(a: dict, b: dict, rtol=1e-12) -> None:
    assert set(a) == set(b)
    for k in a:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=1e-12, err_msg=k)


def test_line_state_dict_round_trips_in_both_passes():
    A, B, y = _data()
    line = LineAccumulator(K, (0.0, 0.3, 1.0)).update(A, B, y)
    back = LineAccumulator.from_state_dict(line.state_dict())
    assert set(line.state_dict()) == set(LineAccumulator.STATE_KEYS)
    _same(back.compute(), line.compute())
    # a restored pass 1 continues: the rest of pass 1, then pass 2, as the original does
    for acc in (line, back):
        acc.end_first_pass().update(A, B, y)
    _same(back.compute(), line.compute())
    again = LineAccumulator.from_state_dict(line.state_dict())
    assert again.phase == 2 and len(again.lines) == 3
    _same(again.compute(), line.compute())
    empty = LineAccumulator.from_state_dict(LineAccumulator(K).state_dict())
    assert empty.cross is None and empty.phase == 1


def test_line_state_table_is_what_the_state_dict_holds():
    A, B, y = _data()
    for line in (
        LineAccumulator(K),
        LineAccumulator(K).update(A, B, y),
        LineAccumulator(K, (0.0, 1.0)).update(A, B, y).end_first_pass(),
    ):
        sd = line.state_dict()
        assert set(sd) == {key for key, _ in line_module.STATE} == set(LineAccumulator.STATE_KEYS)
        for key, _ in line_module.STATE:
            assert hasattr(line, key), key
    for key in LineAccumulator.STATE_KEYS:  # each missing key is named
        with pytest.raises(InputError, match=repr(key)):
            LineAccumulator.from_state_dict({k: v for k, v in sd.items() if k != key})
    with pytest.raises(InputError, match="'A'"):
        LineAccumulator.from_state_dict(dict(sd, A=[1, 2]))


def test_line_cross_merge_is_the_pairwise_rule():
    A, B, y = _data(n=30)
    whole = LineAccumulator(K).update(A, B, y)
    parts = [
        LineAccumulator(K).update(A[i : i + 10], B[i : i + 10], y[i : i + 10]) for i in (0, 10, 20)
    ]
    parts[0].merge(parts[1]).merge(parts[2])
    torch.testing.assert_close(parts[0].cross, whole.cross, rtol=1e-12, atol=1e-12)
    # direct: the cross terms about each class's mean, from the samples
    for k in range(K):
        a, b = A[y == k], B[y == k]
        want = float(((a - a.mean(0)) * (b - b.mean(0))).sum())
        np.testing.assert_allclose(float(whole.cross[k]), want, rtol=1e-12, atol=1e-12)


def test_line_merge_of_shards_equals_one_pass():
    A, B, y = _data()
    one = LineAccumulator(K).update(A, B, y)
    a = LineAccumulator(K).update(A[:10], B[:10], y[:10])
    a.merge(LineAccumulator(K).update(A[10:], B[10:], y[10:]))
    _same(a.compute(), one.compute(), rtol=1e-10)


def test_line_state_dict_refuses_what_is_not_a_line():
    A, B, y = _data()
    sd = LineAccumulator(K).update(A, B, y).state_dict()
    with pytest.raises(InputError, match="keys"):
        LineAccumulator.from_state_dict({k: v for k, v in sd.items() if k != "cross"})
    with pytest.raises(InputError, match="'cross'"):
        LineAccumulator.from_state_dict(dict(sd, cross=torch.zeros(K + 1, dtype=torch.float64)))
    with pytest.raises(InputError, match="'cross'"):
        LineAccumulator.from_state_dict(dict(sd, cross=None))
    other = CollapseAccumulator(K).update(A[:6], y[:6]).state_dict()
    with pytest.raises(InputError, match="same samples"):
        LineAccumulator.from_state_dict(dict(sd, B=other))
    with pytest.raises(InputError, match="'phase'"):
        LineAccumulator.from_state_dict(dict(sd, phase=3))
    with pytest.raises(InputError, match="'phase'"):
        LineAccumulator.from_state_dict(dict(sd, phase=1.0))
    # complex lost its imaginary part with a warning, booleans and numeric strings were read
    c = sd["cross"]
    c0 = c.clone()
    for wrong in (c.to(torch.complex128), c.numpy().astype(str), c.bool(), ["1", "2", "3"], "a"):
        with pytest.raises(InputError, match="'cross'"):
            LineAccumulator.from_state_dict(dict(sd, cross=wrong))
    with pytest.raises(InputError, match="ts must"):  # was a ValueError from numpy
        LineAccumulator.from_state_dict(dict(sd, ts="x"))
    restored = LineAccumulator.from_state_dict(sd)
    restored.update(*_data()).merge(LineAccumulator.from_state_dict(sd))
    assert torch.equal(sd["cross"], c0)  # the caller's tensor is not the state
    with pytest.raises(InputError, match="'lines'"):
        LineAccumulator.from_state_dict(dict(sd, phase=2))
