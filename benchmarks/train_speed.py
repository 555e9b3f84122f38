"""Training speed (issue #15 item 1): where a training step's time goes, per family, on the CPU.

For each tokenizer family's Fashion-MNIST preset at the default suite's settings (``harness.suites.FMNIST_TRAIN``:
batch 32, AlexNet LPIPS, 2-layer PatchGAN of 32 channels, ``ckpt_every=500``; discriminator active,
i.e. a step past ``disc_start``) and each generator family's fmnist preset at
``FMNIST_GENERATOR_TRAIN`` (batch 32, ``ckpt_every=400``) on synthetic tokens of the tokenizer layout
``DEFAULT_GENERATORS`` pairs it with, times

- the **real loop**: ``train_tokenizer`` / the generator loop (``train_generator._train``) run in-process
  for N2 steps, each step's end stamped; step time = (end of step N2 - end of step N1) / (N2 - N1), which
  leaves out start-up (data set, LPIPS load), the first N1 steps (warm-up) and the final checkpoint. The
  median interval between steps is shown too. (Until 2026-11-30 it was (T(N2) - T(N1)) / (N2 - N1) over
  two runs, which start-up noise could drive below zero at --quick's few steps; the committed
  ``results/train_speed_cpu.md`` of 2026-11-30 was measured that way at 20 and 60 steps.);
- the **floor**: the same networks and losses, forward + backward + clip + AdamW (tokenizer and
  discriminator) in a minimal hand-written loop on one fixed batch: no data indexing, no guard, no
  logging, no checkpoint. Loop overhead = real / floor - 1 (target: under 10 %);
- the **parts** of one step, each with ``time.perf_counter`` (CPU: nothing to synchronise), median of
  ``--reps`` after warm-up. Tokenizers: data (``ds.batch``), tokenizer forward (incl. its quantization
  losses), the VQLoss generator loss as a whole and term by term on the same batch (pixel, LPIPS
  forward, adversarial forward = discriminator on the reconstruction + hinge, adaptive weight = its two
  ``autograd.grad`` calls), tokenizer backward, clip, AdamW, EMA update (``ema_decay`` is 0 in the suite:
  the cost if it were on), the discriminator's forward + loss / backward + clip + AdamW, the finite guard
  (every call the loop makes, incl. its one ``.item()``), logging (rolling codebook usage every step +
  the scalars and TensorBoard write amortized over ``log_every``), checkpointing (guard.state + check +
  save, amortized over ``ckpt_every``). Generators: data, forward + loss, backward, clip, AdamW, guard,
  logging, checkpoint;
- FLOPs of one forward + backward (``torch.utils.flop_counter.FlopCounterMode``; the tokenizer's
  includes the LPIPS and discriminator passes and the adaptive weight's gradients) and the GFLOP/s the
  real loop reaches.

    python benchmarks/train_speed.py [--presets vq-fmnist,ar-fmnist] [--steps 20,60] [--reps 5]
                                     [--out benchmarks/results/train_speed_cpu.md] [--quick]
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import describe, header, loadavg, write_report  # noqa: E402  (benchmarks/machine.py)

DEFAULT_OUT = REPO / "benchmarks" / "results" / "train_speed_cpu.md"

TOKENIZER_PRESETS = ("vq-fmnist", "cvq-fmnist", "fq-dual-fmnist", "vcq-cosine-fmnist", "fsq-fmnist")
GENERATOR_PRESETS = ("ar-fmnist", "masked-fmnist", "car-fmnist", "far-fmnist")
QUICK_TOKENIZERS = ("vq-tiny",)
QUICK_GENERATORS = ("ar-tiny",)
QUICK_GENERATOR_TOKENIZER = {"ar-tiny": "vq-tiny", "masked-tiny": "vq-tiny", "car-tiny": "cvq-tiny",
                             "far-tiny": "fq-tiny"}
# quick: the tiny suite's discriminator on 16 px, LPIPS kept on (AlexNet) so every part is measured
QUICK_TOKENIZER_TRAIN = ("lr=3e-4", "batch_size=8", "lpips_net=alex", "disc_layers=1", "disc_channels=8",
                         "warmup_steps=2", "ckpt_every=500")
QUICK_GENERATOR_TRAIN = ("batch_size=16", "lr=1e-3", "warmup_steps=2", "ckpt_every=400")

TOK_PARTS = ("data", "tok fwd", "VQLoss", "pixel", "LPIPS fwd", "adv fwd", "adaptive w", "tok bwd", "clip",
             "AdamW", "EMA*", "disc f+loss", "disc b+clip+AdamW", "guard", "log+usage", "ckpt/step")
GEN_PARTS = ("data", "fwd+loss", "bwd", "clip", "AdamW", "guard", "log", "ckpt/step")


# ----------------------------------------------------------------------------- helpers
def now() -> float:
    return time.perf_counter()


def timed_update(loss, what: str, terms: dict, opt, module, name: str, grad_clip: float, guard) -> dict[str, float]:
    """``optimizer_step``'s work in the loop's order, each part timed: seconds of ``guard`` (the finite
    guard's loss, gradient and weight records), ``backward``, ``clip`` and ``step`` (AdamW)."""
    a = now()
    guard.loss(what, loss, terms)
    g = now() - a
    opt.zero_grad(set_to_none=True)
    a = now()
    loss.backward()
    backward = now() - a
    a = now()
    guard.gradients(name, module)
    g += now() - a
    a = now()
    torch.nn.utils.clip_grad_norm_(module.parameters(), grad_clip)
    clip = now() - a
    a = now()
    opt.step()
    step = now() - a
    a = now()
    guard.weights(name, module)
    return {"guard": g + now() - a, "backward": backward, "clip": clip, "step": step}


def median_parts(step_fn, reps: int, warmup: int) -> dict[str, float]:
    """``step_fn()`` returns {part: seconds}; median per part over ``reps`` calls after ``warmup``, in ms."""
    for _ in range(warmup):
        step_fn()
    runs = [step_fn() for _ in range(reps)]
    return {k: 1e3 * statistics.median(r[k] for r in runs) for k in runs[0]}


def median_ms(fn, reps: int, warmup: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = now()
        fn()
        times.append(now() - t0)
    return 1e3 * statistics.median(times)


def count_flops(fn) -> int:
    from torch.utils.flop_counter import FlopCounterMode
    with FlopCounterMode(display=False) as counter:
        fn()
    return int(counter.get_total_flops())


@contextlib.contextmanager
def recording(module):
    """Replace ``module.TrainLog`` by a subclass that stamps every step; yields the stamp list."""
    original = module.TrainLog
    stamps: list[float] = []

    class Stamped(original):
        def advance(self):
            super().advance()
            stamps.append(now())
    module.TrainLog = Stamped
    try:
        yield stamps
    finally:
        module.TrainLog = original


def real_loop(run, n1: int, n2: int) -> tuple[float, float]:
    """(ms per step from the end of step n1 to the end of step n2 of one n2-step run, median ms between
    consecutive steps of that run). One run: a difference of two runs' wall times carries their start-up
    noise and can come out negative."""
    _, stamps = run(n2)                 # stamps[k]: the end of step k + 1
    gaps = [b - a for a, b in zip(stamps, stamps[1:])]
    return 1e3 * (stamps[n2 - 1] - stamps[n1 - 1]) / (n2 - n1), 1e3 * statistics.median(gaps[1:] or gaps)


# ----------------------------------------------------------------------------- tokenizers
def tokenizer_row(preset: str, train: tuple[str, ...], dataset: str, steps: tuple[int, int], reps: int,
                  warmup: int, tmp: Path) -> dict:
    from harness.core.config import apply_overrides, split_overrides
    from harness.core.distributed import setup
    from harness.core.registry import TOKENIZERS
    from harness.data.datasets import open_dataset
    from harness.models.catalog import build_tokenizer
    from harness.training import train_tokenizer as tt
    from harness.training.batches import BatchOrder
    from harness.training.checkpointing import RunCheckpoints, TrainingState
    from harness.training.losses import VQLoss, adaptive_weight, generator_loss, pixel_loss
    from harness.training.monitor import TrainLog
    from harness.training.optim import EMA, adamw, lr_at, set_lr
    from harness.training.runtime import FiniteGuard

    d = setup("cpu")
    overrides = TOKENIZERS.entry(preset).meta.recipe.with_overrides(list(train) + ["disc_start=0"])
    tc = apply_overrides(tt.TrainConfig(), split_overrides(overrides, tt.TrainConfig())[0])
    torch.manual_seed(tc.seed)
    _, model = build_tokenizer(preset)
    ds = open_dataset(dataset, "train", resolution=model.resolution, channels=model.in_channels)
    loss_fn = VQLoss(tc, model.in_channels, model.resolution)
    disc, perceptual, cfg = loss_fn.discriminator, loss_fn.perceptual, tc
    assert disc is not None and perceptual is not None, "the suite's recipe has LPIPS and a discriminator"
    opt_g, opt_d = adamw(model.parameters(), tc), adamw(disc.parameters(), tc)
    ema = EMA(model, 0.999)
    order = BatchOrder(len(ds), tc.batch_size, tc.seed, d)
    guard = FiniteGuard(d, tc.precision)
    usage = tt.RollingCodebookUsage(model.layout.max_codebook_size)
    log = TrainLog(tmp / f"{preset}-parts", 0, 1, d, False, desc="parts")
    state = {"step": 0}
    p_desc = f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M + D {sum(p.numel() for p in disc.parameters()) / 1e3:.0f}k"

    def step_parts() -> dict[str, float]:
        """One real-loop step (train_tokenizer._train's body, GAN active) with a clock between its parts,
        plus the VQLoss terms timed one by one on the same batch."""
        t = {}
        step = state["step"] = state["step"] + 1
        set_lr((opt_g, opt_d), lr_at(step, tc))
        a = now()
        x, _ = ds.batch(order.indices(step))
        t["data"] = now() - a
        a = now()
        out = model(x)
        t["tok fwd"] = now() - a
        a = now()
        total, logs = loss_fn.generator_loss(x, out, model, step)
        t["VQLoss"] = now() - a
        # the terms, each alone (same batch, same graph)
        recon = out.reconstruction
        a = now()
        pix = pixel_loss(cfg.pixel_loss, recon.float(), x)
        t["pixel"] = now() - a
        a = now()
        lp = perceptual(recon.float(), x).mean()
        t["LPIPS fwd"] = now() - a
        disc.requires_grad_(False)
        a = now()
        gan_g = generator_loss(cfg.disc_loss, disc(recon).float())
        t["adv fwd"] = now() - a
        a = now()
        adaptive_weight(cfg.pixel_weight * pix + cfg.perceptual_weight * lp, gan_g, model.last_layer_weight())
        t["adaptive w"] = now() - a
        disc.requires_grad_(True)
        del pix, lp, gan_g
        u = timed_update(total, "training loss", logs, opt_g, model, "model", tc.grad_clip, guard)
        t["tok bwd"], t["clip"], t["AdamW"], g = u["backward"], u["clip"], u["step"], u["guard"]
        a = now()
        ema.update(model)
        t["EMA*"] = now() - a
        a = now()
        d_total, d_logs = loss_fn.discriminator_loss(disc, x, out.reconstruction)
        t["disc f+loss"] = now() - a
        logs |= d_logs
        u = timed_update(d_total, "discriminator loss", d_logs, opt_d, disc, "disc", tc.grad_clip, guard)
        t["disc b+clip+AdamW"] = u["backward"] + u["clip"] + u["step"]
        a = now()
        guard.check(step, None)
        t["guard"] = g + u["guard"] + (now() - a)
        a = now()
        used = usage(out.indices)
        t_usage = now() - a
        a = now()
        scalars = {k: float(v.detach()) for k, v in logs.items()} | {
            "total": float(total.detach()), "lr": tc.lr, "rolling_codebook_usage": used}
        log.scalars(step + 1, scalars, dict(loss=f"{scalars['total']:.4f}", usage=f"{used:.3f}", lr="0"))
        log.advance()
        t["log+usage"] = t_usage + (now() - a) / tc.log_every
        return t

    parts = median_parts(step_parts, reps, warmup)
    log.close()

    # checkpointing: what the loop does every ckpt_every steps, amortized
    held = TrainingState({"model": model, "disc": disc, "lecam": loss_fn.lecam}, {"g": opt_g, "d": opt_d}, None)
    with RunCheckpoints(tmp / f"{preset}-ckpt", {"kind": "tokenizer", "preset": preset, "config_hash": "bench"},
                        "bench", False, d) as ckpts:
        n = {"i": 0}

        def save():
            n["i"] += 1
            guard.state(held)
            guard.check(n["i"], ckpts.latest)
            ckpts.save(n["i"], held, done=False, train_seconds=0.0)
        parts["ckpt/step"] = median_ms(save, max(3, reps // 2), 1) / tc.ckpt_every

    # the floor: the same math, nothing else, on one fixed batch
    x0, _ = ds.batch(order.indices(0))

    def floor_step():
        out = model(x0)
        total, _ = loss_fn.generator_loss(x0, out, model, 1)
        opt_g.zero_grad(set_to_none=True)
        total.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt_g.step()
        d_total, _ = loss_fn.discriminator_loss(disc, x0, out.reconstruction)
        opt_d.zero_grad(set_to_none=True)
        d_total.backward()
        torch.nn.utils.clip_grad_norm_(disc.parameters(), tc.grad_clip)
        opt_d.step()
    floor = median_ms(floor_step, max(reps, 5) * 2, warmup)

    def fwd_bwd():
        out = model(x0)
        total, _ = loss_fn.generator_loss(x0, out, model, 1)
        total.backward()
        d_total, _ = loss_fn.discriminator_loss(disc, x0, out.reconstruction)
        d_total.backward()
    flops = count_flops(fwd_bwd)
    del model, disc, loss_fn, opt_g, opt_d, ema

    # the real loop, in-process
    def run(n: int):
        with recording(tt) as stamps:
            a = now()
            tt.train_tokenizer(preset, tmp / f"{preset}-real-{n}", overrides=list(train) + [f"steps={n}", "disc_start=0"],
                               dataset=dataset, device="cpu", progress=False)
            return now() - a, list(stamps)
    real, real_median = real_loop(run, *steps)
    return {"preset": preset, "params": p_desc, "batch": tc.batch_size, "real": real, "real_median": real_median,
            "floor": floor, "parts": parts, "flops": flops}


# ----------------------------------------------------------------------------- generators
def synthetic_tokens(layout, n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ks = torch.tensor(layout.codebook_sizes, dtype=torch.float64).view(1, -1, *([1] * (layout.num_factors > 1)))
    idx = (torch.rand(n, *layout.index_shape, generator=g, dtype=torch.float64) * ks).long()
    return idx, torch.randint(0, 10, (n,), generator=g)


def generator_row(preset: str, tok_preset: str, train: tuple[str, ...], n_tokens: int, steps: tuple[int, int],
                  reps: int, warmup: int, tmp: Path) -> dict:
    from harness.core.config import apply_overrides, split_overrides
    from harness.core.contracts import Conditioning
    from harness.core.distributed import setup
    from harness.models.catalog import build_generator, build_tokenizer
    from harness.training import train_generator as tg
    from harness.training.batches import BatchOrder
    from harness.training.checkpointing import RunCheckpoints, TrainingState
    from harness.training.monitor import TrainLog
    from harness.training.optim import adamw, build_ema, lr_at, set_lr
    from harness.training.runtime import FiniteGuard

    d = setup("cpu")
    tc = apply_overrides(tg.GeneratorTrainConfig(), split_overrides(list(train), tg.GeneratorTrainConfig())[0])
    torch.manual_seed(0)
    _, tokenizer = build_tokenizer(tok_preset)
    indices, labels = synthetic_tokens(tokenizer.layout, n_tokens)

    def fresh():
        torch.manual_seed(tc.seed)
        _, m = build_generator(preset, {}, tokenizer, Conditioning("class", num_classes=10))
        m.train()
        return m
    model = fresh()
    opt = adamw(model.parameters(), tc)
    order = BatchOrder(len(indices), tc.batch_size, tc.seed, d)
    guard = FiniteGuard(d, tc.precision)
    log = TrainLog(tmp / f"{preset}-parts", 0, 1, d, False, desc="parts")
    state = {"step": 0}
    p_desc = f"{sum(p.numel() for p in model.parameters()) / 1e6:.2f}M"

    def step_parts() -> dict[str, float]:
        t = {}
        step = state["step"] = state["step"] + 1
        set_lr((opt,), lr_at(step, tc))
        a = now()
        rows = order.indices(step)
        x, y = indices[rows], labels[rows]
        t["data"] = now() - a
        a = now()
        loss = model(x, y)
        t["fwd+loss"] = now() - a
        u = timed_update(loss, "generator loss", {"loss": loss}, opt, model, "model", tc.grad_clip, guard)
        t["bwd"], t["clip"], t["AdamW"] = u["backward"], u["clip"], u["step"]
        a = now()
        guard.check(step, None)
        t["guard"] = u["guard"] + now() - a
        a = now()
        value = float(loss.detach())
        log.scalars(step + 1, {"loss": value, "lr": tc.lr}, dict(loss=f"{value:.4f}", lr="0"))
        log.advance()
        t["log"] = (now() - a) / tc.log_every
        return t

    parts = median_parts(step_parts, reps, warmup)
    log.close()
    held = TrainingState({"model": model}, {"g": opt}, None)
    with RunCheckpoints(tmp / f"{preset}-ckpt", {"kind": "generator", "preset": preset, "config_hash": "bench"},
                        "bench", False, d) as ckpts:
        n = {"i": 0}

        def save():
            n["i"] += 1
            guard.state(held)
            guard.check(n["i"], ckpts.latest)
            ckpts.save(n["i"], held, done=False, train_seconds=0.0)
        parts["ckpt/step"] = median_ms(save, max(3, reps // 2), 1) / tc.ckpt_every

    rows0 = order.indices(0)
    x0, y0 = indices[rows0], labels[rows0]

    def floor_step():
        loss = model(x0, y0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
    floor = median_ms(floor_step, max(reps, 5) * 2, warmup)
    flops = count_flops(lambda: model(x0, y0).backward())
    del model, opt

    def run(n: int):
        over = list(train) + [f"steps={n}"]
        ntc = apply_overrides(tg.GeneratorTrainConfig(), split_overrides(over, tg.GeneratorTrainConfig())[0])
        with recording(tg) as stamps:
            a = now()
            m = fresh()
            o = adamw(m.parameters(), ntc)
            held = TrainingState({"model": m}, {"g": o}, build_ema(m, ntc))
            run_dir = tmp / f"{preset}-real-{n}"
            with RunCheckpoints(run_dir, {"kind": "generator", "preset": preset, "config_hash": "bench"},
                                "bench", False, d) as ckpts:
                tg._train(m, indices, labels, None, ntc, held, 0, ckpts, run_dir, d, False)
            return now() - a, list(stamps)
    real, real_median = real_loop(run, *steps)
    return {"preset": f"{preset} @ {tok_preset}", "params": p_desc, "batch": tc.batch_size, "real": real,
            "real_median": real_median, "floor": floor, "parts": parts, "flops": flops}


# ----------------------------------------------------------------------------- report
def table(rows: list[dict], part_names: tuple[str, ...]) -> list[str]:
    head = ["preset", "params", "step ms (real loop)", "median step ms", "floor ms", "overhead %",
            *[f"{p} ms" for p in part_names], "GFLOP/step", "GFLOP/s (real)", "GFLOP/s (floor)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * 1 + "---:|" * (len(head) - 1)]
    for r in rows:
        gf = r["flops"] / 1e9
        cells = [r["preset"], r["params"], f"{r['real']:.1f}", f"{r['real_median']:.1f}", f"{r['floor']:.1f}",
                 f"{100 * (r['real'] / r['floor'] - 1):+.1f}",
                 *[f"{r['parts'][p]:.2f}" for p in part_names],
                 f"{gf:.2f}", f"{gf / (r['real'] / 1e3):.1f}", f"{gf / (r['floor'] / 1e3):.1f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def markdown(result: dict) -> str:
    m = result["machine"]
    s = result["settings"]
    lines = [
        "# Training speed, CPU: where a step's time goes",
        "",
        f"{header(m)} Written by `python benchmarks/train_speed.py{s['argv']}` "
        f"in {result['seconds']:.0f} s.",
        "",
        f"Settings: tokenizers at `{' '.join(s['tokenizer_train'])}` with `disc_start=0` (the discriminator "
        f"active, as after the suite's GAN warm-up), dataset {s['dataset']}; generators at "
        f"`{' '.join(s['generator_train'])}` on {s['n_tokens']:,} synthetic token sequences of the paired "
        f"tokenizer's layout (random weights: the cost does not depend on them). fp32. Real loop: "
        f"(T({s['steps'][1]} steps) - T({s['steps'][0]} steps)) / {s['steps'][1] - s['steps'][0]}; "
        f"median step: the median interval between steps of the {s['steps'][1]}-step run. Floor and parts: "
        f"median of {s['reps']} (floor: {max(s['reps'], 5) * 2}) after {s['warmup']} warm-up steps.",
        "",
        "## Tokenizers (one step with the discriminator active)",
        "",
        *table(result["tokenizers"], TOK_PARTS),
        "",
        "Parts: `VQLoss` is the whole generator loss (pixel + LPIPS + adversarial + adaptive weight); the next "
        "four columns time its terms one by one on the same batch (their sum is about `VQLoss`). `EMA*` is "
        "the cost of an EMA update were `ema_decay` > 0 (0 in the suite: not part of the real loop). `guard` "
        "is every FiniteGuard call of a step (losses, gradients and weights of both networks, one check). "
        "`log+usage` is the rolling codebook usage (every step) plus the scalars and TensorBoard write / "
        "`log_every`. `ckpt/step` is guard.state + check + save / `ckpt_every`. The floor is forward + "
        "loss + backward + clip + AdamW of both networks on a fixed batch; overhead = real / floor - 1.",
        "",
        "## Generators (synthetic tokens)",
        "",
        *table(result["generators"], GEN_PARTS),
        "",
        "Parts: `fwd+loss` is `Generator.forward` (its loss); `guard` the loss record, gradients, weights and "
        "check; `log` the scalars / `log_every`; `ckpt/step` as above / `ckpt_every`. Floor: forward + "
        "backward + clip + AdamW on a fixed batch.",
        "",
        "FLOPs: one forward + backward under `FlopCounterMode` (matmuls and convolutions only; elementwise "
        "work, norms and the optimizer are not counted), so GFLOP/s understates the work done.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--presets", default=None, help="comma-separated tokenizer and/or generator presets "
                                                   "(default: the five tokenizer and four generator families)")
    p.add_argument("--steps", default=None, help="the real loop: N2 steps, timed from the end of step N1 "
                                                 "(N1,N2; default 20,60; quick 3,7)")
    p.add_argument("--reps", type=int, default=None, help="repetitions per part (default 5; quick 3)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps (default 3; quick 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--quick", action="store_true", help="tiny presets, few steps (tests)")
    return p.parse_args(argv)


def main(argv=None) -> dict:
    args = parse_args(argv)
    load_before = loadavg()
    t_start = now()
    if args.threads:
        torch.set_num_threads(args.threads)
    from harness.core.registry import GENERATORS, TOKENIZERS
    from harness.models.catalog import load_all
    from harness.suites import DEFAULT_GENERATORS, FMNIST_GENERATOR_TRAIN, FMNIST_TRAIN
    load_all()
    quick = args.quick
    steps = tuple(int(s) for s in (args.steps or ("3,7" if quick else "20,60")).split(","))
    if len(steps) != 2 or not 0 < steps[0] < steps[1]:
        raise SystemExit("--steps: two step counts N1 < N2, e.g. 20,60")
    reps = args.reps or (3 if quick else 5)
    warmup = args.warmup if args.warmup is not None else (1 if quick else 3)
    if args.presets:
        wanted = [p.strip() for p in args.presets.split(",") if p.strip()]
    else:
        wanted = list(QUICK_TOKENIZERS + QUICK_GENERATORS if quick else TOKENIZER_PRESETS + GENERATOR_PRESETS)
    pairs = dict(QUICK_GENERATOR_TOKENIZER) | {g: t for _, g, t, _, _ in reversed(DEFAULT_GENERATORS)}
    tok_train = QUICK_TOKENIZER_TRAIN if quick else FMNIST_TRAIN
    gen_train = QUICK_GENERATOR_TRAIN if quick else tuple(s for s in FMNIST_GENERATOR_TRAIN if not s.startswith("steps="))
    dataset = "procedural" if quick else "fashion-mnist"
    n_tokens = 512 if quick else 10000
    result = {"tokenizers": [], "generators": []}
    with tempfile.TemporaryDirectory(prefix="vqbench-train-speed-") as tmp:
        tmp = Path(tmp)
        for preset in wanted:
            t0 = now()
            if preset in TOKENIZERS:
                result["tokenizers"].append(tokenizer_row(preset, tok_train, dataset, steps, reps, warmup, tmp))
            elif preset in GENERATORS:
                if preset not in pairs:
                    raise SystemExit(f"{preset}: no tokenizer layout is paired with this generator")
                result["generators"].append(generator_row(preset, pairs[preset], gen_train, n_tokens, steps, reps,
                                                          warmup, tmp))
            else:
                raise SystemExit(f"{preset}: not a registered tokenizer or generator preset")
            print(f"{preset}: {now() - t0:.0f} s", file=sys.stderr, flush=True)
    result["machine"] = describe(load_before)
    argv_s = " ".join(argv if argv is not None else sys.argv[1:])
    result["settings"] = {"tokenizer_train": tok_train, "generator_train": gen_train, "dataset": dataset,
                          "n_tokens": n_tokens, "steps": steps, "reps": reps, "warmup": warmup,
                          "argv": f" {argv_s}" if argv_s else ""}
    result["seconds"] = now() - t_start
    out = Path(args.out)
    if out.suffix != ".md":
        out = out / "train_speed_cpu.md"
    write_report(out, markdown(result))
    result["out"] = str(out)
    return result


if __name__ == "__main__":
    main()
