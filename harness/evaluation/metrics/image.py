"""Pixel fidelity: PSNR and SSIM under the canonical protocol and legacy modes of published repositories.

Canonical (``psnr``, ``ssim``): per image, real and reconstruction both mapped from [-1, 1] to uint8
(clamp, ``(x + 1) * 127.5``, round) and back to [0, 1] (data_range = 1), all channels; the value is
the mean over images. SSIM equals ``skimage.metrics.structural_similarity(a, b, data_range=1,
channel_axis=...)``: 7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance, mean over the
channels. Identical images have MSE 0; PSNR clamps the MSE at 1e-10, i.e. reports 100 dB, not inf.

Legacy modes reproduce how a repository computed its published numbers, with the package it called
(tests/test_legacy_pixel_packages.py checks each against that package at that version). Each is
registered as ``<metric>-<protocol>``, emits the same value name (``psnr`` / ``ssim``) and sets
``protocol``:

- ``llamagen`` (scikit-image 0.23.2): the real image is not rounded, the reconstruction is
  ``uint8(clamp(127.5 x + 128))``; PSNR per image (``peak_signal_noise_ratio``, data range 1); SSIM 7x7
  uniform with ``data_range = 2.0`` although the images are in [0, 1] (larger C1, C2 inflate SSIM).
- ``seed-voken`` (scikit-image 0.23.2): both truncated, ``uint8(255 (x + 1) / 2)`` (values drop by up to
  one level); per-image PSNR and SSIM as canonical, but the mean of per-batch means.
- ``vtbench`` (torchmetrics 1.7.1 ``PeakSignalNoiseRatio()`` / ``StructuralSimilarityIndexMeasure()``
  on PNGs written with ``astype(uint8)``): both truncated as seed-voken. PSNR from the MSE over the
  whole set, with torchmetrics' inferred data range: the largest real value (its running min/max start
  at 0), i.e. 1 once any real pixel is 255. SSIM with an 11x11 Gaussian window (sigma 1.5), population
  covariance, on images reflect-padded by 5 and averaged over all H x W positions (torchmetrics
  1.7.1 keeps the border), data range ``max(ptp(reconstruction), ptp(real))`` of each batch.
- ``vqgan-lc`` (pyiqa 0.1.7, piq 0.8.0): neither rounded; PSNR on the Y channel of BT.601 YCbCr with
  MSE + 1e-8 (pyiqa ``test_y_channel``, ``color_space='ycbcr'``); SSIM as piq: 11x11 Gaussian over
  the valid positions after avg-pooling by ``round(min(H, W) / 256)``.

``seed-voken`` values, and ``ssim-vtbench`` values when a batch spans less than the full range, depend
on the evaluation batches (that is the legacy behaviour); under DDP the batches are the single-process
ones, so sharding does not change them. Identical images: skimage and torchmetrics give an infinite
PSNR; every mode here clamps the MSE at 1e-10 as the canonical one does (100 dB at data range 1;
pyiqa's eps is reproduced as is).

All arithmetic is float64; states are sums and counts (``psnr-vtbench`` adds a count of real values per
uint8 level), so ``sync`` + ``compute`` over shards equals one pass over the split.
"""
from __future__ import annotations

from typing import Callable, ClassVar

import torch
import torch.nn.functional as F

from harness.core.contracts import EvalBatch, Metric
from harness.core.errors import VQBenchError
from harness.core.registry import METRICS
from harness.evaluation.metrics.bootstrap import PerImageValues

MIN_MSE = 1e-10        # identical images: PSNR = 100 dB instead of inf


# --------------------------------------------------------------- [-1, 1] -> [0, 1] float64, per protocol
def to_unit_uint8(x: torch.Tensor) -> torch.Tensor:
    """Canonical: uint8-rounded (round half to even, in float32 as images are saved), scaled to [0, 1]."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().double() / 255.0


def to_unit_float(x: torch.Tensor) -> torch.Tensor:
    """No rounding: ``(x + 1) / 2`` of the clamped image."""
    return (x.double().clamp(-1, 1) + 1) / 2


def to_unit_uint8_llamagen(x: torch.Tensor) -> torch.Tensor:
    """LlamaGen's ``clamp(127.5 x + 128, 0, 255).to(uint8)``: round half up via truncation."""
    return (127.5 * x.float() + 128.0).clamp(0, 255).floor().double() / 255.0


