"""Each legacy PSNR/SSIM mode against the package its repository called, at the version it used.

tests/test_metrics_basic.py checks the modes against re-creations written with scikit-image; here the
reference is the package itself, called with the repository's arguments after the repository's own
preprocessing (written out below in torch/numpy/PIL, in float32 as the scripts run):

- ``llamagen``: FoundationVision/LlamaGen tokenizer/tokenizer_image/reconstruction_vq_ddp.py (2024-06-11):
  skimage ``peak_signal_noise_ratio(rgb_restored, rgb_gt)`` and ``structural_similarity(rgb_restored,
  rgb_gt, multichannel=True, data_range=2.0, channel_axis=-1)`` per image; mean over images. No version
  pinned (requirements.txt: torch only): scikit-image 0.23.2, the release current then.
- ``seed-voken``: TencentARC/SEED-Voken evaluation_image.py (evaluation.py in the 2024-06-17 first
  commit): skimage ``structural_similarity(rgb_restored_s, rgb_gt_s, data_range=1.0, channel_axis=-1)``
  and ``peak_signal_noise_ratio(rgb_gt_s, rgb_restored_s)``, mean per batch, then over batches. Not pinned
  (it comes through albumentations==1.4.4, scikit-image>=0.21): 0.23.2, current then.
- ``vtbench``: huawei-lin/VTBench evaluations/evaluate_images.py (2025-05-15): torchmetrics
  ``PeakSignalNoiseRatio()`` and ``StructuralSimilarityIndexMeasure()`` updated with (reconstruction,
  original) batches of PNGs that main.py saved through src/data_processing.py ``tensor_to_pil``
  (``(x * 255).astype(uint8)``) and read back with ``Image.open(..).convert("RGB")``, ``Resize``,
  ``ToTensor``. torchmetrics 1.7.1 (through lightning==2.3.3; the xingjianleng/VTBench environment.yml
  pins torchmetrics==1.7.1).
- ``vqgan-lc``: zh460045050/VQGAN-LC vqgan-gpt-lc/eval_reconstruction.py: ``pyiqa.create_metric('psnr',
  test_y_channel=True, color_space='ycbcr')`` and ``piq.ssim(save_x, save_xrec, data_range=1.,
  reduction='none')`` per batch, summed and divided by the number of images. requirement.txt pins
  pyiqa==0.1.7; piq is not pinned: 0.8.0, the only release since 2023-07.

Tolerances (observed: at most 1.3e-6 dB and 3.1e-7 SSIM, under ATEN_CPU_CAPABILITY default and avx2): vqbench computes in float64, the packages in
float32 from float32 images, whose conversions ((x + 1) / 2 and the like) already round each pixel
to ~6e-8. skimage subtracts and squares in float32 but averages the MSE in float64, and its SSIM
filters float32 images: 1e-6 (PSNR in dB, SSIM). torchmetrics, pyiqa and piq also sum in float32:
a float32 sum of ~10^4 squares is good to ~1e-6 relative, which 10 log10 turns into ~4e-6 dB, so
1e-5 dB; their SSIM moments come from float32 convolutions of 121 terms whose variances
(E[x^2] - E[x]^2) cancel, ~1e-6 at a position and less in the mean over the map, so 2e-6. The gaps
each test also checks (another mode's value against the package) are at least ten times these.
"""
from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision import transforms

from harness.core.contracts import EvalBatch
from harness.core.registry import METRICS

SKIMAGE = "0.23.2"          # LlamaGen, SEED-Voken (not pinned there: the release current at publication)
TORCHMETRICS = "1.7.1"      # VTBench
PIQ = "0.8.0"               # VQGAN-LC (not pinned there: the only release then)
PYIQA = "0.1.7"             # VQGAN-LC (pinned); installed --no-deps by scripts/setup.sh

SPLITS = (slice(0, 2), slice(2, 3), slice(3, 6))      # uneven batches, the same for vqbench and the packages
TOL_SKIMAGE = 1e-6       # PSNR (dB) and SSIM: float32 images, the MSE averaged in float64
TOL_PSNR_F32 = 1e-5      # dB: the MSE summed and its log taken in float32 (torchmetrics, pyiqa)
TOL_SSIM_F32 = 2e-6      # float32 moments (torchmetrics, piq)


def _need(module: str, version: str, dist: str | None = None):
    mod = pytest.importorskip(module)
    installed = importlib.metadata.version(dist or module)
    assert installed == version, f"{dist or module} {installed} installed; the test pins {version}"
    return mod


