"""The `vqbench` command line.

Every user-facing failure is a VQBenchError: printed as one `error: ...` line, exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .errors import VQBenchError

LIST_KINDS = ("tokenizers", "generators", "metrics", "datasets", "suites")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vqbench", description="Train and evaluate discrete visual tokenizers under one protocol.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("list", help="list registered tokenizers, generators, metrics, datasets, suites",
                       description="List registry entries with their descriptions.")
    p.add_argument("kind", nargs="?", choices=LIST_KINDS, help="which registry (default: all)")

    p = sub.add_parser("params", help="parameter count of a preset (paper presets on the meta device)",
                       description="Build PRESET (paper-scale presets without allocating weights) and print "
                                   "its parameter count.")
    p.add_argument("preset", help="a tokenizer preset, e.g. vq-f16-imagenet")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field, e.g. --set codebook_size=4096 (repeatable)")

    p = sub.add_parser("train", help="train a tokenizer preset",
                       description="Train a tokenizer preset; checkpoints go to RUN_DIR/checkpoints.")
    p.add_argument("preset", help="tokenizer preset (`vqbench list tokenizers`)")
    p.add_argument("--run-dir", required=True, type=Path, help="folder for checkpoints and TensorBoard logs")
    p.add_argument("--dataset", default="fashion-mnist",
                   help="dataset name or imagefolder:<path> (`vqbench list datasets`)")
    p.add_argument("--n-train", type=int, default=None, help="use the first N training images (deterministic subset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset or training setting, e.g. --set lr=3e-4 (repeatable; "
                        "--help-settings lists them)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR's latest checkpoint")
    p.add_argument("--help-settings", action="store_true", help="list the settings --set accepts and exit")
    _add_device(p)

    p = sub.add_parser("eval", help="evaluate a tokenizer checkpoint and append rows to a results file",
                       description="Stream a split through a trained tokenizer and record each metric "
                                   "as one row in the results store.")
    p.add_argument("checkpoint", type=Path, help="a run folder (its latest checkpoint) or a step_* folder")
    p.add_argument("--results", type=Path, required=True, help="results store (.jsonl), created if missing")
    p.add_argument("--dataset", default=None, help="default: the dataset the tokenizer was trained on")
    p.add_argument("--split", default="test")
    p.add_argument("--n-eval", type=int, default=None, help="evaluate the first N images (default: all)")
    p.add_argument("--metrics", default=None, help="comma-separated metric names (default: psnr,ssim,"
                                                     "codebook_usage,unique_ratio)")
    p.add_argument("--batch-size", type=int, default=250)
    p.add_argument("--run-id", default=None, help="row label (default: the checkpoint's run folder name)")
    _add_device(p)

    p = sub.add_parser("run", help="run a suite (train + evaluate + report)",
                       description="Run every training and evaluation of SUITE, resumably, and render its tables.")
    p.add_argument("suite", help="suite name (`vqbench list suites`)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: reports/<suite>)")
    _add_device(p)

    p = sub.add_parser("analyze", help="token-sequence analyses (VCQ schedules, entropy-cliff bounds)",
                       description="Information-capacity analyses of the VCQ paper.")
    asub = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS")
    a = asub.add_parser("schedule", help="K_t table, average K, bits per pixel and t* of a VCQ schedule",
                        description="Print a VCQ codebook-size schedule and its statistics.")
    a.add_argument("--schedule", default="cosine", choices=("constant", "linear", "cosine", "power"))
    a.add_argument("--k-min", type=int, default=2)
    a.add_argument("--k-max", type=int, default=16384)
    a.add_argument("--length", type=int, default=256, help="sequence length T")
    a.add_argument("--power", type=float, default=2.5, help="exponent of the power schedule")
    a.add_argument("--image-size", type=int, default=256, help="for bits per pixel")
    a.add_argument("--dataset-size", type=int, default=None, help="N, for the capacity-bound t*")
    a.add_argument("--out", type=Path, default=None, help="write the K_t curve as CSV (t,K_t,cumulative_bits)")
    a = asub.add_parser("cliff", help="the entropy-cliff bound t* = ceil(log2 N / log2 K) for a constant codebook",
                        description="Where a constant codebook exhausts a dataset's information, and how much "
                                    "data each further position would need.")
    a.add_argument("--dataset-size", type=int, required=True, help="N training samples")
    a.add_argument("--codebook-size", type=int, required=True, help="K")
    a.add_argument("--positions", type=int, default=4, help="how many positions past t* to tabulate")

    p = sub.add_parser("report", help="render wide tables (Markdown, CSV, LaTeX) from results stores",
                       description="Pivot one or more long results stores into comparison tables.")
    p.add_argument("results", nargs="+", type=Path, help="results .jsonl files")
    p.add_argument("--out", type=Path, required=True, help="folder for results.md/.csv/.tex")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args) or 0
    except VQBenchError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is kept (rerun with --resume)", file=sys.stderr)
        return 130


def cmd_list(args) -> int:
    from .catalog import load_all
    from .registry import ALL
    load_all()
    for kind in [args.kind] if args.kind else LIST_KINDS:
        reg = ALL[kind]
        print(f"{kind} ({len(reg)})")
        for e in reg.entries():
            extra = f" [{e.meta['scale']}]" if "scale" in e.meta else ""
            print(f"  {e.name:<24}{extra} {e.meta.get('description', '')}")
        if len(reg) == 0:
            print("  (none registered yet)")
    return 0


def cmd_params(args) -> int:
    from .catalog import build_tokenizer, load_all, parameter_count
    from .config import split_override
    from .registry import TOKENIZERS
    overrides = dict(split_override(o) for o in args.overrides)
    load_all()
    # paper presets on the meta device (no memory); small ones for real (some libraries read values at init)
    device = "meta" if TOKENIZERS.entry(args.preset).meta.get("scale") == "paper" else "cpu"
    _, model = build_tokenizer(args.preset, overrides, device=device)
    n = parameter_count(model)
    print(f"{args.preset}: {n:,} parameters ({n / 1e6:.1f}M)")
    return 0


def cmd_train(args) -> int:
    from .train import TrainConfig, train_tokenizer
    if args.help_settings:
        from .catalog import tokenizer_config
        from .config import field_types
        for title, cfg in (("preset", tokenizer_config(args.preset)), ("training", TrainConfig())):
            print(f"{title} settings:")
            for name, tp in field_types(cfg).items():
                print(f"  {name} = {getattr(cfg, name)!r}  ({getattr(tp, '__name__', tp)})")
        return 0
    final = train_tokenizer(args.preset, args.run_dir, overrides=args.overrides, dataset=args.dataset,
                            n_train=args.n_train, resume=args.resume, device=args.device,
                            progress=not args.quiet)
    print(f"final checkpoint: {final}")
    return 0


def cmd_eval(args) -> int:
    from .record import evaluate_and_record
    from .results import ResultsStore
    from .suites import TOKENIZER_METRICS
    metrics = tuple(m.strip() for m in args.metrics.split(",")) if args.metrics else TOKENIZER_METRICS
    rows = evaluate_and_record(args.checkpoint, ResultsStore(args.results), run_id=args.run_id,
                               dataset=args.dataset, split=args.split, n_eval=args.n_eval,
                               metrics=metrics, batch_size=args.batch_size, device=args.device,
                               progress=not args.quiet)
    for r in rows:
        name = r["metric"] if r["protocol"] == "canonical" else f"{r['metric']} [{r['protocol']}]"
        print(f"{name:<32} {r['value']:.6g}")
    return 0


def cmd_run(args) -> int:
    from .suites import run_suite
    out = args.out or Path("reports") / args.suite
    table = run_suite(args.suite, out, device=args.device, progress=not args.quiet)
    if table is not None:
        print(Path(table).read_text())
        print(f"tables and results written to {out}")
    return 0


def cmd_report(args) -> int:
    import pandas as pd
    from .report import render
    from .results import ResultsStore
    frames = [ResultsStore(p).read(must_exist=True) for p in args.results]
    for path in render(pd.concat(frames, ignore_index=True), args.out):
        print(path)
    return 0


def cmd_analyze(args) -> int:
    import math
    from .schedules import codebook_schedule, constant_cliff, schedule_stats
    if args.analysis == "cliff":
        if args.dataset_size < 2 or args.codebook_size < 2:
            raise VQBenchError("--dataset-size and --codebook-size must be at least 2")
        t = constant_cliff(args.dataset_size, args.codebook_size)
        print(f"N = {args.dataset_size:,}, K = {args.codebook_size:,}: log2 N = {math.log2(args.dataset_size):.2f} bits, "
              f"log2 K = {math.log2(args.codebook_size):.2f} bits per position")
        print(f"t* = ceil(log2 N / log2 K) = {t}: the first {t} positions can already use up all log2 N bits "
              f"(the entropy cliff); later positions are left (near-)deterministic")
        for p in range(t + 1, t + 1 + args.positions):
            # position p can still carry data entropy only if log2 N > (p - 1) log2 K
            print(f"  for position {p} to stay informative: N > K^{p - 1} = {float(args.codebook_size) ** (p - 1):.3g} samples")
        return 0
    try:
        sizes = codebook_schedule(args.schedule, args.k_min, args.k_max, args.length, args.power)
    except ValueError as e:
        raise VQBenchError(f"analyze schedule: {e}") from None
    stats = schedule_stats(sizes, args.image_size, args.dataset_size)
    print(f"{args.schedule} schedule, K from {args.k_min} to {args.k_max}, T = {args.length}")
    shown = sorted(set([0, 1, 2, 3, 4, 5, 7, 15, 31, 63, 127, args.length // 2, args.length - 1]) & set(range(args.length)))
    print("  t: " + " ".join(f"{t:>6}" for t in shown))
    print("K_t: " + " ".join(f"{sizes[t]:>6}" for t in shown))
    print(f"average K = {stats.average_codebook_size:,.1f}; bits per image = {stats.bits_per_image:,.1f}; "
          f"bits per pixel = {stats.bits_per_pixel:.5f} at {args.image_size}x{args.image_size}")
    if stats.capacity_cliff is not None or args.dataset_size:
        where = stats.capacity_cliff if stats.capacity_cliff is not None else f"> {args.length}"
        print(f"capacity-bound t* for N = {args.dataset_size:,}: {where}")
    if args.out:
        from .checkpoint import atomic_write_text
        rows, bits = ["t,K_t,cumulative_bits"], 0.0
        for t, k in enumerate(sizes):
            bits += math.log2(k)
            rows.append(f"{t},{k},{bits:.6f}")
        args.out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(args.out, "\n".join(rows) + "\n")
        print(f"K_t curve written to {args.out}")
    return 0


COMMANDS = {"analyze": cmd_analyze, "list": cmd_list, "params": cmd_params, "train": cmd_train, "eval": cmd_eval,
            "run": cmd_run, "report": cmd_report}

if __name__ == "__main__":
    sys.exit(main())
