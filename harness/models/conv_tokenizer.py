"""The CNN tokenizer skeleton shared by patch-wise quantizers (VQ and the FSQ/LFQ/SimVQ/RVQ baselines).

Encoder -> 1x1 projection to the lookup dimension -> quantizer over each grid cell -> 1x1 projection
back -> decoder (harness.models.nn). The quantizer is a harness.models.quantizers.base.Quantizer
over z: N x h x w x D (indices N x h x w, or N x h x w x k for k codes per cell; ``lookup`` gives
N x h x w x D); subclasses provide it with ``make_quantizer``.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from harness.core.contracts import TokenLayout, Tokenizer, TokenizerOutput
from harness.models.nn import DownsamplePadding, crop_to, encoder_decoder, latent_side
from harness.models.quantizers.base import Quantizer


@dataclass(frozen=True)
class ConvBackbone:
    """Fields every conv-tokenizer config has (configs subclass this and add their quantizer's)."""
    resolution: int = 256
    in_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    z_channels: int = 256
    norm_groups: int = 32
    attention: bool = True
    codebook_dim: int = 8
    # "right-bottom": taming's / LlamaGen's downsampling (released LlamaGen weights need it)
    downsample_padding: DownsamplePadding = "symmetric"


# Backbone sizes shared by the conv tokenizers' presets: tiny (16x16 gray, 8x8 tokens, for tests) and
# Fashion-MNIST (28x28, 7x7 tokens)
TINY_BACKBONE = dict(resolution=16, in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1, z_channels=16,
                     norm_groups=8, attention=False)
FMNIST_BACKBONE = dict(resolution=28, in_channels=1, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1, z_channels=64,
                       norm_groups=16, attention=False)


class ConvTokenizer(Tokenizer):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.decoder = encoder_decoder(cfg, cfg.z_channels)
        self.quant_proj = nn.Conv2d(cfg.z_channels, cfg.codebook_dim, 1)
        self.post_quant_proj = nn.Conv2d(cfg.codebook_dim, cfg.z_channels, 1)
        self.quantizer = self.make_quantizer(cfg)
        side = latent_side(cfg.resolution, cfg.ch_mult, cfg.downsample_padding)
        self.grid = (side, side)
        self.layout = TokenLayout.constant(side * side, self.quantizer.codebook_size,
                                           num_factors=self.quantizer.num_factors,
                                           position_kind="spatial", grid=self.grid)

    def make_quantizer(self, cfg) -> Quantizer:
        raise NotImplementedError

    def _decode_grid(self, z_q: torch.Tensor) -> torch.Tensor:
        """z_q: N x h x w x D -> image."""
        out = self.decoder(self.post_quant_proj(z_q.permute(0, 3, 1, 2)))
        return crop_to(out, (self.cfg.resolution, self.cfg.resolution))

    def _quantize(self, x: torch.Tensor):
        return self.quantizer(self.quant_proj(self.encoder(x)).permute(0, 2, 3, 1))

    def quantizer_inputs(self, x: torch.Tensor) -> torch.Tensor:
        z = self.quant_proj(self.encoder(x))
        return z.permute(0, 2, 3, 1).reshape(-1, z.shape[1])

    def _flat(self, indices: torch.Tensor) -> torch.Tensor:
        return indices.flatten(1, 2)              # N x h x w [x k] -> N x T [x k]

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._flat(self._quantize(x).indices)

    def _lookup(self, indices: torch.Tensor) -> torch.Tensor:
        """N x T [x k] indices -> N x h x w x D quantized features."""
        return self.quantizer.lookup(indices.view(indices.shape[0], *self.grid, *indices.shape[2:]))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self._decode_grid(self._lookup(indices))

    def decode_prefix(self, indices: torch.Tensor, k: int) -> torch.Tensor:
        """Keep the first k grid cells in raster order (all k codes of a cell for RVQ), zero the rest."""
        k = self.check_prefix(k)
        z_q = self._lookup(indices)                                   # N x h x w x D
        kept = torch.arange(z_q.shape[1] * z_q.shape[2], device=z_q.device) < k
        return self._decode_grid(torch.where(kept.view(1, *z_q.shape[1:3], 1), z_q, 0.0))

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        q = self._quantize(x)
        return TokenizerOutput(self._decode_grid(q.quantized), self._flat(q.indices), q.losses)

    def code_embeddings(self, indices: torch.Tensor) -> torch.Tensor:
        return self._lookup(indices).flatten(1, 2)

    def last_layer_weight(self) -> torch.Tensor:
        return self.decoder.conv_out.weight
