"""The streaming evaluation pipeline: one pass over a split feeds every requested metric.

Batches are consecutive slices dealt round-robin to DDP ranks (harness.core.distributed.shard_batches),
each metric keeps summable states, and ``Metric.sync`` all-reduces them before ``compute``: a
sharded evaluation equals the single-process one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from harness.models.catalog import load_all
from harness.core.contracts import EvalBatch, Metric, Tokenizer
from harness.core.distributed import Dist, shard_batches
from harness.core.registry import METRICS
from harness.evaluation.protocols import DEFAULT_PROTOCOL, get_protocol


@dataclass(frozen=True)
class MetricValue:
    name: str
    value: float
    higher_is_better: bool
    protocol: str
    source: str          # the registry name of the metric that emitted it
    feature_extractor: str = ""
    reason: str = ""     # why the value is NaN, when it is
    extra: dict = field(default_factory=dict)   # facts of this value for its row (e.g. KID's subset size)



def metric_outputs(names, layout, protocol: str = DEFAULT_PROTOCOL) -> list[str]:
    """The value names the registered metrics ``names`` emit on a run of this token layout under evaluation
    ``protocol`` (harness.evaluation.protocols)."""
    fidelity = get_protocol(protocol)
    out = []
    for n in names:
        cls = METRICS.get(n)
        out += cls.protocol_outputs(fidelity) if cls.uses_protocol else cls.outputs(layout)
    return out


def build_metrics(names: list[str] | tuple[str, ...], protocol: str = DEFAULT_PROTOCOL) -> list[Metric]:
    """Fresh instances of the registered metrics ``names``; those whose values follow an evaluation
    protocol get ``protocol`` (an error names a metric the protocol does not define)."""
    load_all()
    fidelity = get_protocol(protocol)
    metrics = []
    for n in names:
        m = METRICS.get(n)()
        m.source = n
        if m.uses_protocol:
            m.set_protocol(fidelity)
        metrics.append(m)
    return metrics


@torch.no_grad()
def evaluate_tokenizer(model: Tokenizer, dataset, metrics: list[Metric], batch_size: int,
                       d: Dist, progress: bool = False) -> list[MetricValue]:
    for m in metrics:
        m.reset()
    batches = shard_batches(len(dataset), batch_size, d)
    describe = dataset.describe() if hasattr(dataset, "describe") else None   # names the feature cache
    if progress and d.is_main:
        from tqdm.auto import tqdm
        batches = tqdm(batches, desc="eval", dynamic_ncols=True)
    embeddings = any("code_embeddings" in m.requires for m in metrics)
    for rows in batches:
        real, labels = dataset.batch(torch.tensor(list(rows)))
        real = real.to(d.device)
        out = model(real)
        batch = EvalBatch(real=real, reconstruction=out.reconstruction.clamp(-1, 1),
                          indices=out.indices, labels=labels, layout=model.layout,
                          code_embeddings=model.code_embeddings(out.indices) if embeddings else None,
                          image_ids=torch.tensor(list(rows)), dataset=describe)
        for m in metrics:
            m.update(batch)
    return metric_values(metrics)


def metric_values(metrics: list[Metric]) -> list[MetricValue]:
    """Sync every metric over DDP ranks and compute its values (every rank gets them)."""
    values = []
    for m in metrics:
        m.sync()
        for name, value in m.compute().items():
            values.append(MetricValue(name, float(value), m.higher_is_better[name], m.protocol, m.source,
                                      m.feature_extractor, m.reasons.get(name, ""), m.value_extra.get(name, {})))
    return values
