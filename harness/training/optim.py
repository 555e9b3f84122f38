"""The optimisation both training loops share: AdamW (or Adam), linear warm-up, an optional hold at
the peak, then cosine or linear decay to a floor (or a constant) learning rate, weight decay on every
parameter or on matrices only, gradient clipping and an EMA of the weights, as in LlamaGen's and DiT's
training scripts; the loops differ only in what they compute the loss of. The papers' recipes
(harness.core.recipes) set these."""
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
    """The settings every training run has: optimizer, LR schedule, clipping, EMA, cadence and seed."""
    steps: int = 1000
    batch_size: int = 32                 # per process
    global_batch_size: int = 0           # > 0: split evenly over the processes, and batch_size is unused
    optimizer: Literal["adamw", "adam"] = "adamw"   # adam: torch.optim.Adam, weight decay added to the gradient
    lr: float = 1e-4
    weight_decay: float = 0.0
    decay_norms_and_biases: bool = True  # False: no weight decay on 1-D parameters (biases, norm gains)
    beta1: float = 0.9
    beta2: float = 0.95
    lr_schedule: Literal["cosine", "constant", "linear"] = "cosine"
    min_lr: float = 0.0                  # where the cosine or linear decay ends
    warmup_steps: int = 0
    lr_hold_steps: int = 0               # steps at the peak LR after the warm-up, before the decay starts
    grad_clip: float = 1.0               # 0 disables clipping
    ema_decay: float = 0.0               # 0 disables EMA
    ckpt_every: int = 500
    log_every: int = 10
    seed: int = 0
    parallel: Literal["ddp", "fsdp"] = "ddp"   # fsdp: shard weights, gradients and AdamW state (sharding.py)
    activation_checkpointing: bool = False     # recompute each block's forward in the backward

    RULES = {"steps": POSITIVE_INT, "batch_size": POSITIVE_INT, "global_batch_size": NON_NEGATIVE_INT,
             "lr": POSITIVE, "weight_decay": NON_NEGATIVE, "beta1": DECAY, "beta2": DECAY,
             "min_lr": NON_NEGATIVE, "warmup_steps": NON_NEGATIVE_INT, "lr_hold_steps": NON_NEGATIVE_INT,
             "grad_clip": NON_NEGATIVE, "ema_decay": DECAY, "ckpt_every": POSITIVE_INT,
             "log_every": POSITIVE_INT, "seed": SEED}

    def __post_init__(self):
        check_settings(self, OptimizerConfig.RULES)
        if self.min_lr > self.lr:
            raise VQBenchError(f"--set min_lr={self.min_lr}: min_lr must be at most lr ({self.lr})")
        chain_post_init(OptimizerConfig, self)

    def log_due(self, step: int) -> bool:
        """Whether the scalars of 0-based ``step`` are logged (every ``log_every`` steps and the last)."""
        return (step + 1) % self.log_every == 0 or step + 1 == self.steps

    def checkpoint_due(self, step: int) -> bool:
        """Whether a checkpoint is written after 0-based ``step`` (every ``ckpt_every`` steps and the last)."""
        return (step + 1) % self.ckpt_every == 0 or step + 1 == self.steps


def per_process_batch(tc: OptimizerConfig, world_size: int) -> int:
    """The batch each process draws: ``global_batch_size / world_size`` when it is set, else ``batch_size``."""
    if not tc.global_batch_size:
        return tc.batch_size
    if tc.global_batch_size % world_size:
        raise VQBenchError(f"--set global_batch_size={tc.global_batch_size}: not divisible by the {world_size} "
                           "processes; choose a multiple of them, or set batch_size (per process) instead")
    return tc.global_batch_size // world_size


def lr_at(step: int, tc: OptimizerConfig) -> float:
    if tc.warmup_steps and step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    decay_start = tc.warmup_steps + tc.lr_hold_steps
    if tc.lr_schedule == "constant" or step < decay_start:
        return tc.lr
    progress = min(1.0, (step - decay_start) / max(1, tc.steps - decay_start))
    shape = 0.5 * (1.0 + math.cos(math.pi * progress)) if tc.lr_schedule == "cosine" else 1.0 - progress
    return tc.min_lr + (tc.lr - tc.min_lr) * shape


def param_groups(params: torch.nn.Module | Iterable[torch.nn.Parameter], tc: OptimizerConfig) -> list:
    """The parameters, or with ``decay_norms_and_biases`` off two groups: matrices (and embeddings,
    convolutions) with weight decay, 1-D parameters (biases, norm gains) without, as LlamaGen's and
    nanoGPT's ``configure_optimizers`` split them by dimension."""
    params = list(params.parameters() if isinstance(params, torch.nn.Module) else params)
    if tc.decay_norms_and_biases:
        return params
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    return [g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0}) if g["params"]]


def adamw(params: torch.nn.Module | Iterable[torch.nn.Parameter], tc: OptimizerConfig) -> torch.optim.Optimizer:
    """The optimizer of ``tc`` over a module's (or an iterable's) parameters: AdamW (decoupled weight
    decay) or, ``optimizer=adam``, Adam (weight decay added to the gradient), grouped by ``param_groups``."""
    cls = torch.optim.Adam if tc.optimizer == "adam" else torch.optim.AdamW
    return cls(param_groups(params, tc), lr=tc.lr, betas=(tc.beta1, tc.beta2), weight_decay=tc.weight_decay)


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
