"""Pixel-fidelity metrics: PSNR and SSIM under the canonical protocol (design.md section 4).

Canonical: per image, real and reconstruction both rounded to uint8, scaled to [0, 1]
(data_range = 1), all channels; the mean over images. SSIM is skimage's default
``structural_similarity`` (7x7 uniform window, K1 = 0.01, K2 = 0.03, sample covariance, mean over
channels); computing it on valid windows is exact because skimage crops (7 - 1) / 2 border pixels
before averaging, which removes every reflected-padding position.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..contracts import EvalBatch, Metric
from ..registry import METRICS

MAX_PSNR_DB = 100.0     # identical images: report 100 dB (MSE clamped to 1e-10) instead of inf


def to_unit_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] float -> uint8-rounded values in [0, 1], float64 (rounding in float32, as images are saved)."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().double() / 255.0


def psnr_per_image(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = (a - b).pow(2).flatten(1).mean(1).clamp_min(10 ** (-MAX_PSNR_DB / 10))
    return -10.0 * torch.log10(mse)


def ssim_per_image(a: torch.Tensor, b: torch.Tensor, data_range: float = 1.0, win: int = 7) -> torch.Tensor:
    """skimage's default SSIM per image (float64, N x C x H x W), mean over channels."""
    n, c = a.shape[:2]
    a, b = a.reshape(n * c, 1, *a.shape[2:]), b.reshape(n * c, 1, *b.shape[2:])
    mean = lambda t: F.avg_pool2d(t, win, stride=1)   # noqa: E731 - valid windows, see module docstring
    cov_norm = win * win / (win * win - 1.0)           # sample covariance
    ux, uy = mean(a), mean(b)
    vx = cov_norm * (mean(a * a) - ux * ux)
    vy = cov_norm * (mean(b * b) - uy * uy)
    vxy = cov_norm * (mean(a * b) - ux * uy)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))
    return s.flatten(1).mean(1).view(n, c).mean(1)


class _PerImageMean(Metric):
    requires = frozenset({"real", "reconstruction"})

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.float64))

    def per_image(self, real: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def update(self, batch: EvalBatch) -> None:
        values = self.per_image(to_unit_uint8(batch.real), to_unit_uint8(batch.reconstruction))
        self.total = self.total + values.sum().cpu()
        self.count = self.count + values.numel()

    def compute(self) -> dict[str, float]:
        return {self.name: float(self.total / self.count)}


@METRICS.register("psnr", description="PSNR (dB), per image on uint8-rounded images in [0,1], mean over images")
class PSNR(_PerImageMean):
    name = "psnr"
    higher_is_better = {"psnr": True}

    def per_image(self, real, recon):
        return psnr_per_image(real, recon)


@METRICS.register("ssim", description="SSIM, skimage defaults (7x7 uniform window), data_range 1, "
                                      "uint8-rounded images, mean over images")
class SSIM(_PerImageMean):
    name = "ssim"
    higher_is_better = {"ssim": True}

    def per_image(self, real, recon):
        return ssim_per_image(real, recon)