def to_unit_uint8_truncated(x: torch.Tensor) -> torch.Tensor:
    """``(clamp(x) + 1) / 2 * 255`` in float32 cast to uint8, as SEED-Voken's ``.to(torch.uint8)`` and
    VTBench's ``.astype(np.uint8)`` before its PNGs: truncation, so values drop by up to one level."""
    return (((x.float().clamp(-1, 1) + 1) / 2) * 255.0).floor().double() / 255.0


def rgb_to_y(x: torch.Tensor) -> torch.Tensor:
    """Y of ITU-R BT.601 YCbCr for [0, 1] RGB (range [16, 235] / 255), as pyiqa's ``rgb2ycbcr``."""
    w = x.new_tensor([65.481, 128.553, 24.966]).view(1, 3, 1, 1)
    return ((x * w).sum(1, keepdim=True) + 16.0) / 255.0


# --------------------------------------------------------------- per-image values (N x C x H x W, float64)
def mse_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a - b).pow(2).flatten(1).mean(1)


def psnr_from_mse(mse: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    return 10.0 * torch.log10(data_range ** 2 / mse.clamp_min(MIN_MSE))


def psnr_per_image(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0) -> torch.Tensor:
    return psnr_from_mse(mse_per_image(a, b), data_range)


def gaussian_window(size: int, sigma: float) -> torch.Tensor:
    """Normalized 1-D Gaussian: the separable factor of skimage/torchmetrics/piq's 2-D window."""
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-r * r / (2 * sigma * sigma))
    return g / g.sum()


def _local_mean(t: torch.Tensor, size: int, sigma: float | None) -> torch.Tensor:
    """Window mean at every fully-inside position (M x 1 x H x W -> M x 1 x H-size+1 x W-size+1)."""
    if sigma is None:
        return F.avg_pool2d(t, size, stride=1)          # uniform window: avg_pool is the fast path
    w = gaussian_window(size, sigma).to(t.device)
    return F.conv2d(F.conv2d(t, w.view(1, 1, 1, size)), w.view(1, 1, size, 1))


def ssim_per_image(a: torch.Tensor, b: torch.Tensor, *, data_range: float | torch.Tensor = 1.0,
                   window: int = 7, sigma: float | None = None, sample_covariance: bool = True,
                   reflect_pad: bool = False, k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """SSIM per image (float64 N x C x H x W), mean over window positions and then over channels.

    Defaults are skimage's ``structural_similarity``: 7x7 uniform window, sample covariance; with
    ``sigma`` the window is Gaussian (``sample_covariance=False`` gives piq). skimage filters with
    reflected padding but crops ``(window - 1) // 2`` pixels before averaging, which leaves exactly the
    valid window positions: the value here is identical, not approximate. ``reflect_pad`` is
    torchmetrics (1.7.1): the images are padded by ``(window - 1) // 2`` with ``F.pad(mode="reflect")``
    and the map is averaged over all H x W positions, the border ones included; its local variances
    are clamped at 0.
    """
    n, c, h, w = a.shape
    if min(h, w) < window:
        raise VQBenchError(f"SSIM needs images of at least {window}x{window} pixels, got {h}x{w}")
    a, b = a.reshape(n * c, 1, h, w), b.reshape(n * c, 1, h, w)
    if reflect_pad:
        p = (window - 1) // 2
        a, b = F.pad(a, (p, p, p, p), mode="reflect"), F.pad(b, (p, p, p, p), mode="reflect")
    # the five local moments in one filtering pass
    ux, uy, uxx, uyy, uxy = _local_mean(torch.cat([a, b, a * a, b * b, a * b]), window, sigma).split(n * c)
    m = window * window
    cov_norm = m / (m - 1.0) if sample_covariance else 1.0
    vx, vy, vxy = cov_norm * (uxx - ux * ux), cov_norm * (uyy - uy * uy), cov_norm * (uxy - ux * uy)
    if reflect_pad:
        vx, vy = vx.clamp_min(0), vy.clamp_min(0)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).view(n, c).mean(1)


