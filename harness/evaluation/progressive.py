"""Progressive reconstruction: decode from the first k tokens only and measure each k (design.md section 4).

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

import time
from collections.abc import Iterable, Sequence

import torch

from harness.core.contracts import EvalBatch, Tokenizer
from harness.data.datasets import open_dataset
from harness.core.distributed import Dist, setup, shard_batches
from harness.core.errors import VQBenchError
from harness.evaluation.pipeline import MetricValue, build_metrics, metric_values
from harness.models.checkpoints import load_tokenizer
from harness.core.results import ResultsStore, make_rows, now, row_extra

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


# ---------------------------------------------------------------- results store (shared with probe.py)
def tokenizer_run(model: Tokenizer, state: dict, *, run_id: str, dataset: str, split: str,
                  started_at: str) -> dict:
    """The run columns of ``make_rows`` for a tokenizer checkpoint (as ``evaluate_and_record`` fills them)."""
    return {"run_id": run_id, "kind": "tokenizer", "model": model.family, "preset": state["preset"],
            "config_hash": state["config_hash"], "dataset": dataset, "split": split,
            "resolution": model.cfg.resolution, "seed": state["train_config"]["seed"], "started_at": started_at}


def recorded_rows(store: ResultsStore, run: dict, metric_names: Iterable[str]) -> list[dict]:
    """Stored rows of this run, configuration, dataset and split whose metric is one of ``metric_names``."""
    names = set(metric_names)
    keys = ("run_id", "config_hash", "dataset", "split")
    return [r for r in store.records() if r["metric"] in names and all(r[c] == run[c] for c in keys)]


def replace_metrics(store: ResultsStore, run: dict, rows: list[dict]) -> None:
    """Replace the run's stored rows of each metric name in ``rows`` (for this dataset and split) by
    ``rows``; one atomic write per metric name, other metrics' rows untouched."""
    by_metric: dict[str, list[dict]] = {}
    for r in rows:
        by_metric.setdefault(r["metric"], []).append(r)
    for metric, group in by_metric.items():
        store.replace_run(run["run_id"], group,
                          where={"dataset": run["dataset"], "split": run["split"], "metric": metric})


# ---------------------------------------------------------------- entry point
def progressive_and_record(checkpoint, store: ResultsStore, *, run_id: str | None, dataset: str | None,
                           split: str = "test", n_eval: int | None, metrics: Sequence[str] = DEFAULT_METRICS,
                           ks: Iterable[int] | None = None, batch_size: int = 250, device: str = "auto",
                           progress: bool = False, skip_if_recorded: bool = True) -> list[dict]:
    """Progressive reconstruction of a tokenizer checkpoint on ``split``, one row per (k, metric value).

    (k, metric) pairs already stored for the same run, configuration hash, dataset, split and N are
    not recomputed (``skip_if_recorded``); under ``torchrun`` every rank evaluates its shard and
    rank 0 writes. Returns the rows of the requested ks and metrics.
    """
    d = setup(device)
    model, state, path = load_tokenizer(checkpoint, d.device)
    run_id = run_id or path.parent.parent.name
    dataset = dataset or state["data"]["dataset"]
    metrics, ks = tuple(dict.fromkeys(metrics)), check_prefix_lengths(model, ks)
    if not metrics:
        raise VQBenchError("progressive reconstruction needs at least one metric (e.g. psnr,ssim)")
    ds = open_dataset(dataset, split, resolution=model.cfg.resolution, channels=model.cfg.in_channels, n=n_eval)
    run = tokenizer_run(model, state, run_id=run_id, dataset=dataset, split=split, started_at=now())

    stored = [r for r in store.records() if r["metric"].startswith(PREFIX)
              and all(r[c] == run[c] for c in ("run_id", "config_hash", "dataset", "split"))
              and r["n_images"] == len(ds)]
    done = {(row_extra(r).get("k"), row_extra(r).get("metric_source")) for r in stored}
    todo = [k for k in ks if any((k, m) not in done for m in metrics)] if skip_if_recorded else ks

    def wanted(r: dict) -> bool:
        return row_extra(r).get("k") in ks and row_extra(r).get("metric_source") in metrics
    if not todo:
        return [r for r in stored if wanted(r)]

    t0 = time.time()
    values = progressive_evaluate(model, ds, metrics, todo, batch_size, d, progress=progress)
    seconds = round(time.time() - t0, 2)
    new = []
    for k, vals in values.items():
        for v in vals:
            extra = {"k": k, "k_total": model.prefix_total, "unit": model.prefix_unit, "metric_source": v.source,
                     "checkpoint_step": state["step"], "eval_seconds": seconds, "world_size": d.world_size}
            name = PREFIX + v.name
            new += make_rows(run, {name: v.value}, {name: v.higher_is_better}, v.protocol, n_images=len(ds),
                             feature_extractor=v.feature_extractor, extra=extra,
                             reasons={name: v.reason} if v.reason else None)
    # keep this configuration's rows of the other ks; rows of another configuration or N are stale
    recomputed = {r["metric"] for r in new}
    kept = [r for r in stored if r["metric"] in recomputed and row_extra(r).get("k") not in todo]
    if d.is_main:
        replace_metrics(store, run, kept + new)
    return [r for r in kept + new if wanted(r)]
