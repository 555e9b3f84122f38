"""The fixed-budget AR probe of a track: the same small AR, trained the same steps on each tokenizer entry's
tokens, says how well each tokenizer's tokens can be generated (``vqbench ar-probe TRACK``).

Which tokenizer metric predicts generation? rFID does not, by the peers' own warnings. Every tokenizer
entry of a track gets one probe run, ``<probe suite>/ar-probe@<tokenizer label>``: the track's AR preset and
training settings on that tokenizer's training tokens, then its held-out likelihood (bits per image and per
token, harness.evaluation.likelihood) and its gFID with one sampler for all. A factorized tokenizer (FQ, RVQ:
k codes per position) is read as k positions per position (``factors=as-positions``); bits per image stay
comparable, bits per token do not. Where the track's own suite already trained that AR on that tokenizer
with the same settings (``ar@vq`` in the default suite), the probe reuses its weights.

The site (harness.leaderboard.site) shows the probe's values beside each tokenizer entry and, across the
track's entries, the Spearman rank correlation of each tokenizer metric with each probe result
(harness.leaderboard.correlation).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import VQBenchError

PROBE_PREFIX = "ar-probe@"


@dataclass(frozen=True, kw_only=True)
class ARProbe:
    """A track's AR probe: trained as the track suite's generator run ``template`` (its preset, training
    settings and encoded images) on each tokenizer entry, then scored on ``likelihood_n`` test images and on
    the template's samples (its sampler and count; guided pass only)."""
    template: str
    suite: str                            # its runs' id prefix, <suite>/ar-probe@<tokenizer label>: one per track
    likelihood_n: int = 2000
    # what the site correlates: the probe's results, and the tokenizer metrics that might predict them
    outcomes: tuple[str, ...] = ("nll_bits_per_image", "gfid")
    predictors: tuple[str, ...] = ("rfid", "psnr", "ssim", "lpips", "codebook_usage", "unique_ratio",
                                   "entropy_cliff_t_star", "probe_top1_k1", "probe_top1_k10", "probe_top1_all")

    def label(self, tokenizer_label: str) -> str:
        return PROBE_PREFIX + tokenizer_label

    def run_id(self, tokenizer_run_id: str) -> str:
        return f"{self.suite}/{self.label(str(tokenizer_run_id).split('/', 1)[-1])}"

    def generator_run(self, tokenizer, suite):
        """The probe's ``GeneratorRun`` on ``tokenizer`` (a TokenizerRun), trained as ``suite``'s template run
        (and by it, when that run is the same training on the same tokenizer)."""
        from harness.evaluation.likelihood import TokenLikelihood
        from harness.evaluation.record_generation import GenerationMetrics
        template = {g.label: g for g in suite.generators}.get(self.template)
        if template is None:
            raise VQBenchError(f"AR probe: suite {suite.name} has no generator run {self.template!r} to train as")
        generation = next((e for e in template.evaluations if isinstance(e, GenerationMetrics)), None)
        if generation is None:
            raise VQBenchError(f"AR probe: the template run {self.template!r} has no generation evaluation to sample as")
        overrides = template.overrides + (("factors=as-positions",) if _factors(tokenizer) > 1 else ())
        spec = dataclasses.replace(
            template, label=self.label(tokenizer.label), tokenizer=tokenizer.label, overrides=overrides,
            train_label=None, evaluations=(TokenLikelihood(n=self.likelihood_n),
                                           dataclasses.replace(generation, unguided=False, npz=None)))
        same = [g for g in suite.generators if (g.preset, g.tokenizer, g.overrides, g.n_train, g.dataset, g.train_label)
                == (spec.preset, spec.tokenizer, spec.overrides, spec.n_train, spec.dataset, None)]
        return dataclasses.replace(spec, train_label=same[0].label) if same else spec

    def describe(self) -> str:
        return (f"trained as the suite's run {self.template} on each tokenizer entry; likelihood on {self.likelihood_n} "
                "test images, gFID on that run's samples (guided only)")


def _factors(run) -> int:
    """Codes per position of a TokenizerRun's tokenizer, as configured."""
    from harness.core.config import split_overrides
    from harness.models.catalog import preset_layout, tokenizer_config
    from harness.training.train_tokenizer import TrainConfig
    model_overrides, _ = split_overrides(list(run.overrides), tokenizer_config(run.preset), TrainConfig())
    return preset_layout(run.preset, model_overrides).num_factors


def probe_suite(track, tokenizers=None):
    """The probe runs of ``track`` on ``tokenizers`` (TokenizerRuns; default: every tokenizer run of the track's
    suite), each listed with its tokenizer run, which it does not evaluate again (a finished run is not
    retrained)."""
    from harness.core.registry import SUITES
    from harness.suites import Suite
    probe = track.ar_probe
    if probe is None or track.suite is None:
        raise VQBenchError(f"track {track.name!r} has no AR probe (`vqbench list tracks`)")
    suite = SUITES.get(track.suite)
    tokenizers = suite.runs if tokenizers is None else tokenizers
    return Suite(probe.suite, f"the AR probe of track {track.name}: {probe.describe()}",
                 tuple(dataclasses.replace(t, evaluations=()) for t in tokenizers),
                 tuple(probe.generator_run(t, suite) for t in tokenizers), seeds=track.seeds)


def run_ar_probe(track, out: Path | None = None, *, device: str = "auto", progress: bool = True) -> Path | None:
    """Train and evaluate the track's suite (resumably: a finished main job is not redone) and its AR probe
    into the suite's folder, then rebuild the site; returns its index.html (None on other processes)."""
    from harness.core.distributed import is_main_process
    from harness.leaderboard.site import build_site
    from harness.suites import run_suite
    suite = probe_suite(track)
    out = Path(out) if out is not None else Path("reports") / track.suite
    run_suite(track.suite, out, device=device, progress=progress, timings=f"timings_{track.suite}_for_probe.md",
              seeds=track.seeds)
    run_suite(suite, out, device=device, progress=progress, timings=f"timings_{suite.name}.md", seeds=track.seeds)
    if not is_main_process():
        return None
    return build_site([out / "results.jsonl"], out / "site")
