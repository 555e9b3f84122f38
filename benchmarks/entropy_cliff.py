"""Exact per-position conditional entropy (harness/entropy.py) at ImageNet scale: wall time and memory.

Synthetic token sequences of T = 256 positions, K = 16384 codes, stored as uint16 (655 MB at
N = 1,281,167, the ImageNet training set), with four kinds of structure:

- ``uniform``: i.i.d. uniform codes; the cliff falls at t = 2 (log2 N = 20.3 bits, log2 K = 14);
- ``zipf``: i.i.d. codes with Zipf(1.1) frequencies (codebook utilization well below 100%, as in
  real tokenizers); the cliff comes a position later;
- ``markov-2bit``: x_0 uniform over 4 codes, x_t = (31 x_{t-1} + r_t) mod K with r_t uniform over 4
  values: 2 bits per position, so the sequences stay in shared prefix groups for ~10 positions (the
  slow cliff: ten full sorts);
- ``duplicates``: N rows drawn from 100,000 distinct uniform sequences, so ~N rows never become
  unique and the working set never empties: every one of the 256 positions is sorted (worst case).

Each case runs in a fresh subprocess; time covers ``conditional_entropies`` only (the data are
generated before); memory: the peak of the buffers allocated during the computation (tracemalloc,
which numpy reports to), and the whole process's peak RSS (data generation and Python included).
Writes benchmarks/results/entropy_cliff_cpu.md.

    python benchmarks/entropy_cliff.py [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
IMAGENET_N, T, K = 1_281_167, 256, 16384
CASES = ("uniform", "zipf", "markov-2bit", "duplicates")


def make_tokens(kind: str, n: int, seed: int = 0):
    import numpy as np
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        return rng.integers(0, K, (n, T), dtype=np.uint16)
    if kind == "zipf":
        p = 1.0 / np.arange(1, K + 1) ** 1.1
        cdf = np.cumsum(p / p.sum())
        x = np.empty((n, T), dtype=np.uint16)
        for t in range(T):                         # column by column: bounded temporary memory
            x[:, t] = np.minimum(np.searchsorted(cdf, rng.random(n)), K - 1)
        return x
    if kind == "markov-2bit":
        x = np.empty((n, T), dtype=np.uint16)
        x[:, 0] = rng.integers(0, 4, n)
        for t in range(1, T):
            x[:, t] = (x[:, t - 1].astype(np.int64) * 31 + rng.integers(0, 4, n)) % K
        return x
    if kind == "duplicates":
        pool = rng.integers(0, K, (min(n, 100_000), T), dtype=np.uint16)
        return pool[rng.integers(0, len(pool), n)]
    raise ValueError(kind)


def worker(kind: str, n: int) -> dict:
    from harness.evaluation.entropy import conditional_entropies
    import tracemalloc
    x = make_tokens(kind, n)
    tracemalloc.start()                  # numpy reports its buffers to tracemalloc
    base = tracemalloc.get_traced_memory()[0]
    t0 = time.perf_counter()
    p = conditional_entropies(x, K)
    seconds = time.perf_counter() - t0
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"kind": kind, "N": n, "seconds": seconds, "peak_extra_MiB": peak / 2 ** 20, "rss_MiB": rss / 2 ** 20,
            "data_MiB": x.nbytes / 2 ** 20, "H0": float(p.conditional_entropy[0]),
            "H1": float(p.conditional_entropy[1]), "H2": float(p.conditional_entropy[2]),
            "t_star": p.t_star, "bound": p.bound_t_star, "residual": p.residual_bits}


def run_case(kind: str, n: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    out = subprocess.run([sys.executable, __file__, "--worker", kind, str(n)], capture_output=True, text=True,
                         env=env, timeout=1800)
    if out.returncode != 0:
        raise RuntimeError(f"{kind} N={n} failed:\n{out.stderr[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller N only (a smoke run)")
    ap.add_argument("--worker", nargs=2, metavar=("KIND", "N"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args.worker[0], int(args.worker[1]))))
        return
    ns = (10_000, 100_000) if args.quick else (50_000, 300_000, IMAGENET_N)
    rows = []
    for kind in CASES:
        for n in ns:
            r = run_case(kind, n)
            rows.append(r)
            print(f"{kind:<12} N={n:>9,}: {r['seconds']:7.2f} s, +{r['peak_extra_MiB']:7.0f} MiB, "
                  f"t*={r['t_star']} (bound {r['bound']})", flush=True)
    if args.quick:
        return
    lines = [
        "# Exact entropy cliff, cpu",
        "",
        f"`conditional_entropies` on N x {T} token sequences, K = {K:,} (uint16), "
        f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), numpy "
        f"{__import__('numpy').__version__}; machine shared with other jobs while measuring. Time: the entropy "
        "computation only; peak extra MiB: the most memory the computation held beyond the token array (tracemalloc); "
        "process MiB: the whole process's peak RSS, generating the data included.",
        "",
        "| structure | N | seconds | peak extra MiB | data MiB | process MiB | H_0 | H_1 | H_2 | empirical t* | bound t* | residual bits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['N']:,} | {r['seconds']:.2f} | {r['peak_extra_MiB']:.0f} | "
                     f"{r['data_MiB']:.0f} | {r['rss_MiB']:.0f} | {r['H0']:.3f} | {r['H1']:.3f} | {r['H2']:.4f} | {r['t_star']} | "
                     f"{r['bound']} | {r['residual']:.3f} |")
    lines += ["", "Reproduce: `python benchmarks/entropy_cliff.py` (about as long as the table's seconds plus "
                  "data generation)."]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "entropy_cliff_cpu.md").write_text("\n".join(lines) + "\n")
    print(f"written to {RESULTS / 'entropy_cliff_cpu.md'}")


if __name__ == "__main__":
    main()
