"""Nearest-code lookup: vqbench's chunked search vs a plain full distance matrix vs
vector-quantize-pytorch's VectorQuantize, over codebook sizes K and code dims D.

Each (method, K, D) runs in a fresh subprocess so its peak memory is its own: peak RSS growth over
the inputs on CPU (ru_maxrss, first call included), torch.cuda.max_memory_allocated during the timed
calls on GPU. Writes
benchmarks/results/nearest_code_<device>.md and .csv.

    python benchmarks/nearest_code.py [--device cpu|cuda] [--m 1024] [--quick]
"""
from __future__ import annotations

import argparse
import csv
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
KS = (1024, 16384, 65536, 262144)
DS = (8, 64, 256, 1024)          # 256 = CVQ's 16x16 channel maps at 256x256


def worker(method: str, k: int, d: int, m: int, device: str, repeats: int) -> dict:
    import torch
    from harness.models.quantizers.lookup import nearest_code
    torch.manual_seed(0)
    z = torch.randn(m, d, device=device)
    cb = torch.randn(k, d, device=device)
    if method == "vqbench":
        fn = lambda: nearest_code(z, cb)                                        # noqa: E731
    elif method == "full-matmul":
        fn = lambda: (cb.pow(2).sum(1) - 2 * z @ cb.t()).argmin(1)             # noqa: E731
    else:
        from vector_quantize_pytorch import VectorQuantize
        vq = VectorQuantize(dim=d, codebook_size=k, kmeans_init=False).to(device).eval()
        vq._codebook.embed.data.copy_(cb[None])
        fn = lambda: vq(z[None])[1]                                             # noqa: E731
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad():
        # CPU: the allocator hands freed pages back for reuse, so the peak must include the first call
        base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        fn()                                                                    # warm-up
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
            base_gpu = torch.cuda.memory_allocated()
        t0 = time.perf_counter()
        for _ in range(repeats):
            fn()
        sync()
        seconds = (time.perf_counter() - t0) / repeats
    peak = ((torch.cuda.max_memory_allocated() - base_gpu) if device == "cuda"
            else (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base_rss) * 1024)
    return {"method": method, "K": k, "D": d, "M": m, "ms": seconds * 1e3, "peak_extra_MiB": peak / 2**20}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--m", type=int, default=1024, help="vectors looked up per call (batch x tokens)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="K <= 16384 and D <= 256 only")
    ap.add_argument("--worker", nargs=3, metavar=("METHOD", "K", "D"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        method, k, d = a.worker
        print(json.dumps(worker(method, int(k), int(d), a.m, a.device, a.repeats)))
        return
    rows = []
    for k in KS:
        for d in DS:
            if a.quick and (k > 16384 or d > 256):
                continue
            for method in ("vqbench", "full-matmul", "vector-quantize-pytorch"):
                out = subprocess.run([sys.executable, __file__, "--worker", method, str(k), str(d), "--m", str(a.m),
                                      "--device", a.device, "--repeats", str(a.repeats)],
                                     capture_output=True, text=True)
                row = json.loads(out.stdout) if out.returncode == 0 else {
                    "method": method, "K": k, "D": d, "M": a.m, "ms": float("nan"), "peak_extra_MiB": float("nan"),
                    "error": (out.stderr.strip().splitlines() or ["?"])[-1][:120]}
                rows.append(row)
                print(f"{method:>24} K={k:>7} D={d:>5}: {row['ms']:9.2f} ms, +{row['peak_extra_MiB']:8.1f} MiB", flush=True)
    RESULTS.mkdir(exist_ok=True)
    with open(RESULTS / f"nearest_code_{a.device}.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["method", "K", "D", "M", "ms", "peak_extra_MiB", "error"])
        w.writeheader()
        w.writerows(rows)
    lines = [f"# Nearest-code lookup, {a.device}, M = {a.m} vectors per call", "",
             "Time per call (ms) and peak memory beyond the inputs (MiB); vqbench never materializes more "
             "than a 64 MiB chunk of the M x K distance matrix.", "",
             "| K | D | vqbench ms | full matmul ms | vector-quantize-pytorch ms | vqbench MiB | full matmul MiB | vqp MiB |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    by = {(r["method"], r["K"], r["D"]): r for r in rows}
    for k in KS:
        for d in DS:
            if ("vqbench", k, d) not in by:
                continue
            cells = [by[(m, k, d)] for m in ("vqbench", "full-matmul", "vector-quantize-pytorch")]
            lines.append(f"| {k:,} | {d} | " + " | ".join(f"{c['ms']:.1f}" for c in cells) + " | "
                         + " | ".join(f"{c['peak_extra_MiB']:.0f}" for c in cells) + " |")
    (RESULTS / f"nearest_code_{a.device}.md").write_text("\n".join(lines) + "\n")
    print(f"written {RESULTS / f'nearest_code_{a.device}.md'}")


if __name__ == "__main__":
    main()
