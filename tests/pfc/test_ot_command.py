"""`pfc ot RUN_DIR`: the optimal-transport profile of a trained run's layers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from pfc.cli import main

pytest.importorskip("ot")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ot") / "run"
    argv = ["train", "--dataset", "digits", "--epochs", "2", "--blocks", "3", "--width", "16"]
    assert main([*argv, "--lr", "0.01", "--out", str(out), "--threads", "1"]) == 0
    return out


def test_ot_command_prints_and_writes_the_profile(run_dir, tmp_path, capsys):
    from pfc.features import load_run_features
    from ufm import ot_profile

    js = tmp_path / "ot.json"
    assert main(["ot", str(run_dir), "--max-samples", "150", "--json", str(js)]) == 0
    out = capsys.readouterr().out
    assert "150 of 1347 training samples" in out and "geodesic check (Theorem 3)" in out
    doc = json.loads(js.read_text())
    feats, _, _ = load_run_features(run_dir)
    ref = ot_profile(feats, max_samples=150, seed=0)
    np.testing.assert_allclose(doc["summary"]["total_w2sq"], ref.total_w2sq, rtol=1e-12)
    assert [r["layer"] for r in doc["layers"]] == list(ref.layers)
    assert doc["summary"]["n_samples"] == 150


def test_ot_command_bad_options_exit_2(run_dir, capsys):
    # refused at parse time, naming the option (its bounds come from pfc.options.OTOptions)
    with pytest.raises(SystemExit) as exc:
        main(["ot", str(run_dir), "--max-samples", "1"])
    assert exc.value.code == 2 and "argument --max-samples" in capsys.readouterr().err


def test_pfc_report_and_reading_the_runs_csv_leave_torch_out(run_dir):
    # issue 21: `pfc report` and reading a run's CSV need no torch
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    code = (
        "import sys\nfrom pfc.cli import main\nfrom resnet_pfc.runs import read_csv\n"
        f"assert main(['report', {str(run_dir)!r}]) == 0\n"
        f"assert read_csv({str(run_dir / 'metrics.csv')!r})\n"
        "print('torch' in sys.modules)"
    )
    env = {**os.environ, "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
