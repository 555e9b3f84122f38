"""PSNR/SSIM against skimage on real images; token statistics against analytic cases."""
import math

import numpy as np
import pytest
import torch

from harness.contracts import EvalBatch, TokenLayout
from harness.metrics.image import PSNR, SSIM
from harness.metrics.tokens import CodebookUsage, UniqueRatio

skimage = pytest.importorskip("skimage")
from skimage import data as skdata  # noqa: E402
from skimage.metrics import peak_signal_noise_ratio, structural_similarity  # noqa: E402
from skimage.transform import resize  # noqa: E402


def _real_pairs(channels: int, size: int = 48):
    names = ("astronaut", "coffee", "chelsea", "rocket")
    imgs = np.stack([resize(getattr(skdata, n)(), (size, size), anti_aliasing=True) for n in names])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float() * 2 - 1
    if channels == 1:
        x = x.mean(1, keepdim=True)
    g = torch.Generator().manual_seed(0)
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    y[1] = torch.nn.functional.avg_pool2d(x[1:2], 3, 1, 1)[0]       # a blurred "reconstruction"
    return x, y


def _skimage_reference(x, y):
    to_u8 = lambda t: ((t.clamp(-1, 1) + 1) * 127.5).round().numpy().astype(np.uint8)  # noqa: E731
    a, b = to_u8(x).transpose(0, 2, 3, 1) / 255.0, to_u8(y).transpose(0, 2, 3, 1) / 255.0
    psnr = np.mean([peak_signal_noise_ratio(i, j, data_range=1.0) for i, j in zip(a, b)])
    ssim = np.mean([structural_similarity(i, j, data_range=1.0, channel_axis=2) for i, j in zip(a, b)])
    return psnr, ssim


@pytest.mark.parametrize("channels", [1, 3])
def test_psnr_ssim_match_skimage_and_stream(channels):
    x, y = _real_pairs(channels)
    ref_psnr, ref_ssim = _skimage_reference(x, y)
    psnr, ssim = PSNR(), SSIM()
    for sl in (slice(0, 1), slice(1, 4)):                     # streamed in uneven batches
        batch = EvalBatch(real=x[sl], reconstruction=y[sl])
        psnr.update(batch)
        ssim.update(batch)
    assert psnr.compute()["psnr"] == pytest.approx(ref_psnr, abs=1e-6)
    assert ssim.compute()["ssim"] == pytest.approx(ref_ssim, abs=1e-6)


def test_identical_images_cap_psnr_and_give_ssim_one():
    x, _ = _real_pairs(3)
    psnr, ssim = PSNR(), SSIM()
    psnr.update(EvalBatch(real=x, reconstruction=x))
    ssim.update(EvalBatch(real=x, reconstruction=x))
    assert psnr.compute()["psnr"] == pytest.approx(100.0)
    assert ssim.compute()["ssim"] == pytest.approx(1.0)


def _usage(indices, layout):
    m = CodebookUsage()
    m.update(EvalBatch(indices=indices, layout=layout))
    return m.compute()


def test_uniform_indices_give_full_usage_and_log2k_entropy():
    k, t = 64, 16
    layout = TokenLayout.constant(t, k)
    idx = torch.arange(k * 4).remainder(k).view(-1, t)
    out = _usage(idx, layout)
    assert out["codebook_usage"] == 1.0
    assert out["code_entropy_bits"] == pytest.approx(math.log2(k))
    assert out["code_perplexity"] == pytest.approx(k)


def test_constant_index():
    layout = TokenLayout.constant(8, 32)
    idx = torch.full((5, 8), 3)
    out = _usage(idx, layout)
    assert out["codebook_usage"] == 1 / 32 and out["code_entropy_bits"] == 0 and out["code_perplexity"] == 1
    u = UniqueRatio()
    u.update(EvalBatch(indices=idx, layout=layout))
    assert u.compute()["unique_ratio"] == pytest.approx(1 / 8)


def test_factorized_and_variable_layouts():
    fq = TokenLayout.constant(4, 8, num_factors=2)
    idx = torch.stack([torch.arange(4).repeat(2, 1), torch.zeros(2, 4, dtype=torch.long)], -1)  # N x T x 2
    out = _usage(idx, fq)
    assert out["codebook_usage_f0"] == 4 / 8 and out["codebook_usage_f1"] == 1 / 8
    assert out["codebook_usage"] == pytest.approx((4 / 8 + 1 / 8) / 2)
    u = UniqueRatio()
    u.update(EvalBatch(indices=idx, layout=fq))
    assert u.compute()["unique_ratio"] == pytest.approx(5 / 8)     # 4 + 1 distinct (factor, code) of 8

    vcq = TokenLayout(3, (2, 4, 8))
    idx = torch.tensor([[0, 0, 0], [1, 3, 7]])
    out = _usage(idx, vcq)
    assert out["codebook_usage_per_position"] == pytest.approx((2 / 2 + 2 / 4 + 2 / 8) / 3)


def test_two_ranks_summed_equal_one_pass():
    layout = TokenLayout.constant(6, 16)
    g = torch.Generator().manual_seed(0)
    idx = torch.randint(0, 16, (10, 6), generator=g)
    whole, a, b = CodebookUsage(), CodebookUsage(), CodebookUsage()
    whole.update(EvalBatch(indices=idx, layout=layout))
    a.update(EvalBatch(indices=idx[:4], layout=layout))
    b.update(EvalBatch(indices=idx[4:], layout=layout))
    a.sync()                                               # no process group: a no-op
    for name in a._states:                                 # what all_reduce(sum) does across ranks
        a._states[name] = a._states[name] + b._states[name]
    assert a.compute() == whole.compute()
