"""Streaming measurement equals the batch metrics on stored features (float64 round-off)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.data import DataLoader

from resnet_pfc.config import TrainConfig
from resnet_pfc.measure import Measurement, measure, measure_model
from resnet_pfc.models import ConvResNet, FCResNet
from ufm.errors import DegenerateInputError, InputError, PFCWarning
from ufm.metrics import collapse_metrics, effective_depth, relative_position

RTOL = 1e-10  # float64 features; only the summation order differs


def _stored(model, x):
    """Reference: the measured layers' features, stored (the slow way)."""
    with torch.no_grad():
        h = model.stem(x)
        feats = [h.reshape(len(x), -1)]
        for blk in model.blocks:
            h = blk(h)
            feats.append(h.reshape(len(x), -1))
    return feats


def _close(a: dict, b: dict, keys=None, rtol=RTOL):
    for k in keys or b:
        np.testing.assert_allclose(a[k], b[k], rtol=rtol, atol=1e-12, err_msg=k)


@pytest.fixture(scope="module")
def fc_model():
    torch.manual_seed(0)
    return FCResNet(64, 10, width=24, blocks=3).double().eval()


@settings(max_examples=4, deadline=None)
@given(batch=st.integers(8, 90))
def test_measure_equals_collapse_metrics(fc_model, tiny_digits, batch):
    ds = tiny_digits(per_class=9)
    x, y = ds.tensors
    W, b = fc_model.measured_classifier()
    res = measure(
        fc_model,
        DataLoader(ds, batch_size=batch),
        fc_model.measured_layers(),
        10,
        classifier={"block3": (W, b)},
    )
    feats = _stored(fc_model, x)
    for i, lab in enumerate(["input", "block1", "block2", "block3"]):
        ref = collapse_metrics(feats[i], y, *((W, b) if lab == "block3" else ()))
        assert set(res.layers[lab]) == set(ref)
        _close(res.layers[lab], ref)
    with torch.no_grad():
        logits = fc_model(x)
    assert math.isclose(res.loss, float(nn.functional.cross_entropy(logits, y)), rel_tol=1e-12)
    assert res.accuracy == float((logits.argmax(1) == y).double().mean())
    assert res.num_samples == len(y)


def test_conv_measure_equals_collapse_metrics(tiny_digits):
    torch.manual_seed(3)
    m = ConvResNet((1, 8, 8), 10, widths=(4, 6), blocks=2).double()
    ds = tiny_digits(per_class=5)
    x, y = ds.tensors
    with torch.no_grad():
        m.train()(x)  # move the running statistics away from their initial values
    m.eval()
    W, b = m.measured_classifier()
    res = measure(
        m,
        DataLoader(ds, batch_size=13),
        m.measured_layers(),
        10,
        classifier={"block2": (W, b)},
        line=True,
    )
    feats = _stored(m, x)
    _close(res.layers["block2"], collapse_metrics(feats[2], y, W, b))
    _close(res.layers["input"], collapse_metrics(feats[0], y))
    assert m.training is False


