"""PSNR/SSIM (canonical and legacy) against skimage on real images; token statistics on analytic cases;
streaming and rank-merging equal one pass."""
import functools
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist

from harness.core.contracts import EvalBatch, TokenLayout
from harness.core.errors import VQBenchError
from harness.evaluation.metrics import image as im
from harness.evaluation.metrics.tokens import CodebookUsage, UniqueRatio
from harness.core.registry import METRICS

skimage = pytest.importorskip("skimage")
from skimage import data as skdata  # noqa: E402
from skimage.color import rgb2gray, rgb2ycbcr  # noqa: E402
from skimage.metrics import mean_squared_error, peak_signal_noise_ratio, structural_similarity  # noqa: E402
from skimage.transform import resize  # noqa: E402

SPLITS = (slice(0, 2), slice(2, 3), slice(3, 6))      # uneven batches


def _images(channels: int, size: int = 64) -> torch.Tensor:
    """Six real photographs in [-1, 1], N x C x size x size (float32, uint8-derived like datasets)."""
    return _images_cached(channels, size).clone()


@functools.lru_cache(maxsize=None)
def _images_cached(channels: int, size: int) -> torch.Tensor:
    if channels == 3:
        raw = [skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket(),
               skdata.immunohistochemistry(), skdata.astronaut()[::-1]]
    else:
        raw = [skdata.camera(), skdata.moon(), skdata.coins(), skdata.page(),
               rgb2gray(skdata.coffee()), rgb2gray(skdata.chelsea())]
    imgs = np.stack([resize(r, (size, size), anti_aliasing=True) for r in raw]).reshape(6, size, size, -1)
    u8 = torch.from_numpy(np.round(imgs * 255)).permute(0, 3, 1, 2)
    return u8.float() / 127.5 - 1


def _reconstructions(x: torch.Tensor) -> torch.Tensor:
    """Noisy, blurred, shifted, overshooting and exact "reconstructions"."""
    g = torch.Generator().manual_seed(0)
    y = x + 0.08 * torch.randn(x.shape, generator=g)
    y[1] = torch.nn.functional.avg_pool2d(x[1:2], 3, 1, 1, count_include_pad=False)[0]
    y[2] = torch.roll(x[2], 1, dims=-1)
    y[3] = 1.3 * x[3]                        # leaves [-1, 1]: the protocols clamp
    y[4] = x[4]                              # exact: PSNR capped
    return y


def _np(t: torch.Tensor) -> np.ndarray:
    """N x C x H x W tensor -> N x H x W x C float32 array (skimage's channel-last layout)."""
    return t.permute(0, 2, 3, 1).numpy().astype(np.float32)


def _q_round(x):        # canonical uint8 rounding, written independently in numpy
    return np.round((np.clip(x, -1, 1) + np.float32(1)) * np.float32(127.5)) / 255.0


def _ssim_sk(a, b, **kw):
    channel = {"channel_axis": -1} if a.shape[-1] > 1 else {}
    a, b = (a, b) if channel else (a[..., 0], b[..., 0])
    return structural_similarity(a, b, **channel, **kw)


def _psnr_sk(a, b):
    return min(peak_signal_noise_ratio(a, b, data_range=1.0), 100.0) if np.any(a != b) else 100.0


def _run(metric, x, y, splits=SPLITS):
    for sl in splits:
        metric.update(EvalBatch(real=x[sl], reconstruction=y[sl]))
    return metric.compute()


@pytest.fixture(scope="module", params=[1, 3], ids=["gray", "rgb"])
def pair(request):
    x = _images(request.param)
    return x, _reconstructions(x)


# ---------------------------------------------------------------- canonical
def test_canonical_psnr_ssim_match_skimage(pair):
    x, y = pair
    a, b = _q_round(_np(x)), _q_round(_np(y))
    ref_psnr = np.mean([_psnr_sk(i, j) for i, j in zip(a, b)])
    ref_ssim = np.mean([_ssim_sk(i, j, data_range=1.0) for i, j in zip(a, b)])
    assert _run(im.PSNR(), x, y)["psnr"] == pytest.approx(ref_psnr, abs=1e-6)
    assert _run(im.SSIM(), x, y)["ssim"] == pytest.approx(ref_ssim, abs=1e-6)


@pytest.mark.parametrize("name", ["psnr", "ssim", "psnr-llamagen", "ssim-llamagen", "psnr-vtbench",
                                  "psnr-vqgan-lc", "ssim-vqgan-lc"])     # seed-voken, ssim-vtbench: per batch
def test_streaming_equals_one_batch(pair, name):
    x, y = pair
    cls = METRICS.get(name)
    assert _run(cls(), x, y) == pytest.approx(_run(cls(), x, y, [slice(None)]), abs=1e-12)


