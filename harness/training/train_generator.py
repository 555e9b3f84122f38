"""The generator training loop: next-token (or masked-token) training on a frozen tokenizer's indices.

The training split is tokenized once by the frozen tokenizer (cached next to the tokenizer
checkpoint: ``token_data``), then a generator preset is built on that tokenizer's ``TokenLayout``
and trained with AdamW, warm-up then cosine/linear/constant LR, gradient clipping and optional EMA,
from the defaults of the preset's paper recipe (``GeneratorInfo.recipe``) that the user's ``--set``
values override; one process or many under ``torchrun`` (DDP). Condition dropout for
classifier-free guidance lives in each generator's ``loss``. Generators with a two-stage recipe (CAR
on a pretrained LM: ``set_stage``) train stage I for ``stage1_steps`` steps at peak LR ``stage1_lr``,
then stage II at ``lr``.

The condition follows the dataset: a captioned dataset (``captions(indices)``, e.g.
``fashion-mnist-captions``) trains a text-conditioned generator on the pooled embeddings of the frozen
``text_encoder`` (``text_condition=tokens``: its per-token states, one prefix token each), cached beside
the token cache (``text_conditions``; one caption per image and step, picked with a (seed, step)
generator); any other dataset trains a class-conditional one.

Checkpoints have the tokenizer loop's format (``kind: "generator"``) and the same exact-resume rule:
the batch at step s is a pure function of (seed, s) and RNG states are saved.
"""
from __future__ import annotations

import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from harness.core.arguments import NON_NEGATIVE, NON_NEGATIVE_INT
from harness.core.contracts import Conditioning
from harness.core.errors import VQBenchError
from harness.core.config import apply_overrides, config_hash, split_overrides, to_dict
from harness.core.distributed import setup
from harness.core.registry import GENERATORS
from harness.core.results import package_versions
from harness.models.catalog import build_generator, generator_config
from harness.models.checkpoints import load_tokenizer
from harness.models.factor_positions import generator_view
from harness.training.batches import BatchOrder
from harness.training.checkpointing import RunCheckpoints, TrainingState
from harness.training.monitor import TrainLog
from harness.training.optim import (OptimizerConfig, adamw, build_ema, chain_post_init, check_settings, lr_at,
                                    optimizer_step, per_process_batch, set_lr)
from harness.training.runtime import (FiniteGuard, autocast, build_device, check_n_train, check_start,
                                      follow_rank0_rng, place, wrap_ddp)
from harness.training.text_conditions import (TextConditions, caption_conditions, check_covers, has_captions,
                                              text_cache)
from harness.training.token_data import num_classes_of, token_cache, tokenize_split


@dataclass(frozen=True)
class GeneratorTrainConfig(OptimizerConfig):
    """Generator training: the shared optimizer settings with LlamaGen-like defaults."""
    batch_size: int = 64                 # per process
    lr: float = 3e-4
    weight_decay: float = 0.05
    precision: Literal["fp32", "bf16"] = "fp32"
    stage1_steps: int = 0                # two-stage generators (CAR on a pretrained LM): frozen-backbone steps
    # stage I's peak LR (0: lr). CAR App. E gives each stage its own LR; the values are blank in our copy
    stage1_lr: float = 0.0
    text_encoder: str = "minilm-l6"      # captioned datasets: the frozen encoder of the captions
    text_condition: Literal["pooled", "tokens"] = "pooled"   # one pooled embedding, or every token's state
    # a factorized tokenizer's k codes per position as k positions, for one-factor generators
    # (harness.models.factor_positions; the leaderboard's AR probe on FQ and RVQ)
    factors: Literal["native", "as-positions"] = "native"

    def __post_init__(self):
        check_settings(self, {"stage1_steps": NON_NEGATIVE_INT, "stage1_lr": NON_NEGATIVE})
        if self.stage1_lr and not self.stage1_steps:
            raise VQBenchError(f"--set stage1_lr={self.stage1_lr}: stage I has no steps; set stage1_steps too")
        chain_post_init(GeneratorTrainConfig, self)


