"""The optimisation both training loops share: AdamW, linear warm-up then cosine (or constant)
learning rate, gradient clipping and an EMA of the weights, as in LlamaGen's and DiT's training
scripts; the loops differ only in what they compute the loss of."""
from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable, Iterable, Literal

import torch

from harness.core.arguments import (DECAY, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE,
                                    POSITIVE_INT, SEED)
from harness.core.errors import VQBenchError


def check_settings(cfg, rules: dict[str, tuple[Callable[[object], bool], str]]) -> None:
    """Raise ``--set key=value: key must be ...`` for the first field of ``cfg`` outside its rule."""
    for f in fields(cfg):
        if f.name in rules:
            ok, must = rules[f.name]
            value = getattr(cfg, f.name)
            if not ok(value):
                raise VQBenchError(f"--set {f.name}={value}: {f.name} must be {must}")


def chain_post_init(cls, obj) -> None:
    """Run the ``__post_init__`` of the classes after ``cls`` in ``obj``'s MRO (cooperative validation
    of dataclasses that combine several settings classes)."""
    parent = getattr(super(cls, obj), "__post_init__", None)
    if parent is not None:
        parent()


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
    parallel: Literal["ddp", "fsdp"] = "ddp"   # fsdp: shard weights, gradients and AdamW state (sharding.py)
    activation_checkpointing: bool = False     # recompute each block's forward in the backward

    RULES = {"steps": POSITIVE_INT, "batch_size": POSITIVE_INT, "lr": POSITIVE, "weight_decay": NON_NEGATIVE,
             "beta1": DECAY, "beta2": DECAY, "warmup_steps": NON_NEGATIVE_INT, "grad_clip": NON_NEGATIVE,
             "ema_decay": DECAY, "ckpt_every": POSITIVE_INT, "log_every": POSITIVE_INT, "seed": SEED}

    def __post_init__(self):
        check_settings(self, OptimizerConfig.RULES)
        chain_post_init(OptimizerConfig, self)

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
                   max_norm: float, scaler: torch.amp.GradScaler | None = None,
                   guard=None, name: str = "model") -> None:
    """Backward, clip ``module``'s gradient norm to ``max_norm`` (0: no clipping), step. With a
    ``scaler`` (fp16) the loss is scaled and the gradients unscaled before clipping; the caller
    runs ``scaler.update()`` once all of a step's optimizers have stepped. A ``guard``
    (``runtime.FiniteGuard``) records the unscaled gradients before clipping and the weights after
    the step, under ``name`` (the module's name in checkpoints); the caller runs ``guard.check``."""
    opt.zero_grad(set_to_none=True)
    (scaler.scale(loss) if scaler is not None else loss).backward()
    if scaler is not None:
        scaler.unscale_(opt)
    if guard is not None:
        guard.gradients(name, module)
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
    if scaler is not None:
        scaler.step(opt)
    else:
        opt.step()
    if guard is not None:
        guard.weights(name, module)


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
