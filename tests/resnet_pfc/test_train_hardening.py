"""Training edge cases: divergence reported as divergence, seeds, extending a run with
``--resume --epochs``."""

from __future__ import annotations

import pytest

from resnet_pfc import train
from resnet_pfc.__main__ import main as resnet_main
from resnet_pfc.checkpoint import load_checkpoint
from resnet_pfc.config import TrainConfig
from resnet_pfc.runs import read_csv
from ufm.errors import CheckpointError, DivergenceError, InputError


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


# ------------------------------------------------------------------------------------------
# --resume --epochs E' > E: extending a run


def test_finished_run_extended_with_the_same_milestones_continues(tmp_path, tiny_run):
    """Train 3 epochs, resume with --epochs 5 and the same explicit milestones: training
    continues from epoch 3, the rows are continuous, and the files equal an uninterrupted
    5-epoch run (eval_every 1, so every epoch is measured either way)."""
    kw = {**tiny_run, "milestones": (2,)}
    out = str(tmp_path / "ext")
    first = train(TrainConfig(**kw, epochs=3, out=out))
    assert first.epochs_run == 3
    old_text = (tmp_path / "ext" / "metrics.csv").read_text()
    again = train(TrainConfig(**kw, epochs=5, out=out, resume=True))
    assert again.epochs_run == 2
    rows = read_csv(tmp_path / "ext" / "metrics.csv")
    assert sorted({r["epoch"] for r in rows}) == [0, 1, 2, 3, 4, 5]
    new_text = (tmp_path / "ext" / "metrics.csv").read_text()
    assert new_text.startswith(old_text)  # the old rows are kept as they were
    ref = train(TrainConfig(**kw, epochs=5, out=str(tmp_path / "ref")))
    assert again.metrics == ref.metrics
    assert [r["lr"] for r in again.metrics if r["layer_index"] == 0][1:] == pytest.approx(
        [0.1, 0.1, 0.01, 0.01, 0.01]
    )
    assert load_checkpoint(tmp_path / "ext" / "checkpoints" / "last.pt")["config"]["epochs"] == 5


def test_interrupted_run_extended_with_a_later_milestone(tmp_path, tiny_run, monkeypatch):
    """An interrupted 3-epoch run resumed as a 5-epoch run with one more milestone after the
    old end equals an uninterrupted 5-epoch run with those milestones."""
    import sys

    T = sys.modules["resnet_pfc.train"]
    real, calls = T.measure_model, []

    def stop(*a, **k):
        calls.append(1)
        if len(calls) == 3:  # epochs 0, 1 measured; Ctrl-C while measuring epoch 2
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(T, "measure_model", stop)
    out = str(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**tiny_run, epochs=3, milestones=(1,), out=out))
    monkeypatch.setattr(T, "measure_model", real)
    again = train(TrainConfig(**tiny_run, epochs=5, milestones=(1, 4), out=out, resume=True))
    ref = train(TrainConfig(**tiny_run, epochs=5, milestones=(1, 4), out=str(tmp_path / "ref")))
    assert again.epochs_run == 4 and again.metrics == ref.metrics
    assert [r["lr"] for r in ref.metrics if r["layer_index"] == 0][-1] == pytest.approx(1e-3)


@pytest.mark.parametrize(
    "first,then,match",
    [
        # default milestones move with --epochs: (1, 2) for 3 epochs, (2, 3) for 5
        (
            {"epochs": 3},
            {"epochs": 5},
            r"milestones up to the old last epoch 3: \[1, 2\] -> \[2, 3\]",
        ),
        ({"epochs": 3, "milestones": (2,)}, {"epochs": 5, "milestones": (3,)}, "--milestones 2"),
        # a new milestone at the old end would change the lr the checkpoint already holds
        (
            {"epochs": 3, "milestones": (2,)},
            {"epochs": 5, "milestones": (2, 3)},
            r"\[2\] -> \[2, 3\]",
        ),
        (
            {"epochs": 3, "milestones": (2,)},
            {"epochs": 2, "milestones": (2,)},
            "cannot be shortened",
        ),
        (
            {"epochs": 3, "milestones": (2,)},
            {"epochs": 5, "milestones": (2,), "lr": 0.05},
            "lr: 0.1 -> 0.05",
        ),
    ],
)
def test_extension_that_changes_the_schedule_is_refused(tmp_path, tiny_run, first, then, match):
    out = tmp_path / "r"
    train(TrainConfig(**{**tiny_run, **first}, out=str(out)))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError, match=match):
        train(TrainConfig(**{**tiny_run, **then}, out=str(out), resume=True))
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_the_rule_is_in_the_help(capsys):
    with pytest.raises(SystemExit):
        resnet_main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "--epochs may only grow" in text and "old --milestones" in text


