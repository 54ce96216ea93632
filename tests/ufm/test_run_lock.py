"""One writer per output folder: ``ufm.io.run_lock`` and the commands that take it
(``pfc train``, ``pfc demo``, ``pfc depth``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ufm.errors import CheckpointError, InputError
from ufm.io import LOCK_NAME, run_lock

ROOT = Path(__file__).resolve().parents[2]


def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_lock_is_taken_and_released(tmp_path):
    out = tmp_path / "a" / "run"
    with run_lock(out) as lock:
        assert lock == out / LOCK_NAME and lock.is_file()
        assert lock.read_text().split("\n")[0] == str(os.getpid())
    assert not lock.exists() and out.is_dir()


def test_second_writer_is_refused_and_the_first_keeps_its_lock(tmp_path):
    with run_lock(tmp_path, command="pfc train") as lock:
        with pytest.raises(CheckpointError, match=rf"process {os.getpid()}.*pfc train"):
            with run_lock(tmp_path, command="pfc train"):
                pass  # pragma: no cover
        assert lock.is_file()  # the refused writer did not remove the holder's lock
    assert not lock.exists()


def test_lock_released_on_error_and_interrupt(tmp_path):
    for exc in (RuntimeError("boom"), KeyboardInterrupt()):
        with pytest.raises(type(exc)), run_lock(tmp_path):
            raise exc
        assert not (tmp_path / LOCK_NAME).exists()


def test_stale_lock_of_a_dead_process_is_replaced(tmp_path):
    (tmp_path / LOCK_NAME).write_text(f"{_dead_pid()}\n{platform.node()}\n\n")
    with run_lock(tmp_path) as lock:
        assert lock.read_text().split("\n")[0] == str(os.getpid())


def test_lock_of_a_reused_pid_is_stale(tmp_path):
    # the pid runs (it is ours) but started at another time: the writer is gone
    (tmp_path / LOCK_NAME).write_text(f"{os.getpid()}\n{platform.node()}\n1\n")
    if not Path(f"/proc/{os.getpid()}/stat").is_file():
        pytest.skip("no /proc: start times unknown")
    with run_lock(tmp_path) as lock:
        assert lock.read_text().split("\n")[0] == str(os.getpid())


@pytest.mark.parametrize("text", ["", "garbage\n", f"{os.getpid()}\nother-host\n\n"])
def test_unreadable_or_foreign_lock_is_refused_with_the_way_out(tmp_path, text):
    (tmp_path / LOCK_NAME).write_text(text)
    with pytest.raises(CheckpointError, match="delete the lock file"):
        with run_lock(tmp_path):
            pass  # pragma: no cover
    assert (tmp_path / LOCK_NAME).read_text() == text


def test_lock_on_a_file_is_an_input_error(tmp_path):
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        with run_lock(tmp_path / "f"):
            pass  # pragma: no cover


def test_two_train_processes_into_one_out(tmp_path):
    """A second ``pfc train`` into a folder another process is writing exits 2, names the
    holder and leaves the folder as it was."""
    out = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom ufm.io import run_lock\n"
         f"with run_lock({str(out)!r}):\n    print('held', flush=True)\n    time.sleep(60)"],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in out.iterdir())
        argv = ["-m", "pfc", "train", "--dataset", "digits", "--epochs", "1", "--out", str(out)]
        r = subprocess.run(
            [sys.executable, *argv, "--per-class", "5", "--no-progress", "--no-figures"],
            capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
            timeout=300,
        )  # fmt: skip
        assert r.returncode == 2, r.stderr
        assert f"process {holder.pid}" in r.stderr and "Traceback" not in r.stderr
        assert sorted(p.name for p in out.iterdir()) == before == [LOCK_NAME]
    finally:
        holder.kill()
        holder.wait()
    # the holder was killed: its lock is stale and the next run takes it over
    t0 = time.perf_counter()
    from resnet_pfc import train

    res = train(dataset="digits", epochs=1, per_class=5, out=str(out), progress=False,
                figures=False, blocks=1, width=16)  # fmt: skip
    assert res.epochs_run == 1 and not (out / LOCK_NAME).exists()
    assert time.perf_counter() - t0 < 120


def test_demo_and_depth_refuse_a_held_folder(tmp_path):
    from pfc.runner import run_study
    from resnet_pfc.depth import depth_config, depth_study

    out = tmp_path / "study"
    with run_lock(out):
        with pytest.raises(CheckpointError, match="pfc demo"):
            run_study(out=str(out), quick=True)
        with pytest.raises(CheckpointError, match="pfc depth"):
            depth_study(depth_config("tiny", out=str(out)))
    assert sorted(p.name for p in out.iterdir()) == []
