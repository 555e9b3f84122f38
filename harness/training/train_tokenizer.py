"""The tokenizer training loop: one readable loop for every tokenizer, one process or many.

Per step: the tokenizer's forward gives a reconstruction and its own quantization losses; the loop
adds the pixel loss (L1/L2), LPIPS and, after ``disc_start``, a PatchGAN adversarial loss weighted
by the VQGAN adaptive weight; AdamW with warm-up + cosine (or constant) LR and gradient clipping;
optional EMA; then a discriminator step. The batch at step s is a pure function of (seed, s), and
checkpoints carry weights, optimizer moments and RNG states, so ``--resume`` after a kill ends with
the same weights as an uninterrupted run.
"""
from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel as DDP

from harness.core import checkpoint as ckpt
from harness.models.checkpoints import state_part
from harness.models.catalog import build_tokenizer, tokenizer_config
from harness.core.results import package_versions
from harness.core.config import apply_overrides, config_hash, split_overrides, to_dict
from harness.data.datasets import open_dataset
from harness.core.distributed import Dist, all_true, setup
from harness.core.errors import VQBenchError
from harness.core.registry import TOKENIZERS
from harness.models.gan import LeCam, adaptive_weight, build_discriminator, discriminator_loss, generator_loss

ROLLING_USAGE_TOKENS = 65536   # LlamaGen's training-time usage window


@dataclass(frozen=True)
class OptimizerConfig:
    """What both training loops (tokenizers here, generators in train_generator.py) share: AdamW,
    warm-up + cosine or constant LR, gradient clipping, optional EMA, checkpoint cadence and seed."""
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


@dataclass(frozen=True)
class TrainConfig(OptimizerConfig):
    """Tokenizer training: the optimizer settings plus the reconstruction, LPIPS and GAN losses."""
    pixel_loss: Literal["l1", "l2"] = "l2"
    pixel_weight: float = 1.0
    perceptual_weight: float = 1.0       # LPIPS; 0 disables
    lpips_net: Literal["alex", "vgg"] = "vgg"
    disc_weight: float = 0.5             # 0 disables the GAN (no discriminator is built)
    disc_start: int = 0                  # GAN warm-up: steps trained without the adversarial loss
    disc_loss: Literal["hinge", "non-saturating"] = "hinge"
    disc_arch: Literal["patchgan", "stylegan"] = "patchgan"
    disc_layers: int = 3                 # PatchGAN depth
    disc_channels: int = 64
    lecam_weight: float = 0.0            # LeCam regularization of the discriminator; 0 disables
    lecam_decay: float = 0.999
    adaptive_disc_weight: bool = True
    precision: Literal["fp32", "bf16", "fp16"] = "fp32"


def lr_at(step: int, tc: OptimizerConfig) -> float:
    if tc.warmup_steps and step < tc.warmup_steps:
        return tc.lr * (step + 1) / tc.warmup_steps
    if tc.lr_schedule == "constant":
        return tc.lr
    progress = (step - tc.warmup_steps) / max(1, tc.steps - tc.warmup_steps)
    return tc.lr * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class BatchOrder:
    """Global batch at step s = slice of an epoch permutation seeded by (seed, epoch); rank r takes its part."""

    def __init__(self, n: int, batch_size: int, seed: int, d: Dist):
        self.n, self.b, self.seed, self.d = n, batch_size, seed, d
        self.per_epoch = n // (batch_size * d.world_size)
        if self.per_epoch == 0:
            raise VQBenchError(f"the training set has {n} images, fewer than one global batch "
                               f"({batch_size} x {d.world_size} processes); lower --set batch_size")
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        start = (i * self.d.world_size + self.d.rank) * self.b
        return self._perm[start:start + self.b]


class EMA:
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