def test_identical_images_psnr_capped_ssim_one():
    x = _images(3)
    assert _run(im.PSNR(), x, x)["psnr"] == 100.0
    assert _run(im.SSIM(), x, x)["ssim"] == pytest.approx(1.0, abs=1e-12)


def test_ssim_rejects_images_smaller_than_window():
    with pytest.raises(VQBenchError, match="at least 7x7"):
        im.SSIM().update(EvalBatch(real=torch.zeros(1, 1, 5, 5), reconstruction=torch.zeros(1, 1, 5, 5)))


# ---------------------------------------------------------------- legacy modes
def test_llamagen(pair):
    x, y = pair
    real = (_np(x) + np.float32(1)) / np.float32(2)                                   # not rounded
    rec = np.floor(np.clip(np.float32(127.5) * _np(y.clamp(-1, 1)) + np.float32(128), 0, 255)) / 255.0
    ref_psnr = np.mean([_psnr_sk(i, j) for i, j in zip(real.astype(np.float64), rec)])
    ref_ssim = np.mean([_ssim_sk(i, j, data_range=2.0) for i, j in zip(real.astype(np.float64), rec)])
    assert _run(im.PSNRLlamaGen(), x, y)["psnr"] == pytest.approx(ref_psnr, abs=1e-6)
    ssim = _run(im.SSIMLlamaGen(), x, y)["ssim"]
    assert ssim == pytest.approx(ref_ssim, abs=1e-6)
    assert ssim > _run(im.SSIM(), x, y)["ssim"]            # data_range 2 on [0, 1] images inflates SSIM


def test_seed_voken_mean_of_batch_means(pair):
    x, y = pair
    def q(t):       # SEED-Voken's ((x + 1) / 2 * 255).to(uint8) in float32
        return np.floor((np.clip(_np(t), -1, 1) + np.float32(1)) / np.float32(2) * np.float32(255)) / 255.0

    a, b = q(x), q(y)
    per_image_psnr = np.array([_psnr_sk(i, j) for i, j in zip(a, b)])
    per_image_ssim = np.array([_ssim_sk(i, j, data_range=1.0) for i, j in zip(a, b)])
    ref_psnr = np.mean([per_image_psnr[sl].mean() for sl in SPLITS])
    ref_ssim = np.mean([per_image_ssim[sl].mean() for sl in SPLITS])
    assert _run(im.PSNRSeedVoken(), x, y)["psnr"] == pytest.approx(ref_psnr, abs=1e-6)
    assert _run(im.SSIMSeedVoken(), x, y)["ssim"] == pytest.approx(ref_ssim, abs=1e-6)
    assert abs(ref_psnr - per_image_psnr.mean()) > 1e-3     # uneven batches: not the per-image mean


def test_vtbench(pair):
    x, y = pair
    def q(t):       # VTBench's PNGs: ((clamp(x) + 1) / 2 * 255).astype(uint8) in float32
        return np.floor((np.clip(_np(t), -1, 1) + np.float32(1)) / np.float32(2) * np.float32(255)) / 255.0

    def ssim_padded(i, j, data_range):   # torchmetrics: reflect-pad by 5, average the whole H x W map
        pad = ((5, 5), (5, 5), (0, 0))
        _, s = _ssim_sk(np.pad(i, pad, mode="reflect"), np.pad(j, pad, mode="reflect"), data_range=data_range,
                        gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True)
        return s[5:-5, 5:-5].mean()

    a, b = q(x), q(y)
    ref_psnr = peak_signal_noise_ratio(a, b, data_range=a.max())     # whole-set MSE; range: the largest real
    ranges = {i: max(np.ptp(a[sl]), np.ptp(b[sl])) for sl in SPLITS for i in range(6)[sl]}   # per batch
    ref_ssim = np.mean([ssim_padded(b[i], a[i], ranges[i]) for i in range(6)])
    assert _run(im.PSNRVTBench(), x, y)["psnr"] == pytest.approx(ref_psnr, abs=1e-6)
    assert _run(im.SSIMVTBench(), x, y)["ssim"] == pytest.approx(ref_ssim, abs=1e-6)


def test_vqgan_lc(pair):
    x, y = pair
    a, b = (_np(x).astype(np.float64) + 1) / 2, (_np(y.clamp(-1, 1)).astype(np.float64) + 1) / 2
    if a.shape[-1] == 3:
        a, b = rgb2ycbcr(a)[..., :1] / 255.0, rgb2ycbcr(b)[..., :1] / 255.0
    ref_psnr = np.mean([10 * np.log10(1 / (mean_squared_error(i, j) + 1e-8)) for i, j in zip(a, b)])
    assert _run(im.PSNRVQGANLC(), x, y)["psnr"] == pytest.approx(ref_psnr, abs=1e-6)


