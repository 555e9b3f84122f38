"""The experiments behind README's "Codebook collapse at small scale" (issue #11, 2026-12-01).

    python benchmarks/collapse_diagnosis.py train NAME PRESET [key=value ...]
        trains PRESET for the default suite's 200 steps (FMNIST_TRAIN) with the overrides into
        /tmp/collapse/NAME, then prints the rolling codebook usage at steps 10/50/100/150/200, the last
        logged losses, and the test PSNR and codebook usage on 2,000 test images.
        e.g.  train cvq-uniform cvq-fmnist codebook_init=uniform
              train vq-d49-uniform vq-fmnist-d49 codebook_init=uniform

    python benchmarks/collapse_diagnosis.py norms PRESET [key=value ...]
        at initialisation (seed 0): the mean norm of the codes and of the vectors the quantizer matches
        for 64 training images.  e.g.  norms cvq-fmnist codebook_init=uniform

    python benchmarks/collapse_diagnosis.py vcq-mse NAME[,key=value...] ...
        trains vcq-cosine-fmnist variants on pixel MSE alone (no LPIPS, no GAN) for 200 steps of 32
        (AdamW 0.9/0.95, warm-up 50 then cosine from lr, default 3e-4; ``noquant=1`` replaces the
        quantizer by the identity) and prints the batch MSE every 50 steps and the PSNR and codebook
        usage on 500 test images.
        e.g.  vcq-mse patch,stem=patch,codebook_init=uniform  noquant,stem=patch,noquant=1  conv,stem=conv
        ``proxy=RUN,proxy_steps=S``: a proxy-code first stage as TiTok's: for the first S steps the decoder
        ViT's patch outputs predict, through a linear head, the codes the trained 2D tokenizer RUN (e.g. a
        vq-fmnist run: its 7x7 grid is the conv head's) gives the image (cross-entropy), then pixel MSE.
        ``steps=S`` trains S steps instead of 200 (warm-up 50, then cosine to zero at S).
        The preset has carried random position-pair attention logits since 2026-12-02 (std 4): the README's
        earlier variants (ln_pre, lr, proxy, steps=1000) add ``attention_position_bias_std=0``.

    python benchmarks/collapse_diagnosis.py token-diversity RUN_OR_PRESET [key=value ...]
        for a 1D tokenizer (a run folder, or a preset at initialisation, seed 0) on 256 training images:
        the mean cosine similarity of the l2-normalised latents to quantize between two images at the same
        position, and between two positions of the same image, and the share of the latents' variance
        that is between images.  e.g.  token-diversity /tmp/collapse/vcq-base   token-diversity vcq-cosine-fmnist
"""
from __future__ import annotations

import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

OUT = Path("/tmp/collapse")


def psnr_and_usage(tok, n: int) -> tuple[float, float]:
    from harness.data.datasets import open_dataset
    ds = open_dataset("fashion-mnist", "test", resolution=28, channels=1, n=n)
    ids, mse = [], []
    with torch.no_grad():
        for s in range(0, n, 250):
            x, _ = ds.batch(list(range(s, min(s + 250, n))))
            idx = tok.encode(x)
            ids.append(idx.flatten())
            mse.append(((tok.decode(idx).clamp(-1, 1) - x) / 2).pow(2).flatten(1).mean(1))
    psnr = (10 * torch.log10(1 / torch.cat(mse))).mean().item()
    return psnr, torch.cat(ids).unique().numel() / tok.layout.max_codebook_size


def train(name: str, preset: str, *overrides: str) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from harness.models.checkpoints import load_tokenizer
    from harness.suites import FMNIST_TRAIN
    from harness.training.train_tokenizer import train_tokenizer
    run = OUT / name
    t0 = time.time()
    final = train_tokenizer(preset, run, overrides=list(FMNIST_TRAIN) + ["steps=200", "disc_start=120", *overrides],
                            progress=False, resume=True)
    ea = EventAccumulator(str(run / "tensorboard"))
    ea.Reload()
    usage = {e.step: round(e.value, 3) for e in ea.Scalars("train/rolling_codebook_usage")}
    last = {tag.split("/")[1]: round(ea.Scalars(tag)[-1].value, 4) for tag in ea.Tags()["scalars"]}
    psnr, used = psnr_and_usage(load_tokenizer(final)[0], 2000)
    print(json.dumps({"name": name, "train_s": round(time.time() - t0),
                      "rolling_usage": {s: usage[s] for s in (10, 50, 100, 150, 200) if s in usage},
                      "last_logged": last, "test_psnr": round(psnr, 2), "test_usage": round(used, 3)}), flush=True)


def norms(preset: str, *overrides: str) -> None:
    from harness.data.datasets import open_dataset
    from harness.models.catalog import build_tokenizer
    torch.manual_seed(0)
    cfg, model = build_tokenizer(preset, dict(o.split("=", 1) for o in overrides))
    x, _ = open_dataset("fashion-mnist", "train", resolution=cfg.resolution, channels=cfg.in_channels, n=64).batch(
        list(range(64)))
    with torch.no_grad():
        inputs = model.quantizer_inputs(x)
        codes = model.quantizer.codebook()
    print(json.dumps({"preset": preset, "overrides": overrides, "code_norm": round(codes.norm(dim=-1).mean().item(), 4),
                      "input_norm": round(inputs.norm(dim=-1).mean().item(), 4)}), flush=True)


def unit_latents(model, x: torch.Tensor) -> torch.Tensor:
    """The l2-normalised latents a 1D tokenizer quantizes for images x, N x T x D."""
    with torch.no_grad():
        return F.normalize(model._latents(x), dim=-1)


