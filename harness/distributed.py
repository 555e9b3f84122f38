"""Process-group helpers: one process, or many under ``torchrun`` (gloo on CPU, NCCL on CUDA)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup(device: str = "auto") -> Dist:
    """Join the process group torchrun describes in the environment (idempotent)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local}") if device == "cuda" else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local, dev)


def barrier(d: Dist) -> None:
    if d.enabled:
        dist.barrier()


def all_true(flag: bool, d: Dist) -> bool:
    """True only if ``flag`` is true on every rank (so all ranks stop together)."""
    if not d.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def shard_batches(n: int, batch_size: int, d: Dist) -> list[range]:
    """Split 0..n-1 into consecutive batches and deal them round-robin to ranks.

    Every image lands in the same batch whatever the world size, so per-image results (and hence
    every metric) are bit-identical between one process and many.
    """
    batches = [range(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    return batches[d.rank::d.world_size]