def test_vqgan_lc_ssim_downsamples_like_piq():
    x = torch.from_numpy(np.stack([skdata.astronaut(), skdata.astronaut()[:, ::-1]]).copy())
    x = x.permute(0, 3, 1, 2).float() / 127.5 - 1                   # 512 x 512: piq pools by 2 first
    y = x + 0.08 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0))

    def pool(t):    # [0, 1], 2x2 average pooling
        return ((_np(t.clamp(-1, 1)).astype(np.float64) + 1) / 2).reshape(2, 256, 2, 256, 2, 3).mean((2, 4))

    ref = np.mean([_ssim_sk(i, j, data_range=1.0, gaussian_weights=True, sigma=1.5,
                            use_sample_covariance=False) for i, j in zip(pool(x), pool(y))])
    assert _run(im.SSIMVQGANLC(), x, y, [slice(None)])["ssim"] == pytest.approx(ref, abs=1e-6)


def test_registry_entries_share_value_names_and_differ_by_protocol():
    protocols = {}
    for value, cls in [("psnr", im.PSNR), ("ssim", im.SSIM)]:
        for name in METRICS.names():
            entry = METRICS.get(name)
            if isinstance(entry, type) and issubclass(entry, cls):
                assert entry.name == name and entry.value == value and entry.higher_is_better == {value: True}
                protocols.setdefault(value, []).append(entry.protocol)
    for value in ("psnr", "ssim"):
        assert sorted(protocols[value]) == ["canonical", "llamagen", "seed-voken", "vqgan-lc", "vtbench"]


# ---------------------------------------------------------------- token statistics
def _tokens(metric, indices, layout):
    metric.update(EvalBatch(indices=indices, layout=layout))
    return metric.compute()


def test_uniform_codes_full_usage_and_log2k_entropy():
    k, t = 64, 16
    layout = TokenLayout.constant(t, k)
    idx = torch.arange(4 * k).remainder(k).view(-1, t)               # every code exactly 4 times
    out = _tokens(CodebookUsage(), idx, layout)
    assert out["codebook_usage"] == 1.0
    assert out["code_entropy_bits"] == math.log2(k)
    assert out["code_perplexity"] == k
    assert _tokens(UniqueRatio(), idx, layout)["unique_ratio"] == 1.0


def test_constant_code():
    k, t = 32, 8
    layout = TokenLayout.constant(t, k)
    idx = torch.full((5, t), 3)
    out = _tokens(CodebookUsage(), idx, layout)
    assert out == {"codebook_usage": 1 / k, "code_entropy_bits": 0.0, "code_perplexity": 1.0}
    assert _tokens(UniqueRatio(), idx, layout)["unique_ratio"] == 1 / t


def test_factorized_layout():
    layout = TokenLayout.constant(4, 8, num_factors=2)
    idx = torch.stack([torch.arange(4).repeat(3, 1), torch.zeros(3, 4, dtype=torch.long)], -1)  # N x T x 2
    m = CodebookUsage()
    out = _tokens(m, idx, layout)
    assert out["codebook_usage_f0"] == 4 / 8 and out["codebook_usage_f1"] == 1 / 8
    assert out["codebook_usage"] == (4 / 8 + 1 / 8) / 2
    assert out["code_entropy_bits"] == (2.0 + 0.0) / 2                # factor 0 uniform over 4 codes
    assert out["code_perplexity"] == 2.0
    assert set(out) <= set(m.higher_is_better)
    # 4 + 1 distinct (factor, code) pairs of 8 per image
    assert _tokens(UniqueRatio(), idx, layout)["unique_ratio"] == 5 / 8


def test_variable_codebook_sizes():
    layout = TokenLayout(3, (2, 4, 8))
    idx = torch.tensor([[0, 0, 0], [1, 3, 7], [1, 1, 1]])
    out = _tokens(CodebookUsage(), idx, layout)
    assert out["codebook_usage"] == 4 / 8                                          # union {0, 1, 3, 7}
    assert out["codebook_usage_per_position"] == pytest.approx((2 / 2 + 3 / 4 + 3 / 8) / 3)
    with pytest.raises(VQBenchError, match="outside the codebook"):             # 4 >= K_0 = 2
        CodebookUsage().update(EvalBatch(indices=torch.tensor([[4, 0, 0]]), layout=layout))


