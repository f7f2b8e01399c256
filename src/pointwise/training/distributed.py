"""Data-parallel training with ``torch.distributed``: process-group setup and helpers.

One machine, two processes (gloo on CPU)::

    torchrun --nproc_per_node=2 -m pointwise train nin_digits --data digits --distributed

``torchrun`` starts the processes and sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``; :func:`setup` reads them (``env://``). Each process
holds a full model wrapped in ``DistributedDataParallel``, which all-reduces (averages) the
gradients after every backward, and a ``DistributedSampler`` that gives rank r every W-th
sample of the epoch's shared permutation. With ``--batch-size B`` meaning the *global*
batch, each of the W ranks takes B/W samples per step, so one step sees the same samples as
one step of a single process with batch B, and (for a model without BatchNorm) the same
averaged gradient, up to float rounding. Rank 0 alone writes checkpoints and logs.

BatchNorm: each rank normalises with the statistics of its own B/W samples, so a model with
BN does not follow the single-process run exactly (``SyncBatchNorm`` would fix that, but
torch supports it only on GPUs). DDP broadcasts rank 0's running statistics at every
forward, so every rank evaluates the same model.

Many machines: run the same command on every node with a rendezvous point, e.g. 4 nodes of
8 processes::

    torchrun --nnodes=4 --nproc_per_node=8 --rdzv-backend=c10d \\
        --rdzv-endpoint=HOST0:29400 --rdzv-id=digits-run -m pointwise train ... --distributed

``--nnodes=2:4`` makes the job elastic (it starts with 2 nodes and accepts up to 4;
``--max-restarts`` restarts workers after a failure, and ``--resume`` picks up the last
checkpoint, so keep ``--out`` on storage every node sees). On GPUs the backend becomes
NCCL. Gloo needs the nodes to reach each other over TCP; set ``GLOO_SOCKET_IFNAME`` to the
network interface when a host has several.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

__all__ = ["Context", "all_mean", "barrier", "setup", "teardown"]


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``rank`` of ``world_size``; rank 0 writes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1 or dist.is_initialized()


def setup(device: str = "cpu", timeout_s: float = 300.0) -> Context:
    """Join the process group that ``torchrun`` described in the environment.

    Raises:
        ValueError: the environment has no ``RANK``/``WORLD_SIZE`` (not started by
            ``torchrun``).
    """
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")
               if k not in os.environ]
    if missing:
        raise ValueError(f"expected torchrun's environment for --distributed, but "
                           f"{', '.join(missing)} are unset; start with `torchrun "
                           f"--nproc_per_node=2 -m pointwise train ... --distributed`")
    if not dist.is_initialized():
        backend = "nccl" if device.startswith("cuda") else "gloo"
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s))
    return Context(dist.get_rank(), dist.get_world_size(),
                   int(os.environ.get("LOCAL_RANK", 0)))


def teardown() -> None:
    if dist.is_initialized():
        dist.barrier()  # rank 0 may still be writing; let nobody leave first
        dist.destroy_process_group()


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


def all_mean(ctx: Context, *values: float) -> list[float]:
    """The mean over ranks of each value (for the log; gradients are DDP's business)."""
    if not ctx.active:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t)
    return (t / ctx.world_size).tolist()
