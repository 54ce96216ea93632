"""Two CPU processes (gloo, launched by torchrun) give the single-process metrics."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch.distributed as dist

from resnet_pfc.runs import read_csv

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(
    not dist.is_available() or not dist.is_gloo_available(),
    reason="torch.distributed with gloo is not available",
)
def test_ddp_two_processes_match_single_process(tmp_path, tiny_run, to_argv):
    opts = {**tiny_run, "epochs": 3, "eval_test": True, "eval_batch_size": 16, "dtype": "float64"}
    args = ["train", *to_argv(opts)]
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(k, None)
    single = subprocess.run(
        [sys.executable, "-m", "resnet_pfc", *args, "--out", str(tmp_path / "one")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert single.returncode == 0, single.stderr
    ddp = subprocess.run(
        [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            "2",
            "-m",
            "resnet_pfc",
            *args,
            "--out",
            str(tmp_path / "two"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert ddp.returncode == 0, ddp.stdout + ddp.stderr
    for name in ("metrics.csv", "geodesic.csv"):
        a = read_csv(tmp_path / "one" / name)
        b = read_csv(tmp_path / "two" / name)
        assert len(a) == len(b) > 0
        for ra, rb in zip(a, b, strict=True):
            assert ra.keys() == rb.keys()
            for k, va in ra.items():
                vb = rb[k]
                if isinstance(va, float) and isinstance(vb, float):
                    # float64 training: only the order of sums differs (gradient all-reduce,
                    # Chan merges of the two shards)
                    np.testing.assert_allclose(vb, va, rtol=1e-9, atol=1e-12, err_msg=k)
                else:
                    assert va == vb, (k, va, vb)
    cfg = (tmp_path / "two" / "config.json").read_text()
    assert '"world_size": 2' in cfg
