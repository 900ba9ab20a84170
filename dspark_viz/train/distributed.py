"""Data parallelism for training: the process group ``torchrun`` describes, and its collectives.

Scope: ``Dist`` (rank, world size, local rank), joining and leaving the process group (NCCL on
GPU, gloo on CPU), and the three collectives the loop needs — a summing all-reduce, a broadcast
of rank 0's parameters and a barrier — each a no-op for one rank. Not here: what is reduced
(``trainer.py``).
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from dspark_viz.train.config import TrainError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


def init_distributed() -> Dist:
    """Join the process group that ``torchrun`` describes (env WORLD_SIZE > 1), else 1 rank."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Dist()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
    d = Dist(rank=dist.get_rank(), world=dist.get_world_size(),
             local_rank=int(os.environ.get("LOCAL_RANK", "0")))
    if torch.cuda.is_available() and d.local_rank >= torch.cuda.device_count():
        raise TrainError(f"local rank {d.local_rank} has no GPU ({torch.cuda.device_count()} visible): "
                         f"start one process per GPU, or set CUDA_VISIBLE_DEVICES= to train on the CPU")
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // d.world))
    return d


def close_distributed(d: Dist) -> None:
    """Leave the process group (a no-op for one rank). Without it, gloo's worker threads can
    outlive the interpreter's teardown and abort the process at exit ("terminate called without
    an active exception") after a finished run."""
    if d.world <= 1:
        return
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce(t: torch.Tensor, d: Dist) -> torch.Tensor:
    """Sum ``t`` over the ranks in place (and return it)."""
    if d.world > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def broadcast_parameters(module: torch.nn.Module, d: Dist) -> None:
    """Every rank takes rank 0's parameter values."""
    if d.world > 1:
        for p in module.parameters():
            dist.broadcast(p.data, 0)


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()
