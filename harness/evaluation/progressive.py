"""Progressive reconstruction: decode from the first k tokens only and measure each k.

Every image of the split is encoded once and decoded once per k of a grid with
``Tokenizer.decode_prefix(indices, k)``: the first k tokens kept, the rest zeroed in the quantized
latent space (their code vectors set to 0 before the decoder). What a token is follows the family's
``prefix_unit``: channels for CVQ (the CVQ paper's App. C / Table 8 keeps the first k channels),
latent positions for VCQ, sub-codebooks for FQ (k = 1..number of factors), and the spatial raster
prefix for VQ and the conv baselines (RVQ: every residual level of a kept position).

Any registered metric that reads only real and reconstructed images (psnr, ssim, their legacy modes,
lpips, rfid ...) gets one instance per k; the instances stream over batches and sum their states
over DDP ranks like ``harness.evaluation.pipeline``'s, so a ``torchrun``-sharded run gives the single-process
numbers, and at k = all the numbers are the ordinary reconstruction metrics.

Result rows: metric ``progressive_<value>`` (``progressive_psnr``, ...) with the source metric's
protocol, one row per (k, value); ``extra`` holds ``k``, ``k_total``, ``unit`` (channels | positions |
factors) and ``metric_source``. harness/figures.py draws one curve per tokenizer from them.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch

from harness.core.contracts import EvalBatch, Tokenizer
from harness.data.datasets import open_dataset
from harness.core.distributed import Dist, setup, shard_batches
from harness.core.errors import VQBenchError
from harness.core.results import ResultsStore
from harness.evaluation.pipeline import MetricValue, build_metrics, metric_outputs, metric_values
from harness.evaluation.recording import Evaluation, LoadedRun, Measurement, load_run, record, register_evaluation

PREFIX = "progressive_"
DEFAULT_METRICS = ("psnr", "ssim")
IMAGE_FIELDS = frozenset({"real", "reconstruction", "labels", "layout"})   # what a prefix decode provides


def prefix_lengths(total: int) -> list[int]:
    """The natural k grid: powers of two below ``total``, then ``total`` (T = 49: 1, 2, 4, ..., 32, 49;
    FQ with 2 factors: 1, 2)."""
    if total < 1:
        raise ValueError(f"a token prefix needs at least one token (total={total})")
    ks, k = [], 1
    while k < total:
        ks.append(k)
        k *= 2
    return ks + [total]


def check_prefix_lengths(model: Tokenizer, ks: Iterable[int] | None) -> list[int]:
    """Sorted distinct k (default ``prefix_lengths``), each within 1..``model.prefix_total``."""
    if type(model).decode_prefix is Tokenizer.decode_prefix:
        raise VQBenchError(f"tokenizer {type(model).__name__} does not implement decode_prefix (progressive decoding)")
    total = model.prefix_total
    if ks is None:
        return prefix_lengths(total)
    ks = sorted({int(k) for k in ks})
    bad = [k for k in ks if not 1 <= k <= total]
    if bad or not ks:
        raise VQBenchError(f"prefix lengths {bad or '(none)'} are outside 1..{total}: this {model.family} "
                           f"tokenizer has {total} {model.prefix_unit}")
    return ks


@torch.no_grad()
def progressive_evaluate(model: Tokenizer, dataset, metrics: Sequence[str], ks: Sequence[int], batch_size: int,
                         d: Dist, progress: bool = False) -> dict[int, list[MetricValue]]:
    """``{k: values}`` of the named metrics on ``decode_prefix(encode(x), k)``; one pass over the split."""
    per_k = {k: build_metrics(metrics) for k in ks}
    for m in per_k[ks[0]]:
        if not m.requires <= IMAGE_FIELDS:
            raise VQBenchError(f"metric {m.source!r} reads {', '.join(sorted(m.requires - IMAGE_FIELDS))}; "
                               "progressive reconstruction measures images only (e.g. psnr, ssim, lpips, rfid)")
    batches = shard_batches(len(dataset), batch_size, d)
    describe = dataset.describe() if hasattr(dataset, "describe") else None   # names the feature cache
    if progress and d.is_main:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc="progressive", dynamic_ncols=True)
    for rows in batches:
        ids = torch.tensor(list(rows))
        real, labels = dataset.batch(ids)
        real = real.to(d.device)
        indices = model.encode(real)
        real_memo: dict = {}     # features of the real images (keys naming "real"), the same for every k
        for k, group in per_k.items():
            batch = EvalBatch(real=real, reconstruction=model.decode_prefix(indices, k).clamp(-1, 1),
                              labels=labels, layout=model.layout, image_ids=ids, dataset=describe,
                              feature_memo=dict(real_memo))
            for m in group:
                m.update(batch)
            real_memo.update({key: v for key, v in batch.feature_memo.items()
                              if isinstance(key, tuple) and "real" in key})
    return {k: metric_values(group) for k, group in per_k.items()}


# ---------------------------------------------------------------- the registered evaluation
@register_evaluation
@dataclass(frozen=True)
class ProgressiveCurves(Evaluation):
    """image metrics of decode_prefix(encode(x), k) for each k of a grid"""
    name = "progressive"
    metrics: tuple[str, ...] = DEFAULT_METRICS
    ks: tuple[int, ...] | None = None           # None: powers of two, then all
    split: str = "test"
    n: int | None = None
    dataset: str | None = None
    batch_size: int = 250
    progress: bool = False

    def __post_init__(self):
        if not self.metrics:
            raise VQBenchError("progressive reconstruction needs at least one metric (e.g. psnr,ssim)")

    def settings(self, run: LoadedRun) -> dict:
        return {"split": self.split, "n": self.n}

    def yields(self, run: LoadedRun) -> set:
        ks = check_prefix_lengths(run.model, self.ks)
        names = metric_outputs(dict.fromkeys(self.metrics), run.model.layout)
        return {(PREFIX + name, k) for name in names for k in ks}

    def measure(self, run: LoadedRun, d: Dist, todo: set) -> list[Measurement]:
        model = run.model
        ds = open_dataset(self.dataset_of(run), self.split, resolution=run.resolution, channels=run.channels,
                          n=self.n)
        ks = sorted({k for _, k in todo})
        values = progressive_evaluate(model, ds, tuple(dict.fromkeys(self.metrics)), ks, self.batch_size, d,
                                      progress=self.progress)
        extra = {"k_total": model.prefix_total, "unit": model.prefix_unit}
        return [Measurement(PREFIX + v.name, v.value, v.higher_is_better, len(ds), v.protocol,
                            v.feature_extractor, k=k, reason=v.reason,
                            extra=extra | {"metric_source": v.source} | v.extra)
                for k, vals in values.items() for v in vals]


def progressive_and_record(checkpoint, store: ResultsStore, *, run_id: str | None, dataset: str | None,
                           split: str = "test", n_eval: int | None, metrics: Sequence[str] = DEFAULT_METRICS,
                           ks: Iterable[int] | None = None, batch_size: int = 250, device: str = "auto",
                           progress: bool = False, skip_if_recorded: bool = True) -> list[dict]:
    """Progressive reconstruction of a tokenizer checkpoint on ``split``, one row per (k, metric value);
    (k, metric) rows already stored for the same settings are not recomputed."""
    d = setup(device)
    run = load_run(checkpoint, d.device, run_id)
    evaluation = ProgressiveCurves(tuple(metrics), None if ks is None else tuple(ks), split, n_eval, dataset,
                                   batch_size, progress)
    return record(run, [evaluation], store, d, skip_recorded=skip_if_recorded)
