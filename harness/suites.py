"""Suites: named lists of runs (train a preset on a dataset, then evaluate it), run resumably.

A suite's output folder holds ``runs/<label>/`` (checkpoints, TensorBoard), ``results.jsonl`` (the
long results store) and the rendered tables. Re-running a suite continues unfinished training from
its last checkpoint and skips evaluations whose rows are already stored for the same configuration.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from harness.core.contracts import SamplerConfig
from harness.core.distributed import barrier, setup
from harness.evaluation.metrics.fidelity import GENERATION_METRICS
from harness.core.registry import SUITES

TOKENIZER_METRICS = ("psnr", "ssim", "codebook_usage", "unique_ratio")   # what every tokenizer run reports


@dataclass(frozen=True)
class TokenizerRun:
    label: str
    preset: str
    overrides: tuple[str, ...] = ()
    dataset: str = "fashion-mnist"
    n_train: int | None = None
    n_eval: int | None = None
    eval_split: str = "test"
    eval_batch_size: int = 250
    metrics: tuple[str, ...] = TOKENIZER_METRICS
    fidelity_metrics: tuple[str, ...] = ()        # Inception metrics, on fewer images (CPU cost)
    fidelity_n_eval: int | None = None
    progressive_metrics: tuple[str, ...] = ()     # progressive reconstruction curves (none: skipped)
    progressive_n_eval: int | None = None
    probe_n_train: int | None = None              # linear probes on the first k tokens (None: skipped)
    probe_n_eval: int | None = None
    entropy_n_train: int | None = None            # training images whose token sequences give the entropy-
                                                  # per-position curve, as the VCQ paper measures (None: skipped)


@dataclass(frozen=True)
class GeneratorRun:
    """Train generator ``preset`` on the tokens of the suite's tokenizer run ``tokenizer`` (a label),
    then sample ``n_samples`` class-balanced images with ``sampler`` and, when it is guided, also
    without guidance (the ``*_nocfg`` metrics)."""
    label: str
    preset: str
    tokenizer: str
    overrides: tuple[str, ...] = ()
    n_train: int | None = None              # training images encoded for the generator (None: all)
    sampler: SamplerConfig = SamplerConfig()
    n_samples: int = 1000
    metrics: tuple[str, ...] = GENERATION_METRICS
    sample_batch_size: int = 100
    reference_split: str = "train"
    reference_n: int | None = None          # None: as many reference images as samples
    train_label: str | None = None          # reuse the generator trained by that run (another sampler only)
    unguided: bool = True                   # also sample without guidance (gfid_nocfg, gkid_nocfg)


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    runs: tuple[TokenizerRun, ...]
    generators: tuple[GeneratorRun, ...] = ()

    def __post_init__(self):
        labels = {r.label for r in self.runs}
        for g in self.generators:
            if g.tokenizer not in labels:
                raise ValueError(f"suite {self.name}: generator run {g.label} names tokenizer run "
                                 f"{g.tokenizer!r}, which the suite does not have")


def register_suite(suite: Suite, **meta) -> Suite:
    SUITES.add(suite.name, suite, description=suite.description, **meta)
    return suite


# Fashion-MNIST tokenizer recipe at small scale: L2 pixel loss + LPIPS (AlexNet: VGG costs ~4x more
# on a CPU), PatchGAN with 2 layers (28x28 inputs) after a GAN warm-up.
FMNIST_TRAIN = ("lr=3e-4", "batch_size=32", "lpips_net=alex", "disc_layers=2", "disc_channels=32",
                "warmup_steps=50", "ckpt_every=500")

TINY_TOKENIZER = ("steps=6", "batch_size=8", "perceptual_weight=0", "disc_start=3", "disc_layers=1",
                  "disc_channels=8", "ckpt_every=3")
register_suite(Suite(
    "tiny", "seconds: vq-tiny and ar-tiny on the procedural set (tests of the suite runner)",
    (TokenizerRun("vq-tiny", "vq-tiny", TINY_TOKENIZER, dataset="procedural", n_eval=64, eval_batch_size=32,
                  progressive_metrics=("psnr",), progressive_n_eval=32, probe_n_train=128, probe_n_eval=64,
                  entropy_n_train=128),),
    (GeneratorRun("ar-tiny@vq-tiny", "ar-tiny", "vq-tiny", ("steps=6", "batch_size=16", "ckpt_every=3"),
                  sampler=SamplerConfig(cfg_scale=2.0), n_samples=16, metrics=("gfid", "gkid"),
                  sample_batch_size=8),)))

register_suite(Suite(
    "smoke", "under 5 minutes on 2 CPU cores: vq-fmnist, 300 steps on Fashion-MNIST, 2,000 test images",
    (TokenizerRun("vq-fmnist", "vq-fmnist", FMNIST_TRAIN + ("steps=300", "disc_start=200"),
                  n_eval=2000),)))

# The default suite: every tokenizer family at matched token budgets (49 tokens per 28x28 image,
# codebooks of ~1024), the same recipe and step count, evaluated on the same test images; then each
# generator family on the tokenizers the papers pair it with, class-conditional, the same steps.
# N per metric is chosen for a 2-core CPU and recorded in every row: pixel and token metrics on 2,000
# test images, Inception metrics (rFID/KID, gFID/KID/precision/recall) on 150 (KID is the reliable
# one at this N), linear probes fit on 3,000 training images, progressive curves on 300.
DEFAULT_TOKENIZERS = ("vq-fmnist", "cvq-fmnist", "cvq-fmnist-drop25", "fq-dual-fmnist", "vcq-constant-fmnist",
                      "vcq-cosine-fmnist", "fsq-fmnist", "lfq-fmnist", "simvq-fmnist", "rvq-fmnist")
DEFAULT_TOKENIZER_METRICS = TOKENIZER_METRICS + ("lpips", "entropy_cliff")
DEFAULT_FIDELITY_N = 150
# generators: 800 steps of 32 (~2.6 epochs of the 10,000 encoded images); at 200 steps (under one epoch)
# ar@vq had gFID 249 / gKID 0.22, at 1,000 steps 175 / 0.10, close to vq-fmnist's rFID of 170
FMNIST_GENERATOR_TRAIN = ("steps=800", "batch_size=32", "lr=1e-3", "warmup_steps=20", "ckpt_every=400")
GUIDED = SamplerConfig(cfg_scale=2.0)
VCQ_GUIDED = SamplerConfig(cfg_scale=2.0, cfg_schedule="cosine")     # the VCQ appendix's CFG schedule
DEFAULT_GENERATORS = (
    # (label, generator, tokenizer run, sampler, trained by); a run reusing another's generator skips
    # the unguided pass, whose samples would be that run's
    ("ar@vq", "ar-fmnist", "vq-fmnist", GUIDED, None),
    ("maskgit@vq", "masked-fmnist", "vq-fmnist", GUIDED, None),
    ("car@cvq-drop25", "car-fmnist", "cvq-fmnist-drop25", GUIDED, None),
    ("masked@cvq-drop25", "masked-fmnist", "cvq-fmnist-drop25", GUIDED, None),
    ("far@fq-dual", "far-fmnist", "fq-dual-fmnist", GUIDED, None),
    ("ar@vcq-constant", "ar-fmnist", "vcq-constant-fmnist", VCQ_GUIDED, None),
    ("ar@vcq-cosine", "ar-fmnist", "vcq-cosine-fmnist", VCQ_GUIDED, None),
    ("ar@vcq-cosine+cbcfg", "ar-fmnist", "vcq-cosine-fmnist",
     SamplerConfig(cfg_scale=2.0, cfg_schedule="cosine", codebook_aware_cfg=True), "ar@vcq-cosine"),
)
register_suite(Suite(
    "default", "the main job (python run_all.py): VQ, CVQ (p=0, 0.25), FQ-Dual, VCQ (constant, cosine) and the "
               "FSQ/LFQ/SimVQ/RVQ baselines, 200 steps each on Fashion-MNIST; AR, MaskGIT, CAR, masked "
               "channel-wise, FAR and AR with CodebookSize-Aware CFG on them, 800 steps each",
    tuple(TokenizerRun(p, p, FMNIST_TRAIN + ("steps=200", "disc_start=120"), n_eval=2000,
                       metrics=DEFAULT_TOKENIZER_METRICS, fidelity_metrics=("rfid",),
                       fidelity_n_eval=DEFAULT_FIDELITY_N, progressive_metrics=("psnr", "ssim", "lpips"),
                       progressive_n_eval=300, probe_n_train=3000, probe_n_eval=2000,
                       entropy_n_train=10000)
          for p in DEFAULT_TOKENIZERS),
    tuple(GeneratorRun(label, preset, tok, FMNIST_GENERATOR_TRAIN, n_train=10000, sampler=sampler,
                       n_samples=DEFAULT_FIDELITY_N,
                       train_label=trained_by, unguided=trained_by is None)
          for label, preset, tok, sampler, trained_by in DEFAULT_GENERATORS)))


def run_suite(name: str, out_dir: Path, *, device: str = "auto", progress: bool = True) -> Path | None:
    """Train and evaluate every run of suite ``name`` into ``out_dir``; returns the Markdown table path."""
    from harness.evaluation.entropy import analyze_tokens
    from harness.evaluation.record import evaluate_and_record
    from harness.evaluation.probe import probe_and_record
    from harness.evaluation.progressive import progressive_and_record
    from harness.evaluation.record_generation import evaluate_generator_and_record
    from harness.reporting.tables import render
    from harness.core.results import ResultsStore
    from harness.training.train_tokenizer import train_tokenizer
    from harness.training.train_generator import train_generator

    suite = SUITES.get(name)
    d = setup(device)
    out_dir = Path(out_dir)
    store = ResultsStore(out_dir / "results.jsonl")
    for spec in suite.runs:
        if d.is_main and progress:
            print(f"[{suite.name}] {spec.label}: train {spec.preset} on {spec.dataset}", flush=True)
        t0 = time.time()
        final = train_tokenizer(spec.preset, out_dir / "runs" / spec.label, overrides=spec.overrides,
                                dataset=spec.dataset, n_train=spec.n_train, resume=True,
                                device=device, progress=progress)
        barrier(d)
        run_id = f"{suite.name}/{spec.label}"
        evaluate_and_record(final, store, run_id=run_id, dataset=spec.dataset, split=spec.eval_split,
                            n_eval=spec.n_eval, metrics=spec.metrics, batch_size=spec.eval_batch_size,
                            device=device, skip_if_recorded=True)
        if spec.fidelity_metrics:
            evaluate_and_record(final, store, run_id=run_id, dataset=spec.dataset, split=spec.eval_split,
                                n_eval=spec.fidelity_n_eval, metrics=spec.fidelity_metrics,
                                batch_size=spec.eval_batch_size, device=device, skip_if_recorded=True)
        if spec.progressive_metrics:
            progressive_and_record(final, store, run_id=run_id, dataset=spec.dataset, split=spec.eval_split,
                                   n_eval=spec.progressive_n_eval, metrics=spec.progressive_metrics,
                                   batch_size=spec.eval_batch_size, device=device)
        if spec.probe_n_train:
            probe_and_record(final, store, run_id=run_id, dataset=spec.dataset, n_train=spec.probe_n_train,
                             n_eval=spec.probe_n_eval, batch_size=spec.eval_batch_size, device=device)
        if spec.entropy_n_train and d.is_main:
            analyze_tokens(final, split="train", n=spec.entropy_n_train, dataset=spec.dataset,
                           batch_size=spec.eval_batch_size, device=device, results=store.path, run_id=run_id,
                           summary=False, skip_if_recorded=True)   # the table's entropy_cliff values: eval split
        barrier(d)
        if d.is_main and progress:
            print(f"[{suite.name}] {spec.label}: done in {time.time() - t0:.0f}s", flush=True)
    for spec in suite.generators:
        if d.is_main and progress:
            print(f"[{suite.name}] {spec.label}: train {spec.preset} on the tokens of {spec.tokenizer}", flush=True)
        t0 = time.time()
        tokenizer_run = out_dir / "runs" / spec.tokenizer
        generator_run = out_dir / "runs" / (spec.train_label or spec.label)
        final = train_generator(spec.preset, tokenizer_run, generator_run, overrides=spec.overrides,
                                n_train=spec.n_train, resume=True, device=device, progress=progress)
        barrier(d)
        evaluate_generator_and_record(final, store, run_id=f"{suite.name}/{spec.label}", sampler=spec.sampler,
                                      n_samples=spec.n_samples, metrics=spec.metrics,
                                      batch_size=spec.sample_batch_size, reference_split=spec.reference_split,
                                      reference_n=spec.reference_n, device=device, skip_if_recorded=True,
                                      unguided=spec.unguided, npz=out_dir / "samples" / f"{spec.label}.npz")
        if d.is_main and progress:
            print(f"[{suite.name}] {spec.label}: done in {time.time() - t0:.0f}s", flush=True)
    barrier(d)
    if not d.is_main:
        return None
    from harness.reporting.figures import render_figures
    rows = store.read()
    paths = render(rows, out_dir)
    render_figures(rows, out_dir)
    return paths[0] if paths else None
