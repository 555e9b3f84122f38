"""The `vqbench` command line.

Every user-facing failure is a VQBenchError: printed as one `error: ...` line, exit status 2.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness.core.arguments import (Parser, finite_float, non_negative_float, non_negative_int, positive_float,
                                    positive_int, probability)
from harness.core.errors import VQBenchError

LIST_KINDS = ("tokenizers", "generators", "metrics", "evaluations", "protocols", "datasets", "suites", "text-encoders",
              "claims", "tracks")


def _add_device(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", help="auto (CUDA when present), cpu, cuda or cuda:N")
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def _add_checkpoint_eval(p: argparse.ArgumentParser) -> None:
    """The arguments every command that evaluates a checkpoint into a results store shares."""
    p.add_argument("checkpoint", type=Path, help="a run folder (its latest checkpoint) or a step_* folder")
    p.add_argument("--results", type=Path, required=True, help="results store (.jsonl), created if missing")
    p.add_argument("--dataset", default=None, help="default: the dataset the tokenizer was trained on")
    p.add_argument("--batch-size", type=positive_int, default=250)
    p.add_argument("--run-id", default=None, help="row label (default: the checkpoint's run folder name)")
    _add_device(p)


def _add_protocol(p: argparse.ArgumentParser) -> None:
    from harness.core.registry import DEFAULT_PROTOCOL
    p.add_argument("--protocol", default=DEFAULT_PROTOCOL,
                   help=f"evaluation protocol of the Inception metrics (FID, KID, IS, precision/recall, sFID); "
                        f"default {DEFAULT_PROTOCOL} (`vqbench list protocols`)")


def _add_sampler(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampler (generators)")
    g.add_argument("--cfg-scale", type=finite_float, default=1.0, help="classifier-free guidance scale (1: none)")
    g.add_argument("--cfg-schedule", default="constant", choices=("constant", "linear", "cosine"))
    g.add_argument("--cfg-power", type=positive_float, default=1.0, help="power of the cosine CFG schedule")
    g.add_argument("--codebook-aware-cfg", action="store_true",
                   help="CodebookSize-Aware CFG (VCQ): scale guidance by each position's excess capacity")
    g.add_argument("--temperature", type=positive_float, default=1.0)
    g.add_argument("--top-k", type=non_negative_int, default=0, help="0: no top-k filtering")
    g.add_argument("--top-p", type=probability, default=1.0, help="1: no nucleus filtering")
    g.add_argument("--steps", type=non_negative_int, default=0, help="masked generators' decoding steps (0: the preset's)")
    g.add_argument("--no-kv-cache", action="store_true", help="recompute attention over the prefix (same samples)")
    g.add_argument("--seed", type=non_negative_int, default=0, help="sampling seed (batch b uses seed * 1000003 + b)")


def _sampler(args):
    from harness.core.contracts import SamplerConfig
    return SamplerConfig(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, cfg_scale=args.cfg_scale,
                         cfg_schedule=args.cfg_schedule, cfg_power=args.cfg_power,
                         codebook_aware_cfg=args.codebook_aware_cfg, steps=args.steps, kv_cache=not args.no_kv_cache)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vqbench", description="Train and evaluate discrete visual tokenizers under one protocol.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=Parser)

    p = sub.add_parser("list", help="list registered tokenizers, generators, metrics, datasets, suites",
                       description="List registry entries with their descriptions.")
    p.add_argument("kind", nargs="?", choices=LIST_KINDS, help="which registry (default: all)")

    p = sub.add_parser("params", help="parameter count of a preset (paper presets on the meta device); "
                                      "--memory: its training memory per GPU under DDP and FSDP",
                       description="Build each PRESET (paper-scale presets without allocating weights) and print "
                                   "its parameter count; with --memory, a Markdown table of the training "
                                   "memory per GPU under DDP and under FSDP on each --gpus count (the FSDP "
                                   "share measured by sharding the meta-device model as training does).")
    p.add_argument("preset", nargs="+", help="tokenizer or generator presets, e.g. vq-f16-imagenet, ar-l")
    p.add_argument("--memory", action="store_true",
                   help="print the training memory per GPU (weights, gradients, AdamW; no activations)")
    p.add_argument("--gpus", default="8", metavar="N[,N...]",
                   help="--memory: GPU counts to plan FSDP for (default: 8)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset field, e.g. --set codebook_size=4096 (repeatable)")
    p.add_argument("--tokenizer", default=None, metavar="TOKENIZER_PRESET",
                   help="generators: count on this tokenizer preset's layout (default: the paper's layout)")

    p = sub.add_parser("describe", help="a preset's architecture, parameters, token layout, bits per image and "
                                        "training recipe with the paper sources",
                       description="Print a tokenizer or generator preset's architecture (its config fields), "
                                   "parameter count (paper presets on the meta device), token layout, bits per "
                                   "image (sum over positions of log2 K_t, times the sub-codes per position) "
                                   "and its paper's training recipe, one value per line with its source; "
                                   "values the paper does not state are marked [assumed].")
    p.add_argument("preset", help="tokenizer or generator preset, e.g. vcq-base-cosine-imagenet, ar-l")
    p.add_argument("--tokenizer", default=None, metavar="TOKENIZER_PRESET",
                   help="generators: describe on this tokenizer preset's layout (default: the paper's layout, "
                        "or the first tokenizer of the preset's scale whose layout the family supports)")

    p = sub.add_parser("train", help="train a tokenizer preset, or a generator preset on a trained tokenizer",
                       description="Train a tokenizer preset, or a generator preset on the tokens of a trained "
                                   "tokenizer (--tokenizer RUN); checkpoints go to RUN_DIR/checkpoints.")
    p.add_argument("preset", help="tokenizer or generator preset (`vqbench list tokenizers`, `... generators`)")
    p.add_argument("--run-dir", type=Path, default=None, help="folder for checkpoints and TensorBoard logs (required)")
    p.add_argument("--tokenizer", type=Path, default=None, metavar="RUN",
                   help="generators: the trained tokenizer (run folder or step_* folder) whose tokens to model")
    p.add_argument("--dataset", default=None,
                   help="dataset name or imagefolder:<path> (`vqbench list datasets`; default: fashion-mnist, "
                        "or for generators the tokenizer's)")
    p.add_argument("--n-train", type=positive_int, default=None, help="use the first N training images (deterministic subset)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset or training setting, e.g. --set lr=3e-4 (repeatable; "
                        "--help-settings lists them)")
    p.add_argument("--resume", action="store_true", help="continue from RUN_DIR's latest checkpoint")
    p.add_argument("--help-settings", action="store_true", help="list the settings --set accepts and exit")
    _add_device(p)

    p = sub.add_parser("consolidate", help="write a sharded (parallel=fsdp) checkpoint's weights as one file",
                       description="Read the weights of a sharded checkpoint (any number of processes wrote it) "
                                   "and write them as a single-file checkpoint folder (weights.safetensors, "
                                   "state.json; no optimizer states) for release. Evaluation and sampling "
                                   "read sharded checkpoints directly; training resumes from the sharded one.")
    p.add_argument("checkpoint", type=Path, help="a run folder or step_* folder trained with --set parallel=fsdp")
    p.add_argument("--out", type=Path, required=True, help="the new folder to write (must not exist)")

    p = sub.add_parser("eval", help="evaluate a tokenizer or generator checkpoint; append rows to a results file",
                       description="Tokenizer checkpoints: stream a split through the tokenizer and record each "
                                   "metric as one row in the results store. Generator checkpoints: sample "
                                   "class-balanced images (sampler options below) and record gFID/KID/"
                                   "precision/recall/IS against the training split. (`vqbench eval geneval SAMPLES_DIR` "
                                   "scores text-to-image samples with GenEval instead; see its --help.)")
    _add_checkpoint_eval(p)
    p.add_argument("--split", default="test")
    p.add_argument("--n-eval", type=positive_int, default=None, help="evaluate the first N images (default: all)")
    p.add_argument("--metrics", default=None, help="comma-separated metric names (default: psnr,ssim,"
                                                     "codebook_usage,unique_ratio)")
    p.add_argument("--n-samples", type=positive_int, default=1000, help="generators: samples to draw (class-balanced)")
    p.add_argument("--npz", type=Path, default=None, help="generators: also save the samples as ADM .npz")
    p.add_argument("--reference", type=Path, default=None,
                   help="generators, --protocol adm: an ADM reference batch (.npz: arr_0 images, optional "
                        "mu/sigma/mu_s/sigma_s) instead of the training split's images")
    _add_protocol(p)
    _add_sampler(p)

    p = sub.add_parser("sample", help="draw samples from a generator (class-balanced, or from prompts) into an "
                                      "ADM-format .npz",
                       description="Sample N images, decode them with the generator's tokenizer and save arr_0 "
                                   "(N x H x W x 3 uint8) and arr_1 (labels; -1 where no class is known). A "
                                   "class-conditional generator draws labels i mod num_classes; a text-conditioned "
                                   "one draws sample i from prompt i mod P of --prompts (the npz then also holds "
                                   "'prompts'), or without it from the captions of training-split images.")
    p.add_argument("checkpoint", type=Path, help="a generator run folder or step_* folder")
    p.add_argument("--n", type=positive_int, default=None,
                   help="number of samples (default: one per prompt with --prompts, else 1000)")
    p.add_argument("--prompts", type=Path, default=None,
                   help="text-conditioned generators: a text file with one prompt per line")
    p.add_argument("--out", type=Path, required=True, help="the .npz to write")
    p.add_argument("--batch-size", type=positive_int, default=100)
    _add_sampler(p)
    _add_device(p)

    p = sub.add_parser("progressive", help="progressive reconstruction: metrics from the first k tokens only",
                       description="Decode each image from its first k tokens (channels for CVQ, positions for "
                                   "VCQ and VQ, sub-codebooks for FQ; the rest zeroed) and record the metrics "
                                   "per k as progressive_<metric> rows.")
    _add_checkpoint_eval(p)
    p.add_argument("--split", default="test")
    p.add_argument("--n-eval", type=positive_int, default=None, help="evaluate the first N images (default: all)")
    p.add_argument("--metrics", default="psnr,ssim", help="comma-separated image metrics (default: psnr,ssim)")
    p.add_argument("--ks", default=None, help="comma-separated prefix lengths (default: 1, 2, 4, ... and all)")

    p = sub.add_parser("probe", help="linear probes on the first k tokens' code embeddings (top-1/top-5)",
                       description="Fit a linear classifier on the mean-pooled code embeddings of the first k "
                                   "tokens (training split) and record its test accuracy as probe_* rows.")
    _add_checkpoint_eval(p)
    p.add_argument("--n-train", type=positive_int, default=10000, help="training images the probe is fit on (default: 10000)")
    p.add_argument("--n-eval", type=positive_int, default=None, help="test images (default: all)")
    p.add_argument("--ks", default="1,10,all", help="comma-separated prefix lengths, 'all' for every token")
    p.add_argument("--factor", type=int, default=None,
                   help="probe only sub-codebook F (0-based) of a factorized tokenizer such as FQ; rows are "
                        "named probe_top1_<k>_f<F> (default: every sub-codebook together)")

    p = sub.add_parser("run", help="run a suite (train + evaluate + report)",
                       description="Run every training and evaluation of SUITE, resumably, and render its tables.")
    p.add_argument("suite", help="suite name (`vqbench list suites`)")
    p.add_argument("--out", type=Path, default=None, help="output folder (default: reports/<suite>)")
    p.add_argument("--protocol", default=None,
                   help="evaluate the suite's Inception metrics under this protocol instead of the suite's own "
                        "(metrics it does not define are left out; `vqbench list protocols`)")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="train and evaluate every run with seeds 0 .. SEEDS-1 (labels <run>.seed1, ...) and also "
                        "write results_seeds.md: each run's mean +- std over its seeds (default: the suite's, 1)")
    _add_device(p)

    p = sub.add_parser("claims", help="measure the seed papers' claims and write the claims table",
                       description="Run the default suite (resumably) into OUT, measure the claims its runs "
                                   "support and write claims.md/.csv/.tex and one figure per claim; --all also runs "
                                   "the suite `claims` (codebook-size sweeps, FQ ablations, CodebookSize-Aware CFG "
                                   "on a constant codebook) and measures every claim. `vqbench list claims` lists them.")
    p.add_argument("--all", action="store_true", help="also the claims outside the main job (trains their runs)")
    p.add_argument("--out", type=Path, default=Path("reports") / "default",
                   help="the suite folder (default: reports/default, the main job's)")
    p.add_argument("--table-only", action="store_true",
                   help="train and evaluate nothing: measure the claims on the folder's results as they are")
    p.add_argument("--seeds", type=positive_int, default=None,
                   help="train every run the claims need with seeds 0 .. SEEDS-1 and test each claim over them "
                        "(default: 1; with --table-only, as many as the folder holds)")
    _add_device(p)

    p = sub.add_parser("eval-samples", help="score a samples .npz against an ADM reference batch or a dataset split",
                       description="The ADM evaluator's use: FID, sFID, IS, precision and recall (those the protocol "
                                   "defines) of SAMPLES (.npz, arr_0: N x H x W x 3 uint8) against --reference "
                                   "(an ADM .npz) or the images of --dataset/--split. Prints one line per value.")
    p.add_argument("samples", type=Path, help="samples .npz (`vqbench sample` writes one)")
    p.add_argument("--reference", type=Path, default=None, help="ADM reference batch (.npz)")
    p.add_argument("--dataset", default=None, help="or: the reference images of this dataset")
    p.add_argument("--split", default="train", help="the dataset's split (default: train)")
    p.add_argument("--n-reference", type=positive_int, default=None, help="first N images of the split (default: all)")
    p.add_argument("--metrics", default=None, help="comma-separated (default: all the protocol defines)")
    p.add_argument("--protocol", default="adm", help="evaluation protocol (default: adm; `vqbench list protocols`)")
    _add_device(p)

    p = sub.add_parser("reference", help="ADM reference batches: `reference build` writes one from a dataset split",
                       description="Reference batches in the ADM evaluator's .npz format.")
    rsub = p.add_subparsers(dest="reference_command", required=True, metavar="COMMAND", parser_class=Parser)
    r = rsub.add_parser("build", help="write an ADM reference batch (.npz) of a dataset split",
                        description="arr_0: the split's first --n-images images (uint8, grey as RGB); mu/sigma and "
                                    "mu_s/sigma_s: pool3 and sFID-spatial statistics of its first --n-stats images, "
                                    "computed as --protocol adm computes features.")
    r.add_argument("dataset", help="dataset name or imagefolder:<path> (`vqbench list datasets`)")
    r.add_argument("--split", default="train")
    r.add_argument("--out", type=Path, required=True, help="the .npz to write")
    r.add_argument("--n-images", type=positive_int, default=None, help="images stored (default: min(10000, split size))")
    r.add_argument("--n-stats", type=positive_int, default=None, help="images behind the statistics (default: all)")
    r.add_argument("--resolution", type=positive_int, default=None, help="default: the dataset's own")
    _add_device(p)

    p = sub.add_parser("analyze", help="token-sequence analyses (VCQ schedules, entropy-cliff bounds)",
                       description="Information-capacity analyses of the VCQ paper.")
    asub = p.add_subparsers(dest="analysis", required=True, metavar="ANALYSIS", parser_class=Parser)
    a = asub.add_parser("schedule", help="K_t table, average K, bits per pixel and t* of a VCQ schedule",
                        description="Print a VCQ codebook-size schedule and its statistics.")
    a.add_argument("--schedule", default="cosine", choices=("constant", "linear", "cosine", "power"))
    a.add_argument("--k-min", type=positive_int, default=2)
    a.add_argument("--k-max", type=positive_int, default=16384)
    a.add_argument("--length", type=positive_int, default=256, help="sequence length T")
    a.add_argument("--power", type=positive_float, default=2.5, help="exponent of the power schedule")
    a.add_argument("--image-size", type=positive_int, default=256, help="for bits per pixel")
    a.add_argument("--dataset-size", type=positive_int, default=None, help="N, for the capacity-bound t*")
    a.add_argument("--out", type=Path, default=None, help="write the K_t curve as CSV (t,K_t,cumulative_bits)")
    a = asub.add_parser("cliff", help="the entropy-cliff bound t* = ceil(log2 N / log2 K) for a constant codebook",
                        description="Where a constant codebook exhausts a dataset's information, and how much "
                                    "data each further position would need.")
    a.add_argument("--dataset-size", type=positive_int, required=True, help="N training samples")
    a.add_argument("--codebook-size", type=positive_int, required=True, help="K")
    a.add_argument("--positions", type=non_negative_int, default=4, help="how many positions past t* to tabulate")
    a = asub.add_parser("entropy", help="exact per-position conditional entropy H(x_t | x_<t) and the empirical t*",
                        description="Exact empirical conditional entropy of each position of N token sequences "
                                    "(VCQ paper, Sec. 2), the remaining information budget, the empirical t* "
                                    "and the capacity bound. TOKENS: a .npy/.pt file of N x T (or N x T x k) "
                                    "indices, or a tokenizer run folder (its training split is encoded).")
    a.add_argument("tokens", type=Path, help=".npy/.pt file of token indices, or a run / step_* folder")
    a.add_argument("--codebook-size", type=positive_int, default=None,
                   help="K (default: the run's layout, or max index + 1 for a file)")
    a.add_argument("--factors", default="joint", choices=("joint", "flatten"),
                   help="N x T x k indices: one symbol per position (joint) or k positions each (flatten)")
    a.add_argument("--threshold", type=non_negative_float, default=1.0,
                   help="empirical t*: fewest leading tokens leaving at most this many bits (default 1)")
    a.add_argument("--out", type=Path, default=None, help="write the per-position table as CSV")
    a.add_argument("--figure", type=Path, default=None, help="write the entropy figure (PATH.pdf and PATH.png)")
    a.add_argument("--label", default=None, help="legend label (default: the file or run name)")
    g = a.add_argument_group("run folders")
    g.add_argument("--split", default="train", help="split to encode (default: train, as the paper)")
    g.add_argument("--n", type=positive_int, default=None, help="encode the first N images (default: the run's training set)")
    g.add_argument("--dataset", default=None, help="default: the dataset the tokenizer was trained on")
    g.add_argument("--batch-size", type=positive_int, default=250)
    g.add_argument("--results", type=Path, default=None,
                   help="also record the curve (cond_entropy_bits per position) and the summary in this store")
    _add_device(g)

    p = sub.add_parser("report", help="render wide tables (Markdown, CSV, LaTeX) and figures from results stores",
                       description="Pivot one or more long results stores into comparison tables, and draw "
                                   "the figures the rows support (PDF + PNG: entropy curves, codebook usage "
                                   "vs size, progressive reconstruction, VCQ schedules).")
    p.add_argument("results", nargs="+", type=Path, help="results .jsonl files")
    p.add_argument("--out", type=Path, required=True, help="folder for results.md/.csv/.tex")

    p = sub.add_parser("leaderboard", help="write the static leaderboard site from results stores",
                       description="Write a static site (no network needed) with one page per track (`vqbench list "
                                   "tracks`): reproduced entries beside the papers' published numbers, one page "
                                   "per entry with its provenance and curves, and Pareto figures.")
    p.add_argument("results", nargs="+", type=Path, help="results .jsonl files (e.g. reports/default/results.jsonl)")
    p.add_argument("--out", type=Path, required=True, help="the site folder (replaced whole when complete)")

    p = sub.add_parser("enter", help="train and evaluate a new quantizer or generator from one file on a track",
                       description="Import FILE (it registers one tokenizer or generator preset), train and evaluate "
                                   "it exactly as the track's own entries (`vqbench list tracks`), add its rows to the "
                                   "track's results and rebuild the site.")
    p.add_argument("track", help="track name, e.g. fmnist-49tok")
    p.add_argument("--plugin", type=Path, required=True, help="the .py file that registers your preset")
    p.add_argument("--preset", default=None, help="which preset, when the file registers several")
    p.add_argument("--label", default=None, help="the entry's run label (default: the preset name)")
    p.add_argument("--out", type=Path, default=None, help="the track's suite folder (default: reports/<suite>)")
    p.add_argument("--no-ar-probe", dest="ar_probe", action="store_false",
                   help="a tokenizer entry: skip the track's AR probe on its tokens (trained by default)")
    _add_device(p)

    p = sub.add_parser("ar-probe", help="train the track's fixed-budget AR on every tokenizer entry's tokens and "
                                        "correlate the tokenizer metrics with its results",
                       description="Run the track's suite (resumably: a finished main job is not redone; an unfinished "
                                   "one is finished first, about an hour for fmnist-49tok), then its AR "
                                   "probe: the same small AR trained the same steps on every tokenizer entry's tokens, "
                                   "scored by held-out bits per image and per token and by gFID; then rebuild the site, "
                                   "whose track page shows the probe beside each entry and the Spearman correlation "
                                   "(bootstrap interval) of each tokenizer metric with it.")
    p.add_argument("track", help="track name, e.g. fmnist-49tok (`vqbench list tracks`)")
    p.add_argument("--out", type=Path, default=None, help="the track's suite folder (default: reports/<suite>)")
    _add_device(p)

    from harness.evaluation.geneval.cli import add_prompts_parser
    add_prompts_parser(sub)

    p = sub.add_parser("import", help="a released tokenizer checkpoint as a vqbench run (llamagen-vq16, llamagen-vq8, "
                                      "taming-vqgan-f16-16384)",
                       description="Map a released checkpoint's state dict onto the matching preset and write a "
                                   "vqbench tokenizer run (evaluate it with `vqbench eval RUN_DIR`, train generators "
                                   "on it with --tokenizer RUN_DIR). Nothing is downloaded: give the file.")
    p.add_argument("name", help="llamagen-vq16 (vq_ds16_c2i.pt), llamagen-vq8 (vq_ds8_c2i.pt) or "
                                "taming-vqgan-f16-16384 (vqgan_imagenet_f16_16384's ckpts/last.ckpt)")
    p.add_argument("file", type=Path, help="the released checkpoint file")
    p.add_argument("--out", type=Path, required=True, help="the new run folder")
    p.add_argument("--weights", default=None, choices=("model", "ema", "state_dict"),
                   help="which state dict of the file: LlamaGen's 'model' (default, what its scripts load) or "
                        "'ema'; taming's Lightning checkpoint has only 'state_dict' (default)")
    p.add_argument("--dataset", required=True,
                   help="the dataset the run evaluates on by default, e.g. imagefolder:/data/imagenet (its "
                        "val/ folder is LlamaGen's rFID split: --split val)")

    p = sub.add_parser("published", help="the numbers the seed papers publish (baselines/published.jsonl)",
                       description="List published numbers, one per line: model, paper and table, setting, "
                                   "metric, value and the protocol it was measured with.")
    p.add_argument("--paper", default=None, help="cvq-car, masked-channel, fqgan or vcq")
    p.add_argument("--metric", default=None, help="e.g. rfid, psnr, gfid, geneval")
    p.add_argument("--model", default=None, help="models whose name contains this text (case-insensitive)")
    p.add_argument("--file", type=Path, default=None, help="another file of the same format")

    p = sub.add_parser("geneval", help="GenEval: `geneval generate GEN_RUN --out DIR` samples its prompts "
                                       "(score them with `vqbench eval geneval DIR`)")
    geneval = p.add_subparsers(dest="geneval_command", required=True, metavar="SUBCOMMAND", parser_class=Parser)
    p = geneval.add_parser("generate", help="sample GenEval's prompts in its folder layout",
                           description="Sample a text-conditioned generator on GenEval's prompts (the published "
                                       "553, or --metadata) and write DIR/00000/metadata.jsonl and "
                                       "DIR/00000/samples/0000.png ...; a rerun completes the missing prompt "
                                       "folders. Score with `vqbench eval geneval DIR`.")
    p.add_argument("checkpoint", type=Path, help="a text-conditioned generator run folder or step_* folder")
    p.add_argument("--out", type=Path, required=True, help="the samples folder (GenEval's layout)")
    p.add_argument("--metadata", type=Path, default=None,
                   help="GenEval prompt metadata (evaluation_metadata.jsonl; default: the published 553 prompts)")
    p.add_argument("--images-per-prompt", type=positive_int, default=4, help="GenEval uses 4")
    p.add_argument("--prompts-per-batch", type=positive_int, default=8)
    _add_sampler(p)
    _add_device(p)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:2] == ["eval", "geneval"]:         # its own parser: `eval` takes a checkpoint positional
        from harness.evaluation.geneval.cli import run_eval
        command, args = run_eval, argv[2:]
    else:
        args = build_parser().parse_args(argv)
        command = COMMANDS[args.command]
    finished = False
    try:
        code = command(args) or 0
        finished = True
        return code
    except VQBenchError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    except OSError as e:          # the environment: permissions, a full disk, a path that is a folder
        from harness.core.io import file_error
        if e.filename is None:    # no file to name: not a user's path, so a bug keeps its traceback
            raise
        print(f"error: {file_error(e, e.filename, 'use')}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; the last checkpoint is kept (rerun with --resume)", file=sys.stderr)
        return 130
    finally:
        from harness.core.distributed import leave_process_group
        leave_process_group(finished)


def cmd_list(args) -> int:
    from harness.models.catalog import load_all
    from harness.core.registry import ALL
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
    from harness.models.catalog import build_tokenizer, generator_on_meta, load_all, parameter_count
    from harness.core.config import split_override
    from harness.core.registry import GENERATORS, TOKENIZERS
    overrides = dict(split_override(o) for o in args.overrides)
    gpus = _int_list(args.gpus, "--gpus")
    load_all()
    table = []
    for preset in args.preset:
        if preset in GENERATORS:
            model = generator_on_meta(preset, overrides, args.tokenizer)
        else:
            # --memory shards on the meta device; a plain count builds small presets for real (some
            # libraries read values at init)
            paper = TOKENIZERS.entry(preset).meta.get("scale") == "paper"
            _, model = build_tokenizer(preset, overrides, device="meta" if paper or args.memory else "cpu")
        n = parameter_count(model)
        if not args.memory:
            print(f"{preset}: {n:,} parameters ({n / 1e6:.1f}M)")
            continue
        from harness.training.memory import markdown_rows, plan
        table += markdown_rows(preset, [plan(model, g) for g in gpus])
    if args.memory:
        from harness.training.memory import MARKDOWN_HEAD
        print("\n".join(MARKDOWN_HEAD + table))
        print("\n16 bytes per parameter (fp32 weights, gradients, AdamW moments); gathered: FSDP's bf16 working "
              "copies; activations not included (harness/training/memory.py says exactly what is counted).")
    return 0


def cmd_describe(args) -> int:
    from harness.describe import describe
    print(describe(args.preset, args.tokenizer))
    return 0


def cmd_train(args) -> int:
    from harness.models.catalog import load_all, tokenizer_config
    from harness.core.registry import GENERATORS
    from harness.training.train_tokenizer import TrainConfig, train_tokenizer
    from harness.models.catalog import generator_config
    from harness.training.train_generator import GeneratorTrainConfig, train_generator
    load_all()
    is_generator = args.preset in GENERATORS
    if args.help_settings:
        from harness.core.config import apply_overrides, field_types, split_overrides
        from harness.core.registry import TOKENIZERS
        configs = ((generator_config(args.preset), GeneratorTrainConfig()) if is_generator
                   else (tokenizer_config(args.preset), TrainConfig()))
        recipe = (GENERATORS if is_generator else TOKENIZERS).entry(args.preset).meta.recipe
        routed = split_overrides(recipe.overrides(), *configs)       # shown as the preset trains
        configs = [apply_overrides(c, r) for c, r in zip(configs, routed)]
        for title, cfg in zip(("preset", "training"), configs):
            print(f"{title} settings:")
            for name, tp in field_types(cfg).items():
                by = "  [paper recipe]" if recipe.get(name) else ""
                print(f"  {name} = {getattr(cfg, name)!r}  ({getattr(tp, '__name__', tp)}){by}")
        return 0
    if args.run_dir is None:
        raise VQBenchError("vqbench train: the argument --run-dir is required (the folder for checkpoints)")
    if is_generator:
        if args.tokenizer is None:
            raise VQBenchError(f"{args.preset} is a generator: pass --tokenizer RUN, the trained tokenizer "
                               "whose tokens it models")
        final = train_generator(args.preset, args.tokenizer, args.run_dir, overrides=args.overrides,
                                dataset=args.dataset, n_train=args.n_train, resume=args.resume,
                                device=args.device, progress=not args.quiet)
    else:
        if args.tokenizer is not None:
            raise VQBenchError(f"--tokenizer is for generator presets; {args.preset} is a tokenizer")
        final = train_tokenizer(args.preset, args.run_dir, overrides=args.overrides,
                                dataset=args.dataset or "fashion-mnist", n_train=args.n_train,
                                resume=args.resume, device=args.device, progress=not args.quiet)
    print(f"final checkpoint: {final}")
    return 0


def cmd_consolidate(args) -> int:
    from harness.core import checkpoint as ckpt
    out = ckpt.consolidate(args.checkpoint, args.out)
    print(f"consolidated checkpoint: {out}")
    return 0


def cmd_eval(args) -> int:
    from harness.core import checkpoint as ckpt
    from harness.evaluation.record import evaluate_and_record
    from harness.core.results import ResultsStore
    from harness.evaluation.metrics.fidelity import ALL_GENERATION_METRICS
    from harness.evaluation.protocols import get_protocol, protocol_metrics
    from harness.suites import TOKENIZER_METRICS
    get_protocol(args.protocol)
    ResultsStore(args.results).check_writable()
    if ckpt.load_state(ckpt.resolve(args.checkpoint)).get("kind") == "generator":
        from harness.evaluation.record_generation import evaluate_generator_and_record
        metrics = tuple(m.strip() for m in args.metrics.split(",")) if args.metrics else protocol_metrics(
            ALL_GENERATION_METRICS, args.protocol)
        rows = evaluate_generator_and_record(
            args.checkpoint, ResultsStore(args.results), run_id=args.run_id or ckpt.run_name(args.checkpoint),
            sampler=_sampler(args), n_samples=args.n_samples, metrics=metrics, batch_size=args.batch_size,
            seed=args.seed, device=args.device, npz=args.npz, progress=not args.quiet, protocol=args.protocol,
            reference=args.reference)
        _print_rows(rows)
        return 0
    if args.reference is not None:
        raise VQBenchError(f"--reference {args.reference}: reference batches are for generator checkpoints; "
                           "a tokenizer is compared with its own split's images")
    metrics = tuple(m.strip() for m in args.metrics.split(",")) if args.metrics else TOKENIZER_METRICS
    rows = evaluate_and_record(args.checkpoint, ResultsStore(args.results), run_id=args.run_id,
                               dataset=args.dataset, split=args.split, n_eval=args.n_eval,
                               metrics=metrics, batch_size=args.batch_size, device=args.device,
                               progress=not args.quiet, protocol=args.protocol)
    _print_rows(rows)
    return 0


def _print_rows(rows) -> None:
    for r in rows:
        name = r["metric"] if r["protocol"] == "canonical" else f"{r['metric']} [{r['protocol']}]"
        print(f"{name:<32} {r['value']:.6g}")


def cmd_eval_samples(args) -> int:
    from harness.evaluation.reference import evaluate_npz
    metrics = tuple(m.strip() for m in args.metrics.split(",")) if args.metrics else None
    values = evaluate_npz(args.samples, protocol=args.protocol, reference=args.reference, dataset=args.dataset,
                          split=args.split, n_reference=args.n_reference, metrics=metrics,
                          device=_device(args.device))
    for name, (value, reason) in values.items():
        print(f"{name + ' [' + args.protocol + ']':<40} {value:.6g}" + (f"  ({reason})" if reason else ""))
    return 0


def cmd_reference(args) -> int:
    from harness.evaluation.reference import build_reference
    n_images, n_stats = build_reference(args.dataset, args.split, args.out, n_images=args.n_images,
                                        n_stats=args.n_stats, resolution=args.resolution,
                                        device=_device(args.device), progress=not args.quiet)
    print(f"{args.out}: {n_images} images of {args.dataset}/{args.split}, statistics of {n_stats}")
    return 0


def _device(name: str) -> str:
    from harness.core.distributed import setup
    return str(setup(name).device)


def cmd_sample(args) -> int:
    from harness.evaluation.record_generation import read_prompts, sample_to_npz
    prompts = read_prompts(args.prompts) if args.prompts is not None else None
    path, n = sample_to_npz(args.checkpoint, args.out, n=args.n, sampler=_sampler(args), seed=args.seed,
                            batch_size=args.batch_size, device=args.device, prompts=prompts,
                            prompts_file=args.prompts)
    print(f"{n} samples written to {path}")
    return 0


def _int_list(text: str, what: str, allow_all: bool = False) -> list:
    out = []
    for part in text.split(","):
        part = part.strip()
        if allow_all and part == "all":
            out.append(None)
        elif part.isdigit() and int(part) > 0:
            out.append(int(part))
        else:
            raise VQBenchError(f"{what}: {part!r} is not a positive integer{' or all' if allow_all else ''}")
    return out


def cmd_progressive(args) -> int:
    from harness.evaluation.progressive import progressive_and_record
    from harness.core.results import ResultsStore
    ResultsStore(args.results).check_writable()
    rows = progressive_and_record(args.checkpoint, ResultsStore(args.results), run_id=args.run_id,
                                  dataset=args.dataset, split=args.split, n_eval=args.n_eval,
                                  metrics=[m.strip() for m in args.metrics.split(",") if m.strip()],
                                  ks=_int_list(args.ks, "--ks") if args.ks else None,
                                  batch_size=args.batch_size, device=args.device, progress=not args.quiet)
    from harness.core.results import row_extra
    for r in sorted(rows, key=lambda r: (r["metric"], row_extra(r)["k"])):
        e = row_extra(r)
        print(f"{r['metric']:<28} k={e['k']:>4}/{e['k_total']} {e['unit']:<9} {r['value']:.6g}")
    return 0


def cmd_probe(args) -> int:
    from harness.evaluation.probe import probe_and_record
    from harness.core.results import ResultsStore
    ResultsStore(args.results).check_writable()
    rows = probe_and_record(args.checkpoint, ResultsStore(args.results), run_id=args.run_id, dataset=args.dataset,
                            n_train=args.n_train, n_eval=args.n_eval, ks=_int_list(args.ks, "--ks", allow_all=True),
                            batch_size=args.batch_size, device=args.device, factor=args.factor)
    for r in rows:
        print(f"{r['metric']:<20} {r['value'] if r['value'] is not None else float('nan'):.6g}")
    return 0


def cmd_run(args) -> int:
    from harness.suites import run_suite
    out = args.out or Path("reports") / args.suite
    table = run_suite(args.suite, out, device=args.device, progress=not args.quiet, protocol=args.protocol,
                      seeds=args.seeds)
    if table is not None:
        print(Path(table).read_text())
        if args.suite == "default" and args.protocol is None:      # the main job also measures its claims
            from harness.claims.runner import write_claims_table
            from harness.reporting.convergence import write_convergence
            print(write_claims_table(out)[0].read_text())
            print(write_convergence(out).read_text())
            from harness.leaderboard.site import build_site
            print(f"leaderboard site: {build_site([out / 'results.jsonl'], out / 'site')}")
        print(f"tables and results written to {out}")
    return 0


def cmd_claims(args) -> int:
    from harness.claims.runner import run_claims, write_claims_table
    if args.table_only:
        table = write_claims_table(args.out, args.seeds)[0]
    else:
        table = run_claims(args.out, include_all=args.all, device=args.device, progress=not args.quiet,
                           seeds=args.seeds or 1)
    if table is not None:                      # the main process writes (and prints) the table
        from harness.reporting.convergence import write_convergence
        print(table.read_text())
        print(write_convergence(args.out).read_text())
        print(f"claims table written to {table}; whether each tokenizer converged: {args.out / 'convergence.md'}")
    return 0


def cmd_report(args) -> int:
    import pandas as pd
    from harness.reporting.tables import render
    from harness.core.results import ResultsStore
    from harness.reporting.figures import render_figures
    frames = [ResultsStore(p).read(must_exist=True) for p in args.results]
    df = pd.concat(frames, ignore_index=True)
    for path in render(df, args.out) + render_figures(df, args.out):
        print(path)
    return 0


def cmd_enter(args) -> int:
    from harness.leaderboard.enter import enter
    index = enter(args.track, args.plugin, args.out, preset=args.preset, label=args.label, device=args.device,
                  progress=not args.quiet, ar_probe=args.ar_probe)
    if index is not None:
        print(f"entry added to track {args.track}; leaderboard: open {index}")
    return 0


def cmd_ar_probe(args) -> int:
    from harness.core.registry import TRACKS
    from harness.leaderboard.ar_probe import run_ar_probe
    index = run_ar_probe(TRACKS.get(args.track), args.out, device=args.device, progress=not args.quiet)
    if index is not None:
        print(f"AR probe of track {args.track} done; its table and correlations: open {index.parent / f'track-{args.track}.html'}")
    return 0


def cmd_leaderboard(args) -> int:
    from harness.leaderboard.site import build_site
    index = build_site(args.results, args.out)
    print(f"leaderboard written: open {index}")
    return 0


def _analyze_entropy(args) -> int:
    from harness.evaluation.entropy import analyze_tokens
    if args.results is not None:
        from harness.core.results import ResultsStore
        ResultsStore(args.results).check_writable()
    profile, label = analyze_tokens(args.tokens, codebook_size=args.codebook_size, factors=args.factors,
                                    threshold_bits=args.threshold, split=args.split, n=args.n,
                                    dataset=args.dataset, batch_size=args.batch_size, device=args.device,
                                    results=args.results, progress=not args.quiet)
    label = args.label or label
    print(f"{label}: N = {profile.n_sequences:,} sequences, T = {profile.num_positions}, "
          f"log2 N = {profile.log2_n:.2f} bits, H(x) = {profile.joint_entropy:.2f} bits")
    print(f"{'t':>4} {'K_t':>8} {'H_t [bits]':>11} {'budget left':>12} {'distinct prefixes':>18}")
    shown = max(profile.t_star, profile.bound_t_star or 0) + 3
    for r in profile.table()[:shown]:
        print(f"{r['t']:>4} {r['codebook_size']:>8} {r['conditional_entropy_bits']:>11.4f} "
              f"{r['remaining_budget_bits']:>12.4f} {r['distinct_prefixes']:>18,}")
    if profile.num_positions > shown:
        rest = profile.conditional_entropy[shown:].sum()
        print(f"   ... positions {shown}-{profile.num_positions - 1}: {rest:.4f} bits together")
    bound = profile.bound_t_star
    print(f"empirical t* = {profile.t_star} (fewest leading tokens leaving <= {profile.threshold_bits:g} bit); "
          f"bound t* = {bound if bound is not None else f'> {profile.num_positions}'} "
          + ("(ceil(log2 N / log2 K))" if len(set(profile.codebook_sizes)) == 1 else "(capacity of K_t)"))
    if profile.residual_bits > 0:
        print(f"identical sequences: {profile.n_sequences - int(profile.distinct_prefixes[-1]):,} duplicates, "
              f"residual {profile.residual_bits:.4f} bits never resolved")
    if args.out:
        from harness.core.io import write_atomic
        write_atomic(args.out, profile.to_csv())
        print(f"per-position table written to {args.out}")
    if args.figure:
        from harness.reporting.figures import plot_entropy_profiles
        for path in plot_entropy_profiles({label: profile}, args.figure):
            print(f"figure written to {path}")
    return 0


def table2_note(args, bound) -> str:
    """How the bound compares with the VCQ paper's Table 2 t* column, which users read beside it."""
    from harness.models.schedules import TABLE2_SETTING, TABLE2_T_STAR
    paper = TABLE2_T_STAR.get(args.schedule)
    setting = (args.k_min == TABLE2_SETTING["k_min"] and args.k_max in TABLE2_SETTING["k_max"]
               and args.length == TABLE2_SETTING["length"] and args.dataset_size == TABLE2_SETTING["dataset_size"])
    if paper is None or not setting:
        return ("VCQ Table 2's t* column is for K 2..16384 (or 11264), T = 256, N = 1,281,167; this setting "
                "differs, so compare with it only there")
    if paper == bound:
        return f"VCQ Table 2 lists t* = {paper} here too"
    return (f"VCQ Table 2 lists t* = {paper} here, not {bound}: the table's average K and bits per pixel equal "
            "this schedule's, so the schedule is the same, but its first codebooks (K_t above) hold fewer than "
            "log2 N bits before position " + str(bound) + "; the bound reproduces the table's constant (2) and "
            "linear (4) rows, and the paper does not say how its cosine and power rows were computed")


