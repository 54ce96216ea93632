"""ufm.losses: the loss names, declared once and checked the same way everywhere."""

from __future__ import annotations

import pytest

import ufm
from ufm.errors import InputError
from ufm.losses import LOSS_NAMES, LOSSES, check_loss


def test_losses_and_names():
    assert LOSSES == ("mse", "ce") and set(LOSS_NAMES) == set(LOSSES)
    assert ufm.LOSSES is LOSSES and ufm.check_loss is check_loss
    for loss in LOSSES:
        assert check_loss(loss) == loss


@pytest.mark.parametrize(
    ("bad", "needle"),
    [("MSE", "write 'mse'"), ("Ce", "write 'ce'"), ("hinge", "'hinge'"), (None, "None"), (1, "1")],
)
def test_check_loss_refuses_with_the_value_and_the_spelling(bad, needle):
    with pytest.raises(InputError, match="loss must be 'mse' or 'ce'") as e:
        check_loss(bad)
    assert needle in str(e.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda: ufm.solve(_data()[1], d=4, loss="MSE"),
        lambda: ufm.objective(*_wbh(), lam_w=1e-3, loss="MSE"),
        lambda: __import__("mufm").solve(*_data(), lam=0.1, loss="MSE"),
    ],
)
def test_every_entry_point_refuses_the_same_spelling(call):
    with pytest.raises(InputError, match="write 'mse'"):
        call()


def _data():
    import numpy as np

    rng = np.random.default_rng(0)
    return rng.standard_normal((12, 4)), np.repeat(np.arange(3), 4)


def _wbh():
    import numpy as np

    H, y = _data()
    return np.zeros((3, 4)), np.zeros(3), H, y
