"""Legacy token rows of published repositories (issue #12 item 4): LlamaGen's rolling codebook usage and
taming-transformers' per-batch perplexity, each against an implementation written here from the
repository's code (the buffer shifted batch by batch; the one-hot mean per batch)."""
import math

import pytest
import torch

from harness.core.contracts import EvalBatch, TokenLayout
from harness.evaluation.pipeline import build_metrics, metric_values


def llamagen_usage(batches: list[torch.Tensor], n_e: int) -> float:
    """vq_model.py: codebook_used = zeros(65536); per batch: shift left by cur_len, write the batch's
    codes at the end; usage = len(unique(codebook_used)) / n_e."""
    used = torch.zeros(65536)
    for codes in batches:
        codes = codes.flatten().float()
        cur_len = codes.shape[0]
        used[:-cur_len] = used[cur_len:].clone()
        used[-cur_len:] = codes
    return len(torch.unique(used)) / n_e


def taming_perplexity(codes: torch.Tensor, n_e: int) -> float:
    """taming's VectorQuantizer: one-hot min_encodings, e_mean over the batch, exp(-sum e log(e + 1e-10))."""
    min_encodings = torch.zeros(codes.numel(), n_e)
    min_encodings.scatter_(1, codes.flatten()[:, None], 1)
    e_mean = min_encodings.mean(0)
    return float(torch.exp(-torch.sum(e_mean * torch.log(e_mean + 1e-10))))


def _values(name, layout, batches):
    metric, = build_metrics([name])
    start = 0
    for codes in batches:
        metric.update(EvalBatch(indices=codes, layout=layout, image_ids=torch.arange(start, start + len(codes))))
        start += len(codes)
    return {v.name: v for v in metric_values([metric])}


@pytest.mark.parametrize("images,k", [(40, 512), (3000, 4096)])    # 1,960 tokens: zeros still in the window;
def test_llamagen_rolling_usage_is_its_buffer(images, k):         # 147,000 tokens: the window has rolled
    layout = TokenLayout.constant(49, k, position_kind="spatial", grid=(7, 7))
    g = torch.Generator().manual_seed(0)
    # code 0 is never drawn; the first half of the images uses codes the second half does not
    codes = torch.randint(1, 200, (images, 49), generator=g)
    codes[images // 2:] += 200
    batches = list(codes.split(256))
    value = _values("codebook-usage-llamagen", layout, batches)["codebook_usage"]
    assert value.value == pytest.approx(llamagen_usage(batches, k), abs=1e-12)
    assert value.protocol == "llamagen"
    canonical = len(torch.unique(codes)) / k
    if images * 49 < 65536:
        assert value.value == pytest.approx(canonical + 1 / k)        # LlamaGen's initial zeros count as code 0
    else:
        assert value.value < canonical                                 # only the last 65,536 tokens count


def test_taming_perplexity_is_the_mean_of_its_per_batch_values():
    layout = TokenLayout.constant(16, 64, position_kind="spatial", grid=(4, 4))
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 40, (30, 16), generator=g)
    batches = list(codes.split(8))                                      # 8, 8, 8, 6 images
    value = _values("perplexity-taming", layout, batches)["code_perplexity"]
    expected = sum(taming_perplexity(b, 64) for b in batches) / len(batches)
    assert value.value == pytest.approx(expected, rel=1e-6) and value.protocol == "taming"   # taming: float32
    assert value.extra == {"batch_images": 8}
    assert 1 < value.value < 40 and not math.isclose(value.value, _values("perplexity-taming", layout,
                                                                          [codes])["code_perplexity"].value)


@pytest.mark.parametrize("name", ["codebook-usage-llamagen", "perplexity-taming"])
def test_legacy_token_rows_refuse_factorized_layouts(name):
    from harness.core.errors import VQBenchError
    layout = TokenLayout.constant(16, 64, position_kind="spatial", grid=(4, 4), num_factors=2)
    with pytest.raises(VQBenchError, match="single-codebook statistic; this layout has 2 sub-codebooks"):
        _values(name, layout, [torch.zeros(4, 16, 2, dtype=torch.int64)])
