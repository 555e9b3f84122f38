"""The optimisation both training loops share: AdamW, linear warm-up then cosine (or constant)
learning rate, gradient clipping and an EMA of the weights, as in LlamaGen's and DiT's training
scripts; the loops differ only in what they compute the loss of."""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal

import torch


@dataclass(frozen=True)
class OptimizerConfig:
    """The settings every training run has: AdamW, LR schedule, clipping, EMA, cadence and seed."""
    steps: int = 1000
    batch_size: int = 32                 # per process
    lr: float = 1e-4
    weight_decay: float = 0.0
    beta1: float = 0.9
    beta2: float = 0.95
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 0
    grad_clip: float = 1.0               # 0 disables clipping
    ema_decay: float = 0.0               # 0 disables EMA
    ckpt_every: int = 500
    log_every: int = 10
    seed: int = 0

    def log_due(self, step: int) -> bool:
        """Whether the scalars of 0-based ``step`` are logged (every ``log_every`` steps and the last)."""
        return (step + 1) % self.log_every == 0 or step + 1 == self.steps

    def checkpoint_due(self, step: int) -> bool:
        """Whether a checkpoint is written after 0-based ``step`` (every ``ckpt_every`` steps and the last)."""
        return (step + 1) % self.ckpt_every == 0 or step + 1 == self.steps


def lr_at(step: int, tc: OptimizerConfig) -> float:
    if tc.warmup_steps and step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "constant":
        return tc.lr
    progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    return tc.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def adamw(params: Iterable[torch.nn.Parameter], tc: OptimizerConfig) -> torch.optim.AdamW:
    return torch.optim.AdamW(params, lr=tc.lr, betas=(tc.beta1, tc.beta2), weight_decay=tc.weight_decay)


def set_lr(optimizers: Iterable[torch.optim.Optimizer | None], lr: float) -> None:
    for opt in optimizers:
        if opt is not None:
            for group in opt.param_groups:
                group["lr"] = lr


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, module: torch.nn.Module,
                   max_norm: float, scaler: torch.amp.GradScaler | None = None) -> None:
    """Backward, clip ``module``'s gradient norm to ``max_norm`` (0: no clipping), step. With a
    ``scaler`` (fp16) the loss is scaled and the gradients unscaled before clipping; the caller
    runs ``scaler.update()`` once all of a step's optimizers have stepped."""
    opt.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(opt)
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
    if scaler is not None:
        scaler.step(opt)
    else:
        opt.step()


class EMA:
    """Exponential moving average of a model's floating-point state (buffers of other types copied)."""

    def __init__(self, model: torch.nn.Module, decay: float):
        self.decay = decay
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: torch.nn.Module) -> None:
        for k, v in model.state_dict().items():
            if v.dtype.is_floating_point:
                self.shadow[k].lerp_(v, 1.0 - self.decay)
            else:
                self.shadow[k].copy_(v)


def build_ema(model: torch.nn.Module, tc: OptimizerConfig) -> EMA | None:
    return EMA(model, tc.ema_decay) if tc.ema_decay > 0 else None
