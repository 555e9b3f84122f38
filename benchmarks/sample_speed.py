"""Sampling speed: KV-cached against uncached decoding, and class-balanced sampling throughput.

Two tables, on randomly initialised networks (seeded; the cost of sampling does not depend on the weights):

1. KV cache. For each generator family with an incremental path (``GeneratorInfo.kv_cache``), on the
   layout of the tokenizer the main job pairs it with, plus ar-fmnist on a 256-token layout (16 x 16,
   the token count of VQ-16 at 256 px, where recomputation grows quadratically): samples/s with
   ``SamplerConfig(kv_cache=True)`` and with ``kv_cache=False`` (the whole prefix recomputed each step),
   guided as in the main job (CFG 2: conditional and unconditional rows together), and whether the two
   draw the same samples from the same seed.
2. Class-balanced sampling, end to end: ``harness.evaluation.generate.sample_batches`` (labels ``i mod
   10``, one seeded generator per batch, sampling then the tokenizer's decoder) for every pairing of the
   main job, with the main job's sampler and batch size: images/s and the decoder's share.

Best of ``--reps`` timed passes after one warm-up batch. Writes benchmarks/results/sample_speed_<device>.md.

    python benchmarks/sample_speed.py [--batch-size 16] [--n 200] [--reps 2] [--quick]
"""
from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
from machine import describe, header, loadavg, write_report  # noqa: E402  (benchmarks/machine.py)

RESULTS = REPO / "benchmarks" / "results"
LONG_LAYOUT = (16, 16, 4096)                    # grid and codebook of the long-sequence row
QUICK_PAIRS = (("ar-tiny", "vq-tiny"), ("car-tiny", "cvq-tiny"), ("masked-tiny", "vq-tiny"))


def best_of(fn, reps: int) -> tuple[float, object]:
    """(seconds, result) of the fastest of ``reps`` calls after a warm-up call."""
    fn()
    best, out = float("inf"), None
    for _ in range(reps):
        t0 = time.perf_counter()
        result = fn()
        seconds = time.perf_counter() - t0
        if seconds < best:
            best, out = seconds, result
    return best, out


def build_pair(generator: str, tokenizer: str, layout=None):
    """(tokenizer, generator), seeded; ``layout`` replaces the tokenizer's layout for the generator."""
    from harness.core.contracts import Conditioning
    from harness.models.catalog import build_generator, build_tokenizer, generator_config
    torch.manual_seed(0)
    _, tok = build_tokenizer(tokenizer)
    if layout is None:
        _, gen = build_generator(generator, {}, tok, Conditioning("class", num_classes=10))
    else:
        gen = generator_config(generator).build(layout, Conditioning("class", num_classes=10), None)
    return tok.eval(), gen.eval()


def kv_row(label: str, gen, batch_size: int, reps: int) -> dict:
    from dataclasses import replace
    from harness.suites import GUIDED
    labels = torch.arange(batch_size) % 10

    def draw(cached: bool):
        g = torch.Generator().manual_seed(0)
        with torch.no_grad():
            return gen.sample(batch_size, labels, sampler=replace(GUIDED, kv_cache=cached), generator=g)
    t_on, a = best_of(lambda: draw(True), reps)
    t_off, b = best_of(lambda: draw(False), reps)
    print(f"kv {label}: {t_on:.2f} s cached, {t_off:.2f} s uncached", file=sys.stderr, flush=True)
    return {"pair": label, "positions": gen.layout.num_positions, "batch": batch_size,
            "cached_per_s": batch_size / t_on, "uncached_per_s": batch_size / t_off, "speedup": t_off / t_on,
            "same_samples": bool(torch.equal(a, b))}


