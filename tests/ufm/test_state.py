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
from ufm.metrics.accumulator import PASS1_TENSORS, PASS2_SCALARS, PASS2_TENSORS, in_units
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
    declared |= set(PASS2_SCALARS)
    assert declared <= set(acc.state_dict())
    assert set(acc.state_dict()) - declared == {
        "K", "rank_tol", "phase", "d", "W", "b", "scale_exp", "maxabs", "auto_scale",
    }  # fmt: skip


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
    with pytest.raises(InputError, match="'lines'"):
        LineAccumulator.from_state_dict(dict(sd, phase=2))