def train_generator(preset: str, tokenizer_checkpoint: str | Path, run_dir: Path, *,
                    overrides: list[str] = (), dataset: str | None = None, n_train: int | None = None,
                    resume: bool = False, device: str = "auto", progress: bool = True) -> Path:
    """Train generator ``preset`` on the indices of ``tokenizer_checkpoint``; returns the final checkpoint."""
    check_n_train(n_train)
    d = setup(device)
    native, tok_state, tok_path = load_tokenizer(tokenizer_checkpoint, d.device)
    dataset = dataset or tok_state["data"]["dataset"]
    # the preset's paper recipe first; the user's --set values come after and win
    overrides = GENERATORS.entry(preset).meta.recipe.with_overrides(overrides)
    model_over, train_over = split_overrides(overrides, generator_config(preset), GeneratorTrainConfig())
    tc = apply_overrides(GeneratorTrainConfig(), train_over)
    tokenizer = generator_view(native, tc.factors)
    per_process_batch(tc, d.world_size)    # an indivisible global batch is refused before the run folder exists
    text = (caption_conditions(dataset, n_train, tc.text_encoder, tc.text_condition,
                               text_cache(tok_path, dataset, n_train, tc.text_encoder, tc.text_condition), d)
            if has_captions(dataset) else None)
    conditioning = text.conditioning if text is not None else Conditioning("class", num_classes_of(dataset))
    torch.manual_seed(tc.seed)
    cfg, model = build_generator(preset, model_over, tokenizer, conditioning, device=build_device(d, tc))
    if tc.stage1_steps and not hasattr(model, "set_stage"):
        raise VQBenchError(f"--set stage1_steps={tc.stage1_steps}: {preset} has no two-stage recipe (CAR has)")
    follow_rank0_rng(d)
    run_dir = Path(run_dir)
    data_info = {"dataset": dataset, "split": "train", "n_train": n_train,
                 "tokenizer": str(tok_path), "tokenizer_from_run": os.path.relpath(tok_path, run_dir),
                 "tokenizer_preset": tok_state["preset"],
                 "tokenizer_config_hash": tok_state["config_hash"], "tokenizer_step": tok_state["step"]}
    run_info = {"kind": "generator", "preset": preset, "family": model.family,
                "model_config": to_dict(cfg), "train_config": to_dict(tc), "data": data_info,
                "num_classes": conditioning.num_classes, "conditioning": conditioning_record(conditioning, text),
                "config_hash": (config_hash(cfg, tc) + f"-{dataset}-{n_train or 'all'}"
                                + f"-tok{tok_state['config_hash']}@{tok_state['step']}"
                                + (f"-captions{text.captions_sha256}" if text is not None else "")),
                "world_size": d.world_size, "package_versions": package_versions()}
    with RunCheckpoints(run_dir, run_info, "preset, --set values, data and tokenizer checkpoint", resume,
                        d, sharded=tc.parallel == "fsdp") as ckpts:
        run_dir.mkdir(parents=True, exist_ok=True)
        place(model, d, tc)                # FSDP shards before the optimizer sees the weights
        opt = adamw(model, tc)
        ema = build_ema(model, tc)
        train_state = TrainingState({"model": model}, {"g": opt}, ema)
        start = ckpts.restore(train_state)
        check_start(start, tc.steps, ckpts.latest)
        if start == tc.steps:              # a finished run resumed: nothing left to train
            return ckpts.latest
        tokens_file = token_cache(tok_path, dataset, n_train)
        # the cache holds the tokenizer's own indices (shared by every generator on it); the view reshapes
        indices, labels = tokenize_split(native, dataset, "train", n_train, tokens_file, d)
        indices = indices.reshape(len(indices), *tokenizer.layout.index_shape)
        if text is not None:
            check_covers(text, len(indices), tokens_file, dataset)
        del tokenizer, native
        return _train(model, indices, labels, text, tc, train_state, start, ckpts, run_dir, d, progress)


def conditioning_record(conditioning: Conditioning, text: TextConditions | None) -> dict:
    """What a checkpoint records of its condition (``checkpoints.run_conditioning`` reads it back)."""
    record = dataclasses.asdict(conditioning)
    if text is not None:
        record |= {"text_encoder": text.encoder, "text_tokens": text.tokens}
    return record


def _train(model, indices: torch.Tensor, labels: torch.Tensor, text: TextConditions | None, tc: GeneratorTrainConfig,
           train_state: TrainingState, start: int, ckpts: RunCheckpoints, run_dir: Path, d, progress: bool) -> Path:
    opt, ema = train_state.optimizers["g"], train_state.ema
    two_stage = tc.stage1_steps > 0 and hasattr(model, "set_stage")
    stage = None
    wrapped = wrap_ddp(model, d, tc, find_unused_parameters=True) if not two_stage else model
    order = BatchOrder(len(indices), per_process_batch(tc, d.world_size), tc.seed, d)
    log = TrainLog(run_dir, start, tc.steps, d, progress, desc="train generator")
    guard = FiniteGuard(d, tc.precision)
    t0 = time.time()
    model.train()
    try:                                   # the bar ends its line before any error message
        for step in range(start, tc.steps):
            if two_stage and stage != (1 if step < tc.stage1_steps else 2):
                stage = 1 if step < tc.stage1_steps else 2
                model.set_stage(stage)
                # DDP fixes its parameter set at construction: rewrap when the trainable set changes
                # (FSDP takes each step's trainable set as it is)
                wrapped = wrap_ddp(model, d, tc, find_unused_parameters=True)
            lr = lr_at(step, tc) * (tc.stage1_lr / tc.lr if stage == 1 and tc.stage1_lr else 1.0)
            set_lr((opt,), lr)
            rows = order.indices(step)
            cond = labels[rows] if text is None else text.pick(torch.as_tensor(rows), tc.seed, step)
            x, y = indices[rows].to(d.device), cond.to(d.device)
            with autocast(tc.precision, d):
                loss = wrapped(x, y)          # Generator.forward is its loss
            guard.loss("generator loss", loss, {"loss": loss})
            optimizer_step(loss, opt, model, tc.grad_clip, guard=guard, name="model")
            if ema is not None:
                ema.update(model)
            guard.check(step, ckpts.latest)        # nothing non-finite goes on to the logs or a checkpoint
            if tc.log_due(step):
                value = float(loss.detach())
                log.scalars(step + 1, {"loss": value, "lr": lr}, dict(loss=f"{value:.4f}", lr=f"{lr:.2e}"))
            log.advance()
            if tc.checkpoint_due(step):
                guard.state(train_state)           # EMA and optimizer moments too: all the checkpoint holds
                guard.check(step, ckpts.latest)
                ckpts.save(step + 1, train_state, done=step + 1 == tc.steps, train_seconds=time.time() - t0)
    finally:
        log.close()
    return ckpts.latest
