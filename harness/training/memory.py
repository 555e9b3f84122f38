"""Training memory per GPU under DDP and under FSDP on N GPUs, from a model's parameters.

The training state is fp32 weights, fp32 gradients and AdamW's two fp32 moments: 16 bytes per
parameter (bf16 autocast keeps fp32 master weights, so the same under ``precision=bf16``). DDP keeps
all of it on every GPU. FSDP keeps 1/N of it, as ``fully_shard`` lays it out (each parameter split in
N row blocks of ceil(rows / N), so the largest share is rank 0's), plus what it gathers while it
computes: the root unit's weights for the whole step and two shard units at a time (the one running
and the one prefetched) in bf16, and one unit's gradient before its reduce-scatter (bf16, then fp32).
Activations, the EMA copy (4 bytes per parameter when ``ema_decay`` > 0, sharded like the weights),
a tokenizer's discriminator and CUDA's own reserve are not counted: the numbers are a floor to plan
with, not a measurement.

The FSDP share is not a formula: the model, built on the meta device (nothing allocated), is sharded
by the training loop's own ``fully_shard_model`` over a fake process group of N ranks (the
stand-in torchtitan uses to plan sharding without GPUs), and rank 0's local parameters are counted.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

from torch import nn

from harness.core.errors import VQBenchError
from harness.training.sharding import fully_shard_model, shard_units

STATE_BYTES = 16             # fp32 weight + gradient + AdamW exp_avg + exp_avg_sq
GATHERED_BYTES = 2           # bf16 weights gathered for compute (MixedPrecisionPolicy on CUDA)
GRADIENT_BYTES = 2 + 4       # a unit's bf16 gradient and its fp32 copy for the reduce-scatter
GB = 1e9


@dataclass(frozen=True)
class MemoryPlan:
    parameters: int
    gpus: int
    fsdp_share: int          # parameters on the GPU that holds the most (rank 0)
    gathered_parameters: int  # root unit + two shard units, gathered at once
    largest_unit: int

    @property
    def ddp_gb(self) -> float:
        return self.parameters * STATE_BYTES / GB

    @property
    def fsdp_state_gb(self) -> float:
        return self.fsdp_share * STATE_BYTES / GB

    @property
    def fsdp_gathered_gb(self) -> float:
        return (self.gathered_parameters * GATHERED_BYTES + self.largest_unit * GRADIENT_BYTES) / GB

    @property
    def fsdp_gb(self) -> float:
        return self.fsdp_state_gb + self.fsdp_gathered_gb


def fsdp_share_on_meta(model: nn.Module, gpus: int) -> int:
    """Rank 0's parameter count once ``fully_shard_model`` has sharded ``model`` (on the meta device,
    modified in place) over ``gpus`` ranks of a fake process group."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore
    if any(not p.is_meta for p in model.parameters()):
        raise VQBenchError("the memory plan shards a model built on the meta device; this one holds real weights")
    if dist.is_initialized():
        raise VQBenchError("the memory plan needs a process of its own (a process group is running); "
                           "run `vqbench params --memory` without torchrun")
    dist.init_process_group("fake", store=FakeStore(), rank=0, world_size=gpus)
    try:
        fully_shard_model(model, bf16_params=False)
        return sum(p.to_local().numel() for p in model.parameters())
    finally:
        dist.destroy_process_group()


def plan(model: nn.Module, gpus: int) -> MemoryPlan:
    """The memory plan of training ``model`` (built on the meta device) on ``gpus`` GPUs."""
    total = sum(p.numel() for p in model.parameters())
    unit_sizes = [sum(p.numel() for p in u.parameters()) for u in shard_units(model)]
    largest = max(unit_sizes, default=0)
    root = total - sum(unit_sizes)
    share = fsdp_share_on_meta(copy.deepcopy(model), gpus) if gpus > 1 else total
    return MemoryPlan(total, gpus, share, root + min(2, len(unit_sizes)) * largest, largest)


def markdown_rows(name: str, plans: list[MemoryPlan]) -> list[str]:
    """One table row per GPU count: preset, parameters, GPUs, DDP GB/GPU, FSDP GB/GPU (state + gathered)."""
    return [f"| {name} | {p.parameters / 1e6:,.1f}M | {p.gpus} | {p.ddp_gb:.3g} | "
            f"{p.fsdp_gb:.3g} ({p.fsdp_state_gb:.3g} + {p.fsdp_gathered_gb:.3g}) |" for p in plans]


MARKDOWN_HEAD = ["| preset | parameters | GPUs | DDP: GB per GPU | FSDP: GB per GPU (sharded state + gathered) |",
                 "|---|---:|---:|---:|---:|"]
