"""LPIPS as an evaluation metric (Zhang et al., CVPR 2018): mean per-image distance, real vs reconstruction.

``lpips`` uses the AlexNet backbone (the paper's recommended metric), ``lpips-vgg`` VGG16 (the one
usually taken as a loss); both are ``harness.models.lpips.LPIPS``: official v0.1 heads, torchvision ImageNet
backbones, inputs in [-1, 1] (1 channel repeated to 3), and images under 32 px a side bilinearly
upsampled to a 64-px short side (AlexNet cannot see below 31 px; README "Evaluation protocol"). Such
values are not LPIPS at the images' own size, so their rows carry the protocol ``lpips-upsampled-64``;
from 32 px up the protocol is the canonical one.
The value is the mean over images of the per-image distance; states are a float64 (sum, count), so
DDP sums give the single-process value.
"""
from __future__ import annotations

from typing import ClassVar

import torch

from harness.core.contracts import EvalBatch, Metric
from harness.core.errors import VQBenchError
from harness.models.lpips import SMALL_SIDE, UPSAMPLED_SIDE, load_lpips
from harness.core.registry import METRICS
from harness.evaluation.metrics.bootstrap import PerImageValues


UPSAMPLED_PROTOCOL = f"lpips-upsampled-{UPSAMPLED_SIDE}"


class _LPIPSMetric(Metric):
    requires = frozenset({"real", "reconstruction"})
    net: ClassVar[str]
    value: ClassVar[str]

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))
        self.per_image_values = PerImageValues(f"metric {self.name!r}")

    @torch.no_grad()
    def update(self, batch: EvalBatch) -> None:
        real = batch.real.float()
        if min(real.shape[-2:]) < SMALL_SIDE:        # scored after upsampling: say so in the rows
            self.protocol = UPSAMPLED_PROTOCOL
        lpips = load_lpips(self.net).to(real.device)
        d = lpips(real, batch.reconstruction.float().clamp(-1, 1))
        self.total = self.total + d.double().sum().cpu()
        self.count = self.count + d.numel()
        self.per_image_values.add(d, batch.image_ids)

    def reset(self) -> None:
        super().reset()
        self.__dict__.pop("protocol", None)          # back to the class's canonical until images are seen
        self.per_image_values = PerImageValues(f"metric {self.name!r}")

    def compute(self) -> dict[str, float]:
        if int(self.count) == 0:
            raise VQBenchError(f"metric {self.name!r} saw no images")
        self.value_extra = {self.value: self.per_image_values.record()}
        return {self.value: float(self.total / self.count)}


@METRICS.register("lpips", description="LPIPS v0.1 (AlexNet), real vs reconstruction, mean over images")
class LPIPSAlex(_LPIPSMetric):
    name = "lpips"
    net = "alex"
    value = "lpips"
    feature_extractor = "alexnet"
    higher_is_better = {"lpips": False}


@METRICS.register("lpips-vgg", description="LPIPS v0.1 (VGG16), real vs reconstruction, mean over images")
class LPIPSVGG(_LPIPSMetric):
    name = "lpips-vgg"
    net = "vgg"
    value = "lpips_vgg"
    feature_extractor = "vgg16"
    higher_is_better = {"lpips_vgg": False}
