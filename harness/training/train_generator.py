"""The generator training loop: next-token (or masked-token) training on a frozen tokenizer's indices.

The training split is tokenized once by the frozen tokenizer (cached in the run folder under a key
naming the tokenizer checkpoint, dataset and subset), then a generator preset is built on that
tokenizer's ``TokenLayout`` and trained with AdamW, warm-up + cosine/constant LR, gradient clipping
and optional EMA; one process or many under ``torchrun`` (DDP). Condition dropout for classifier-free
guidance lives in each generator's ``loss``. Generators with a two-stage recipe (CAR on a pretrained
LM: ``set_stage``) train stage I for ``stage1_steps`` steps, then stage II.

Checkpoints use the tokenizer loop's format (``kind: "generator"``) and the same exact-resume rule:
the batch at step s is a pure function of (seed, s) and RNG states are saved.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from torch.nn.parallel import DistributedDataParallel as DDP

from harness.core import checkpoint as ckpt
from harness.core.config import apply_overrides, config_hash, split_overrides, to_dict
from harness.data.datasets import open_dataset
from harness.core.distributed import Dist, all_true, barrier, setup
from harness.core.errors import VQBenchError
from harness.models.catalog import build_generator, generator_config
from harness.models.checkpoints import load_tokenizer, state_part
from harness.core.results import package_versions
from harness.core.weights import atomic_save
from harness.training.train_tokenizer import EMA, BatchOrder, OptimizerConfig, _progress, _tensorboard, lr_at


@dataclass(frozen=True)
class GeneratorTrainConfig(OptimizerConfig):
    """Generator training: the shared optimizer settings with LlamaGen-like defaults."""
    batch_size: int = 64                 # per process
    lr: float = 3e-4
    weight_decay: float = 0.05
    precision: Literal["fp32", "bf16"] = "fp32"
    stage1_steps: int = 0                # two-stage generators (CAR on a pretrained LM): frozen-backbone steps



@torch.no_grad()
def tokenize_split(tokenizer, dataset: str, split: str, n: int | None, cache: Path | None,
                   d: Dist, batch_size: int = 250) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, labels) of a split, encoded once; rank 0 writes the cache, the others read it."""
    if cache is not None and cache.exists():
        data = torch.load(cache, map_location="cpu")
        return data["indices"], data["labels"]
    cfg = tokenizer.cfg
    if d.is_main or cache is None:
        ds = open_dataset(dataset, split, resolution=cfg.resolution, channels=cfg.in_channels, n=n)
        device = next(tokenizer.parameters()).device
        parts, labels = [], []
        for start in range(0, len(ds), batch_size):
            x, y = ds.batch(torch.arange(start, min(start + batch_size, len(ds))))
            parts.append(tokenizer.encode(x.to(device)).cpu())
            labels.append(y)
        indices, labels = torch.cat(parts), torch.cat(labels).long()
        if cache is not None:
            atomic_save(lambda p: torch.save({"indices": indices, "labels": labels}, p), cache)
    barrier(d)
    if not d.is_main and cache is not None:
        data = torch.load(cache, map_location="cpu")
        indices, labels = data["indices"], data["labels"]
    return indices, labels


def token_cache(tokenizer_checkpoint: Path, dataset: str, n: int | None) -> Path:
    """Where a tokenizer checkpoint's encoding of a training split is cached: in the tokenizer's run
    folder, so every generator trained on that tokenizer reuses it."""
    import hashlib
    key = hashlib.sha256(f"{dataset}|{n}".encode()).hexdigest()[:12]
    return Path(tokenizer_checkpoint) / f"tokens-train-{key}.pt"


def num_classes_of(dataset: str) -> int:
    classes = open_dataset(dataset, "train", n=1).num_classes
    if not classes:
        raise VQBenchError(f"dataset {dataset!r} does not declare its number of classes; "
                           "class-conditional generators need labelled data")
    return int(classes)


