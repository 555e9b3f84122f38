"""Evaluate a tokenizer checkpoint and record one results row per metric value."""
from __future__ import annotations

import json
import time
from datetime import datetime, timezone

from harness.data.datasets import open_dataset
from harness.core.distributed import setup
from harness.evaluation.pipeline import build_metrics, evaluate_tokenizer
from harness.models.checkpoints import load_tokenizer
from harness.core.results import ResultsStore, git_sha, package_versions


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def evaluate_and_record(checkpoint, store: ResultsStore, *, run_id: str | None, dataset: str | None,
                        split: str, n_eval: int | None, metrics: tuple[str, ...], batch_size: int,
                        device: str = "auto", progress: bool = False,
                        skip_if_recorded: bool = False) -> list[dict]:
    """Stream ``split`` through the checkpoint's tokenizer; rank 0 replaces the run's rows in ``store``."""
    d = setup(device)
    model, state, path = load_tokenizer(checkpoint, d.device)
    run_id = run_id or path.parent.parent.name
    dataset = dataset or state["data"]["dataset"]
    cfg = model.cfg
    if skip_if_recorded:
        done = store.read()
        done = done[(done.run_id == run_id) & (done.config_hash == state["config_hash"])
                    & (done.dataset == dataset) & (done.split == split)]
        if set(metrics) <= _metric_sources(done):
            return done.to_dict("records")
    ds = open_dataset(dataset, split, resolution=cfg.resolution, channels=cfg.in_channels, n=n_eval)
    started = _now()
    t0 = time.time()
    values = evaluate_tokenizer(model, ds, build_metrics(metrics), batch_size, d, progress=progress)
    seconds = time.time() - t0
    base = {
        "run_id": run_id, "kind": "tokenizer", "model": model.family, "preset": state["preset"],
        "config_hash": state["config_hash"], "dataset": dataset, "split": split,
        "resolution": cfg.resolution, "n_images": len(ds), "seed": state["train_config"]["seed"],
        "feature_extractor": "", "package_versions": package_versions(), "git_sha": git_sha(),
        "started_at": started, "finished_at": _now(),
    }
    rows = [base | {"metric": v.name, "value": v.value, "higher_is_better": v.higher_is_better,
                    "protocol": v.protocol, "feature_extractor": v.feature_extractor,
                    "extra": json.dumps({"metric_source": v.source, "checkpoint_step": state["step"],
                                         "eval_seconds": round(seconds, 2), "world_size": d.world_size}
                                        | ({"reason": v.reason} if v.reason else {}))}
            for v in values]
    if d.is_main:
        # replace only what this evaluation measured: probe, curve and other-N rows of the run stay
        store.replace_run(run_id, rows, where={"dataset": dataset, "split": split},
                          metrics={r["metric"] for r in rows} | _recorded_names(store, run_id, metrics))
    return rows


def _metric_sources(rows) -> set[str]:
    return {json.loads(e).get("metric_source") for e in rows.get("extra", [])}


def _recorded_names(store: ResultsStore, run_id: str, sources: tuple[str, ...]) -> set[str]:
    """Value names stored earlier by these metrics (a value the metric no longer emits goes too)."""
    rows = store.read()
    rows = rows[rows.run_id == run_id]
    extras = [json.loads(e) for e in rows["extra"]]
    keep = [x.get("metric_source") in sources and "k" not in x for x in extras]   # not the k-curves
    return set(rows.metric[keep])
