"""Patch-wise VQ tokenizer: VQGAN (Esser et al., CVPR 2021) with LlamaGen's options (Sun et al. 2024).

A CNN encoder maps the image to an h x w grid; each grid cell is one token, quantized against one
codebook. LlamaGen's choices are options: l2-normalized codes (cosine lookup) and a low-dimensional
lookup space reached through 1x1 projections (``codebook_dim`` = 8 with ``z_channels`` = 256).
Pixel, LPIPS and PatchGAN losses are added by the shared trainer (harness/training/losses.py).

Presets: ``vq-tiny`` (tests), ``vq-fmnist`` (default suite, 7x7 tokens on 28x28 Fashion-MNIST) and
the ImageNet-256 presets ``vq-f16-imagenet`` (16x16 tokens) and ``vq-f8-imagenet`` (32x32 tokens)
with LlamaGen's VQ-16 / VQ-8 widths and K = 16384.
"""
from __future__ import annotations

from dataclasses import dataclass

from harness.models.conv_tokenizer import ConvBackbone, ConvTokenizer
from harness.models.quantizers.vq import VectorQuantizer
from harness.core.registry import TOKENIZERS


@dataclass(frozen=True)
class VQConfig(ConvBackbone):
    codebook_size: int = 16384
    l2_norm: bool = True
    beta: float = 0.25
    rotation_trick: bool = False     # Fifty et al. 2024: rotate-and-scale gradients instead of straight-through

    def build(self) -> "VQTokenizer":
        return VQTokenizer(self)


class VQTokenizer(ConvTokenizer):
    family = "vq"

    def make_quantizer(self, cfg: VQConfig) -> VectorQuantizer:
        return VectorQuantizer(cfg.codebook_size, cfg.codebook_dim, cfg.beta, cfg.l2_norm, cfg.rotation_trick)


@TOKENIZERS.register("vq-tiny", family="vq", scale="tiny",
                     description="8x8 tokens on 16x16 grayscale, K=64 (tests)")
def vq_tiny() -> VQConfig:
    return VQConfig(resolution=16, in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                    z_channels=16, norm_groups=8, attention=False, codebook_size=64)


@TOKENIZERS.register("vq-fmnist", family="vq", scale="small",
                     description="7x7 tokens on 28x28 Fashion-MNIST, K=1024, dim 8, l2-normalized")
def vq_fmnist() -> VQConfig:
    return VQConfig(resolution=28, in_channels=1, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                    z_channels=64, norm_groups=16, attention=False, codebook_size=1024)


@TOKENIZERS.register("vq-f16-imagenet", family="vq", scale="paper", paper_params=72e6,
                     description="LlamaGen VQ-16: 16x16 tokens at 256x256, K=16384, dim 8 (72M)")
def vq_f16_imagenet() -> VQConfig:
    return VQConfig(downsample_padding="right-bottom")       # LlamaGen's encoder pads right and bottom


@TOKENIZERS.register("vq-f8-imagenet", family="vq", scale="paper",
                     description="LlamaGen VQ-8: 32x32 tokens at 256x256, K=16384, dim 8")
def vq_f8_imagenet() -> VQConfig:
    return VQConfig(ch_mult=(1, 2, 2, 4), downsample_padding="right-bottom")
