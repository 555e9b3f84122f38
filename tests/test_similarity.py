"""token_similarity and subcode_similarity against direct loops, and through the evaluation pipeline."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from harness.core.contracts import EvalBatch, TokenLayout
from harness.core.distributed import Dist
from harness.data.datasets import open_dataset
from harness.evaluation.pipeline import build_metrics, evaluate_tokenizer
from harness.models.catalog import build_tokenizer


def _value(name: str, z: torch.Tensor, layout: TokenLayout) -> float:
    (metric,) = build_metrics([name])
    metric.update(EvalBatch(code_embeddings=z, layout=layout))
    return metric.compute()[name]


def test_token_similarity_is_the_mean_pairwise_cosine():
    z = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    expected = sum(F.cosine_similarity(z[n, i], z[n, j], dim=0).item()
                   for n in range(3) for i, j in itertools.permutations(range(5), 2)) / (3 * 5 * 4)
    assert _value("token_similarity", z, TokenLayout.constant(5, 8)) == pytest.approx(expected, abs=1e-9)


def test_identical_tokens_are_similar_and_orthogonal_ones_are_not():
    same = torch.ones(2, 4, 3)
    orthogonal = torch.eye(4).expand(2, 4, 4)
    layout = TokenLayout.constant(4, 8)
    assert _value("token_similarity", same, layout) == pytest.approx(1.0)
    assert _value("token_similarity", orthogonal, layout) == pytest.approx(0.0)


def test_subcode_similarity_is_the_squared_cosine_of_sub_code_pairs():
    n, t, k, d = 2, 3, 3, 4
    q = torch.randn(n, t, k, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expected = sum(F.cosine_similarity(q[a, b, i], q[a, b, j], dim=0).item() ** 2
                   for a in range(n) for b in range(t) for i, j in itertools.combinations(range(k), 2)) / (n * t * 3)
    layout = TokenLayout.constant(t, 8, num_factors=k)
    assert _value("subcode_similarity", q.flatten(2), layout) == pytest.approx(expected, abs=1e-9)


def test_subcode_similarity_of_one_code_per_position_is_nan_with_a_reason():
    (metric,) = build_metrics(["subcode_similarity"])
    metric.update(EvalBatch(code_embeddings=torch.randn(2, 3, 4), layout=TokenLayout.constant(3, 8)))
    assert math.isnan(metric.compute()["subcode_similarity"]) and metric.reasons["subcode_similarity"]


@pytest.mark.parametrize("preset", ["cvq-tiny", "fq-tiny"])
def test_the_pipeline_passes_code_embeddings(preset):
    torch.manual_seed(0)
    cfg, model = build_tokenizer(preset)
    ds = open_dataset("procedural", "test", resolution=cfg.resolution, channels=cfg.in_channels, n=8)
    values = {v.name: v.value for v in evaluate_tokenizer(model.eval(), ds, build_metrics(
        ["token_similarity", "subcode_similarity"]), 4, Dist())}
    assert -1.0 <= values["token_similarity"] <= 1.0
    assert (preset == "fq-tiny") == math.isfinite(values["subcode_similarity"])
