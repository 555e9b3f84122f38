"""Suites: named lists of runs (train a preset on a dataset, then evaluate it), run resumably.

A suite's output folder holds ``runs/<label>/`` (checkpoints, TensorBoard), ``results.jsonl`` (the
long results store) and the rendered tables. Re-running a suite continues unfinished training from
its last checkpoint and skips evaluations whose rows are already stored for the same configuration.
"""
from __future__ import annotations

import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.claims.runs import (CBCFG_ON_CONSTANT, FQ_NO_DISENTANGLE, FQ_NO_LOSSES, FQ_SINGLE, SWEEP_FAMILIES,
                                 SWEEP_K, sweep_label)
from harness.core.contracts import SamplerConfig
from harness.core.distributed import barrier, setup
from harness.core.registry import SUITES
from harness.core.io import write_atomic
from harness.core.machine import machine_description
from harness.core.errors import VQBenchError
from harness.core.results import ResultsStore, now, seed_label
from harness.evaluation.entropy import EntropyCurve
from harness.evaluation.probe import LinearProbes
from harness.evaluation.progressive import ProgressiveCurves
from harness.evaluation.record import ReconstructionMetrics
from harness.evaluation.protocols import follows_protocol, get_protocol, protocol_metrics
from harness.evaluation.record_generation import GenerationMetrics
from harness.evaluation.recording import Evaluation, load_run, record

TOKENIZER_METRICS = ("psnr", "ssim", "codebook_usage", "unique_ratio")   # what every tokenizer run reports


@dataclass(frozen=True)
class TokenizerRun:
    """Train tokenizer ``preset`` (with ``overrides``) on ``dataset``, then run ``evaluations`` on it."""
    label: str
    preset: str
    overrides: tuple[str, ...] = ()
    dataset: str = "fashion-mnist"
    n_train: int | None = None
    evaluations: tuple[Evaluation, ...] = (ReconstructionMetrics(TOKENIZER_METRICS),)


@dataclass(frozen=True)
class GeneratorRun:
    """Train generator ``preset`` on the tokens of the suite's tokenizer run ``tokenizer`` (a label), then
    run ``evaluations`` on it (``train_label``: reuse the generator trained by that run)."""
    label: str
    preset: str
    tokenizer: str
    overrides: tuple[str, ...] = ()
    n_train: int | None = None              # training images encoded for the generator (None: all)
    evaluations: tuple[Evaluation, ...] = (GenerationMetrics(),)
    train_label: str | None = None
    dataset: str | None = None              # None: the tokenizer's; a captioned one trains a text-conditioned run


@dataclass(frozen=True)
class Suite:
    """``seeds``: every run is repeated with training seeds 0 .. seeds - 1 (``seed_replica``); the tables
    then also show each run's mean +- std over its seeds (``results_seeds.md``)."""
    name: str
    description: str
    runs: tuple[TokenizerRun, ...]
    generators: tuple[GeneratorRun, ...] = ()
    seeds: int = 1

    def __post_init__(self):
        if self.seeds < 1:
            raise ValueError(f"suite {self.name}: seeds must be at least 1, got {self.seeds}")
        labels = {r.label for r in self.runs}
        for g in self.generators:
            if g.tokenizer not in labels:
                raise ValueError(f"suite {self.name}: generator run {g.label} names tokenizer run "
                                 f"{g.tokenizer!r}, which the suite does not have")


def register_suite(suite: Suite, **meta) -> Suite:
    SUITES.add(suite.name, suite, description=suite.description, **meta)
    return suite


# Fashion-MNIST tokenizer recipe at small scale: L2 pixel loss + LPIPS (AlexNet: VGG costs ~4x more
# on a CPU), PatchGAN with 2 layers (28x28 inputs) after a GAN warm-up. Every step logged: the convergence
# criterion averages the batch losses of each fifth, and 4 values per fifth left its verdict to the noise.
FMNIST_TRAIN = ("lr=3e-4", "batch_size=32", "lpips_net=alex", "disc_layers=2", "disc_channels=32",
                "warmup_steps=50", "ckpt_every=500", "log_every=1")

TINY_TOKENIZER = ("steps=6", "batch_size=8", "perceptual_weight=0", "disc_start=3", "disc_layers=1",
                  "disc_channels=8", "ckpt_every=3")
register_suite(Suite(
    "tiny", "seconds: vq-tiny and ar-tiny on the procedural set (tests of the suite runner)",
    (TokenizerRun("vq-tiny", "vq-tiny", TINY_TOKENIZER, dataset="procedural", evaluations=(
        ReconstructionMetrics(TOKENIZER_METRICS, n=64, batch_size=32),
        ProgressiveCurves(("psnr",), n=32, batch_size=32),
        LinearProbes(n_train=128, n=64, batch_size=32),
        EntropyCurve(split="train", n=128, summary=False, batch_size=32))),),
    (GeneratorRun("ar-tiny@vq-tiny", "ar-tiny", "vq-tiny", ("steps=6", "batch_size=16", "ckpt_every=3"),
                  evaluations=(GenerationMetrics(SamplerConfig(cfg_scale=2.0), n_samples=16, metrics=("gfid", "gkid"),
                                                 batch_size=8),)),)))

