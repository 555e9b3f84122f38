"""The FID Inception feature pass (the floor of every FID/KID/IS/precision-recall here): ways to run it.

On N Fashion-MNIST test images (299 x 299 after the FID input protocol), times the pool3 pass as

- ``graph, channels-last input``: the pass vqbench used before the folded network (issue #15);
- ``graph``: the TorchScript graph as shipped, NCHW input;
- ``folded``: ``harness.evaluation.inception_net.FoldedInception`` (eager, batch norm folded into the
  convolutions): NCHW weights and input, and channels-last weights and input at several batch sizes;
- ``folded, TorchScript freeze + optimize_for_inference``: oneDNN's conv + bias + ReLU fusion;
- ``folded, torch.compile`` (inductor, weights frozen): its compile time is reported separately, since
  every process (and every new batch shape) pays it again;

and for each the largest difference of its features from the pre-#15 pass (``graph, channels-last
input``) relative to the largest feature, and the FID between the first and second half of the images
under both. A way is eligible to be the default when that difference is at most 1e-4; vqbench uses the
eligible one with the highest throughput that needs no per-process compilation. Writes
benchmarks/results/inception_speed_<device>.md.

    python benchmarks/inception_speed.py [--n 60] [--device cpu] [--no-compile]
"""
from __future__ import annotations

import argparse
import copy
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
TOLERANCE = 1e-4
BATCH_SIZES = (1, 2, 4, 8, 16, 50)


def throughput(fn, x: torch.Tensor, batch_size: int, reps: int) -> tuple[float, torch.Tensor]:
    """Best of ``reps`` passes over x (images/s), after one warm-up batch; and the features."""
    with torch.no_grad():
        fn(x[:batch_size])
        best = float("inf")
        for _ in range(reps):
            t0 = time.perf_counter()
            out = torch.cat([fn(c) for c in x.split(batch_size)])
            best = min(best, time.perf_counter() - t0)
    return len(x) / best, out.float().reshape(len(x), -1)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=60, help="images per timed pass (default 60)")
    p.add_argument("--reps", type=int, default=3, help="passes per way; the fastest counts (default 3)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-compile", action="store_true", help="skip torch.compile (minutes of compilation)")
    p.add_argument("--out", default=None, help="Markdown file (default benchmarks/results/inception_speed_<device>.md)")
    args = p.parse_args(argv)
    load_before = loadavg()
    warnings.simplefilter("ignore")
    from harness.data.datasets import open_dataset
    from harness.evaluation.features import FIDInception, inception_input, load_fid_graph
    from harness.evaluation.inception_net import FoldedInception
    from harness.evaluation.metrics.fidelity import fid_from_features

    dev = args.device
    images = open_dataset("fashion-mnist", "test", n=args.n).batch(torch.arange(args.n))[0]
    x = inception_input(images).to(dev)
    graph = load_fid_graph()[0].to(dev)                  # the weights vqbench evaluates with
    folded = FoldedInception(graph)
    nchw = copy.deepcopy(folded).to(memory_format=torch.contiguous_format)

    def channels_last(fn):
        return lambda c: fn(c.contiguous(memory_format=torch.channels_last))

    rows, reference = [], None

    def measure(way: str, fn, batch_size: int, compile_s: float | None = None):
        nonlocal reference
        rate, feats = throughput(fn, x, batch_size, args.reps)
        if reference is None:
            reference = feats
        diff = ((feats - reference).abs().max() / reference.abs().max()).item()
        half = len(feats) // 2
        fid = fid_from_features(feats[:half].double(), feats[half:].double())
        rows.append({"way": way, "batch_size": batch_size, "images_per_s": rate, "max_rel_diff": diff,
                     "fid_halves": fid, "compile_s": compile_s})
        print(f"{way:60s} bs {batch_size:3d}: {rate:6.2f} img/s, diff {diff:.1e}", file=sys.stderr, flush=True)

    measure("graph, channels-last input (pre-#15 vqbench)", channels_last(graph), 50)
    measure("graph (TorchScript as shipped, NCHW)", graph, 50)
    measure("folded, NCHW", nchw, 50)
    for bs in BATCH_SIZES:
        measure("folded, channels-last", channels_last(folded), bs)
    fused = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.script(copy.deepcopy(folded))))
    measure("folded, TorchScript freeze + optimize_for_inference", channels_last(fused), 4)
    if not args.no_compile:
        import torch._inductor.config as inductor_config
        inductor_config.freezing = True
        compiled = torch.compile(copy.deepcopy(folded), dynamic=False)
        t0 = time.perf_counter()
        with torch.no_grad():
            compiled(x[:4].contiguous(memory_format=torch.channels_last))
        compile_s = time.perf_counter() - t0
        measure("folded, torch.compile (inductor, frozen weights)", channels_last(compiled), 4, compile_s)

    chosen = FIDInception.chunk_size(dev)
    result = {"rows": rows, "machine": describe(load_before), "n": args.n, "device": dev,
              "default": {"way": "folded, channels-last", "batch_size": chosen},
              "argv": " ".join(argv if argv is not None else sys.argv[1:])}
    out = Path(args.out) if args.out else RESULTS / f"inception_speed_{dev}.md"
    write_report(out, markdown(result))
    result["out"] = str(out)
    return result


def markdown(r: dict) -> str:
    m = r["machine"]
    base = r["rows"][0]["images_per_s"]
    lines = [f"# FID Inception feature pass, {r['device']}: ways to run it", "",
             f"{header(m)} Written by `python benchmarks/inception_speed.py"
             f"{' ' + r['argv'] if r['argv'] else ''}`.", "",
             f"{r['n']} Fashion-MNIST test images through the FID input protocol (uint8, TF1 bilinear to 299 x 299); "
             "best of the timed passes after a warm-up batch. `max rel diff`: largest |feature difference| "
             "from the first row, over the largest |feature|. `FID halves`: FID between the first and the "
             f"second half of the images with that way's features (a way within {TOLERANCE:g} leaves FID "
             "unchanged to its printed digits).", "",
             "| way | batch | images/s | x first row | max rel diff | FID halves | compile s |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for row in r["rows"]:
        compile_s = "" if row["compile_s"] is None else f"{row['compile_s']:.1f}"
        lines.append(f"| {row['way']} | {row['batch_size']} | {row['images_per_s']:.2f} | "
                     f"{row['images_per_s'] / base:.2f} | {row['max_rel_diff']:.1e} | {row['fid_halves']:.4f} | "
                     f"{compile_s} |")
    eligible = [row for row in r["rows"] if row["max_rel_diff"] <= TOLERANCE]
    fastest = max(eligible, key=lambda row: row["images_per_s"])
    d = r["default"]
    used = next((row for row in r["rows"] if row["way"] == d["way"] and row["batch_size"] == d["batch_size"]), None)
    lines += ["", f"Fastest within {TOLERANCE:g}: {fastest['way']} at batch {fastest['batch_size']}, "
              f"{fastest['images_per_s']:.2f} images/s"
              + (f" after {fastest['compile_s']:.0f} s of compilation per process and batch shape."
                 if fastest["compile_s"] is not None else ".")]
    if used is not None:
        lines.append(f"vqbench's default on {r['device']}: {d['way']} in chunks of {d['batch_size']} "
                     f"(`FIDInception.chunk_size`), {used['images_per_s']:.2f} images/s, "
                     f"{used['images_per_s'] / base:.2f}x the pre-#15 pass.")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