# ---------------------------------------------------------------- data
def _pair(channels: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Six smooth textured images in [-1, 0.9] (so no uint8 level 255: the data range rules matter), a
    quarter of their pixels on half levels (about 3/4 of them exactly k + 0.5 after (x + 1) * 127.5 in
    float32, where round-half-even and round-half-up part), the rest between levels (where rounding and
    truncation part); six reconstructions: noisy, blurred, dim and quiet (a batch of its own spanning
    about half the range), overshooting [-1, 1], shifted, banded."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(6, channels, size // 4, size // 4, generator=g)
    x = F.interpolate(low, size=(size, size), mode="bilinear", align_corners=False) * 1.9 - 1
    x = x + 0.04 * torch.randn(x.shape, generator=g)
    half = (torch.randint(0, 242, x.shape, generator=g).float() + 0.5) / 127.5 - 1
    x = torch.where(torch.rand(x.shape, generator=g) < 0.25, half, x).clamp(-1, 0.9)
    x[2] = 0.5 * x[2] - 0.3                  # SPLITS put it in a batch of its own
    y = x + 0.1 * torch.randn(x.shape, generator=g)
    y[1] = F.avg_pool2d(x[1:2], 3, 1, 1, count_include_pad=False)[0]
    y[2] = x[2] + 0.02 * torch.randn(x[2].shape, generator=g)
    y[3] = 1.4 * x[3] + 0.1                  # leaves [-1, 1]
    y[4] = torch.roll(x[4], 2, dims=-1)
    y[5] = torch.round(x[5] * 8) / 8
    return x, y


@pytest.fixture(scope="module", params=[(3, 32, 0), (1, 28, 1)], ids=["rgb32", "gray28"])
def pair(request):
    return _pair(*request.param)


def _vqbench(name: str, x: torch.Tensor, y: torch.Tensor) -> float:
    """The registered metric through the Metric API, fed the uneven batches."""
    metric = METRICS.get(name)()
    for sl in SPLITS:
        metric.update(EvalBatch(real=x[sl], reconstruction=y[sl]))
    value = "psnr" if name.startswith("psnr") else "ssim"
    return metric.compute()[value]


def _hwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy()


# ---------------------------------------------------------------- the repositories, calling their packages
def _llamagen(x, y):
    """Per image: the real as float32 ``(x + 1) / 2`` (not rounded), the reconstruction through
    ``clamp(127.5 y + 128, 0, 255)`` cast to uint8, back as float32 / 255; skimage with LlamaGen's
    arguments (``multichannel`` is ignored by 0.23.2); plain mean over images."""
    metrics = _need("skimage.metrics", SKIMAGE, "scikit-image")
    gts = (_hwc(x) + 1.0) / 2.0
    recs = _hwc(torch.clamp(127.5 * y + 128.0, 0, 255).to(torch.uint8))
    psnr, ssim = [], []
    for rec_u8, gt in zip(recs, gts):
        rec = rec_u8.astype(np.float32) / 255.0
        psnr.append(metrics.peak_signal_noise_ratio(rec, gt))
        ssim.append(metrics.structural_similarity(rec, gt, multichannel=True, data_range=2.0, channel_axis=-1))
    return sum(psnr) / len(psnr), sum(ssim) / len(ssim)


def _seed_voken(x, y):
    """Per batch: both images to ``(t + 1) / 2``, the reconstruction clamped first, times 255 cast to uint8,
    back as float32 / 255; skimage per image, the batch mean accumulated, divided by the batch count."""
    metrics = _need("skimage.metrics", SKIMAGE, "scikit-image")
    psnr_sum = ssim_sum = 0.0
    for sl in SPLITS:
        real, rec = (x[sl] + 1) / 2, (y[sl].clamp(-1, 1) + 1) / 2
        rec_np = _hwc((rec * 255.0).to(torch.uint8)).astype(np.float32) / 255.0
        real_np = _hwc((real * 255.0).to(torch.uint8)).astype(np.float32) / 255.0
        n = len(rec_np)
        ssim_sum += sum(metrics.structural_similarity(r, t, data_range=1.0, channel_axis=-1)
                        for r, t in zip(rec_np, real_np)) / n
        psnr_sum += sum(metrics.peak_signal_noise_ratio(t, r) for r, t in zip(rec_np, real_np)) / n
    return psnr_sum / len(SPLITS), ssim_sum / len(SPLITS)


def _png_folder(t: torch.Tensor, folder: Path) -> None:
    """What VTBench's main.py leaves on disk: ``(clamp(t) + 1) / 2``, times 255 in float32 numpy, cast to
    uint8 (truncation), one PNG per image (grayscale as mode L)."""
    folder.mkdir()
    u8 = (_hwc((t.clamp(-1.0, 1.0) + 1.0) / 2.0) * 255).astype(np.uint8)
    for i, a in enumerate(u8):
        Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a).save(folder / f"{i:08d}.png")


