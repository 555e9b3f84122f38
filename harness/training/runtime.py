"""How a training step runs on one process or many: mixed precision, DDP wrapping, and the guard
that stops every rank together on a non-finite loss."""
from __future__ import annotations

import contextlib
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from harness.core.distributed import Dist, all_true
from harness.core.errors import VQBenchError

AMP_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def check_precision(precision: str, d: Dist) -> None:
    if AMP_DTYPES[precision] is torch.float16 and d.device.type != "cuda":
        raise VQBenchError("--set precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU")


def autocast(precision: str, d: Dist) -> contextlib.AbstractContextManager:
    """The forward pass's autocast context: bf16/fp16 when asked, a no-op for fp32."""
    dtype = AMP_DTYPES[precision]
    return torch.autocast(d.device.type, dtype=dtype or torch.float32, enabled=dtype is not None)


def grad_scaler(precision: str) -> torch.amp.GradScaler:
    """Loss scaling for fp16 (bf16 and fp32 need none: the scaler is then a pass-through)."""
    return torch.amp.GradScaler(enabled=AMP_DTYPES[precision] is torch.float16)


def wrap_ddp(module: torch.nn.Module | None, d: Dist, find_unused_parameters: bool = False):
    """``module`` under DDP (gradients averaged over processes) when several run, else itself."""
    if module is None or not d.enabled:
        return module
    return DDP(module, find_unused_parameters=find_unused_parameters)


def stop_if_not_finite(loss: torch.Tensor, terms: dict[str, torch.Tensor], step: int, what: str,
                       last_checkpoint: Path | None, d: Dist) -> None:
    """Raise on every rank if ``loss`` is NaN or infinite on any rank, naming the step, the loss
    terms and the last checkpoint written before it (the one to resume or inspect)."""
    if all_true(bool(torch.isfinite(loss)), d):
        return
    where = (f"; the last good checkpoint is {last_checkpoint}" if last_checkpoint
             else "; no checkpoint was written yet")
    values = ", ".join(f"{k}={float(v.detach()):.4g}" for k, v in terms.items())
    raise VQBenchError(f"non-finite {what} at step {step} ({values}){where}")