def test_geodesic_equals_interpolated_features(fc_model, tiny_digits):
    ds = tiny_digits(per_class=9)
    x, y = ds.tensors
    grid = np.linspace(0, 1, 7)
    res = measure(
        fc_model,
        DataLoader(ds, batch_size=17),
        fc_model.measured_layers(),
        10,
        line=True,
        geodesic_grid=grid,
        geodesic_pass2_grid=[0.0, 0.5, 1.0],
    )
    feats = _stored(fc_model, x)
    H0, HL = feats[0], feats[-1]
    geo = res.geodesic
    t_all = geo["t"]
    # the grid is the union of the fine grid, the pass-2 grid and the layers' positions
    assert set(np.round(t_all, 12)) == set(np.round(np.r_[grid, 1 / 3, 2 / 3], 12))
    for j, t in enumerate(t_all):
        ref = collapse_metrics((1 - t) * H0 + t * HL, y)
        _close(
            {k: v[j] for k, v in geo.items()},
            ref,
            keys=["pfc1", "pfc2", "nc2_equinorm", "nc2_equiangular", "tr_sigma_w"],
        )
        # NCC accuracy and NC1 are evaluated on the pass-2 grid plus the layers' positions
        if any(math.isclose(t, s, abs_tol=1e-12) for s in (0.0, 1 / 3, 0.5, 2 / 3, 1.0)):
            _close({k: v[j] for k, v in geo.items()}, ref, keys=["ncc_accuracy", "pfc3", "nc1"])
        else:
            assert math.isnan(geo["nc1"][j])
    # end points of the line are the first and last layers
    _close(res.geodesic_at_layers["input"], res.layers["input"], keys=["pfc1", "pfc2", "nc1"])
    _close(res.geodesic_at_layers["block3"], res.layers["block3"], keys=["pfc1", "ncc_accuracy"])


def test_positions_index_and_distance(fc_model, tiny_digits):
    ds = tiny_digits(per_class=4)
    x, _ = ds.tensors
    feats = _stored(fc_model, x)
    loader = DataLoader(ds, batch_size=11)
    layers = fc_model.measured_layers()
    r1 = measure(fc_model, loader, layers, 10)
    assert list(r1.positions.values()) == pytest.approx([0, 1 / 3, 2 / 3, 1], abs=1e-15)
    r2 = measure(fc_model, loader, layers, 10, position="distance", line=True)
    ref = relative_position(feats, mode="distance")
    np.testing.assert_allclose(list(r2.positions.values()), ref, rtol=1e-12)
    np.testing.assert_allclose(list(r1.distances.values()), ref, rtol=1e-12)
    # the line's pass-2 metrics are evaluated exactly at the distance positions
    for lab, pos in r2.positions.items():
        j = int(np.argmin(abs(r2.geodesic["t"] - pos)))
        assert r2.geodesic["t"][j] == pytest.approx(pos, abs=1e-15)
        assert not math.isnan(r2.geodesic["nc1"][j])


def test_measure_any_model_and_input_taps(tiny_digits):
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 10)
    ).double()
    ds = tiny_digits(per_class=6)
    x, y = ds.tensors
    loader = DataLoader(ds, batch_size=20)
    res = measure(net, loader, ["2", "4", "5:input"])  # K inferred from the data set
    assert isinstance(res, Measurement) and res.num_samples == len(y)
    out = res.layers
    assert list(out) == ["2", "4", "5:input"]
    with torch.no_grad():
        h2 = net[:3](x)
        h4 = net[:5](x)
    assert set(out["2"]) == set(collapse_metrics(h2, y))
    _close(out["2"], collapse_metrics(h2, y))
    _close(out["4"], collapse_metrics(h4, y))
    _close(out["5:input"], out["4"])  # the input of module 5 is the output of module 4
    one = measure(net, loader, {"relu": "2"}, 10, passes=1).layers
    assert "ncc_accuracy" not in one["relu"] and "pfc1" in one["relu"]
    assert one["relu"]["pfc1"] == pytest.approx(out["2"]["pfc1"], rel=1e-12)


def test_one_public_measure_function():
    import importlib

    import resnet_pfc

    module = importlib.import_module("resnet_pfc.measure")
    assert resnet_pfc.measure is module.measure
    assert not hasattr(module, "measure_run") and not hasattr(resnet_pfc, "measure_run")
    assert "measure_run" not in module.__all__ + resnet_pfc.__all__


def test_effective_depth_from_streamed_pfc3(fc_model, tiny_digits):
    ds = tiny_digits(per_class=9)
    x, y = ds.tensors
    res = measure(fc_model, DataLoader(ds, batch_size=50), fc_model.measured_layers(), 10)
    errs = [v["pfc3"] for v in res.layers.values()]
    for eps in (0.0, 0.2, 0.5, 1.0):
        assert effective_depth(errs, epsilon=eps) == effective_depth(
            _stored(fc_model, x), y, epsilon=eps
        )


