"""The contract every registered metric meets, generation metrics included: tiny inputs give finite values
(or NaN with a stated reason) under exactly the names it declares, each with a direction and a protocol;
its state reduces over a process group; streaming in two batches equals one batch."""
import datetime
import math

import pytest
import torch
import torch.distributed as dist

from harness.core.contracts import EvalBatch, Metric, TokenLayout
from harness.core.registry import METRICS, PROTOCOLS
from harness.evaluation import features as F
from harness.evaluation.classifier import prompt_classifier
from harness.evaluation.pipeline import build_metrics
from harness.evaluation.protocols import DEFAULT_PROTOCOL, get_protocol

N = 6
LAYOUT = TokenLayout.constant(16, 8, position_kind="spatial", grid=(4, 4))
BATCH_FIELDS = {"real", "reconstruction", "samples", "indices", "code_embeddings", "labels", "layout", "image_ids"}
EXTERNAL_INPUTS = {"reference", "classifier"}    # set on the metric by the evaluation, not carried by batches


def _images(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(N, 3, 1, 1, generator=g) * 2 - 1
    return (base + 0.3 * torch.randn(N, 3, 32, 32, generator=g)).clamp(-1, 1)


@pytest.fixture(scope="module")
def inputs():
    real, recon, samples = _images(0), _images(1), _images(2)
    recon = (0.7 * real + 0.3 * recon).clamp(-1, 1)
    extractor = F.shared_extractor("cpu")
    # the pipeline shares one Inception pass per batch through feature_memo; computed once here per
    # protocol input (the default, and ADM's with sFID's spatial features)
    feats = {how: {f: extractor.features(x, how) for f, x in (("real", real), ("reconstruction", recon),
                                                              ("samples", samples))}
             for how in (F.DEFAULT_INPUT, get_protocol("adm").feature_input)}
    indices = torch.randint(0, 8, (N, 16), generator=torch.Generator().manual_seed(3))
    # prompt_accuracy's judge: the real classifier recipe, briefly trained on procedural images of this size
    classifier = prompt_classifier("procedural", 32, 3, n_train=64, epochs=1, n_test=32, cache=False)
    codes = torch.randn(8, 5, generator=torch.Generator().manual_seed(5))     # a codebook of 8 five-dim codes
    return {"real": real, "reconstruction": recon, "samples": samples, "indices": indices, "codes": codes,
            "labels": torch.arange(N) % 3, "feats": feats,
            "reference": extractor.features(_images(4), get_protocol("adm").feature_input),
            "classifier": classifier}


def protocol_for(cls) -> str:
    """The first registered protocol that defines every value of ``cls`` (the default for other metrics)."""
    if not cls.uses_protocol:
        return DEFAULT_PROTOCOL
    return next(e.name for e in PROTOCOLS.entries() if all(e.obj.defines(v) for v in cls.higher_is_better))


def expected_outputs(cls) -> tuple[str, ...]:
    return cls.protocol_outputs(get_protocol(protocol_for(cls))) if cls.uses_protocol else cls.outputs(LAYOUT)


def _batch(inputs, rows: slice, protocol: str) -> EvalBatch:
    ids = torch.arange(N)[rows]
    how = get_protocol(protocol).feature_input
    memo = {(F.EXTRACTOR_NAME, how, f): v.select(torch.arange(N)[rows]) for f, v in inputs["feats"][how].items()}
    return EvalBatch(real=inputs["real"][rows], reconstruction=inputs["reconstruction"][rows],
                     samples=inputs["samples"][rows], indices=inputs["indices"][rows], labels=inputs["labels"][rows],
                     code_embeddings=inputs["codes"][inputs["indices"][rows]],
                     layout=LAYOUT, image_ids=ids, feature_memo=memo)


def _run(name: str, inputs, splits) -> tuple[Metric, dict]:
    protocol = protocol_for(METRICS.get(name))
    metric, = build_metrics([name], protocol)
    for name in EXTERNAL_INPUTS & metric.requires:
        setattr(metric, name, inputs[name])
    for rows in splits:
        metric.update(_batch(inputs, rows, protocol))
    metric.sync()
    return metric, metric.compute()


def test_every_registered_metric_is_covered():
    names = set(METRICS.names())
    assert {"psnr", "ssim", "lpips", "rfid", "codebook_usage", "unique_ratio", "entropy_cliff",
            "gfid", "gkid", "precision", "recall", "inception_score", "prompt_accuracy", "sfid"} <= names


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_contract(name, inputs):
    cls = METRICS.get(name)
    assert issubclass(cls, Metric)
    assert cls.requires and cls.requires <= BATCH_FIELDS | EXTERNAL_INPUTS, f"{name} declares unknown inputs"
    assert isinstance(cls.protocol, str) and cls.protocol, f"{name} declares no protocol"
    assert cls.higher_is_better and all(isinstance(v, bool) for v in cls.higher_is_better.values())
    metric, values = _run(name, inputs, [slice(0, N)])
    assert set(values) == set(expected_outputs(cls)), f"{name} emits other names than it declares"
    for value_name, value in values.items():
        assert value_name in metric.higher_is_better, f"{name}: {value_name} has no direction"
        assert math.isfinite(value) or metric.reasons.get(value_name), f"{name}: {value_name} is {value} with no reason"


@pytest.mark.parametrize("name", METRICS.names())
def test_metric_streams_and_reduces_over_a_process_group(name, inputs, tmp_path):
    _, whole = _run(name, inputs, [slice(0, N)])
    # a one-process gloo group runs the real collectives of ``sync`` (all-reduce, gathers)
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1, timeout=datetime.timedelta(seconds=60))
    # legacy per-batch means (SEED-Voken) depend on the batching by definition: same batch, group path only
    splits = [slice(0, N)] if getattr(METRICS.get(name), "per_batch_mean", False) else [slice(0, 2), slice(2, N)]
    try:
        _, streamed = _run(name, inputs, splits)
    finally:
        dist.destroy_process_group()
    assert set(streamed) == set(whole)
    for k in whole:
        assert streamed[k] == pytest.approx(whole[k], rel=1e-6, abs=1e-9, nan_ok=True), f"{name}: {k}"