def cmd_analyze(args) -> int:
    import math
    from harness.models.schedules import codebook_schedule, constant_cliff, schedule_stats
    if args.analysis == "entropy":
        return _analyze_entropy(args)
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
        print(f"capacity-bound t* for N = {args.dataset_size:,}: {where} (Prop. 1: the first t whose codebooks "
              f"hold log2 N = {math.log2(args.dataset_size):.1f} bits)")
        print(table2_note(args, stats.capacity_cliff))
    if args.out:
        from harness.core.io import write_atomic
        rows, bits = ["t,K_t,cumulative_bits"], 0.0
        for t, k in enumerate(sizes):
            bits += math.log2(k)
            rows.append(f"{t},{k},{bits:.6f}")
        write_atomic(args.out, "\n".join(rows) + "\n")
        print(f"K_t curve written to {args.out}")
    return 0


def cmd_import(args) -> int:
    from harness.models.released import RELEASED, import_released
    path = import_released(args.name, args.file, args.out, weights=args.weights, dataset=args.dataset)
    print(f"{args.name} imported as {RELEASED[args.name].preset}: {path}")
    return 0


def cmd_published(args) -> int:
    from harness.reporting.published import METRIC_DIRECTIONS, PAPERS, load_published, select
    for flag, value, allowed in (("--paper", args.paper, PAPERS), ("--metric", args.metric, METRIC_DIRECTIONS)):
        if value is not None and value not in allowed:
            raise VQBenchError(f"{flag} {value!r}: choose from {', '.join(allowed)}")
    rows = select(load_published(args.file), paper=args.paper, metric=args.metric, model=args.model)
    for r in rows:
        setting = ", ".join(x for x in (r.dataset, f"{r.resolution}px" if r.resolution else "",
                                        f"{r.tokens} tokens" if r.tokens else "", f"K={r.codebook}" if r.codebook else "",
                                        r.parameters or "", f"cfg {r.cfg:g}" if r.cfg is not None else "") if x)
        print(f"{r.model:<32} {r.metric:<16} {r.value:>9g}  {r.paper} {r.table} ({setting}) [{r.protocol}]"
              + (f"  {r.note}" if r.note else ""))
    print(f"{len(rows)} published numbers")
    return 0


