"""Evaluate a generator checkpoint: samples -> images -> one results row per metric.

A class-conditional generator draws class-balanced samples; a text-conditioned one draws a sample per
caption of the reference images (``generate.reference_prompts``).

gFID / KID / sFID / precision / recall / IS compare the Inception features of the samples with those of
the reference split (the training split by default) or an ADM reference batch (``reference``), under the
evaluation's protocol (harness.evaluation.protocols), through the shared feature pass of
harness.evaluation.features (reference features cached on disk under their protocol key). A guided sampler is
also evaluated unguided (``cfg_scale = 1``), giving the ``*_nocfg`` metrics. Every row's ``extra``
records the sampler settings, the sampling seed, the tokenizer the samples were decoded with and
the number of reference images.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from harness.core.contracts import EvalBatch, SamplerConfig
from harness.core.distributed import Dist, setup
from harness.core.errors import VQBenchError
from harness.core.results import ResultsStore
from harness.evaluation.generate import (SampleConditions, class_balanced, prompted, reference_prompts,
                                         sample_batches, sampler_record, save_adm_npz, to_uint8_hwc)
from harness.evaluation.metrics.fidelity import GENERATION_METRICS
from harness.core.registry import METRICS
from harness.evaluation.pipeline import build_metrics, metric_outputs, metric_values
from harness.evaluation.protocols import (DEFAULT_PROTOCOL, check_metrics, check_reference, follows_protocol,
                                         get_protocol)
from harness.evaluation.recording import Evaluation, LoadedRun, Measurement, load_run, record, register_evaluation
from harness.models.checkpoints import load_pair, run_text_condition

# what the unguided pass of a guided sampler measures (*_nocfg)
UNGUIDED_METRICS = ("gfid", "gkid", "prompt_accuracy")
DEFAULT_SAMPLES = 1000                  # `vqbench sample` without --n or --prompts


@register_evaluation
@dataclass(frozen=True)
class GenerationMetrics(Evaluation):
    """class-balanced (or prompted) samples of a generator against a reference split (gFID, gKID, precision,
    recall, IS)"""
    name = "generation"
    kind = "generator"
    sampler: SamplerConfig = SamplerConfig()
    n_samples: int = 1000
    metrics: tuple[str, ...] = GENERATION_METRICS
    reference_split: str = "train"
    reference_n: int | None = None              # None: as many reference images as samples
    seed: int = 0
    unguided: bool = True                       # also sample without guidance (the *_nocfg values)
    batch_size: int = 100
    npz: Path | None = None                     # also save the guided samples as an ADM .npz
    protocol: str = DEFAULT_PROTOCOL            # of the Inception metrics (harness.evaluation.protocols)
    reference: Path | None = None               # an ADM reference batch instead of the reference split's images

    @property
    def row_split(self) -> str:
        return self.reference_split

    def passes(self) -> list[tuple[str, SamplerConfig, tuple[str, ...]]]:
        """(suffix, sampler, metrics): the guided pass, and an unguided one for gfid/gkid."""
        out = [("", self.sampler, self.metrics)]
        if self.sampler.guided and self.unguided:
            out.append(("_nocfg", dataclasses.replace(self.sampler, cfg_scale=1.0, codebook_aware_cfg=False),
                        tuple(m for m in self.metrics if m in UNGUIDED_METRICS)))
        return out

    def __post_init__(self):
        check_metrics(self.metrics, self.protocol)
        if self.reference is not None:
            if not any("reference" in METRICS.get(n).requires for n in self.metrics):
                raise VQBenchError(f"--reference {self.reference}: none of the metrics {', '.join(self.metrics)} "
                                   "compares with reference images")
            if self.reference_n is not None:
                raise VQBenchError(f"--reference {self.reference} fixes the reference images; leave out the "
                                   "reference image count")
            check_reference(self.protocol, self.reference)

    def settings(self, run: LoadedRun) -> dict:
        reference = {} if self.reference is None else {"reference": reference_record(self.reference)}
        protocol = {"protocol": self.protocol} if follows_protocol(self.metrics) else {}
        return {"sampler": dataclasses.asdict(self.sampler), "n_samples": self.n_samples, "seed": self.seed,
                "reference_split": self.reference_split, "reference_n": self.reference_n or self.n_samples
                } | protocol | reference

    def yields(self, run: LoadedRun) -> set:
        return {(name + suffix, None) for suffix, _, metrics in self.passes()
                for name in metric_outputs(metrics, run.tokenizer.layout, self.protocol)}

    def measure(self, run: LoadedRun, d: Dist, todo: set) -> list[Measurement]:
        from harness.evaluation import features as F
        from harness.evaluation.metrics.fidelity import ReferenceSet
        from harness.evaluation.reference import read_reference
        reference_n = self.reference_n or self.n_samples
        fidelity = get_protocol(self.protocol)
        # Inception features of the reference images only when a metric compares with them
        needs_reference = any("reference" in METRICS.get(n).requires for n in self.metrics)
        reference = None
        if needs_reference and self.reference is not None:
            reference = read_reference(self.reference, self.protocol, str(d.device))
            reference_n = len(reference.features)
        elif needs_reference:
            reference = ReferenceSet(F.reference_features(
                self.dataset_of(run), self.reference_split, resolution=run.resolution, channels=run.channels,
                n=reference_n, extractor=F.DEFAULT_EXTRACTOR, device=d.device, how=fidelity.feature_input))
        conditions = generation_conditions(run.state, self.dataset_of(run), self.reference_split, self.n_samples,
                                           d.device)
        extra = {"tokenizer_run": str(run.tokenizer_path), "tokenizer_preset": run.tokenizer_state["preset"],
                 "reference_split": self.reference_split, "reference_n": reference_n}
        out = []
        classifier = None
        for suffix, sampler, names in self.passes():
            metrics = build_metrics(names, self.protocol)
            for m in metrics:
                if "classifier" in m.requires:
                    classifier = classifier or _shared_classifier(self.dataset_of(run), run, d)
                    m.classifier = classifier
            keep_images = self.npz is not None and suffix == ""
            images = _stream_samples(run, sampler, conditions, self.seed, self.batch_size, d, metrics, keep_images)
            if images is not None and d.is_main:
                save_adm_npz(self.npz, images, conditions.labels.numpy(), conditions.prompts)
            for m in metrics:
                if "reference" in m.requires:
                    m.reference = reference
            # the evaluation's sampler; *_nocfg names say the pass ran it with cfg_scale 1
            row_extra = extra | sampler_record(self.sampler, self.seed, conditions)
            out += [Measurement(v.name + suffix, v.value, v.higher_is_better, self.n_samples, v.protocol,
                                v.feature_extractor, reason=v.reason,
                                extra=row_extra | {"metric_source": v.source} | v.extra)
                    for v in metric_values(metrics)]
        return out


def evaluate_generator_and_record(checkpoint, store: ResultsStore, *, run_id: str, sampler: SamplerConfig,
                                  n_samples: int, metrics: tuple[str, ...], batch_size: int = 100,
                                  reference_split: str = "train", reference_n: int | None = None,
                                  seed: int = 0, device: str = "auto", skip_if_recorded: bool = True,
                                  unguided: bool = True, npz: Path | None = None, progress: bool = False,
                                  protocol: str = DEFAULT_PROTOCOL, reference: Path | None = None) -> list[dict]:
    """Sample, decode and measure a generator checkpoint; rank 0 records one row per metric value."""
    d = setup(device)
    run = load_run(checkpoint, d.device, run_id)
    evaluation = GenerationMetrics(sampler, n_samples, tuple(metrics), reference_split, reference_n, seed,
                                   unguided, batch_size, npz, protocol, reference)
    return record(run, [evaluation], store, d, skip_recorded=skip_if_recorded)


def reference_record(path: Path) -> dict:
    """What identifies a reference batch in a row's settings: its path and its content's sha256."""
    from harness.core.weights import file_sha256
    try:
        return {"path": str(path), "sha256": file_sha256(Path(path))}
    except OSError as e:
        from harness.core.io import file_error
        raise file_error(e, f"--reference {path}", "read") from None


def _shared_classifier(dataset: str, run: LoadedRun, d: Dist):
    """The dataset's prompt classifier: rank 0 trains and caches it, the other ranks then read it (an
    error on rank 0 stops every rank)."""
    from harness.core.distributed import on_main_then_all
    from harness.evaluation.classifier import prompt_classifier
    def build():
        return prompt_classifier(dataset, run.resolution, run.channels, device=d.device)
    return (on_main_then_all(build, d.is_main, f"cannot build the prompt classifier of {dataset}", d)
            or build())


def generation_conditions(state: dict, dataset: str, split: str, n: int, device) -> SampleConditions:
    """What a generator run's evaluation samples are conditioned on: class-balanced labels, or the
    reference images' captions for a text-conditioned run."""
    text = run_text_condition(state)
    if text is None:
        return class_balanced(n, state["num_classes"])
    return reference_prompts(dataset, split, n, text, device)


