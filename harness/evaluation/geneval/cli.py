"""`vqbench eval geneval SAMPLES_DIR` and `vqbench geneval-prompts --out DIR`.

`eval geneval` has its own parser (`vqbench eval` itself takes a tokenizer checkpoint); harness/cli.py
hands it every argument after `eval geneval`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from harness.core.arguments import Parser, non_negative_int, positive_int


def build_eval_parser() -> argparse.ArgumentParser:
    from harness.evaluation.geneval.backends import CLIP_USAGE, DETECTOR_USAGE
    p = Parser(
        prog="vqbench eval geneval",
        description="Score a folder of text-to-image samples with the GenEval protocol (six tasks, "
                    "4 images per prompt; overall = mean of the task accuracies). The detector and "
                    "CLIP weights are yours to provide; nothing is downloaded.")
    p.add_argument("samples", type=Path, metavar="SAMPLES_DIR",
                   help="GenEval layout: SAMPLES_DIR/00000/metadata.jsonl and SAMPLES_DIR/00000/samples/0000.png ...")
    p.add_argument("--detector", default=None, help=DETECTOR_USAGE)
    p.add_argument("--clip", default=None, help=f"colour classifier: {CLIP_USAGE}")
    p.add_argument("--out", type=Path, default=None,
                   help="write GenEval's per-image results (JSON lines) here, and the summary as <out>.summary.json")
    p.add_argument("--results", type=Path, default=None,
                   help="results store (.jsonl): one row per task accuracy plus the overall score")
    p.add_argument("--run-id", default=None, help="row label (default: the samples folder's name)")
    p.add_argument("--model", default="", help="the generator that made the samples (recorded in the rows; "
                                               "default: the preset in SAMPLES_DIR/generation.json)")
    p.add_argument("--seed", type=non_negative_int, default=None,
                   help="the sampling seed (recorded in the rows; default: the one in SAMPLES_DIR/generation.json)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def add_prompts_parser(sub) -> None:
    p = sub.add_parser("geneval-prompts", help="write GenEval's prompt metadata (evaluation_metadata.jsonl)",
                       description="Write GenEval's prompts: evaluation_metadata.jsonl and generation_prompts.txt. "
                                   "The defaults reproduce its published 553 prompts.")
    p.add_argument("--out", type=Path, required=True, help="output folder")
    p.add_argument("--seed", type=non_negative_int, default=43, help="GenEval's seed is 43")
    p.add_argument("--per-task", type=positive_int, default=100, help="draws per task (single object: always the 80 classes)")


def cmd_prompts(args) -> int:
    from harness.evaluation.geneval.prompts import generate_metadata, task_counts, write_metadata
    records = generate_metadata(args.seed, args.per_task)
    path = write_metadata(args.out, records)
    counts = ", ".join(f"{t} {n}" for t, n in task_counts(records).items())
    print(f"{len(records)} prompts ({counts}) written to {path}")
    return 0


def run_eval(argv: list[str]) -> int:
    args = build_eval_parser().parse_args(argv)
    from dataclasses import asdict
    from harness.core.io import write_atomic
    from harness.core.results import ResultsStore, make_rows, now
    from harness.evaluation.geneval.backends import build_color_classifier, build_detector, check_specs, describe
    from harness.evaluation.geneval.generate import read_manifest
    from harness.evaluation.geneval.prompts import find_samples, prompt_set_id
    from harness.evaluation.geneval.scoring import ScoringRules, evaluate_samples, format_summary, load_image, summarize

    if args.device != "auto":
        from harness.core.distributed import check_device
        check_device(args.device)
    prompts = find_samples(args.samples)          # bad folders fail before any model is loaded
    check_specs(args.detector, args.clip)
    detector = build_detector(args.detector, args.device)
    colors = build_color_classifier(args.clip, args.device)
    rules = ScoringRules()
    started = now()
    results = evaluate_samples(args.samples, detector, colors, rules, progress=not args.quiet)
    summary = summarize(results)
    print(format_summary(summary))
    judge = describe(detector, colors)
    if args.out:
        write_atomic(args.out, "".join(json.dumps(r) + "\n" for r in results).encode())
        summary_path = args.out.with_name(args.out.name + ".summary.json")
        write_atomic(summary_path, json.dumps(summary.as_dict() | {"judge": judge}, indent=1).encode())
        print(f"per-image results: {args.out}; summary: {summary_path}")
    if args.results:
        first = load_image(next(path for p in prompts for path in p.images))
        made = read_manifest(args.samples) or {}          # written by `vqbench geneval generate`
        run = {"run_id": args.run_id or args.samples.resolve().name, "kind": "generator",
               "model": args.model or made.get("preset", ""), "preset": made.get("preset", ""),
               "config_hash": made.get("config_hash", ""), "dataset": "geneval",
               "split": prompt_set_id([p.metadata for p in prompts]), "resolution": max(first.size),
               "seed": args.seed if args.seed is not None else made.get("seed"), "started_at": started}
        metrics = {"geneval": summary.overall} | {f"geneval_{t}": a for t, a in summary.task_accuracy.items()}
        n_images = {"geneval": summary.n_images} | {f"geneval_{t}": n for t, n in summary.task_images.items()}
        extra = {"judge": judge, "rules": asdict(rules), "n_prompts": summary.n_prompts,
                 "images_per_prompt": summary.images_per_prompt, "images_correct": summary.images_correct,
                 "prompts_correct": summary.prompts_correct,
                 "note": "GenEval's reference judge is mmdet Mask2Former (Swin-S) + OpenAI CLIP ViT-L/14; "
                         "compare numbers only across rows with the same judge"} | ({"generated_by": made} if made else {})
        rows = make_rows(run, metrics, {m: True for m in metrics}, "geneval", n_images=n_images,
                         feature_extractor=judge, extra=extra)
        ResultsStore(args.results).replace_run(run["run_id"], rows, where={"dataset": "geneval"})
        print(f"{len(rows)} rows written to {args.results}")
    return 0