# ------------------------------------------------------------------------------------------
# sizes that would exhaust memory or time


@pytest.mark.parametrize(
    "argv,option",
    [
        (["--blocks", "100000"], "--blocks"),
        (["--width", "100000000"], "--width"),
        (["--epochs", "10000000"], "--epochs"),
        (["--num-workers", "100000"], "--num-workers"),
        (["--heads", "10000000", "--model", "transformer"], "--heads"),
    ],
)
def test_size_options_have_upper_bounds(tmp_path, capsys, argv, option):
    with pytest.raises(SystemExit) as exc:
        resnet_main(["train", "--out", str(tmp_path / "r"), *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {option}" in err and "Traceback" not in err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    "argv,option",
    [
        (["--jobs", "100000"], "--jobs"),
        (["--threads", "100000"], "--threads"),
        (["--depths", "2", "1000000"], "--depths"),
        (["--width", "100000000"], "--width"),
        (["--bootstrap", "1000000000"], "--bootstrap"),
        (["--max-epochs", "1000000000"], "--max-epochs"),
    ],
)
def test_depth_size_options_have_upper_bounds(tmp_path, capsys, argv, option):
    from pfc.cli import main as pfc_main

    with pytest.raises(SystemExit) as exc:
        pfc_main(["depth", "--preset", "tiny", "--out", str(tmp_path / "d"), *argv])
    err = capsys.readouterr().err
    assert exc.value.code == 2 and f"argument {option}" in err and "Traceback" not in err


def test_model_too_large_for_memory_is_refused_before_allocating(tmp_path, tiny_run, monkeypatch):
    """The model is sized on the meta device; with (pretend) 1 MiB available a width-512
    network is refused with the numbers, before any weight is allocated."""
    import resnet_pfc.memory as M

    monkeypatch.setattr(M, "available_memory", lambda: 2**20)
    with pytest.raises(InputError, match=r"parameters: training it needs about .* GiB but "):
        train(TrainConfig(**{**tiny_run, "width": 512}, epochs=1, out=str(tmp_path / "big")))
    monkeypatch.setattr(M, "available_memory", lambda: None)  # unknown: no refusal
    assert train(TrainConfig(**tiny_run, epochs=1, out=str(tmp_path / "ok"))).epochs_run == 1


def test_allocation_failure_is_a_clear_error(tmp_path, tiny_run, monkeypatch):
    import sys

    T = sys.modules["resnet_pfc.train"]

    def fail(*a, **k):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"
        )

    monkeypatch.setattr(T, "measure_model", fail)
    with pytest.raises(InputError, match="out of memory.*use smaller values"):
        train(TrainConfig(**tiny_run, epochs=1, out=str(tmp_path / "oom")))


def test_depth_model_too_large_is_refused(tmp_path, monkeypatch):
    import resnet_pfc.memory as M
    from resnet_pfc.depth import depth_config, depth_study

    monkeypatch.setattr(M, "available_memory", lambda: 1024)
    cfg = depth_config(
        "tiny", out=str(tmp_path / "d"), families=("ln_resnet1",), depths=(2,), seeds=(0,),
        progress=False, jobs=1,
    )  # fmt: skip
    with pytest.raises(InputError, match="family=ln_resnet1, depth=2"):
        depth_study(cfg)
