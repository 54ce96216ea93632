"""Training edge cases: divergence reported as divergence, seeds, extending a run with
``--resume --epochs``."""

from __future__ import annotations

import pytest

from resnet_pfc import train
from resnet_pfc.__main__ import main as resnet_main
from resnet_pfc.checkpoint import load_checkpoint
from resnet_pfc.config import TrainConfig
from resnet_pfc.runs import read_csv
from ufm.errors import DivergenceError


def test_huge_lr_that_overflows_the_features_is_a_divergence(tmp_path, tiny_run):
    """One SGD step per epoch with lr 1e10 leaves finite but enormous weights: the loss of the
    step was finite, the measurement after it is not. That is divergence (with the lr and what
    to do), not a complaint about non-finite samples."""
    kw = {**tiny_run, "batch_size": 200, "momentum": 0.0, "weight_decay": 0.0}
    out = tmp_path / "div"
    with pytest.raises(DivergenceError) as exc:
        train(TrainConfig(**kw, epochs=2, lr=1e10, out=str(out)))
    msg = str(exc.value)
    assert "training diverged" in msg and "lr=1e+10" in msg and "lower --lr" in msg
    assert "samples" not in msg and "epoch 0" in msg
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 0
    assert {r["epoch"] for r in read_csv(out / "metrics.csv")} == {0}


def test_huge_lr_on_the_command_line_exit_2(tmp_path, tiny_run, to_argv, capsys):
    kw = {**tiny_run, "batch_size": 200, "momentum": 0.0, "weight_decay": 0.0}
    argv = ["train", *to_argv(kw), "--epochs", "1", "--lr", "1e10", "--out", str(tmp_path / "d")]
    assert resnet_main(argv) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "Traceback" not in err