@torch.no_grad()
def _stream_samples(run: LoadedRun, sampler: SamplerConfig, conditions: SampleConditions, seed: int,
                    batch_size: int, d: Dist, metrics, keep_images: bool):
    """Feed every batch of samples to ``metrics`` (features computed once per batch); the uint8 images in
    sample order (rank 0) when ``keep_images``."""
    image_parts = []
    for rows, _, images, labels in sample_batches(run.model, run.tokenizer, conditions, sampler, seed=seed,
                                                  batch_size=batch_size, d=d):
        batch = EvalBatch(samples=images, labels=labels, image_ids=torch.arange(rows.start, rows.stop))
        for m in metrics:
            m.update(batch)
        if keep_images:
            image_parts.append((rows.start, to_uint8_hwc(images)))
    image_parts = _gather_sorted(image_parts, d)
    return np.concatenate([p[1] for p in image_parts]) if keep_images else None


def sample_to_npz(checkpoint, out: Path, *, n: int | None, sampler: SamplerConfig, seed: int = 0,
                  batch_size: int = 100, device: str = "auto", prompts: list[str] | None = None,
                  prompts_file: Path | None = None) -> tuple[Path, int]:
    """Samples of a generator checkpoint as an ADM-format .npz (rank 0 writes): class-balanced, or for a
    text-conditioned run one per prompt (sample i: prompt i mod P; ``n`` None: P samples), the
    reference captions without ``prompts``. Returns (path, number of samples)."""
    d = setup(device)
    generator, state, tokenizer, _, _ = load_pair(checkpoint, d.device)
    conditions = sampling_conditions(state, n, prompts, prompts_file, d.device)
    parts = [(rows.start, to_uint8_hwc(images))
             for rows, _, images, _ in sample_batches(generator, tokenizer, conditions, sampler,
                                                       seed=seed, batch_size=batch_size, d=d)]
    parts = _gather_sorted(parts, d)
    if d.is_main:
        save_adm_npz(Path(out), np.concatenate([p for _, p in parts]), conditions.labels.numpy(),
                     conditions.prompts)
    return Path(out), len(conditions)


