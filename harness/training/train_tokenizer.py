"""The tokenizer training loop: one readable loop for every tokenizer, one process or many.

Per step: the tokenizer's forward gives a reconstruction and its own quantization losses;
``VQLoss`` adds the pixel loss, LPIPS and, after ``disc_start``, the adversarial loss; AdamW (or
Adam) with warm-up then cosine, linear or constant LR and gradient clipping; optional EMA; then a
discriminator step. A preset's paper recipe (``TokenizerInfo.recipe``) sets the defaults the user's
``--set`` values override. The batch at step s, and with ``hflip`` which of its images are mirrored,
is a pure function of (seed, s), and checkpoints carry weights, optimizer moments and RNG states, so
``--resume`` after a kill ends with the same weights as an uninterrupted run.
"""
from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import torch

from harness.core.config import apply_overrides, config_hash, split_overrides, to_dict
from harness.core.distributed import setup
from harness.core.registry import TOKENIZERS
from harness.core.results import package_versions
from harness.data.datasets import open_dataset
from harness.models.catalog import build_tokenizer, tokenizer_config
from harness.training.batches import BatchOrder, mirror
from harness.training.codebook_init import init_codebook_from_data, wants_data_init
from harness.training.checkpointing import RunCheckpoints, TrainingState
from harness.training.losses import VQLoss, VQLossConfig
from harness.training.monitor import TrainLog
from harness.training.optim import (OptimizerConfig, adamw, build_ema, lr_at, optimizer_step, per_process_batch,
                                    set_lr)
from harness.training.runtime import (FiniteGuard, autocast, check_n_train, check_precision, check_start,
                                      grad_scaler, place, wrap_ddp)

ROLLING_USAGE_TOKENS = 65536   # LlamaGen's training-time usage window


@dataclass(frozen=True)
class TrainConfig(VQLossConfig, OptimizerConfig):
    """Tokenizer training: the optimizer settings, then the loss settings, then the precision and the
    augmentation. Constructing one checks every numeric setting's domain (``VQLossConfig``,
    ``OptimizerConfig``)."""
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"
    hflip: bool = False                  # mirror each training image with probability 1/2 (BatchOrder.flips)


class RollingCodebookUsage:
    """Share of the codebook used by the last ``ROLLING_USAGE_TOKENS`` training tokens (LlamaGen's
    training-time usage)."""

    def __init__(self, codebook_size: int):
        self.codebook_size, self.window = codebook_size, deque()

    @torch.no_grad()
    def __call__(self, indices: torch.Tensor) -> float:
        self.window.append(indices.detach().flatten().cpu())
        total = sum(t.numel() for t in self.window)
        while total - self.window[0].numel() >= ROLLING_USAGE_TOKENS:
            total -= self.window.popleft().numel()
        recent = torch.cat(list(self.window))[-ROLLING_USAGE_TOKENS:]
        return recent.unique().numel() / self.codebook_size


def train_tokenizer(preset: str, run_dir: Path, *, overrides: list[str] = (),
                    dataset: str = "fashion-mnist", n_train: int | None = None, resume: bool = False,
                    device: str = "auto", progress: bool = True) -> Path:
    """Train ``preset`` into ``run_dir``; returns the final checkpoint folder."""
    check_n_train(n_train)
    d = setup(device)
    # a preset may carry its paper's training recipe; the user's --set values come after and win
    overrides = TOKENIZERS.entry(preset).meta.recipe.with_overrides(overrides)
    model_over, train_over = split_overrides(overrides, tokenizer_config(preset), TrainConfig())
    tc = apply_overrides(TrainConfig(), train_over)
    check_precision(tc.precision, d)
    per_process_batch(tc, d.world_size)    # an indivisible global batch is refused before the run folder exists
    torch.manual_seed(tc.seed)             # the initial weights are a function of the seed
    model_cfg, model = build_tokenizer(preset, model_over)
    data_info = {"dataset": dataset, "split": "train", "n_train": n_train}
    run_info = {"kind": "tokenizer", "preset": preset, "family": model.family,
                "model_config": to_dict(model_cfg), "train_config": to_dict(tc), "data": data_info,
                "config_hash": config_hash(model_cfg, tc) + f"-{dataset}-{n_train or 'all'}",
                "world_size": d.world_size, "package_versions": package_versions()}
    with RunCheckpoints(run_dir, run_info, "preset, --set values and data", resume, d,
                        sharded=tc.parallel == "fsdp") as ckpts:
        return _train(model, tc, ckpts, run_dir, dataset, n_train, d, progress)


