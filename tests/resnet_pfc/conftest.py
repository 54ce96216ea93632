"""Shared helpers of the resnet_pfc tests: a tiny real data set and small models."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from tiny_data import TINY_RUN
from torch.utils.data import TensorDataset

from resnet_pfc.measure import LayerTaps


class TinyDigits(TensorDataset):
    """A balanced digits subset as a TensorDataset with the data contract's attributes."""

    def __init__(self, per_class: int = 8, seed: int = 0, dtype: torch.dtype = torch.float64):
        X, y = load_digits(return_X_y=True)
        rng = np.random.default_rng(seed)
        idx = np.concatenate(
            [rng.choice(np.flatnonzero(y == k), per_class, replace=False) for k in range(10)]
        )
        x = torch.tensor((X[idx] / 16.0 - 0.3) / 0.37, dtype=dtype).reshape(-1, 1, 8, 8)
        super().__init__(x, torch.tensor(y[idx], dtype=torch.int64))
        self.num_classes = 10
        self.input_shape = (1, 8, 8)
        self.name = "tiny_digits"


def train_argv(options: dict) -> list[str]:
    """The ``train`` command-line options that give the ``TrainConfig`` fields ``options``."""
    argv: list[str] = []
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if name in ("progress", "figures"):
            argv += [] if value else [f"--no-{name}"]
        elif value is True:
            argv.append(flag)
        elif value is not False:
            argv += [flag, str(value)]
    return argv


@pytest.fixture
def tiny_run() -> dict:
    """:data:`TINY_RUN` (a copy)."""
    return dict(TINY_RUN)


@pytest.fixture(scope="session")
def to_argv():
    """:func:`train_argv` (fixtures cannot be imported by test modules)."""
    return train_argv


@pytest.fixture
def tiny() -> TinyDigits:
    return TinyDigits()


@pytest.fixture(scope="session")
def tiny_digits() -> type[TinyDigits]:
    """The :class:`TinyDigits` class (fixtures cannot be imported by test modules)."""
    return TinyDigits


def layer_taps(model, x):
    """``model(x)`` and the features of its measured layers, by label."""
    feats = {}
    with LayerTaps(model, model.measured_layers(), lambda lab, h: feats.__setitem__(lab, h)):
        out = model(x)
    return out, feats


@pytest.fixture(scope="session")
def taps():
    """:func:`layer_taps` (fixtures cannot be imported by test modules)."""
    return layer_taps


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models gain nothing from intra-op threads, and on a shared machine spinning threads
    slow them down by an order of magnitude; restore the setting afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
