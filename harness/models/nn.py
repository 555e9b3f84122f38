"""Convolutional building blocks shared by the CNN tokenizers (VQGAN/LlamaGen encoder and decoder).

Architecture after Esser et al. 2021 (taming-transformers) as LlamaGen uses it: ResNet blocks with
GroupNorm + SiLU, stride-2 convolutions down, nearest-neighbour upsampling + conv up; with
``attention`` a self-attention block in the middle and after every ResNet block of the
lowest-resolution level (LlamaGen's VQ-16 layout, which its 72M parameters count).
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from harness.core.errors import VQBenchError


def norm(channels: int, groups: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(groups, channels), channels, eps=1e-6)


class ResnetBlock(nn.Module):
    def __init__(self, cin: int, cout: int, groups: int):
        super().__init__()
        self.norm1, self.conv1 = norm(cin, groups), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = norm(cout, groups), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class AttnBlock(nn.Module):
    def __init__(self, channels: int, groups: int):
        super().__init__()
        self.norm = norm(channels, groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        n, c, h, w = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(n, 3, c, h * w).transpose(-1, -2).unbind(1)
        out = F.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        return x + self.proj(out.transpose(-1, -2).reshape(n, c, h, w))


def mid_block(channels: int, groups: int, attention: bool) -> nn.Sequential:
    layers = [ResnetBlock(channels, channels, groups)]
    if attention:
        layers += [AttnBlock(channels, groups), ResnetBlock(channels, channels, groups)]
    return nn.Sequential(*layers)


DownsamplePadding = Literal["symmetric", "right-bottom"]


class RightBottomPaddedConv(nn.Conv2d):
    """3x3 stride-2 convolution of the input padded by one pixel on the right and bottom only, as
    taming-transformers' and LlamaGen's encoders downsample (a plain conv with padding 1 pads every side
    and samples a grid shifted by one pixel). The same parameters as ``nn.Conv2d`` (state-dict keys too)."""

    def __init__(self, channels: int):
        super().__init__(channels, channels, 3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (0, 1, 0, 1)))


class Encoder(nn.Module):
    """Image -> feature map downsampled by 2 ** (len(ch_mult) - 1)."""

    def __init__(self, in_channels: int, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int,
                 z_channels: int, groups: int = 32, attention: bool = True,
                 downsample_padding: DownsamplePadding = "symmetric"):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, 3, padding=1)
        layers, cin = [], ch
        for level, mult in enumerate(ch_mult):
            cout = ch * mult
            for _ in range(num_res_blocks):
                layers.append(ResnetBlock(cin, cout, groups))
                cin = cout
                if attention and level == len(ch_mult) - 1:
                    layers.append(AttnBlock(cin, groups))
            if level != len(ch_mult) - 1:
                layers.append(nn.Conv2d(cin, cin, 3, stride=2, padding=1) if downsample_padding == "symmetric"
                              else RightBottomPaddedConv(cin))
        self.down = nn.Sequential(*layers)
        self.mid = mid_block(cin, groups, attention)
        self.norm_out = norm(cin, groups)
        self.conv_out = nn.Conv2d(cin, z_channels, 3, padding=1)

    def forward(self, x):
        h = self.mid(self.down(self.conv_in(x)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Upsample(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x):
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class Decoder(nn.Module):
    """Feature map -> image, mirroring ``Encoder`` (one extra ResNet block per level, as in VQGAN)."""

    def __init__(self, out_channels: int, ch: int, ch_mult: tuple[int, ...], num_res_blocks: int,
                 z_channels: int, groups: int = 32, attention: bool = True):
        super().__init__()
        cin = ch * ch_mult[-1]
        self.conv_in = nn.Conv2d(z_channels, cin, 3, padding=1)
        self.mid = mid_block(cin, groups, attention)
        layers = []
        for level, mult in reversed(list(enumerate(ch_mult))):
            cout = ch * mult
            for _ in range(num_res_blocks + 1):
                layers.append(ResnetBlock(cin, cout, groups))
                cin = cout
                if attention and level == len(ch_mult) - 1:
                    layers.append(AttnBlock(cin, groups))
            if level != 0:
                layers.append(Upsample(cin))
        self.up = nn.Sequential(*layers)
        self.norm_out = norm(cin, groups)
        self.conv_out = nn.Conv2d(cin, out_channels, 3, padding=1)

    def forward(self, z):
        h = self.up(self.mid(self.conv_in(z)))
        return self.conv_out(F.silu(self.norm_out(h)))


def latent_side(resolution: int, ch_mult: tuple[int, ...], downsample_padding: DownsamplePadding = "symmetric") -> int:
    """Side of the encoder's output grid: stride-2 convs with padding 1 round up at every level, with
    right-bottom padding they round down."""
    levels = len(ch_mult) - 1
    if downsample_padding != "symmetric" and resolution % 2 ** levels:
        # the encoder would drop the last rows, and the decoder's output could not be cropped back
        raise VQBenchError(f"downsample_padding={downsample_padding} needs a resolution divisible by "
                           f"{2 ** levels} ({levels} downsamplings), not {resolution}")
    side = resolution
    for _ in range(levels):
        side = (side + 1) // 2 if downsample_padding == "symmetric" else side // 2
    return side


def encoder_decoder(cfg, z_channels: int) -> tuple[Encoder, Decoder]:
    """The VQGAN encoder/decoder pair a conv-tokenizer config describes."""
    common = dict(ch=cfg.ch, ch_mult=cfg.ch_mult, num_res_blocks=cfg.num_res_blocks, z_channels=z_channels,
                  groups=cfg.norm_groups, attention=cfg.attention)
    return (Encoder(cfg.in_channels, **common, downsample_padding=cfg.downsample_padding),
            Decoder(cfg.in_channels, **common))


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Decoders of odd sizes (28 -> 7 -> 28 works, 28 -> 4 does not) are cropped back to the input."""
    return x[..., : size[0], : size[1]]