def balanced_row(label: str, tok, gen, sampler, n: int, batch_size: int, reps: int) -> dict:
    from harness.core.distributed import setup
    from harness.evaluation.generate import class_balanced, sample_batches
    d = setup("cpu")
    clock = {"decode": 0.0}
    decode = tok.decode

    def timed_decode(idx):
        t0 = time.perf_counter()
        out = decode(idx)
        clock["decode"] += time.perf_counter() - t0
        return out
    tok.decode = timed_decode                                   # the decoder's share of the pass

    def run():                                                  # (images, the decoder's seconds in this pass)
        clock["decode"] = 0.0
        count = sum(len(rows) for rows, *_ in sample_batches(gen, tok, class_balanced(n, 10), sampler, seed=0,
                                                              batch_size=batch_size, d=d))
        return count, clock["decode"]
    try:
        seconds, (count, decode_seconds) = best_of(run, reps)
    finally:
        del tok.decode
    print(f"balanced {label}: {count} images in {seconds:.2f} s", file=sys.stderr, flush=True)
    return {"pair": label, "n": count, "batch": batch_size, "images_per_s": count / seconds,
            "decode_share": decode_seconds / seconds}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch-size", type=int, default=16, help="rows per sample() call in the KV-cache table")
    p.add_argument("--n", type=int, default=200, help="class-balanced samples per pairing (default 200)")
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="tiny presets, few samples (tests)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    warnings.simplefilter("ignore")
    load_before = loadavg()
    from harness.core.contracts import TokenLayout
    from harness.core.registry import GENERATORS
    from harness.models.catalog import load_all
    from harness.evaluation.record_generation import GenerationMetrics
    from harness.suites import DEFAULT_GENERATORS, GUIDED
    load_all()
    if args.quick:
        pairs = [(f"{g} @ {t}", g, t, GUIDED) for g, t in QUICK_PAIRS]
        n, long_rows = 20, []
    else:
        pairs = [(f"{g} @ {t}", g, t, s) for label, g, t, s, trained_by in DEFAULT_GENERATORS if trained_by is None]
        n = args.n
        h, w, k = LONG_LAYOUT
        long_rows = [("ar-fmnist @ 256-token layout (16 x 16, K = 4096)", "ar-fmnist", "vq-fmnist",
                      TokenLayout.constant(h * w, k, grid=(h, w)))]
    batch = 4 if args.quick else args.batch_size
    kv, balanced, seen = [], [], set()
    for label, g, t, sampler in pairs:
        tok, gen = build_pair(g, t)
        if GENERATORS.entry(g).meta.get("kv_cache") and (g, t) not in seen:
            kv.append(kv_row(label, gen, batch, args.reps))
        seen.add((g, t))
        balanced.append(balanced_row(label + ("" if sampler == GUIDED else f" ({sampler.cfg_schedule} CFG)"),
                                     tok, gen, sampler, n, 8 if args.quick else GenerationMetrics.batch_size,
                                     args.reps))
    for label, g, t, layout in long_rows:
        _, gen = build_pair(g, t, layout)
        kv.append(kv_row(label, gen, batch, args.reps))
    result = {"kv": kv, "balanced": balanced, "machine": describe(load_before), "device": "cpu",
              "argv": " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out) if args.out else RESULTS / "sample_speed_cpu.md"
    write_report(out, markdown(result))
    result["out"] = str(out)
    return result


def markdown(r: dict) -> str:
    m = r["machine"]
    lines = ["# Sampling speed, cpu: KV cache and class-balanced throughput", "",
             f"{header(m)} Written by `python benchmarks/sample_speed.py"
             f"{' ' + r['argv'] if r['argv'] else ''}`. Random (seeded) weights; fp32; best of the timed passes.",
             "", "## KV-cached against uncached decoding (CFG 2, conditional + unconditional rows)", "",
             "| generator @ layout | positions | batch | cached samples/s | uncached samples/s | speed-up | "
             "same samples |", "|---|---:|---:|---:|---:|---:|---|"]
    for row in r["kv"]:
        lines.append(f"| {row['pair']} | {row['positions']} | {row['batch']} | {row['cached_per_s']:.1f} | "
                     f"{row['uncached_per_s']:.1f} | {row['speedup']:.1f}x | "
                     f"{'yes' if row['same_samples'] else 'NO'} |")
    lines += ["", "## Class-balanced sampling, end to end (the main job's pairings, samplers and batch size)", "",
              "| generator @ tokenizer | images | batch | images/s | decoder share |",
              "|---|---:|---:|---:|---:|"]
    for row in r["balanced"]:
        lines.append(f"| {row['pair']} | {row['n']} | {row['batch']} | {row['images_per_s']:.1f} | "
                     f"{100 * row['decode_share']:.0f} % |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
