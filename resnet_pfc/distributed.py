"""torch.distributed set-up for data-parallel training (launched by ``torchrun``).

``torchrun --nproc_per_node P -m resnet_pfc train ...`` sets ``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them and initialises the
default process group (``gloo`` on CPU, ``nccl`` on CUDA). Without those variables everything runs
in one process.

How a P-process run reproduces the one-process run (up to float round-off):

* **Sample order.** Both use :class:`torch.utils.data.DistributedSampler` with the same seed
  (the one-process run with one replica), so epoch ``e`` uses the permutation drawn from
  ``seed + e``; rank ``r`` takes positions ``r, r + P, ...`` of it, and with a per-rank batch of
  ``batch_size / P`` the union of the ranks' ``s``-th batches is exactly the one-process ``s``-th
  batch. ``batch_size`` must be divisible by ``P``. When ``N`` is not divisible by ``P`` the
  sampler repeats up to ``P - 1`` samples per epoch (standard DDP behaviour), the only source of
  a deliberate difference.
* **Gradients.** Each rank's loss is the mean over its local batch; DDP averages gradients over
  ranks, which is the mean over the global batch when the local batches are of equal size.
* **Batch norm.** On CUDA the model's batch norms become ``SyncBatchNorm`` (statistics over the
  global batch, as in one process). ``SyncBatchNorm`` does not run on CPU, so CPU runs normalise
  with each rank's local batch statistics and DDP broadcasts rank 0's running statistics; the
  fully connected models have no batch norm and match exactly.
* **Measurement.** Every rank measures a disjoint shard (positions ``r, r + P, ...``) in
  ``eval()`` mode, where a sample's features do not depend on its batch; the accumulators are
  reduced with ``all_reduce`` after each pass, so all ranks hold the metrics of the whole set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

from ufm.errors import BackendError

__all__ = [
    "DistContext",
    "setup",
]


def world_size_from_env() -> int:
    """``WORLD_SIZE`` from the environment (1 when unset)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@dataclass
class DistContext:
    """Rank, world size and device of this process."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def group(self) -> Any:
        return dist.group.WORLD if self.distributed else None

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def cleanup(self) -> None:
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()
            self.initialized_here = False


def setup(device: str = "cpu") -> DistContext:
    """Initialise the process group from torchrun's environment and pick the device.

    Parameters
    ----------
    device : str
        ``"cpu"``, ``"cuda"`` (each rank uses ``cuda:LOCAL_RANK``) or ``"cuda:N"``.

    Raises
    ------
    BackendError
        CUDA asked for but not available.
    """
    world = world_size_from_env()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(device)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BackendError(f"device={device!r} but CUDA is not available; use --device cpu")
        if world > 1 or dev.index is None:
            dev = torch.device("cuda", local if world > 1 else 0)
        torch.cuda.set_device(dev)
    elif dev.type != "cpu":
        raise BackendError(f"device must be 'cpu' or 'cuda[:N]', got {device!r}")
    here = False
    if world > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
        here = True
    if dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
    return DistContext(
        rank=rank, world_size=world, local_rank=local, device=dev, initialized_here=here
    )
