"""Evaluate a generator checkpoint: class-balanced samples -> images -> one results row per metric.

gFID / KID / precision / recall / IS compare the Inception features of the samples with those of
the reference split (the training split, ADM protocol), through the shared feature pass of
harness.evaluation.features (reference features cached on disk under their protocol key). A guided sampler is
also evaluated unguided (``cfg_scale = 1``), giving the ``*_nocfg`` metrics. Every row's ``extra``
records the sampler settings, the sampling seed, the tokenizer the samples were decoded with and
the number of reference images.
"""
from __future__ import annotations

import dataclasses
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from harness.core.contracts import SamplerConfig
from harness.core.distributed import Dist, setup
from harness.evaluation.metrics.fidelity import HIGHER_IS_BETTER, generation_fidelity
from harness.evaluation.generate import sample_batches, sampler_record, save_adm_npz, to_uint8_hwc
from harness.core.results import ResultsStore, make_rows, now
from harness.models.checkpoints import load_pair


def evaluate_generator_and_record(checkpoint, store: ResultsStore, *, run_id: str, sampler: SamplerConfig,
                                  n_samples: int, metrics: tuple[str, ...], batch_size: int = 100,
                                  reference_split: str = "train", reference_n: int | None = None,
                                  seed: int = 0, device: str = "auto", skip_if_recorded: bool = False,
                                  unguided: bool = True, npz: Path | None = None,
                                  progress: bool = False) -> list[dict]:
    """Sample, decode and measure; rank 0 replaces the run's rows in ``store``."""
    from harness.evaluation import features as F
    d = setup(device)
    generator, state, tokenizer, tok_state, tok_path = load_pair(checkpoint, d.device)
    dataset = state["data"]["dataset"]
    if skip_if_recorded:
        done = store.read()
        done = done[(done.run_id == run_id) & (done.config_hash == state["config_hash"])]
        if set(_wanted(metrics, sampler, unguided)) <= set(done.metric):
            return done.to_dict("records")
    reference_n = reference_n or n_samples
    cfg = tokenizer.cfg
    extractor = F.DEFAULT_EXTRACTOR
    reference = F.reference_features(dataset, reference_split, resolution=cfg.resolution,
                                     channels=cfg.in_channels, n=reference_n, extractor=extractor,
                                     device=d.device)
    started, t0 = now(), time.time()
    passes = [("", sampler)]
    if sampler.guided and unguided:
        passes.append(("_nocfg", dataclasses.replace(sampler, cfg_scale=1.0, codebook_aware_cfg=False)))
    values, reasons, n_of = {}, {}, {}
    for suffix, s in passes:
        feats, images = _sample_features(generator, tokenizer, n_samples, state["num_classes"], s, seed,
                                         batch_size, d, extractor, keep_images=npz is not None and suffix == "")
        wanted = metrics if suffix == "" else tuple(m for m in metrics if m in ("gfid", "gkid"))
        result = generation_fidelity(feats, reference, wanted)
        for name, (value, reason) in result.items():
            values[name + suffix] = value
            n_of[name + suffix] = n_samples
            if reason:
                reasons[name + suffix] = reason
        if images is not None and d.is_main:
            labels = (torch.arange(n_samples) % state["num_classes"]).numpy()
            save_adm_npz(npz, images, labels)
    run = {"run_id": run_id, "kind": "generator", "model": generator.family, "preset": state["preset"],
           "config_hash": state["config_hash"], "dataset": dataset, "split": reference_split,
           "resolution": cfg.resolution, "seed": seed, "started_at": started}
    extra = {**sampler_record(sampler, seed, n_samples, state["num_classes"]),
             "tokenizer_run": str(tok_path), "tokenizer_preset": tok_state["preset"],
             "generator_step": state["step"], "reference_split": reference_split, "reference_n": reference_n,
             "eval_seconds": round(time.time() - t0, 2), "world_size": d.world_size}
    higher = {m: HIGHER_IS_BETTER[m.removesuffix("_nocfg")] for m in values}
    rows = make_rows(run, values, higher, protocol="adm", n_images=n_of, feature_extractor=extractor,
                     extra=extra, reasons=reasons)
    if d.is_main:
        store.replace_run(run_id, rows)
    return rows


def _wanted(metrics, sampler: SamplerConfig, unguided: bool) -> list[str]:
    extra = [m + "_nocfg" for m in metrics if m in ("gfid", "gkid")] if sampler.guided and unguided else []
    return list(metrics) + extra



def sample_to_npz(checkpoint, out: Path, *, n: int, sampler: SamplerConfig, seed: int = 0,
                  batch_size: int = 100, device: str = "auto") -> Path:
    """Class-balanced samples of a generator checkpoint as an ADM-format .npz (rank 0 writes)."""
    d = setup(device)
    generator, state, tokenizer, _, _ = load_pair(checkpoint, d.device)
    parts = [(rows.start, to_uint8_hwc(images))
             for rows, _, images, _ in sample_batches(generator, tokenizer, n, state["num_classes"], sampler,
                                                       seed=seed, batch_size=batch_size, d=d)]
    parts = _gather_sorted(parts, d)
    if d.is_main:
        save_adm_npz(Path(out), np.concatenate([p for _, p in parts]),
                     (torch.arange(n) % state["num_classes"]).numpy())
    return Path(out)


def _gather_sorted(parts: list, d: Dist) -> list:
    """``(first row, value)`` pairs of every rank, in row order."""
    if d.enabled:
        gathered = [None] * d.world_size
        dist.all_gather_object(gathered, parts)
        parts = [p for g in gathered for p in g]
    return sorted(parts, key=lambda p: p[0])


@torch.no_grad()
def _sample_features(generator, tokenizer, n, num_classes, sampler, seed, batch_size, d: Dist, extractor,
                     keep_images: bool):
    """Features of the n samples in sample order (gathered over ranks); uint8 images if asked (rank 0)."""
    from harness.evaluation import features as F
    parts, image_parts = [], []
    for rows, _, images, _ in sample_batches(generator, tokenizer, n, num_classes, sampler, seed=seed,
                                             batch_size=batch_size, d=d):
        parts.append((rows.start, F.extract(images, extractor)))
        if keep_images:
            image_parts.append((rows.start, to_uint8_hwc(images)))
    parts, image_parts = _gather_sorted(parts, d), _gather_sorted(image_parts, d)
    feats = F.concat_features([p[1] for p in parts])
    images = np.concatenate([p[1] for p in image_parts]) if keep_images else None
    return feats, images