def sampling_conditions(state: dict, n: int | None, prompts: list[str] | None, prompts_file: Path | None,
                        device) -> SampleConditions:
    """The conditions of ``vqbench sample``: see ``sample_to_npz``."""
    text = run_text_condition(state)
    if prompts is not None and text is None:
        raise VQBenchError(f"--prompts {prompts_file}: this generator is class-conditional (trained on "
                           f"{state['data']['dataset']}); prompts need a run trained on a captioned dataset")
    if prompts is not None:
        n = n or len(prompts)
        return prompted([prompts[i % len(prompts)] for i in range(n)], text, f"prompt i mod {len(prompts)} of "
                        f"{prompts_file}", device=device)
    if text is not None:
        return reference_prompts(state["data"]["dataset"], "train", n or DEFAULT_SAMPLES, text, device)
    return class_balanced(n or DEFAULT_SAMPLES, state["num_classes"])


def read_prompts(path: Path) -> list[str]:
    """One prompt per line (blank lines skipped); a one-line error naming the file otherwise."""
    from harness.core.io import file_error
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as e:
        raise file_error(e, f"--prompts {path}", "read the prompts from") from None
    except UnicodeDecodeError:
        raise VQBenchError(f"--prompts {path} is not UTF-8 text; give one prompt per line") from None
    prompts = [line.strip() for line in text.splitlines() if line.strip()]
    if not prompts:
        raise VQBenchError(f"--prompts {path} holds no prompt; give one prompt per line")
    return prompts


def _gather_sorted(parts: list, d: Dist) -> list:
    """``(first row, value)`` pairs of every rank, in row order."""
    if d.enabled:
        gathered = [None] * d.world_size
        dist.all_gather_object(gathered, parts)
        parts = [p for g in gathered for p in g]
    return sorted(parts, key=lambda p: p[0])
