"""Discriminators for adversarial tokenizer training: pix2pix's PatchGAN (as VQGAN uses it) and a
StyleGAN2-style residual discriminator (as ViT-VQGAN and MaskGIT use it). The adversarial losses
that train against them are in ``harness.training.losses``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import VQBenchError


def patchgan_output_side(resolution: int, n_layers: int) -> int:
    """Side of a PatchGAN's logit map: a stride-2 4x4 conv (pad 1) halves the side (floored), a
    stride-1 one takes 1 off. ``n_layers`` >= 1: that many stride-2 convs (the stem included), then
    two stride-1 ones; ``n_layers`` = 0: the stem and the output conv only."""
    if n_layers <= 0:
        return resolution // 2 - 1
    side = resolution
    for _ in range(n_layers):
        side //= 2
    return side - 2


def patchgan_depth(resolution: int, n_layers: int) -> int:
    """``n_layers`` or, when the image is too small for that many downsamplings, the deepest PatchGAN
    whose logit map is still at least 1x1 (16 px images: 2 layers; 256 px: the usual 3, a 30x30 map)."""
    depth = max(0, n_layers)
    while depth > 0 and patchgan_output_side(resolution, depth) < 1:
        depth -= 1
    if patchgan_output_side(resolution, depth) < 1:
        raise VQBenchError(f"--set disc_arch=patchgan needs images of at least 4x4 pixels (these are "
                           f"{resolution}x{resolution}); use disc_arch=stylegan or disc_weight=0")
    return depth


class PatchGAN(nn.Module):
    """pix2pix's N-layer PatchGAN (Isola et al. 2017) as VQGAN uses it: 4x4 convs, BatchNorm, LeakyReLU.
    With ``resolution`` given, the depth is capped so the logit map of a ``resolution`` image is at least
    1x1 (``patchgan_depth``); at the resolutions it was designed for, the depth is ``n_layers``."""

    def __init__(self, in_channels: int = 3, channels: int = 64, n_layers: int = 3, resolution: int | None = None):
        super().__init__()
        if resolution is not None:
            n_layers = patchgan_depth(resolution, n_layers)
        self.n_layers = n_layers
        layers = [nn.Conv2d(in_channels, channels, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, n_layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < n_layers else 1
            layers += [nn.Conv2d(channels * prev, channels * mult, 4, stride, 1, bias=False),
                       nn.BatchNorm2d(channels * mult), nn.LeakyReLU(0.2, True)]
        layers.append(nn.Conv2d(channels * mult, 1, 4, 1, 1))
        self.main = nn.Sequential(*layers)
        for m in self.modules():       # DCGAN init, as taming-transformers does
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.main(x)


class _DiscBlock(nn.Module):
    """StyleGAN2 residual discriminator block: two 3x3 convs, 2x downsampling, 1/sqrt(2) merge."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cin, 3, padding=1)
        self.conv2 = nn.Conv2d(cin, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1, bias=False)

    def forward(self, x):
        h = F.leaky_relu(self.conv1(x), 0.2)
        h = F.avg_pool2d(F.leaky_relu(self.conv2(h), 0.2), 2)
        return (h + F.avg_pool2d(self.skip(x), 2)) / 2 ** 0.5


class StyleGANDiscriminator(nn.Module):
    """StyleGAN2-style residual discriminator (Karras et al. 2020) as ViT-VQGAN / MaskGIT tokenizers
    use it: residual downsampling blocks to 4x4, minibatch standard deviation, conv, two linear layers.
    Average pooling stands in for StyleGAN2's FIR blur downsampling."""

    def __init__(self, in_channels: int = 3, resolution: int = 256, channels: int = 64, max_channels: int = 512):
        super().__init__()
        self.stem = nn.Conv2d(in_channels, channels, 1)
        blocks, c, side = [], channels, resolution
        while side > 4:
            cout = min(c * 2, max_channels)
            blocks.append(_DiscBlock(c, cout))
            c, side = cout, side // 2
        self.blocks = nn.Sequential(*blocks)
        self.conv = nn.Conv2d(c + 1, c, 3, padding=1)
        self.fc = nn.Linear(c * side * side, c)
        self.out = nn.Linear(c, 1)

    def forward(self, x):
        h = self.blocks(F.leaky_relu(self.stem(x), 0.2))
        std = h.float().std(dim=0, unbiased=False).mean().to(h.dtype)     # minibatch stddev feature
        h = torch.cat([h, std.expand(h.shape[0], 1, *h.shape[2:])], dim=1)
        h = F.leaky_relu(self.conv(h), 0.2)
        return self.out(F.leaky_relu(self.fc(h.flatten(1)), 0.2))


def build_discriminator(arch: str, in_channels: int, resolution: int, channels: int, layers: int) -> nn.Module:
    if arch == "stylegan":
        return StyleGANDiscriminator(in_channels, resolution, channels)
    return PatchGAN(in_channels, channels, layers, resolution)
