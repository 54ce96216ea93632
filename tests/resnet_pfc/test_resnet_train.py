"""Training runs: determinism, divergence, resume after SIGKILL, CLI, figures, report."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from resnet_pfc import train
from resnet_pfc.__main__ import main
from resnet_pfc.analysis import monotonicity
from resnet_pfc.checkpoint import load_checkpoint, save_checkpoint
from resnet_pfc.config import TrainConfig, resolve_config
from resnet_pfc.runs import METRIC_COLUMNS, read_csv
from ufm.errors import CheckpointError, DivergenceError, InputError, PFCWarning

ROOT = Path(__file__).resolve().parents[2]


def _env() -> dict[str, str]:
    # One thread per process: the machine is shared, and results must not depend on load.
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    return env


def test_determinism(tmp_path, tiny_run):
    a = train(TrainConfig(**tiny_run, epochs=2, out=str(tmp_path / "a")))
    b = train(TrainConfig(**tiny_run, epochs=2, out=str(tmp_path / "b")))
    assert a.metrics == b.metrics and a.geodesic == b.geodesic
    assert (tmp_path / "a/metrics.csv").read_text() == (tmp_path / "b/metrics.csv").read_text()
    rows = read_csv(tmp_path / "a/metrics.csv")
    assert list(rows[0]) == list(METRIC_COLUMNS)
    # epochs 0 (initialisation), 1, 2; one row per layer
    assert [(r["epoch"], r["layer"]) for r in rows[:4]] == [
        (0, "input"),
        (0, "block1"),
        (0, "block2"),
        (1, "input"),
    ]
    assert len(rows) == 9 and {r["split"] for r in rows} == {"train"}
    last = rows[-1]
    assert last["nc3"] is not None and last["nc4"] is not None and rows[-2]["nc3"] is None
    assert 0 <= last["ncc_accuracy"] <= 1 and last["pfc3"] == pytest.approx(
        1 - last["ncc_accuracy"]
    )
    geo = read_csv(tmp_path / "a/geodesic.csv")
    assert {g["layer"] for g in geo if g["epoch"] == 2} == {"", "input", "block1", "block2"}
    c = train(TrainConfig(**{**tiny_run, "seed": 1}, epochs=2, out=str(tmp_path / "c")))
    assert c.metrics != a.metrics


def test_eval_test_split_and_files(tmp_path, tiny_run):
    out = tmp_path / "run"
    res = train(
        TrainConfig(**{**tiny_run, "figures": True}, epochs=1, eval_test=True, out=str(out))
    )
    assert {r["split"] for r in res.metrics} == {"train", "test"}
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["lr"] == 0.1 and cfg["config"]["milestones"] == [1]
    assert cfg["versions"]["torch"] == torch.__version__ and cfg["feature_dim"] == 16
    assert cfg["blocks"] == 2 and cfg["model_kind"] == "FCResNet"
    for name in ("fig2_train.png", "fig3_train.png", "fig2_test.png", "fig3_test.png"):
        assert (out / "figures" / name).stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "## train split, final epoch 1" in report and "effective depth" in report
    assert not list(out.rglob(".*.tmp"))  # atomic writes leave no temporary file


def test_divergence_keeps_last_good_checkpoint(tmp_path, tiny_run):
    out = tmp_path / "div"
    with pytest.raises(DivergenceError, match=r"epoch 1, step \d+") as exc:
        train(TrainConfig(**tiny_run, epochs=3, lr=1e12, out=str(out)))
    assert "last.pt" in str(exc.value)
    state = load_checkpoint(out / "checkpoints" / "last.pt")
    assert state["epoch"] == 0
    assert all(torch.isfinite(v).all() for v in state["model"].values())
    assert {r["epoch"] for r in read_csv(out / "metrics.csv")} == {0}


def test_existing_run_needs_resume_and_same_options(tmp_path, tiny_run):
    out = str(tmp_path / "r")
    first = train(TrainConfig(**tiny_run, epochs=1, out=out))
    with pytest.raises(CheckpointError, match="--resume"):
        train(TrainConfig(**tiny_run, epochs=1, out=out))
    with pytest.raises(CheckpointError, match="lr: 0.1 -> 0.05"):
        train(TrainConfig(**tiny_run, epochs=1, out=out, resume=True), lr=0.05)
    again = train(TrainConfig(**tiny_run, epochs=1, out=out, resume=True))
    assert again.epochs_run == 0 and again.metrics == first.metrics


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"dataset": "imagenet"}, "unknown data set name .imagenet.; valid names are digits"),
        ({"epochs": 0}, "epochs must be >= 1"),
        ({"lr": -1.0}, "lr must be > 0"),
        ({"eval_every": 0}, "eval_every must be >= 1"),
        ({"dtype": "float16"}, "dtype must be"),
        ({"position": "depth"}, "position must be"),
        ({"model": "vit"}, "model must be"),
        ({"momentum": 2.0}, "momentum must be <= 1"),
        ({"per_class": 0}, "per_class must be >= 1"),
    ],
)
def test_config_errors(kw, match):
    with pytest.raises(InputError, match=match):
        resolve_config(TrainConfig(**kw))


def test_paper_defaults():
    cfg = resolve_config(TrainConfig(epochs=350, dataset="mnist"))
    assert cfg.milestones == (117, 233) and cfg.lr == 0.01
    assert (cfg.momentum, cfg.weight_decay, cfg.batch_size) == (0.9, 5e-4, 128)


def test_monotonicity():
    assert monotonicity([3.0, 2.0, 1.0]) == ("strict", None)
    assert monotonicity([0.1, 0.0, 0.0]) == ("weak", None)
    assert monotonicity([1.0, 0.5, 0.7, 0.1]) == ("no", 2)
    assert monotonicity([1.0, float("nan")]) == ("undefined", None)
    assert monotonicity([1.0, None]) == ("undefined", None)


def test_checkpoint_errors(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "none.pt")
    (tmp_path / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(tmp_path / "bad.pt")
    torch.save({"format": 99}, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="format 99"):
        load_checkpoint(tmp_path / "old.pt")
    save_checkpoint(tmp_path / "ok.pt", {"epoch": 3})
    assert load_checkpoint(tmp_path / "ok.pt")["epoch"] == 3


def test_cli_in_process(tmp_path, capsys, tiny_run, to_argv):
    out = tmp_path / "cli"
    assert (
        main(["train", *to_argv({**tiny_run, "figures": True}), "--epochs", "1", "--out", str(out)])
        == 0
    )
    assert "train accuracy" in capsys.readouterr().out
    assert (out / "report.md").is_file() and (out / "figures" / "fig3_train.png").is_file()
    (out / "report.md").unlink()
    assert main(["report", str(out)]) == 0 and (out / "report.md").is_file()
    assert main(["figures", str(out)]) == 0
    assert main(["figures", str(tmp_path / "missing")]) == 2
    assert "no metrics.csv" in capsys.readouterr().err
    # bad values are usage errors at parse time (exit status 2), before any work
    with pytest.raises(SystemExit) as exc:
        main(
            [
                "train",
                *to_argv({**tiny_run, "figures": True}),
                "--epochs",
                "0",
                "--out",
                str(tmp_path / "x"),
            ]
        )
    assert exc.value.code == 2 and "--epochs" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_help():
    r = subprocess.run(
        [sys.executable, "-m", "resnet_pfc", "train", "--help"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0
    for opt in (
        "--eval-every",
        "--eval-test",
        "--resume",
        "--per-class",
        "--weight-decay",
        "--data-root",
        "--download",
        "--device",
        "--num-workers",
    ):
        assert opt in r.stdout


def test_resume_after_sigkill_matches_uninterrupted(tmp_path, tiny_run, to_argv):
    epochs = 12
    args = [
        sys.executable,
        "-m",
        "resnet_pfc",
        "train",
        *to_argv({**tiny_run, "figures": True}),
        "--no-figures",
        "--epochs",
        str(epochs),
    ]
    ref = subprocess.run(
        [*args, "--out", str(tmp_path / "ref")],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "killed"
    proc = subprocess.Popen(
        [*args, "--out", str(run)], env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            m = run / "metrics.csv"
            if m.is_file() and any(r["epoch"] >= 3 for r in read_csv(m)):
                break
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = max(r["epoch"] for r in read_csv(run / "metrics.csv"))
    assert 3 <= done < epochs
    res = subprocess.run(
        [*args, "--out", str(run), "--resume"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert res.returncode == 0, res.stderr
    assert (run / "metrics.csv").read_text() == (tmp_path / "ref/metrics.csv").read_text()
    assert (run / "geodesic.csv").read_text() == (tmp_path / "ref/geodesic.csv").read_text()


def test_conv_model_trains_and_measures(tmp_path, tiny_run):
    kw = {**tiny_run, "width": 8, "eval_every": 2}
    res = train(TrainConfig(**kw, model="conv", epochs=2, out=str(tmp_path / "conv")))
    rows = [r for r in res.metrics if r["epoch"] == 2]
    assert [r["layer"] for r in rows] == ["input", "block1", "block2"]
    assert rows[-1]["nc4"] is not None and 0 <= rows[-1]["nc4"] <= 1
    doc = json.loads((tmp_path / "conv" / "config.json").read_text())
    assert doc["model_kind"] == "ConvResNet" and doc["feature_dim"] == 8 * 2 * 2


def test_resume_without_checkpoint_starts_fresh(tmp_path, tiny_run):
    a = train(TrainConfig(**tiny_run, epochs=1, out=str(tmp_path / "a"), resume=True))
    b = train(TrainConfig(**tiny_run, epochs=1, out=str(tmp_path / "b")))
    assert a.epochs_run == 1 and a.metrics == b.metrics


# ---------------------------------------------------------------------------------------------
# resume: options checked before writing, relocatable folders, two generations, trust


def test_refused_resume_leaves_config_json_untouched(tmp_path, tiny_run):
    out = tmp_path / "r"
    train(TrainConfig(**tiny_run, epochs=1, out=str(out)))
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(CheckpointError, match="lr: 0.1 -> 0.05"):
        train(TrainConfig(**tiny_run, epochs=1, lr=0.05, out=str(out), resume=True))
    after = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    assert after == before


@pytest.mark.parametrize("spelling", ["absolute", "trailing_slash", "moved"])
def test_resume_by_another_spelling_or_moved(tmp_path, monkeypatch, spelling, tiny_run):
    monkeypatch.chdir(tmp_path)
    first = train(TrainConfig(**tiny_run, epochs=1, out="run"))
    out = {
        "absolute": str(tmp_path / "run"),
        "trailing_slash": "run/",
        "moved": str(tmp_path / "elsewhere" / "run"),
    }[spelling]
    if spelling == "moved":
        (tmp_path / "elsewhere").mkdir()
        (tmp_path / "run").rename(out)
    again = train(TrainConfig(**tiny_run, epochs=1, out=out, resume=True))
    assert again.epochs_run == 0 and again.metrics == first.metrics


def test_last_pt_directory_gives_one_clear_error(tmp_path, tiny_run):
    out = tmp_path / "d"
    (out / "checkpoints" / "last.pt").mkdir(parents=True)
    for resume in (False, True):
        with pytest.raises(CheckpointError) as exc:
            train(TrainConfig(**tiny_run, epochs=1, out=str(out), resume=resume))
        if resume:
            assert "is a directory" in str(exc.value)
        else:
            assert "--resume" in str(exc.value)


def test_corrupted_last_pt_falls_back_to_previous_generation(tmp_path, tiny_run):
    ref = train(TrainConfig(**tiny_run, epochs=3, milestones=(1, 2), out=str(tmp_path / "ref")))
    out = tmp_path / "c"
    train(TrainConfig(**tiny_run, epochs=3, milestones=(1, 2), out=str(out)))
    ckpts = out / "checkpoints"
    assert load_checkpoint(ckpts / "last.pt")["epoch"] == 3
    assert load_checkpoint(ckpts / "last.prev.pt")["epoch"] == 2
    (ckpts / "last.pt").write_bytes(b"\x00garbage" * 10)
    with pytest.warns(PFCWarning, match="previous checkpoint"):
        again = train(
            TrainConfig(**tiny_run, epochs=3, milestones=(1, 2), out=str(out), resume=True)
        )
    assert again.epochs_run == 1
    # the lr schedule survives the round trip (the scheduler's milestones are a Counter)
    assert [r["lr"] for r in again.metrics if r["epoch"] == 3][0] == pytest.approx(1e-3)
    assert again.metrics == ref.metrics
    assert (out / "metrics.csv").read_text() == (tmp_path / "ref" / "metrics.csv").read_text()
    assert load_checkpoint(ckpts / "last.pt")["epoch"] == 3
    # both generations unreadable: one clear error
    (ckpts / "last.pt").write_bytes(b"junk")
    (ckpts / "last.prev.pt").write_bytes(b"junk")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        train(TrainConfig(**tiny_run, epochs=3, milestones=(1, 2), out=str(out), resume=True))


class _Evil:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_checkpoint_is_refused_without_running_code(tmp_path, tiny_run):
    marker = tmp_path / "pwned"
    out = tmp_path / "evil"
    (out / "checkpoints").mkdir(parents=True)
    torch.save({"format": 2, "epoch": 0, "x": _Evil(marker)}, out / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(out / "checkpoints" / "last.pt")
    with pytest.raises(CheckpointError, match="no readable checkpoint"):
        train(TrainConfig(**tiny_run, epochs=1, out=str(out), resume=True))
    assert not marker.exists()


def test_checkpoint_loads_weights_only_and_restores_rng(tmp_path):
    import random

    import numpy as np

    from resnet_pfc.checkpoint import rng_state, set_rng_state

    random.seed(3)
    np.random.seed(3)  # noqa: NPY002
    torch.manual_seed(3)
    np.random.standard_normal()  # noqa: NPY002 - leaves a cached Gaussian in the state
    save_checkpoint(tmp_path / "k.pt", {"rng": rng_state(), "f": np.float64(0.5)})
    want = (random.random(), np.random.standard_normal(), torch.rand(1))  # noqa: NPY002
    state = torch.load(tmp_path / "k.pt", weights_only=True)
    assert state["f"] == 0.5 and type(state["f"]) is float
    set_rng_state(state["rng"])
    got = (random.random(), np.random.standard_normal(), torch.rand(1))  # noqa: NPY002
    assert got[:2] == want[:2] and torch.equal(got[2], want[2])


def test_format1_checkpoint_with_numpy_rng_state_still_loads(tmp_path):
    import numpy as np

    torch.save(
        {"format": 1, "rng_numpy": np.random.get_state()},  # noqa: NPY002
        tmp_path / "old.pt",
    )
    assert load_checkpoint(tmp_path / "old.pt")["rng_numpy"][0] == "MT19937"


@pytest.mark.parametrize(
    "kw,match",
    [
        ({"lr": 1e300}, "lr=1e.300 overflows float32"),
        ({"weight_decay": 1e39}, "weight_decay=1e.39 overflows"),
        ({"device": "tpu"}, "device must be"),
        ({"seed": -1}, "seed must be >= 0"),
        ({"milestones": (0,)}, "milestones must be >= 1"),
        ({"variant": -1}, "variant must be >= 0"),
        ({"device": "cuda:x"}, "device must be"),
        ({"lr_gamma": 1e200}, "lr=0.1 overflows"),
    ],
)
def test_more_config_errors(kw, match):
    with pytest.raises(InputError, match=match):
        resolve_config(TrainConfig(**kw))


def test_lr_overflowing_step_is_a_divergence(tmp_path, tiny_run):
    with pytest.raises(DivergenceError, match="lower --lr"):
        train(TrainConfig(**tiny_run, epochs=1, lr=1e37, out=str(tmp_path / "big")))


def test_interrupted_run_resumes_across_a_milestone(tmp_path, monkeypatch, tiny_run):
    """In process: stop during epoch 2 (Ctrl-C), resume; the lr decay after epoch 2 and every
    metric match an uninterrupted run (the scheduler state survives the checkpoint)."""
    T = sys.modules["resnet_pfc.train"]

    kw = {**tiny_run, "epochs": 3, "milestones": (2,)}
    ref = train(TrainConfig(**kw, out=str(tmp_path / "ref")))
    real, calls = T.measure_model, []

    def stop_at_epoch2(*a, **k):
        calls.append(1)
        if len(calls) == 3:  # epochs 0, 1 measured; stop while measuring epoch 2
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(T, "measure_model", stop_at_epoch2)
    out = str(tmp_path / "cut")
    with pytest.raises(KeyboardInterrupt):
        train(TrainConfig(**kw, out=out))
    monkeypatch.setattr(T, "measure_model", real)
    assert load_checkpoint(tmp_path / "cut" / "checkpoints" / "last.pt")["epoch"] == 1
    again = train(TrainConfig(**kw, out=out, resume=True))
    assert again.epochs_run == 2
    assert [r["lr"] for r in again.metrics if r["epoch"] == 3][0] == pytest.approx(0.01)
    assert again.metrics == ref.metrics


def test_out_under_a_file_is_refused_before_loading_data(tmp_path, monkeypatch, tiny_run):
    import resnet_pfc.data as D

    (tmp_path / "afile").write_text("x")

    def no_data(*a, **k):
        raise AssertionError("data loaded before the --out check")

    monkeypatch.setattr(D, "load_dataset", no_data)
    with pytest.raises(InputError, match="which is a file"):
        train(TrainConfig(**tiny_run, epochs=1, out=str(tmp_path / "afile" / "run")))
    with pytest.raises(CheckpointError, match="is a file"):
        train(TrainConfig(**tiny_run, epochs=1, out=str(tmp_path / "afile")))


def test_damaged_metrics_csv_is_a_clear_error(tmp_path, capsys):
    run = tmp_path / "bad"
    run.mkdir()
    (run / "metrics.csv").write_text("epoch,split\n1,train,extra\n")
    with pytest.raises(InputError, match="line 2 has 3 cells for 2 columns"):
        read_csv(run / "metrics.csv")
    (run / "metrics.csv").write_text("epoch,split,layer\n1,train\n")
    with pytest.raises(InputError, match="malformed"):
        read_csv(run / "metrics.csv")
    assert main(["figures", str(run)]) == 2 and main(["report", str(run)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "malformed" in err