register_suite(Suite(
    "smoke", "under 5 minutes on 2 CPU cores: vq-fmnist, 300 steps on Fashion-MNIST, 2,000 test images",
    (TokenizerRun("vq-fmnist", "vq-fmnist", FMNIST_TRAIN + ("steps=300", "disc_start=200"),
                  evaluations=(ReconstructionMetrics(TOKENIZER_METRICS, n=2000),)),)))

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
# text-to-image: ar-fmnist on the captions of the same images (4 templates per class, one picked per image
# and step), conditioned on MiniLM sentence embeddings. Does the text matter? Prompt accuracy: a small CNN
# trained on Fashion-MNIST classifies the samples of 1,000 reference captions (chance 0.10); the
# unguided pass gives prompt_accuracy_nocfg. gFID on the usual 150 samples.
TEXT_TO_IMAGE_RUN = GeneratorRun(
    "ar-text@vq", "ar-fmnist", "vq-fmnist", FMNIST_GENERATOR_TRAIN, n_train=10000, dataset="fashion-mnist-captions",
    evaluations=(GenerationMetrics(GUIDED, n_samples=DEFAULT_FIDELITY_N),
                 GenerationMetrics(GUIDED, n_samples=1000, metrics=("prompt_accuracy",),
                                   npz=Path("samples") / "ar-text@vq-prompt-accuracy.npz")))
DEFAULT_TOKENIZER_EVALUATIONS = (
    ReconstructionMetrics(DEFAULT_TOKENIZER_METRICS, n=2000),
    ReconstructionMetrics(("rfid",), n=DEFAULT_FIDELITY_N),
    ProgressiveCurves(("psnr", "ssim", "lpips"), n=300),
    LinearProbes(n_train=3000, n=2000),
    # the VCQ paper measures the training split; the table's entropy_cliff values are the test split's
    EntropyCurve(split="train", n=10000, summary=False),
)
DEFAULT_SUITE = register_suite(Suite(
    "default", "the main job (python run_all.py): VQ, CVQ (p=0, 0.25), FQ-Dual, VCQ (constant, cosine) and the "
               "FSQ/LFQ/SimVQ/RVQ baselines, 200 steps each on Fashion-MNIST; AR, MaskGIT, CAR, masked "
               "channel-wise, FAR and AR with CodebookSize-Aware CFG on them, 800 steps each; a "
               "text-conditioned AR on Fashion-MNIST captions with its prompt accuracy",
    tuple(TokenizerRun(p, p, FMNIST_TRAIN + ("steps=200", "disc_start=120"), evaluations=DEFAULT_TOKENIZER_EVALUATIONS)
          for p in DEFAULT_TOKENIZERS),
    tuple(GeneratorRun(label, preset, tok, FMNIST_GENERATOR_TRAIN, n_train=10000, train_label=trained_by,
                       evaluations=(GenerationMetrics(sampler, n_samples=DEFAULT_FIDELITY_N,
                                                      unguided=trained_by is None),))
          for label, preset, tok, sampler, trained_by in DEFAULT_GENERATORS)
    + (TEXT_TO_IMAGE_RUN,)))