def cos_across_positions(z: torch.Tensor) -> float:
    """Mean cosine similarity of two positions' latents within one image (z: N x T x D, unit rows)."""
    return round(torch.einsum("ntd,nsd->nts", z, z).mean().item(), 3)


def token_diversity(source: str, *overrides: str) -> None:
    from harness.data.datasets import open_dataset
    from harness.models.catalog import build_tokenizer
    from harness.models.checkpoints import load_tokenizer
    torch.manual_seed(0)
    if Path(source).exists():
        model = load_tokenizer(source)[0]
    else:
        model = build_tokenizer(source, dict(o.split("=", 1) for o in overrides))[1]
    x, _ = open_dataset("fashion-mnist", "train", resolution=28, channels=1, n=256).batch(list(range(256)))
    z = unit_latents(model.eval(), x)                                  # N x T x D
    total = z.reshape(-1, z.shape[-1]).var(0).sum()
    print(json.dumps({"source": source, "overrides": overrides,
                      "cos_same_position_across_images": round(torch.einsum("ntd,mtd->tnm", z, z).mean().item(), 3),
                      "cos_across_positions_in_image": cos_across_positions(z),
                      "between_image_variance_share": round((z.var(0).sum(-1).mean() / total).item(), 3)}), flush=True)


def vcq_mse(spec: str, steps: int = 200, warmup: int = 50, batch: int = 32) -> None:
    from harness.data.datasets import open_dataset
    from harness.models.catalog import build_tokenizer
    from harness.models.quantizers.base import QuantizerOutput
    name, *items = spec.split(",")
    over = dict(item.split("=", 1) for item in items)
    lr, noquant = float(over.pop("lr", 3e-4)), over.pop("noquant", None)
    steps = int(over.pop("steps", steps))
    proxy_run, proxy_steps = over.pop("proxy", None), int(over.pop("proxy_steps", 0))
    torch.manual_seed(0)
    _, model = build_tokenizer("vcq-cosine-fmnist", over)
    head = None
    if proxy_run:
        from harness.models.checkpoints import load_tokenizer
        proxy = load_tokenizer(proxy_run)[0].eval()
        if proxy.layout.num_positions != model.num_patches:
            sys.exit(f"proxy={proxy_run}: {proxy.layout.num_positions} tokens, the conv head's grid has {model.num_patches}")
        head = torch.nn.Linear(model.cfg.dec_width, proxy.layout.max_codebook_size)
    ds = open_dataset("fashion-mnist", "train", resolution=28, channels=1, n=20000)
    if noquant:
        model.quantizer.forward = lambda z, n=None: QuantizerOutput(z, torch.zeros(z.shape[:-1], dtype=torch.long), {})
    elif model.cfg.codebook_init == "data":
        with torch.no_grad():
            model.eval()
            model.quantizer.init_from_vectors(model.quantizer_inputs(ds.batch(list(range(64)))[0]),
                                              torch.Generator().manual_seed(0))
            model.train()
    params = list(model.parameters()) + (list(head.parameters()) if head else [])
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95))
    g = torch.Generator().manual_seed(0)
    t0, curve = time.time(), []
    for step in range(steps):
        scale = (step + 1) / warmup if step < warmup else 0.5 * (1 + math.cos(math.pi * (step - warmup) / (steps - warmup)))
        for group in opt.param_groups:
            group["lr"] = lr * scale
        x, _ = ds.batch(torch.randint(0, len(ds), (batch,), generator=g).tolist())
        if head is not None and step < proxy_steps:
            q = model._quantize(x)
            with torch.no_grad():
                target = proxy.encode(x)
            logits = head(model.decoder_patch_outputs(q.quantized))
            pixel = F.cross_entropy(logits.flatten(0, 1), target.flatten())
            losses = q.losses
        else:
            out = model(x)
            pixel, losses = F.mse_loss(out.reconstruction, x), out.losses
        opt.zero_grad()
        (pixel + sum(losses.values())).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if (step + 1) % 50 == 0:
            curve.append(round(pixel.item(), 4))
    model.eval()
    if noquant:
        test = open_dataset("fashion-mnist", "test", resolution=28, channels=1, n=500)
        x, _ = test.batch(list(range(500)))
        with torch.no_grad():
            mse = ((model(x).reconstruction.clamp(-1, 1) - x) / 2).pow(2).flatten(1).mean(1)
        psnr, used = (10 * torch.log10(1 / mse)).mean().item(), float("nan")
    else:
        psnr, used = psnr_and_usage(model, 500)
    print(json.dumps({"name": name, "steps": steps, "proxy_steps": proxy_steps if head else 0,
                      "loss_every_50_steps (cross-entropy in the proxy stage, else MSE)": curve,
                      "test_psnr": round(psnr, 2), "test_usage": round(used, 3),
                      "cos_across_positions_in_image": cos_across_positions(unit_latents(model, ds.batch(list(range(256)))[0])),
                      "seconds": round(time.time() - t0)}), flush=True)


if __name__ == "__main__":
    torch.set_num_threads(2)
    if len(sys.argv) < 3 or sys.argv[1] not in ("train", "norms", "vcq-mse", "token-diversity"):
        sys.exit(__doc__)
    if sys.argv[1] == "train":
        train(*sys.argv[2:])
    elif sys.argv[1] == "token-diversity":
        token_diversity(*sys.argv[2:])
    elif sys.argv[1] == "norms":
        norms(*sys.argv[2:])
    else:
        for spec in sys.argv[2:]:
            vcq_mse(spec)