def pixel_loss(kind: str, recon: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return F.l1_loss(recon, x) if kind == "l1" else F.mse_loss(recon, x)


def _data_hash(data: dict) -> str:
    return f"-{data['dataset']}-{data['n_train'] or 'all'}"


def train_tokenizer(preset: str, run_dir: Path, *, overrides: list[str] = (),
                    dataset: str = "fashion-mnist", n_train: int | None = None, resume: bool = False,
                    device: str = "auto", progress: bool = True) -> Path:
    """Train ``preset`` into ``run_dir``; returns the final checkpoint folder."""
    d = setup(device)
    # a preset may carry its paper's training recipe; the user's --set values come after and win
    overrides = list(TOKENIZERS.entry(preset).meta.get("train_defaults", ())) + list(overrides)
    model_over, train_over = split_overrides(overrides, tokenizer_config(preset), TrainConfig())
    tc = apply_overrides(TrainConfig(), train_over)
    torch.manual_seed(tc.seed)             # the initial weights are a function of the seed
    model_cfg, model = build_tokenizer(preset, model_over)
    data_info = {"dataset": dataset, "split": "train", "n_train": n_train}
    expected_hash = config_hash(model_cfg, tc) + _data_hash(data_info)
    ckpt_root = Path(run_dir) / "checkpoints"
    previous = ckpt.latest(ckpt_root) if ckpt_root.exists() else None
    if previous is not None and not resume:
        raise VQBenchError(f"{run_dir} already holds checkpoints; pass --resume to continue that run "
                           "or choose another --run-dir")

    cfg = model.cfg
    ds = open_dataset(dataset, "train", resolution=cfg.resolution, channels=cfg.in_channels, n=n_train)
    disc = (build_discriminator(tc.disc_arch, cfg.in_channels, cfg.resolution, tc.disc_channels, tc.disc_layers)
            if tc.disc_weight > 0 else None)
    lecam = LeCam(tc.lecam_decay).to(d.device) if disc is not None and tc.lecam_weight > 0 else None
    perceptual = None
    if tc.perceptual_weight > 0:
        from harness.models.lpips import load_lpips
        perceptual = load_lpips(tc.lpips_net).to(d.device)
    model.to(d.device)
    if disc is not None:
        disc.to(d.device)

    opt_g = torch.optim.AdamW(model.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2),
                              weight_decay=tc.weight_decay)
    opt_d = (torch.optim.AdamW(disc.parameters(), lr=tc.lr, betas=(tc.beta1, tc.beta2),
                               weight_decay=tc.weight_decay) if disc is not None else None)
    ema = EMA(model, tc.ema_decay) if tc.ema_decay > 0 else None
    start = 0
    if previous is not None:
        start = _restore(previous, expected_hash, to_dict(tc), model, disc, lecam, ema, opt_g, opt_d)
        if start >= tc.steps:
            return previous

    amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[tc.precision]
    if amp_dtype is torch.float16 and d.device.type != "cuda":
        raise VQBenchError("--set precision=fp16 needs a CUDA device; use bf16 or fp32 on CPU")
    scaler = torch.amp.GradScaler(enabled=amp_dtype is torch.float16)
    model_ddp = DDP(model) if d.enabled else model
    disc_ddp = DDP(disc) if d.enabled and disc is not None else disc

    order = BatchOrder(len(ds), tc.batch_size, tc.seed, d)
    writer = _tensorboard(run_dir) if d.is_main else None
    usage_window: deque = deque()
    bar = _progress(start, tc.steps, enabled=progress and d.is_main)
    state_base = {"kind": "tokenizer", "preset": preset, "family": model.family,
                  "model_config": to_dict(model_cfg), "train_config": to_dict(tc), "data": data_info,
                  "config_hash": expected_hash, "world_size": d.world_size,
                  "package_versions": package_versions()}
    last_saved = previous
    t0 = time.time()
    for step in range(start, tc.steps):
        lr = lr_at(step, tc)
        for opt in (opt_g, opt_d):
            if opt is not None:
                for group in opt.param_groups:
                    group["lr"] = lr
        x, _ = ds.batch(order.indices(step))
        x = x.to(d.device, non_blocking=True)
        gan_active = disc is not None and step >= tc.disc_start
        with torch.autocast(d.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
            out = model_ddp(x)
            recon = out.reconstruction
            logs = {"pixel": pixel_loss(tc.pixel_loss, recon.float(), x)}
            rec_loss = tc.pixel_weight * logs["pixel"]
            if perceptual is not None:
                logs["lpips"] = perceptual(recon.float(), x).mean()
                rec_loss = rec_loss + tc.perceptual_weight * logs["lpips"]
            logs.update({k: v.float() for k, v in out.losses.items()})
            total = rec_loss + sum(out.losses.values())
            if gan_active:
                disc.requires_grad_(False)
                logs["gan_g"] = generator_loss(tc.disc_loss, disc(recon).float())
                weight = tc.disc_weight * out.gan_weight_scale
                if tc.adaptive_disc_weight:
                    logs["adaptive_w"] = adaptive_weight(rec_loss, logs["gan_g"], model.last_layer_weight())
                    weight = weight * logs["adaptive_w"]
                total = total + weight * logs["gan_g"]
                disc.requires_grad_(True)
        if not all_true(bool(torch.isfinite(total)), d):
            where = f"; the last good checkpoint is {last_saved}" if last_saved else "; no checkpoint was written yet"
            raise VQBenchError(f"non-finite training loss at step {step} "
                               f"({', '.join(f'{k}={float(v.detach()):.4g}' for k, v in logs.items())}){where}")
        opt_g.zero_grad(set_to_none=True)
        scaler.scale(total).backward()
        _clip_and_step(opt_g, model, tc.grad_clip, scaler)
        if ema is not None:
            ema.update(model)
        if gan_active:
            with torch.autocast(d.device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None):
                logits = disc_ddp(torch.cat([x, recon.detach()]))
                real, fake = logits.float().chunk(2)
                logs["gan_d"] = discriminator_loss(tc.disc_loss, real, fake)
                d_total = logs["gan_d"]
                if lecam is not None:
                    logs["lecam"] = lecam(real, fake)
                    d_total = d_total + tc.lecam_weight * logs["lecam"]
            opt_d.zero_grad(set_to_none=True)
            scaler.scale(d_total).backward()
            _clip_and_step(opt_d, disc, tc.grad_clip, scaler)
        scaler.update()

        if d.is_main:
            usage = _rolling_usage(usage_window, out.indices, model.layout.max_codebook_size)
            if (step + 1) % tc.log_every == 0 or step + 1 == tc.steps:
                scalars = {k: float(v.detach()) for k, v in logs.items()} | {
                    "total": float(total.detach()), "lr": lr, "rolling_codebook_usage": usage}
                for k, v in scalars.items():
                    writer.add_scalar(f"train/{k}", v, step + 1)
                bar.set_postfix(loss=f"{scalars['total']:.4f}", usage=f"{usage:.3f}", lr=f"{lr:.2e}")
            bar.update(1)
        if (step + 1) % tc.ckpt_every == 0 or step + 1 == tc.steps:
            state = {**state_base, "step": step + 1, "done": step + 1 == tc.steps,
                     "rng": ckpt.rng_state(), "train_seconds": time.time() - t0}
            last_saved = _save(ckpt_root, step + 1, state, model, disc, lecam, ema, opt_g, opt_d, d)
    bar.close()
    if writer is not None:
        writer.close()
    return last_saved


def _clip_and_step(opt, module, max_norm: float, scaler) -> None:
    scaler.unscale_(opt)
    if max_norm > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), max_norm)
    scaler.step(opt)