# --------------------------------------------------------------- streaming metrics
class _PixelMetric(Metric):
    """Maps both images to [0, 1] with the protocol's functions, computes one value per image and
    accumulates (sum, count): over images, or over batches when ``per_batch_mean`` (seed-voken)."""
    requires = frozenset({"real", "reconstruction"})
    value: ClassVar[str]                                  # emitted value name
    real_to_unit: ClassVar[Callable] = staticmethod(to_unit_uint8)
    reconstruction_to_unit: ClassVar[Callable] = staticmethod(to_unit_uint8)
    per_batch_mean: ClassVar[bool] = False

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))
        self.per_image_values = PerImageValues(f"metric {self.name!r}")

    def reset(self) -> None:
        super().reset()
        self.per_image_values = PerImageValues(f"metric {self.name!r}")

    def per_image(self, real: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, batch: EvalBatch) -> None:
        v = self.per_image(self.real_to_unit(batch.real), self.reconstruction_to_unit(batch.reconstruction))
        if self.per_batch_mean:
            self.total = self.total + v.mean().cpu()
            self.count = self.count + 1
        else:
            self.total = self.total + v.sum().cpu()
            self.count = self.count + v.numel()
            self.per_image_values.add(v, batch.image_ids)

    def compute(self) -> dict[str, float]:
        if int(self.count) == 0:
            raise VQBenchError(f"metric {self.name!r} saw no images")
        if not self.per_batch_mean:          # a mean over images: its bootstrap over the images
            self.value_extra = {self.value: self.per_image_values.record()}
        return {self.value: float(self.total / self.count)}


@METRICS.register("psnr", description="PSNR (dB) per image on uint8-rounded images in [0,1], mean over images")
class PSNR(_PixelMetric):
    name = "psnr"
    value = "psnr"
    higher_is_better = {"psnr": True}

    def per_image(self, real, recon):
        return psnr_per_image(real, recon)


@METRICS.register("ssim", description="SSIM (skimage defaults: 7x7 uniform window, data_range 1) per image "
                                      "on uint8-rounded images, mean over images")
class SSIM(_PixelMetric):
    name = "ssim"
    value = "ssim"
    higher_is_better = {"ssim": True}
    data_range: ClassVar[float] = 1.0
    window: ClassVar[int] = 7
    sigma: ClassVar[float | None] = None           # None: uniform window
    sample_covariance: ClassVar[bool] = True

    def per_image(self, real, recon):
        return ssim_per_image(real, recon, data_range=self.data_range, window=self.window, sigma=self.sigma,
                              sample_covariance=self.sample_covariance)


# --------------------------------------------------------------- legacy: llamagen
@METRICS.register("psnr-llamagen", description="PSNR as LlamaGen: only the reconstruction uint8-rounded")
class PSNRLlamaGen(PSNR):
    name = "psnr-llamagen"
    protocol = "llamagen"
    real_to_unit = staticmethod(to_unit_float)
    reconstruction_to_unit = staticmethod(to_unit_uint8_llamagen)


@METRICS.register("ssim-llamagen", description="SSIM as LlamaGen: only the reconstruction uint8-rounded, "
                                               "data_range=2.0 on [0,1] images")
class SSIMLlamaGen(SSIM):
    name = "ssim-llamagen"
    protocol = "llamagen"
    real_to_unit = staticmethod(to_unit_float)
    reconstruction_to_unit = staticmethod(to_unit_uint8_llamagen)
    data_range = 2.0          # LlamaGen passes 2.0 for images in [0, 1]: larger C1, C2 inflate SSIM


# --------------------------------------------------------------- legacy: seed-voken
@METRICS.register("psnr-seed-voken", description="PSNR as SEED-Voken: uint8-truncated images, "
                                                 "mean of per-batch means")
class PSNRSeedVoken(PSNR):
    name = "psnr-seed-voken"
    protocol = "seed-voken"
    real_to_unit = staticmethod(to_unit_uint8_truncated)
    reconstruction_to_unit = staticmethod(to_unit_uint8_truncated)
    per_batch_mean = True


@METRICS.register("ssim-seed-voken", description="SSIM as SEED-Voken: uint8-truncated images, "
                                                 "mean of per-batch means")
class SSIMSeedVoken(SSIM):
    name = "ssim-seed-voken"
    protocol = "seed-voken"
    real_to_unit = staticmethod(to_unit_uint8_truncated)
    reconstruction_to_unit = staticmethod(to_unit_uint8_truncated)
    per_batch_mean = True


