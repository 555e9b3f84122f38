"""Reconstruction metrics of a tokenizer run (image, token and Inception metrics in one streaming pass)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from harness.core.distributed import Dist, setup
from harness.core.results import ResultsStore
from harness.data.datasets import open_dataset
from harness.evaluation.pipeline import build_metrics, evaluate_tokenizer, metric_outputs
from harness.evaluation.protocols import DEFAULT_PROTOCOL, check_metrics, follows_protocol
from harness.evaluation.recording import Evaluation, LoadedRun, Measurement, load_run, record, register_evaluation


@register_evaluation
@dataclass(frozen=True)
class ReconstructionMetrics(Evaluation):
    """registered metrics on a split's images, their reconstructions and token indices"""
    name = "reconstruction"
    metrics: tuple[str, ...]
    split: str = "test"
    n: int | None = None
    dataset: str | None = None
    batch_size: int = 250
    progress: bool = False
    protocol: str = DEFAULT_PROTOCOL        # of the Inception metrics (harness.evaluation.protocols)

    def __post_init__(self):
        check_metrics(self.metrics, self.protocol)

    def settings(self, run: LoadedRun) -> dict:
        # the protocol only where a metric follows it: PSNR rows stay valid whatever --protocol says
        protocol = {"protocol": self.protocol} if follows_protocol(self.metrics) else {}
        return {"split": self.split, "n": self.n, "metrics": sorted(self.metrics)} | protocol

    def yields(self, run: LoadedRun) -> set:
        return {(name, None) for name in metric_outputs(self.metrics, run.model.layout, self.protocol)}

    def measure(self, run: LoadedRun, d: Dist, todo: set) -> list[Measurement]:
        ds = open_dataset(self.dataset_of(run), self.split, resolution=run.resolution, channels=run.channels,
                          n=self.n)
        values = evaluate_tokenizer(run.model, ds, build_metrics(self.metrics, self.protocol), self.batch_size, d,
                                    progress=self.progress)
        return [Measurement(v.name, v.value, v.higher_is_better, len(ds), v.protocol, v.feature_extractor,
                            reason=v.reason, extra={"metric_source": v.source} | v.extra) for v in values]


def evaluate_and_record(checkpoint, store: ResultsStore, *, run_id: str | None, dataset: str | None,
                        split: str, n_eval: int | None, metrics: tuple[str, ...], batch_size: int,
                        device: str = "auto", progress: bool = False, skip_if_recorded: bool = True,
                        protocol: str = DEFAULT_PROTOCOL) -> list[dict]:
    """Stream ``split`` through the checkpoint's tokenizer; rank 0 records one row per metric value."""
    d = setup(device)
    run = load_run(Path(checkpoint), d.device, run_id)
    evaluation = ReconstructionMetrics(tuple(metrics), split, n_eval, dataset, batch_size, progress, protocol)
    return record(run, [evaluation], store, d, skip_recorded=skip_if_recorded)