@torch.no_grad()
def _rolling_usage(window: deque, indices: torch.Tensor, codebook_size: int) -> float:
    window.append(indices.detach().flatten().cpu())
    total = sum(t.numel() for t in window)
    while total - window[0].numel() >= ROLLING_USAGE_TOKENS:
        total -= window.popleft().numel()
    recent = torch.cat(list(window))[-ROLLING_USAGE_TOKENS:]
    return recent.unique().numel() / codebook_size


def _save(root, step, state, model, disc, lecam, ema, opt_g, opt_d, d: Dist):
    if not d.is_main:
        return root / f"step_{step:08d}"
    weights = {f"model.{k}": v for k, v in model.state_dict().items()}
    if disc is not None:
        weights |= {f"disc.{k}": v for k, v in disc.state_dict().items()}
    if lecam is not None:
        weights |= {f"lecam.{k}": v for k, v in lecam.state_dict().items()}
    if ema is not None:
        weights |= {f"ema.{k}": v for k, v in ema.shadow.items()}
    tensors, meta_g = ckpt.flatten_optimizer(opt_g, "g")
    state["optimizer"] = {"g": meta_g}
    if opt_d is not None:
        t_d, meta_d = ckpt.flatten_optimizer(opt_d, "d")
        tensors |= t_d
        state["optimizer"]["d"] = meta_d
    return ckpt.save(root, step, weights, tensors, state)


def _restore(path: Path, expected_hash: str, current_train: dict, model, disc, lecam, ema, opt_g, opt_d) -> int:
    weights, optim, state = ckpt.load(path)
    if state.get("config_hash") == expected_hash:
        # same non-default settings; a default that changed between versions would still differ here
        now = {"model_config": to_dict(model.cfg), "train_config": current_train}
        changed = [f"{part}.{k}" for part in now for k, v in state.get(part, {}).items()
                   if k in now[part] and now[part][k] != v]
        if changed:
            raise VQBenchError(f"checkpoint {path} was trained with other values of {', '.join(changed)} "
                               "(defaults changed since); resume with the vqbench version that wrote it "
                               "or set them explicitly with --set")
    if state.get("config_hash") != expected_hash:
        raise VQBenchError(f"checkpoint {path} was trained with another configuration "
                           f"(hash {state.get('config_hash')}, now {expected_hash}); resume with the "
                           "same preset, --set values and data, or use another --run-dir")
    model.load_state_dict(state_part(weights, "model"))
    if disc is not None:
        disc.load_state_dict(state_part(weights, "disc"))
    if lecam is not None:
        lecam.load_state_dict(state_part(weights, "lecam"))
    if ema is not None:
        ema.shadow = state_part(weights, "ema")
    ckpt.unflatten_optimizer(opt_g, "g", optim, state["optimizer"]["g"])
    if opt_d is not None:
        ckpt.unflatten_optimizer(opt_d, "d", optim, state["optimizer"]["d"])
    ckpt.set_rng_state(state["rng"])
    return int(state["step"])



def _tensorboard(run_dir: Path):
    from torch.utils.tensorboard import SummaryWriter
    return SummaryWriter(str(Path(run_dir) / "tensorboard"))


def _progress(start: int, total: int, enabled: bool, desc: str = "train"):
    from tqdm.auto import tqdm
    return tqdm(total=total, initial=start, disable=not enabled, desc=desc, dynamic_ncols=True)