def cmd_geneval(args) -> int:
    from harness.evaluation.geneval.generate import generate_geneval_samples
    written, skipped = generate_geneval_samples(args.checkpoint, args.out, metadata=args.metadata,
                                                sampler=_sampler(args), seed=args.seed,
                                                prompts_per_batch=args.prompts_per_batch,
                                                images_per_prompt=args.images_per_prompt, device=args.device)
    from harness.core.distributed import is_main_process
    if is_main_process():
        kept = f" ({skipped} already complete, kept)" if skipped else ""
        print(f"{written} prompt folders written to {args.out}{kept}; score them with "
              f"`vqbench eval geneval {args.out}`")
    return 0


def cmd_geneval_prompts(args) -> int:
    from harness.evaluation.geneval.cli import cmd_prompts
    return cmd_prompts(args)


COMMANDS = {"analyze": cmd_analyze, "consolidate": cmd_consolidate, "list": cmd_list, "params": cmd_params,
            "describe": cmd_describe, "train": cmd_train, "eval": cmd_eval, "sample": cmd_sample,
            "progressive": cmd_progressive, "probe": cmd_probe,
            "run": cmd_run, "claims": cmd_claims, "report": cmd_report, "leaderboard": cmd_leaderboard, "enter": cmd_enter, "ar-probe": cmd_ar_probe, "geneval-prompts": cmd_geneval_prompts, "geneval": cmd_geneval,
            "published": cmd_published, "import": cmd_import, "eval-samples": cmd_eval_samples,
            "reference": cmd_reference}

if __name__ == "__main__":
    sys.exit(main())