# The suite `claims`: the runs `vqbench claims --all` adds to the default suite's, in the same folder,
# each trained as the default suite's run it varies (harness.claims.runs names them): CVQ and the vanilla
# VQ of CVQ's code dimension at K = 256 ... 16,384, FQ with one codebook of 2 x 1,024 codes, FQ's
# sub-codebooks probed one at a time, and CodebookSize-Aware CFG on the constant codebook's generator
# (reused, not retrained).
def _claims_suite() -> Suite:
    tokenizers = {r.label: r for r in DEFAULT_SUITE.runs}
    sweep_metrics = ReconstructionMetrics(("codebook_usage", "psnr", "token_similarity"), n=2000)
    fq_metrics = ReconstructionMetrics(("codebook_usage", "psnr", "subcode_similarity"), n=2000)

    # FQGAN Fig. 4's question as a number: probes of each sub-codebook alone on all positions
    subcodebook_probes = tuple(LinearProbes(n_train=3000, n=2000, ks=(None,), factor=f)
                               for f in (0, 1))

    def like(label: str, preset: str, base: str, *overrides: str, metrics=(sweep_metrics,)) -> TokenizerRun:
        return TokenizerRun(label, preset, tokenizers[base].overrides + overrides, evaluations=metrics)

    def default_run(label: str, *evaluations) -> TokenizerRun:
        """The default suite's run as it is (finished: not retrained), with these evaluations."""
        return dataclasses.replace(tokenizers[label], evaluations=evaluations)

    sweep = tuple(like(sweep_label(family, k), preset, "cvq-fmnist", f"codebook_size={k}")
                  for family, preset in SWEEP_FAMILIES for k in SWEEP_K if sweep_label(family, k) != "cvq-fmnist")
    fq = (like(FQ_SINGLE, "fq-dual-fmnist", "fq-dual-fmnist", "num_factors=1", "codebook_size=2048",
               "disentangle_weight=0", "representation_weight=0", "teacher=none", metrics=(fq_metrics,)),
          like(FQ_NO_DISENTANGLE, "fq-dual-fmnist", "fq-dual-fmnist", "disentangle_weight=0",
               metrics=(fq_metrics,) + subcodebook_probes),
          like(FQ_NO_LOSSES, "fq-dual-fmnist", "fq-dual-fmnist", "disentangle_weight=0", "representation_weight=0",
               "teacher=none", metrics=(fq_metrics,) + subcodebook_probes),
          default_run("fq-dual-fmnist", ReconstructionMetrics(("subcode_similarity",), n=2000)))
    # CVQ's K = 1024 run of the sweep is the default suite's; the constant codebook's run is listed so the
    # generator below can name it
    defaults = (default_run("cvq-fmnist", ReconstructionMetrics(("token_similarity",), n=2000)),
                default_run("vcq-constant-fmnist"))
    guided = {g.label: g for g in DEFAULT_SUITE.generators}["ar@vcq-constant"]
    aware = dataclasses.replace(guided, label=CBCFG_ON_CONSTANT, train_label="ar@vcq-constant", evaluations=(
        GenerationMetrics(dataclasses.replace(guided.evaluations[0].sampler, codebook_aware_cfg=True),
                          n_samples=DEFAULT_FIDELITY_N, unguided=False),))
    return Suite("claims", "the runs `vqbench claims --all` adds to the default suite's (same folder): CVQ and "
                           "vq-fmnist-d49 at K = 256 ... 16,384, FQ with one codebook of 2,048 and without the "
                           "disentanglement loss, token and sub-code similarities, probes of each FQ sub-codebook "
                           "with and without the representation loss, CodebookSize-Aware CFG on the constant "
                           "codebook's AR", sweep + fq + defaults, (aware,))


register_suite(_claims_suite())


def seed_replica(spec: TokenizerRun | GeneratorRun, seed: int) -> TokenizerRun | GeneratorRun:
    """``spec`` trained with ``--set seed=<seed>`` under ``seed_label(label, seed)``; a generator's replica
    trains on its tokenizer's replica of the same seed and samples with that seed. Seed 0 is ``spec``."""
    if seed == 0:
        return spec
    changes = dict(label=seed_label(spec.label, seed), overrides=spec.overrides + (f"seed={seed}",))
    if isinstance(spec, GeneratorRun):
        changes |= dict(tokenizer=seed_label(spec.tokenizer, seed),
                        train_label=spec.train_label and seed_label(spec.train_label, seed),
                        evaluations=tuple(_sampled_with_seed(e, seed) for e in spec.evaluations))
    return dataclasses.replace(spec, **changes)


def _sampled_with_seed(evaluation: Evaluation, seed: int) -> Evaluation:
    if not isinstance(evaluation, GenerationMetrics):
        return evaluation
    npz = evaluation.npz and evaluation.npz.with_name(f"{evaluation.npz.stem}.seed{seed}{evaluation.npz.suffix}")
    return dataclasses.replace(evaluation, seed=seed, npz=npz)


def under_protocol(evaluation: Evaluation, protocol: str | None) -> Evaluation | None:
    """``evaluation`` with its Inception metrics under ``protocol`` (None: unchanged), without the metrics
    the protocol does not define; None when none is left."""
    if protocol is None or not any(f.name == "protocol" for f in dataclasses.fields(evaluation)) \
            or not follows_protocol(evaluation.metrics):
        return evaluation
    metrics = protocol_metrics(evaluation.metrics, protocol)
    return dataclasses.replace(evaluation, metrics=metrics, protocol=protocol) if metrics else None