def train_generator(preset: str, tokenizer_checkpoint: str | Path, run_dir: Path, *,
                    overrides: list[str] = (), dataset: str | None = None, n_train: int | None = None,
                    resume: bool = False, device: str = "auto", progress: bool = True) -> Path:
    """Train generator ``preset`` on the indices of ``tokenizer_checkpoint``; returns the final checkpoint."""
    d = setup(device)
    tokenizer, tok_state, tok_path = load_tokenizer(tokenizer_checkpoint, d.device)
    dataset = dataset or tok_state["data"]["dataset"]
    model_over, train_over = split_overrides(list(overrides), generator_config(preset), GeneratorTrainConfig())
    tc = apply_overrides(GeneratorTrainConfig(), train_over)
    num_classes = num_classes_of(dataset)
    torch.manual_seed(tc.seed)
    cfg, model = build_generator(preset, model_over, tokenizer, num_classes)
    run_dir = Path(run_dir)
    data_info = {"dataset": dataset, "split": "train", "n_train": n_train,
                 "tokenizer": str(tok_path), "tokenizer_preset": tok_state["preset"],
                 "tokenizer_config_hash": tok_state["config_hash"], "tokenizer_step": tok_state["step"]}
    expected_hash = (config_hash(cfg, tc) + f"-{dataset}-{n_train or 'all'}"
                     + f"-tok{tok_state['config_hash']}@{tok_state['step']}")
    ckpt_root = run_dir / "checkpoints"
    previous = ckpt.latest(ckpt_root) if ckpt_root.exists() else None
    if previous is not None and not resume:
        raise VQBenchError(f"{run_dir} already holds checkpoints; pass --resume to continue that run "
                           "or choose another --run-dir")

    run_dir.mkdir(parents=True, exist_ok=True)
    model.to(d.device)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2),
                            weight_decay=tc.weight_decay)
    ema = EMA(model, tc.ema_decay) if tc.ema_decay > 0 else None
    start = 0
    if previous is not None:
        start = _restore(previous, expected_hash, model, ema, opt)
        if start >= tc.steps:
            return previous
    cache = token_cache(tok_path, dataset, n_train)
    indices, labels = tokenize_split(tokenizer, dataset, "train", n_train, cache, d)
    del tokenizer

    amp = tc.precision == "bf16"
    two_stage = tc.stage1_steps > 0 and hasattr(model, "set_stage")
    stage = None
    wrapped = DDP(model, find_unused_parameters=True) if d.enabled and not two_stage else model
    order = BatchOrder(len(indices), tc.batch_size, tc.seed, d)
    writer = _tensorboard(run_dir) if d.is_main else None
    bar = _progress(start, tc.steps, progress and d.is_main, desc="train generator")
    state_base = {"kind": "generator", "preset": preset, "family": model.family,
                  "model_config": to_dict(cfg), "train_config": to_dict(tc), "data": data_info,
                  "num_classes": num_classes, "config_hash": expected_hash, "world_size": d.world_size,
                  "package_versions": package_versions()}
    last_saved, t0 = previous, time.time()
    model.train()
    for step in range(start, tc.steps):
        if two_stage and stage != (1 if step < tc.stage1_steps else 2):
            stage = 1 if step < tc.stage1_steps else 2
            model.set_stage(stage)
            # DDP fixes its parameter set at construction: rewrap when the trainable set changes
            wrapped = DDP(model, find_unused_parameters=True) if d.enabled else model
        lr = lr_at(step, tc)
        for group in opt.param_groups:
            group["lr"] = lr
        rows = order.indices(step)
        x, y = indices[rows].to(d.device), labels[rows].to(d.device)
        with torch.autocast(d.device.type, dtype=torch.bfloat16, enabled=amp):
            loss = wrapped(x, y)          # Generator.forward is its loss
        if not all_true(bool(torch.isfinite(loss)), d):
            where = f"; the last good checkpoint is {last_saved}" if last_saved else "; no checkpoint was written yet"
            raise VQBenchError(f"non-finite generator loss at step {step} ({float(loss):.4g}){where}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        if ema is not None:
            ema.update(model)
        if d.is_main:
            if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
                writer.add_scalar("train/loss", float(loss.detach()), step + 1)
                writer.add_scalar("train/lr", lr, step + 1)
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{lr:.2e}")
            bar.update(1)
        if (step + 1) % tc.ckpt_every == 0 or step + 1 == tc.steps:
            state = {**state_base, "step": step + 1, "done": step + 1 == tc.steps,
                     "rng": ckpt.rng_state(), "train_seconds": time.time() - t0}
            last_saved = _save(ckpt_root, step + 1, state, model, ema, opt, d)
    bar.close()
    if writer is not None:
        writer.close()
    return last_saved


def _save(root: Path, step: int, state: dict, model, ema, opt, d: Dist) -> Path:
    if not d.is_main:
        return root / f"step_{step:08d}"
    weights = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        weights |= {f"ema.{k}": v for k, v in ema.shadow.items()}
    tensors, meta = ckpt.flatten_optimizer(opt, "g")
    state["optimizer"] = {"g": meta}
    return ckpt.save(root, step, weights, tensors, state)


def _restore(path: Path, expected_hash: str, model, ema, opt) -> int:
    weights, optim, state = ckpt.load(path)
    if state.get("kind") != "generator":
        raise VQBenchError(f"checkpoint {path} is not a generator checkpoint (kind={state.get('kind')!r})")
    if state.get("config_hash") != expected_hash:
        raise VQBenchError(f"checkpoint {path} was trained with another configuration or tokenizer "
                           f"(hash {state.get('config_hash')}, now {expected_hash}); resume with the "
                           "same preset, --set values, data and tokenizer checkpoint, or use another --run-dir")
    model.load_state_dict(state_part(weights, "model"))
    if ema is not None:
        ema.shadow = state_part(weights, "ema")
    ckpt.unflatten_optimizer(opt, "g", optim, state["optimizer"]["g"])
    ckpt.set_rng_state(state["rng"])
    return int(state["step"])


