"""Patch-wise VQ tokenizer: VQGAN (Esser et al., CVPR 2021) with LlamaGen's options (Sun et al. 2024).

A CNN encoder maps the image to an h x w grid; each grid cell is one token, quantized against one
codebook. LlamaGen's choices are options: l2-normalized codes (cosine lookup) and a low-dimensional
lookup space reached through 1x1 projections (``codebook_dim`` = 8 with ``z_channels`` = 256).
Pixel, LPIPS and PatchGAN losses are added by the shared trainer (harness/train.py).

Presets: ``vq-tiny`` (tests), ``vq-fmnist`` (default suite, 7x7 tokens on 28x28 Fashion-MNIST) and
the ImageNet-256 presets ``vq-f16-imagenet`` (16x16 tokens) and ``vq-f8-imagenet`` (32x32 tokens)
with LlamaGen's VQ-16 / VQ-8 widths and K = 16384.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from harness.contracts import TokenLayout, Tokenizer, TokenizerOutput
from harness.nn import Decoder, Encoder, crop_to
from harness.quantize import VectorQuantizer
from harness.registry import TOKENIZERS


@dataclass(frozen=True)
class VQConfig:
    resolution: int = 256
    in_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    norm_groups: int = 32
    attention: bool = True
    codebook_size: int = 16384
    codebook_dim: int = 8
    l2_norm: bool = True
    beta: float = 0.25

    def build(self) -> "VQTokenizer":
        return VQTokenizer(self)


class VQTokenizer(Tokenizer):
    family = "vq"

    def __init__(self, cfg: VQConfig):
        super().__init__()
        self.cfg = cfg
        common = dict(ch=cfg.ch, ch_mult=cfg.ch_mult, num_res_blocks=cfg.num_res_blocks,
                      z_channels=cfg.z_channels, groups=cfg.norm_groups,
                      attention=cfg.attention)
        self.encoder = Encoder(cfg.in_channels, **common)
        self.decoder = Decoder(cfg.in_channels, **common)
        self.quant_proj = nn.Conv2d(cfg.z_channels, cfg.codebook_dim, 1)
        self.post_quant_proj = nn.Conv2d(cfg.codebook_dim, cfg.z_channels, 1)
        self.quantizer = VectorQuantizer(cfg.codebook_size, cfg.codebook_dim, cfg.beta, cfg.l2_norm)
        side = cfg.resolution
        for _ in range(len(cfg.ch_mult) - 1):
            side = math.ceil(side / 2)          # stride-2 convs with padding 1 round up
        self.grid = (side, side)
        self.layout = TokenLayout.constant(side * side, cfg.codebook_size,
                                           position_kind="spatial", grid=self.grid)

    def _decode_grid(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q: N x h x w x D -> image."""
        out = self.decoder(self.post_quant_proj(z_q.permute(0, 3, 1, 2)))
        return crop_to(out, (self.cfg.resolution, self.cfg.resolution))

    def _quantize(self, x: torch.Tensor):
        z = self.quant_proj(self.encoder(x)).permute(0, 2, 3, 1)   # N x h x w x D
        return self.quantizer(z)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._quantize(x).indices.flatten(1)

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        z_q = self.quantizer.lookup(indices.view(-1, *self.grid))
        return self._decode_grid(z_q)

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        q = self._quantize(x)
        return TokenizerOutput(self._decode_grid(q.quantized), q.indices.flatten(1), q.losses)

    def code_embeddings(self, indices: torch.Tensor) -> torch.Tensor:
        return self.quantizer.lookup(indices)

    def last_layer_weight(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


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
    return VQConfig()


@TOKENIZERS.register("vq-f8-imagenet", family="vq", scale="paper",
                     description="LlamaGen VQ-8: 32x32 tokens at 256x256, K=16384, dim 8")
def vq_f8_imagenet() -> VQConfig:
    return VQConfig(ch_mult=(1, 2, 2, 4))