def run_suite(name: str | Suite, out_dir: Path, *, device: str = "auto", progress: bool = True,
              protocol: str | None = None, timings: str | None = "timings.md", seeds: int | None = None) -> Path | None:
    """Train and evaluate every run of suite ``name`` (a registered name, or a ``Suite`` such as a leaderboard
    entry's) into ``out_dir``; returns the Markdown table path.

    Each trained run is loaded once and its evaluations recorded by the one pipeline
    (harness.evaluation.recording): already stored rows are not recomputed. ``protocol`` evaluates the
    Inception metrics under that protocol instead of the suite's own, leaving out those it does not define.
    ``seeds`` (default: the suite's) repeats every run with seeds 0 .. seeds - 1, all runs of one seed before
    the next seed's, so an interrupted run has whole seeds to show."""
    from harness.reporting.figures import render_figures
    from harness.reporting.tables import render
    from harness.training.train_generator import train_generator
    from harness.training.train_tokenizer import train_tokenizer

    suite = name if isinstance(name, Suite) else SUITES.get(name)
    if protocol is not None:
        get_protocol(protocol)
    seeds = suite.seeds if seeds is None else seeds
    if seeds < 1:
        raise VQBenchError(f"--seeds must be at least 1, got {seeds}")
    d = setup(device)
    out_dir = Path(out_dir)
    store = ResultsStore(out_dir / "results.jsonl")

    stages = StageTimes()

    def evaluate(final: Path, label: str, evaluations) -> None:
        barrier(d)
        with stages("load checkpoints"):
            run = load_run(final, d.device, f"{suite.name}/{label}")
        for e in (under_protocol(e, protocol) for e in evaluations):
            if e is None:
                continue
            with stages(f"evaluate: {e.name}"):
                record(run, [_in_folder(e, out_dir, label)], store, d)
        barrier(d)

    for seed in range(seeds):
        for spec in (seed_replica(r, seed) for r in suite.runs):
            if d.is_main and progress:
                print(f"[{suite.name}] {spec.label}: train {spec.preset} on {spec.dataset}", flush=True)
            t0 = time.time()
            with stages("train tokenizers"):
                final = train_tokenizer(spec.preset, out_dir / "runs" / spec.label, overrides=spec.overrides,
                                        dataset=spec.dataset, n_train=spec.n_train, resume=True,
                                        device=device, progress=progress)
            evaluate(final, spec.label, [dataclasses.replace(e, dataset=spec.dataset) for e in spec.evaluations])
            if d.is_main and progress:
                print(f"[{suite.name}] {spec.label}: done in {time.time() - t0:.0f}s", flush=True)
        for spec in (seed_replica(g, seed) for g in suite.generators):
            if d.is_main and progress:
                print(f"[{suite.name}] {spec.label}: train {spec.preset} on the tokens of {spec.tokenizer}", flush=True)
            t0 = time.time()
            with stages("train generators"):
                final = train_generator(spec.preset, out_dir / "runs" / spec.tokenizer,
                                        out_dir / "runs" / (spec.train_label or spec.label), overrides=spec.overrides,
                                        dataset=spec.dataset, n_train=spec.n_train, resume=True, device=device,
                                        progress=progress)
            evaluate(final, spec.label, spec.evaluations)
            if d.is_main and progress:
                print(f"[{suite.name}] {spec.label}: done in {time.time() - t0:.0f}s", flush=True)
    barrier(d)
    if not d.is_main:
        return None
    with stages("report"):
        rows = store.read()
        paths = render(rows, out_dir)
        render_figures(rows, out_dir)
    if timings is not None:                # another name keeps a folder's timings.md (vqbench claims)
        write_atomic(out_dir / timings, stages.markdown(suite.name))
    if progress:
        print(stages.markdown(suite.name), flush=True)
    return paths[0] if paths else None


class StageTimes:
    """Wall time of each stage of one suite invocation (a resumed run counts only what it redid), so
    a user sees where the hour goes; written to ``timings.md`` beside the tables."""

    def __init__(self):
        self.seconds: dict[str, float] = {}
        self.started = time.time()

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.time()
        try:
            yield
        finally:
            self.seconds[stage] = self.seconds.get(stage, 0.0) + time.time() - t0

    def markdown(self, suite: str) -> str:
        total = time.time() - self.started
        lines = [f"Suite `{suite}`: {total / 60:.1f} min wall time in this invocation ({now()})", "",
                 f"Machine: {machine_description()}", "", "| stage | seconds | share |", "|---|---:|---:|"]
        for stage, sec in sorted(self.seconds.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {stage} | {sec:.0f} | {sec / max(total, 1e-9):.0%} |")
        other = total - sum(self.seconds.values())
        lines.append(f"| other (set-up, imports) | {other:.0f} | {other / max(total, 1e-9):.0%} |")
        return "\n".join(lines) + "\n"


def _in_folder(evaluation, out_dir: Path, label: str):
    """The evaluation with its output file in the suite folder: a generation's samples go to
    ``samples/<label>.npz`` unless it names another file (relative paths are inside the folder)."""
    if not isinstance(evaluation, GenerationMetrics):
        return evaluation
    npz = evaluation.npz or Path("samples") / f"{label}.npz"
    return dataclasses.replace(evaluation, npz=npz if npz.is_absolute() else out_dir / npz)