def replicated(tc: TrainConfig) -> TrainConfig:
    """The discriminator's parallel setting: DDP always. It is small (a few million weights), and the
    generator step switches its ``requires_grad`` off and on, which FSDP's gathered bf16 weights do
    not survive (the first GPU run of parallel=fsdp failed there)."""
    return replace(tc, parallel="ddp", activation_checkpointing=False)


def training_state(model, tc: TrainConfig, d) -> tuple[TrainingState, VQLoss]:
    """What a checkpoint holds, on ``d``'s device: the tokenizer (sharded under ``parallel=fsdp``), its
    loss's discriminator (replicated) and LeCam statistics, both optimizers and the EMA; and the loss."""
    loss_fn = VQLoss(tc, model.in_channels, model.resolution).to(d.device)
    disc = loss_fn.discriminator
    place(model, d, tc)                    # FSDP shards before the optimizers see the weights
    place(disc, d, replicated(tc))
    opt_g = adamw(model, tc)
    opt_d = adamw(disc, tc) if disc is not None else None
    return TrainingState({"model": model, "disc": disc, "lecam": loss_fn.lecam}, {"g": opt_g, "d": opt_d},
                         build_ema(model, tc)), loss_fn


def _train(model, tc: TrainConfig, ckpts: RunCheckpoints, run_dir: Path, dataset: str, n_train: int | None,
           d, progress: bool) -> Path:
    ds = open_dataset(dataset, "train", resolution=model.resolution, channels=model.in_channels, n=n_train)
    order = BatchOrder(len(ds), per_process_batch(tc, d.world_size), tc.seed, d)
    if wants_data_init(model):             # before sharding; a resumed run's checkpoint then replaces it
        init_codebook_from_data(model, ds, order, tc.seed, d)
    train_state, loss_fn = training_state(model, tc, d)
    (opt_g, opt_d), ema, disc = train_state.optimizers.values(), train_state.ema, loss_fn.discriminator
    start = ckpts.restore(train_state)
    check_start(start, tc.steps, ckpts.latest)
    if start == tc.steps:                  # a finished run resumed: nothing left to train
        return ckpts.latest

    scaler = grad_scaler(tc.precision)
    guard = FiniteGuard(d, tc.precision)
    model_ddp, disc_ddp = wrap_ddp(model, d, tc), wrap_ddp(disc, d, replicated(tc))
    log = TrainLog(run_dir, start, tc.steps, d, progress, desc="train")
    usage = RollingCodebookUsage(model.layout.max_codebook_size)
    t0 = time.time()
    try:                                   # the bar ends its line before any error message
        for step in range(start, tc.steps):
            lr = lr_at(step, tc)
            set_lr((opt_g, opt_d), lr)
            x, _ = ds.batch(order.indices(step))
            x = x.to(d.device, non_blocking=True)
            if tc.hflip:
                x = mirror(x, order.flips(step))
            with autocast(tc.precision, d):
                out = model_ddp(x)
                total, logs = loss_fn.generator_loss(x, out, model, step)
            guard.loss("training loss", total, logs)
            optimizer_step(total, opt_g, model, tc.grad_clip, scaler, guard, "model")
            if ema is not None:
                ema.update(model)
            if loss_fn.gan_active(step):
                with autocast(tc.precision, d):
                    d_total, d_logs = loss_fn.discriminator_loss(disc_ddp, x, out.reconstruction)
                logs |= d_logs
                guard.loss("discriminator loss", d_total, d_logs)
                optimizer_step(d_total, opt_d, disc, tc.grad_clip, scaler, guard, "disc")
            scaler.update()
            guard.check(step, ckpts.latest)        # nothing non-finite goes on to the logs or a checkpoint

            if d.is_main:
                used = usage(out.indices)
                if tc.log_due(step):
                    scalars = {k: float(v.detach()) for k, v in logs.items()} | {
                        "total": float(total.detach()), "lr": lr, "rolling_codebook_usage": used}
                    log.scalars(step + 1, scalars, dict(loss=f"{scalars['total']:.4f}", usage=f"{used:.3f}",
                                                        lr=f"{lr:.2e}"))
            log.advance()
            if tc.checkpoint_due(step):
                guard.state(train_state)           # EMA and optimizer moments too: all the checkpoint holds
                guard.check(step, ckpts.latest)
                ckpts.save(step + 1, train_state, done=step + 1 == tc.steps, train_seconds=time.time() - t0)
    finally:
        log.close()
    return ckpts.latest