# --------------------------------------------------------------- legacy: vtbench
@METRICS.register("psnr-vtbench", description="PSNR as VTBench (torchmetrics): uint8-truncated images, from "
                                              "the MSE over the whole set, data range the largest real value")
class PSNRVTBench(PSNR):
    """States: the summed squared error, the number of pixel values, and how many real values sit on
    each uint8 level (additive, so ranks sum; the largest level present is torchmetrics' data range)."""
    name = "psnr-vtbench"
    protocol = "vtbench"
    real_to_unit = staticmethod(to_unit_uint8_truncated)
    reconstruction_to_unit = staticmethod(to_unit_uint8_truncated)

    def __init__(self):
        super().__init__()
        self.add_state("real_levels", torch.zeros(256, dtype=torch.int64))

    def update(self, batch: EvalBatch) -> None:
        real = self.real_to_unit(batch.real)
        d = real - self.reconstruction_to_unit(batch.reconstruction)
        self.total = self.total + d.pow(2).sum().cpu()
        self.count = self.count + d.numel()
        levels = (real * 255).round().long().flatten().cpu()
        self.real_levels = self.real_levels + torch.bincount(levels, minlength=256)

    def compute(self) -> dict[str, float]:
        if int(self.count) == 0:
            raise VQBenchError(f"metric {self.name!r} saw no images")
        # torchmetrics: max(target) - min(target), both started at 0, so for targets in [0, 1] max(target)
        present = torch.nonzero(self.real_levels)
        if len(present) == 0 or int(present.max()) == 0:
            raise VQBenchError(f"metric {self.name!r}: every real pixel is 0, so torchmetrics' inferred data range "
                               "is 0 and PSNR is undefined")
        data_range = int(present.max()) / 255.0
        return {"psnr": float(psnr_from_mse(self.total / self.count, data_range))}


@METRICS.register("ssim-vtbench", description="SSIM as VTBench (torchmetrics): uint8-truncated images, 11x11 "
                                              "Gaussian window on reflect-padded images, per-batch data range")
class SSIMVTBench(SSIM):
    name = "ssim-vtbench"
    protocol = "vtbench"
    real_to_unit = staticmethod(to_unit_uint8_truncated)
    reconstruction_to_unit = staticmethod(to_unit_uint8_truncated)
    window, sigma, sample_covariance = 11, 1.5, False

    def per_image(self, real, recon):
        # torchmetrics' data_range=None: max(preds.max() - preds.min(), target.max() - target.min()) per batch
        data_range = torch.maximum(recon.max() - recon.min(), real.max() - real.min())
        return ssim_per_image(recon, real, data_range=data_range, window=self.window, sigma=self.sigma,
                              sample_covariance=False, reflect_pad=True)


# --------------------------------------------------------------- legacy: vqgan-lc
@METRICS.register("psnr-vqgan-lc", description="PSNR as VQGAN-LC (pyiqa): Y channel of YCbCr, no rounding")
class PSNRVQGANLC(PSNR):
    name = "psnr-vqgan-lc"
    protocol = "vqgan-lc"
    real_to_unit = staticmethod(to_unit_float)
    reconstruction_to_unit = staticmethod(to_unit_float)

    def per_image(self, real, recon):
        if real.shape[1] == 3:            # pyiqa converts only RGB; grayscale stays as it is
            real, recon = rgb_to_y(real), rgb_to_y(recon)
        return 10.0 * torch.log10(1.0 / (mse_per_image(real, recon) + 1e-8))   # pyiqa's eps, not a clamp


@METRICS.register("ssim-vqgan-lc", description="SSIM as VQGAN-LC (piq): 11x11 Gaussian window after "
                                               "avg-pool downsampling, no rounding")
class SSIMVQGANLC(SSIM):
    name = "ssim-vqgan-lc"
    protocol = "vqgan-lc"
    real_to_unit = staticmethod(to_unit_float)
    reconstruction_to_unit = staticmethod(to_unit_float)
    window, sigma, sample_covariance = 11, 1.5, False     # piq: valid positions only, no padding

    def per_image(self, real, recon):
        f = max(1, round(min(real.shape[-2:]) / 256))   # piq's downsample=True (Python's round, as piq)
        if f > 1:
            real, recon = F.avg_pool2d(real, f), F.avg_pool2d(recon, f)
        return super().per_image(real, recon)