def test_training_mode_restored(fc_model, tiny_digits):
    fc_model.train()
    measure(fc_model, DataLoader(tiny_digits(per_class=2), batch_size=8), ["stem"], 10)
    assert fc_model.training
    fc_model.eval()


class _Twice(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(64, 64)
        self.head = nn.Linear(64, 10)

    def forward(self, x):
        x = x.flatten(1)
        return self.head(self.lin(self.lin(x)))


class _Zero(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Flatten()
        self.z = nn.Linear(64, 5)
        with torch.no_grad():
            self.z.weight.zero_()
            self.z.bias.zero_()

    def forward(self, x):
        return self.z(self.f(x))


def test_errors(fc_model, tiny_digits):
    loader = DataLoader(tiny_digits(per_class=2), batch_size=8)
    layers = fc_model.measured_layers()
    with pytest.raises(InputError, match="no module named 'nope'"):
        measure(fc_model, loader, ["nope"], 10)
    with pytest.raises(InputError, match="suffix must be"):
        measure(fc_model, loader, ["stem:middle"], 10)
    with pytest.raises(InputError, match="forward order"):
        measure(fc_model, loader, ["blocks.1", "stem"], 10)
    with pytest.raises(InputError, match="passes must be 1 or 2"):
        measure(fc_model, loader, layers, 10, passes=3)
    with pytest.raises(InputError, match="position must be"):
        measure(fc_model, loader, layers, 10, position="depth")
    with pytest.raises(InputError, match="line end"):
        measure(fc_model, loader, layers, 10, line=("input", "block9"))
    with pytest.raises(InputError, match="at least two"):
        measure(fc_model, loader, ["stem"], 10, line=True)
    with pytest.raises(InputError, match="layers is empty"):
        measure(fc_model, loader, [], 10)
    with pytest.raises(DegenerateInputError, match="K=1"):
        measure(fc_model, loader, layers, 1)
    with pytest.raises(InputError, match="more than once"):
        measure(_Twice().double(), loader, ["lin"], 10)


def test_degenerate_layer_strict_and_lenient(tiny_digits):
    loader = DataLoader(tiny_digits(per_class=2), batch_size=8)
    net = _Zero().double()
    with pytest.raises(DegenerateInputError, match="layer 'z'"):
        measure(net, loader, ["z"], 10)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        res = measure(net, loader, ["f", "z"], 10, strict=False)
    assert any(issubclass(w.category, PFCWarning) for w in rec)
    assert math.isnan(res.layers["z"]["pfc1"]) and math.isnan(res.layers["z"]["nc1"])
    assert not math.isnan(res.layers["f"]["nc1"])


def test_measure_model_is_measure_with_the_training_choices(fc_model, tiny_digits):
    cfg = TrainConfig(geodesic_points=5, geodesic_pass2_points=3, position="distance")
    loader = DataLoader(tiny_digits(per_class=6), batch_size=16)
    got = measure_model(fc_model, loader, cfg)
    layers = fc_model.measured_layers()
    W, b = fc_model.measured_classifier()
    ref = measure(
        fc_model, loader, layers, 10, classifier={list(layers)[-1]: (W, b)}, line=True,
        geodesic_grid=5, geodesic_pass2_grid=3, position="distance", strict=False,
    )  # fmt: skip
    assert got.layers.keys() == ref.layers.keys() and got.positions == ref.positions
    for label in ref.layers:
        _close(got.layers[label], ref.layers[label], rtol=0.0)
    assert "nc3" in got.layers[list(layers)[-1]]
    np.testing.assert_array_equal(got.geodesic["pfc1"], ref.geodesic["pfc1"])
    # keywords override the training choices
    assert measure_model(fc_model, loader, cfg, line=False).geodesic is None
