"""all_reduce of the streaming statistics across real processes (a two-rank gloo group): each
rank feeds its shard, and after all_reduce every rank holds what one process feeding all the
data holds (SufficientStatistics, CollapseAccumulator in both passes, LineAccumulator), so the
packing and unpacking that the state declarations drive are checked against a plain pass."""

from __future__ import annotations

import pickle
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from ufm import SufficientStatistics
from ufm.metrics import CollapseAccumulator, LineAccumulator

K, N, D = 3, 40, 5
TS = (0.0, 0.5, 1.0)


def _data():
    rng = np.random.default_rng(0)
    y = np.arange(N) % K
    A = rng.standard_normal((N, D)) + 3.0 * np.eye(K, D)[y]
    # the second shard at another scale: the accumulators' units must be reconciled
    A[N // 2 :] *= 2.0**40
    B = 0.5 * A + 0.1 * rng.standard_normal((N, D))
    return A, B, y


def _feed(rows: slice):
    A, B, y = _data()
    st = SufficientStatistics(K).update(A[rows], y[rows])
    acc = CollapseAccumulator(K).update(A[rows], y[rows])
    line = LineAccumulator(K, TS).update(A[rows], B[rows], y[rows])
    return st, acc, line


def _results(st, acc, line) -> dict:
    return {"st": st.state_dict(), "acc1": acc.compute(), "line1": line.compute()}


def _worker(rank: int, init: str, out: str) -> None:
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        half = slice(0, N // 2) if rank == 0 else slice(N // 2, N)
        st, acc, line = _feed(half)
        st.all_reduce()
        acc.all_reduce()
        line.all_reduce()
        res = _results(st, acc, line)
        # pass 2 over the same shard, against the frozen merged means
        A, B, y = _data()
        acc.end_first_pass().update(A[half], y[half]).all_reduce()
        line.end_first_pass().update(A[half], B[half], y[half]).all_reduce()
        res |= {"acc2": acc.compute(), "line2": line.compute()}
        Path(out, f"rank{rank}.pkl").write_bytes(pickle.dumps(res))
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
@pytest.mark.skipif(sys.platform == "win32", reason="file:// process-group init")
def test_all_reduce_of_two_ranks_equals_one_pass(tmp_path):
    init = f"file://{tmp_path / 'pg'}"
    mp.spawn(_worker, args=(init, str(tmp_path)), nprocs=2, join=True)
    st, acc, line = _feed(slice(0, N))
    want = _results(st, acc, line)
    A, B, y = _data()
    acc.end_first_pass().update(A, y)
    line.end_first_pass().update(A, B, y)
    want |= {"acc2": acc.compute(), "line2": line.compute()}
    for rank in (0, 1):
        got = pickle.loads((tmp_path / f"rank{rank}.pkl").read_bytes())
        for name in ("counts", "sums", "sq", "second"):
            np.testing.assert_allclose(got["st"][name], want["st"][name], rtol=1e-12, err_msg=name)
        for part in ("acc1", "acc2", "line1", "line2"):
            assert set(got[part]) == set(want[part]), part
            for k, v in want[part].items():
                np.testing.assert_allclose(got[part][k], v, rtol=1e-9, err_msg=f"{part} {k}")
    assert torch.get_num_threads() >= 1
