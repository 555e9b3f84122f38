"""Process-group helpers: one process, or many under ``torchrun`` (gloo on CPU, NCCL on CUDA)."""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from harness.core.errors import VQBenchError, error_text


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
    check_device(device)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    dev = torch.device(f"cuda:{local}") if device == "cuda" else torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    # under torchrun even one process joins a group: parallel=fsdp then shards over it (a no-op split,
    # but the same code path and mixed-precision policy as on N GPUs)
    if (world > 1 or "TORCHELASTIC_RUN_ID" in os.environ) and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank, world, local, dev)


def leave_process_group(finished: bool = True) -> None:
    """Destroy the process group before the interpreter exits: a gloo group left to the interpreter's
    teardown can abort the process (SIGABRT, "terminate called without an active exception") after
    its work is done (pytorch/pytorch#190489). A rank that finished its work first waits (bounded) for
    the others before tearing its connections down (a peer closing its sockets while another rank still
    writes is the suspected cause of the 1-in-6 abort of rank 1 of two in CI); a rank that ``finished``
    False (it raised) leaves at once rather than wait for peers that may be stuck."""
    if not in_process_group():
        return
    # gloo only: NCCL's barrier has no timeout of its own (a peer that raised would leave it waiting
    # for the watchdog), and the abort seen was gloo's
    if finished and is_multi_process() and dist.get_backend() == "gloo":
        try:
            dist.monitored_barrier(timeout=timedelta(seconds=LEAVE_TIMEOUT_S))
        except (RuntimeError, dist.DistError):      # a peer that died: leave anyway
            pass
    dist.destroy_process_group()


LEAVE_TIMEOUT_S = 600


def check_device(device: str) -> None:
    """Refuse a --device this machine cannot run on, before any work starts."""
    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise VQBenchError(f"--device {device!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise VQBenchError(f"--device {device}: no CUDA device is available here; use --device cpu (or auto)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise VQBenchError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        available = {"mps": torch.backends.mps.is_available()}.get(dev.type, False)
        if not available:
            raise VQBenchError(f"--device {device}: not available here; use auto, cpu or cuda")


def barrier(d: Dist | None = None) -> None:
    """Wait for every process of the running group (one process: return at once)."""
    if d.enabled if d is not None else is_multi_process():
        dist.barrier()


def on_main_then_all(work, main: bool, what: str, d: Dist | None = None):
    """Run ``work`` on the main process and return its result there (None on the others); if it failed,
    every process raises (none is left waiting in a collective for a process that stopped). ``d`` None:
    the running process group, if any."""
    failure = result = None
    if main:
        try:
            result = work()
        except (OSError, VQBenchError) as e:
            failure = e if isinstance(e, VQBenchError) else VQBenchError(f"{what} ({error_text(e)})")
    if not all_true(failure is None, d):
        raise failure or VQBenchError(f"{what} on the main process (its error says why)")
    return result


def all_true(flag: bool, d: Dist | None = None) -> bool:
    """True only if ``flag`` is true on every rank (so all ranks stop together); ``d`` None: the running
    process group, if any."""
    if not (d.enabled if d is not None else is_multi_process()):
        return flag
    device = d.device if d is not None else _collective_device()
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def max_over_ranks(value: int) -> int:
    """The largest ``value`` of any rank of the running group (one process: ``value``)."""
    if not is_multi_process():
        return value
    t = torch.tensor([value], dtype=torch.int64, device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def collective_device(d: Dist) -> torch.device:
    """Where ``d``'s collectives take their tensors (NCCL: this process's GPU; gloo: the CPU)."""
    return d.device if d.device.type == "cuda" else torch.device("cpu")


def _collective_device() -> torch.device:
    """Where the running group's collectives take their tensors (NCCL: this process's GPU)."""
    return torch.device("cuda", torch.cuda.current_device()) if dist.get_backend() == "nccl" else torch.device("cpu")


def shard_batches(n: int, batch_size: int, d: Dist) -> list[range]:
    """Split 0..n-1 into consecutive batches and deal them round-robin to ranks.

    Every image lands in the same batch whatever the world size, so per-image results (and hence
    every metric) are bit-identical between one process and many.
    """
    batches = [range(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    return batches[d.rank::d.world_size]


def gather_rows(t: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's rows (rank order; sizes may differ); the tensor itself in one process."""
    if not is_multi_process():
        return t
    device = _collective_device() if dist.get_backend() == "nccl" else t.device
    t = t.to(device)
    sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, torch.tensor([len(t)], dtype=torch.int64, device=device))
    sizes = [int(s) for s in sizes]
    padded = torch.zeros((max(sizes), *t.shape[1:]), dtype=t.dtype, device=device)
    padded[:len(t)] = t
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([p[:n] for p, n in zip(parts, sizes)]).cpu()


def is_multi_process() -> bool:
    """Whether a process group with more than one rank is running (torchrun)."""
    return in_process_group() and dist.get_world_size() > 1


def in_process_group() -> bool:
    """Whether this process has joined a process group (torchrun), of any size."""
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    """Rank 0 of the running process group, or the only process (the one that writes shared files)."""
    return not is_multi_process() or dist.get_rank() == 0


def batch_image_ids(image_ids: torch.Tensor | None, seen: int, n: int, what: str) -> torch.Tensor:
    """The rows in the split of a batch's n images, for metrics that keep per-image rows: the batch's
    ``image_ids``, or in one process the running count ``seen .. seen + n``."""
    if image_ids is not None:
        return image_ids.cpu().long()
    if is_multi_process():
        raise VQBenchError(f"{what} under DDP needs EvalBatch.image_ids to order the images")
    return torch.arange(seen, seen + n)


def check_distinct_ids(ids: torch.Tensor, what: str) -> None:
    """A padded sampler that shows an image twice would silently double-count it."""
    if len(ids.unique()) != len(ids):
        raise VQBenchError(f"{what} saw an image id twice; batches must carry distinct image_ids")