def _vtbench(x, y, tmp_path):
    """The PNG folders read back as evaluate_images.py reads them (sorted names, RGB, Resize to the
    image size, ToTensor) and fed to the two torchmetrics metrics in the same batches."""
    tm = _need("torchmetrics", TORCHMETRICS)
    _png_folder(x, tmp_path / "original_images")
    _png_folder(y, tmp_path / "reconstructed_images")
    size = x.shape[-1]
    to_tensor = transforms.Compose([transforms.Resize((size, size)), transforms.ToTensor()])

    def load(folder):
        names = sorted(p.name for p in (tmp_path / folder).iterdir())
        return torch.stack([to_tensor(Image.open(tmp_path / folder / n).convert("RGB")) for n in names])

    originals, reconstructions = load("original_images"), load("reconstructed_images")
    psnr = tm.image.PeakSignalNoiseRatio()
    ssim = tm.image.StructuralSimilarityIndexMeasure()
    for sl in SPLITS:
        psnr.update(reconstructions[sl], originals[sl])
        ssim.update(reconstructions[sl], originals[sl])
    return float(psnr.compute()), float(ssim.compute())


@pytest.fixture(scope="module")
def pyiqa_psnr():
    """pyiqa 0.1.7's PSNR network, built as ``pyiqa.create_metric('psnr', test_y_channel=True,
    color_space='ycbcr')`` builds it: the metric's default options updated with the keywords, then
    ``ARCH_REGISTRY.get(type)(**options)``, called under ``no_grad`` (InferenceModel.forward does no more).

    ``import pyiqa`` cannot run here: its ``__init__`` imports every architecture and data module, which
    need openai-clip, lmdb and imgaug (imgaug 0.4.0 fails under NumPy 2). The package is installed
    ``--no-deps`` and only the modules the PSNR path uses (its registry, colour conversion, default
    configs and psnr_arch) are loaded, under empty parent packages, from the installed files."""
    spec = importlib.util.find_spec("pyiqa")
    if spec is None:
        pytest.skip("pyiqa is not installed (scripts/setup.sh installs pyiqa==0.1.7 --no-deps)")
    assert importlib.metadata.version("pyiqa") == PYIQA, "the test pins pyiqa " + PYIQA
    root = Path(spec.submodule_search_locations[0])
    saved = {k: v for k, v in sys.modules.items() if k == "pyiqa" or k.startswith("pyiqa.")}
    try:
        for name, path in [("pyiqa", root), ("pyiqa.utils", root / "utils"), ("pyiqa.archs", root / "archs")]:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
        registry = importlib.import_module("pyiqa.utils.registry")
        importlib.import_module("pyiqa.archs.psnr_arch")
        configs = importlib.import_module("pyiqa.default_model_configs").DEFAULT_CONFIGS
        options = dict(configs["psnr"]["metric_opts"])
        options.update(test_y_channel=True, color_space="ycbcr")
        net = registry.ARCH_REGISTRY.get(options.pop("type"))(**options).eval()
    finally:
        for k in [k for k in sys.modules if k == "pyiqa" or k.startswith("pyiqa.")]:
            del sys.modules[k]
        sys.modules.update(saved)

    def psnr(target, ref):
        with torch.no_grad():
            return net(target, ref)
    return psnr


def _vqgan_lc(x, y, pyiqa_psnr):
    """Per batch: ``(x + 1) * 127.5 / 255`` and the same of the reconstruction clamped to [-1, 1]; the
    per-image PSNR and SSIM summed, divided by the number of images."""
    piq = _need("piq", PIQ)
    psnr_total = ssim_total = 0.0
    for sl in SPLITS:
        rec = y[sl].clone()
        rec[rec > 1] = 1
        rec[rec < -1] = -1
        save_x, save_rec = (x[sl] + 1) * 127.5 / 255.0, (rec + 1) * 127.5 / 255.0
        psnr_total += float(torch.sum(pyiqa_psnr(save_x, save_rec)))
        ssim_total += float(torch.sum(piq.ssim(save_x, save_rec, data_range=1.0, reduction="none")))
    return psnr_total / len(x), ssim_total / len(x)