def test_unique_ratio_matches_a_loop():
    layout = TokenLayout.constant(12, 6, num_factors=2)
    idx = torch.randint(0, 6, (20, 12, 2), generator=torch.Generator().manual_seed(1))
    ref = np.mean([len({(f, int(c)) for tok in img for f, c in enumerate(tok)}) / 24 for img in idx])
    assert _tokens(UniqueRatio(), idx, layout)["unique_ratio"] == pytest.approx(ref, abs=1e-12)


def test_bad_shapes_and_layout_changes_raise():
    layout = TokenLayout.constant(4, 8)
    with pytest.raises(VQBenchError, match="do not match the layout"):
        UniqueRatio().update(EvalBatch(indices=torch.zeros(2, 5, dtype=torch.long), layout=layout))
    m = CodebookUsage()
    m.update(EvalBatch(indices=torch.zeros(2, 4, dtype=torch.long), layout=layout))
    with pytest.raises(VQBenchError, match="different token layouts"):
        m.update(EvalBatch(indices=torch.zeros(2, 4, dtype=torch.long), layout=TokenLayout.constant(4, 16)))
    m.reset()                                          # a new split may come from another tokenizer
    assert _tokens(m, torch.zeros(2, 4, dtype=torch.long), TokenLayout.constant(4, 16))["codebook_usage"] == 1 / 16


# ---------------------------------------------------------------- sync and rank merging
def _batches():
    x = _images(3)
    g = torch.Generator().manual_seed(2)
    fq = TokenLayout.constant(6, 16, num_factors=2)
    vcq = TokenLayout(6, (2, 2, 4, 8, 16, 16))
    return [
        ("psnr", dict(real=x, reconstruction=_reconstructions(x))),
        ("ssim-vtbench", dict(real=x, reconstruction=_reconstructions(x))),
        ("psnr-vtbench", dict(real=x, reconstruction=_reconstructions(x))),
        ("psnr-seed-voken", dict(real=x, reconstruction=_reconstructions(x))),
        ("codebook_usage", dict(indices=torch.randint(0, 16, (6, 6, 2), generator=g), layout=fq)),
        ("codebook_usage", dict(indices=torch.randint(0, 2, (6, 6), generator=g), layout=vcq)),
        ("unique_ratio", dict(indices=torch.randint(0, 16, (6, 6, 2), generator=g), layout=fq)),
    ]


@pytest.mark.parametrize("case", range(7))
def test_two_ranks_summed_equal_one_pass(case):
    name, fields = _batches()[case]
    cls = METRICS.get(name)
    whole, rank0, rank1 = cls(), cls(), cls()
    for sl in SPLITS:
        whole.update(EvalBatch(**{k: v[sl] if torch.is_tensor(v) else v for k, v in fields.items()}))
    for rank, sl in zip([rank0, rank1, rank0], SPLITS):       # batches dealt round-robin, as evaluate does
        rank.update(EvalBatch(**{k: v[sl] if torch.is_tensor(v) else v for k, v in fields.items()}))

    assert not (dist.is_available() and dist.is_initialized())
    before = {k: v.clone() for k, v in rank0._states.items()}
    rank0.sync()                                              # no process group: a no-op
    assert all(torch.equal(before[k], rank0._states[k]) for k in before)

    for k in rank0._states:                                   # what all_reduce(SUM) does across ranks
        rank0._states[k] = rank0._states[k] + rank1._states[k]
    assert rank0.compute() == pytest.approx(whole.compute(), abs=1e-12)


def test_codebook_usage_keeps_per_image_codes_only_up_to_the_bootstrap_cap(monkeypatch):
    """Past ``BOOTSTRAP_MAX_CODES`` no bootstrap is drawn, so the per-image codes stop being kept (memory,
    and the gather across ranks); usage itself still counts every image."""
    import harness.evaluation.metrics.tokens as tokens
    layout = TokenLayout.constant(4, 16)
    monkeypatch.setattr(tokens, "BOOTSTRAP_MAX_CODES", 10 * 4)          # 10 images of 4 codes
    m = CodebookUsage()
    for start in range(0, 24, 6):                                      # 4 batches of 6 images, codes 0..15
        m.update(EvalBatch(indices=torch.arange(start * 4, start * 4 + 24).remainder(16).view(6, 4), layout=layout))
    assert m.per_image_codes.seen == 6                                 # the second batch would pass 10
    out = m.compute()
    assert out["codebook_usage"] == 1.0 and m.value_extra["codebook_usage"] == {"bootstrap_resamples": 0}
    under = CodebookUsage()                                             # under the cap: bootstrapped
    under.update(EvalBatch(indices=torch.arange(24).remainder(16).view(6, 4), layout=layout))
    under.compute()
    assert under.value_extra["codebook_usage"]["bootstrap_resamples"] > 0 and under.per_image_codes.seen == 6