# ---------------------------------------------------------------- the tests
def _check(name: str, reference: float, tol: float, x, y, other: str) -> None:
    value = _vqbench(name, x, y)
    assert value == pytest.approx(reference, abs=tol), f"{name}: vqbench {value!r}, package {reference!r}"
    # the comparison discriminates: the nearest other mode is far outside the tolerance
    assert abs(_vqbench(other, x, y) - reference) > 10 * tol, f"{other} also matches {name}'s package value"


def test_llamagen(pair):
    x, y = pair
    psnr, ssim = _llamagen(x, y)
    _check("psnr-llamagen", psnr, TOL_SKIMAGE, x, y, other="psnr")
    _check("ssim-llamagen", ssim, TOL_SKIMAGE, x, y, other="ssim")


def test_seed_voken(pair):
    x, y = pair
    psnr, ssim = _seed_voken(x, y)
    _check("psnr-seed-voken", psnr, TOL_SKIMAGE, x, y, other="psnr")
    _check("ssim-seed-voken", ssim, TOL_SKIMAGE, x, y, other="ssim")


def test_vtbench(pair, tmp_path):
    x, y = pair
    psnr, ssim = _vtbench(x, y, tmp_path)
    _check("psnr-vtbench", psnr, TOL_PSNR_F32, x, y, other="psnr-seed-voken")
    _check("ssim-vtbench", ssim, TOL_SSIM_F32, x, y, other="ssim-vqgan-lc")


def test_vqgan_lc(pair, pyiqa_psnr):
    x, y = pair
    psnr, ssim = _vqgan_lc(x, y, pyiqa_psnr)
    _check("psnr-vqgan-lc", psnr, TOL_PSNR_F32, x, y, other="psnr-llamagen")
    _check("ssim-vqgan-lc", ssim, TOL_SSIM_F32, x, y, other="ssim-vtbench")


def test_vqgan_lc_ssim_pools_large_images_like_piq():
    """piq's ``downsample``: images of 384 px are 2x2 average-pooled before the 11x11 window."""
    piq = _need("piq", PIQ)
    g = torch.Generator().manual_seed(3)
    x = F.interpolate(torch.rand(2, 3, 48, 48, generator=g), size=(384, 384), mode="bilinear") * 2 - 1
    y = (x + 0.1 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    ref = float(piq.ssim((x + 1) / 2, (y + 1) / 2, data_range=1.0, reduction="none").mean())
    m = METRICS.get("ssim-vqgan-lc")()
    m.update(EvalBatch(real=x, reconstruction=y))
    assert m.compute()["ssim"] == pytest.approx(ref, abs=TOL_SSIM_F32)
    assert abs(float(piq.ssim((x + 1) / 2, (y + 1) / 2, data_range=1.0, downsample=False)) - ref) > 1e-3


def test_identical_images_the_documented_difference():
    """Where the MSE is 0, skimage and torchmetrics give an infinite PSNR; vqbench caps it at 100 dB in
    every mode (image.py's docstring), and pyiqa's eps gives 80 dB, which vqbench reproduces."""
    metrics = _need("skimage.metrics", SKIMAGE, "scikit-image")
    tm = _need("torchmetrics", TORCHMETRICS)
    x = _pair(3, 32, 0)[0]
    x[:, :, 0, 0] = 1.0                      # level 255 present: psnr-vtbench's data range is 1
    a = _hwc((x[:1] + 1) / 2)[0]
    with np.errstate(divide="ignore"):
        assert metrics.peak_signal_noise_ratio(a, a) == np.inf
    assert float(tm.functional.image.peak_signal_noise_ratio((x + 1) / 2, (x + 1) / 2)) == np.inf
    for name in ["psnr-llamagen", "psnr-seed-voken", "psnr-vtbench"]:
        y = x if name != "psnr-llamagen" else torch.round((x + 1) * 127.5) / 127.5 - 1   # on uint8 levels
        assert _vqbench(name, y, y) == 100.0
    assert _vqbench("psnr-vqgan-lc", x, x) == pytest.approx(80.0, abs=1e-9)
