"""VCQ: variable codebook size quantization on a 1D tokenizer ("Variable Codebook Size Quantization",
Sec. 3 and App. A).

The tokenizer is TiTok-style: a ViT encoder reads the image patches together with T learned latent
tokens, and the T latent outputs, projected to the code dimension, are the 1D token sequence; a ViT
decoder reads the quantized latents together with one mask token per patch and predicts the
patches. Position t is quantized against only the first K_t entries of one shared codebook, with
K_t from a schedule (constant / linear / cosine / power, harness.models.schedules): no extra parameters,
unchanged gradients. Indices at position t are therefore < K_t.

Paper presets: Base = ViT-B encoder + ViT-B decoder (paper: 172M), Large = ViT-B encoder + ViT-L
decoder (paper: 496M), T = 256, K_min = 2, K_max = 16384, cosine by default. A standard ViT-L
(width 1024, depth 24, 16 heads) decoder gives 390M for Large; the paper does not say what makes up the
other ~106M (a pixel decoder, a deeper ViT?), so that count is not claimed to match.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from harness.core.contracts import TokenLayout, Tokenizer, TokenizerOutput
from harness.models.quantizers.vq import VectorQuantizer
from harness.core.registry import TOKENIZERS
from harness.models.schedules import codebook_schedule
from harness.models.vit import Transformer, patchify, unpatchify


@dataclass(frozen=True)
class VCQConfig:
    resolution: int = 256
    in_channels: int = 3
    patch_size: int = 16
    enc_width: int = 768
    enc_depth: int = 12
    enc_heads: int = 12
    dec_width: int = 768
    dec_depth: int = 12
    dec_heads: int = 12
    num_tokens: int = 256
    codebook_dim: int = 12
    l2_norm: bool = True
    beta: float = 0.25
    schedule: Literal["constant", "linear", "cosine", "power"] = "cosine"
    schedule_power: float = 2.5
    k_min: int = 2
    k_max: int = 16384

    def build(self) -> "VCQTokenizer":
        return VCQTokenizer(self)


class VCQTokenizer(Tokenizer):
    family = "vcq"

    def __init__(self, cfg: VCQConfig):
        super().__init__()
        self.cfg = cfg
        p, c = cfg.patch_size, cfg.in_channels
        self.num_patches = (cfg.resolution // p) ** 2
        patch_dim = c * p * p
        scale = cfg.enc_width ** -0.5
        self.patch_embed = nn.Linear(patch_dim, cfg.enc_width)
        self.enc_pos = nn.Parameter(scale * torch.randn(self.num_patches + cfg.num_tokens, cfg.enc_width))
        self.latent_tokens = nn.Parameter(scale * torch.randn(cfg.num_tokens, cfg.enc_width))
        self.encoder = Transformer(cfg.enc_width, cfg.enc_depth, cfg.enc_heads)
        self.to_code = nn.Linear(cfg.enc_width, cfg.codebook_dim)
        self.quantizer = VectorQuantizer(cfg.k_max, cfg.codebook_dim, cfg.beta, cfg.l2_norm)
        dscale = cfg.dec_width ** -0.5
        self.from_code = nn.Linear(cfg.codebook_dim, cfg.dec_width)
        self.mask_token = nn.Parameter(dscale * torch.randn(cfg.dec_width))
        self.dec_pos = nn.Parameter(dscale * torch.randn(self.num_patches + cfg.num_tokens, cfg.dec_width))
        self.decoder = Transformer(cfg.dec_width, cfg.dec_depth, cfg.dec_heads)
        self.to_pixels = nn.Linear(cfg.dec_width, patch_dim)
        sizes = codebook_schedule(cfg.schedule, cfg.k_min, cfg.k_max, cfg.num_tokens, cfg.schedule_power)
        self.register_buffer("codebook_sizes", torch.tensor(sizes), persistent=False)
        self.layout = TokenLayout(cfg.num_tokens, sizes, position_kind="latent")

    def _quantize(self, x: torch.Tensor):
        n = x.shape[0]
        patches = self.patch_embed(patchify(x, self.cfg.patch_size))
        tokens = torch.cat([patches, self.latent_tokens.expand(n, -1, -1)], dim=1) + self.enc_pos
        latents = self.to_code(self.encoder(tokens)[:, self.num_patches:])          # N x T x D
        return self.quantizer(latents, self.codebook_sizes.expand(n, -1))

    def _decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        n = z_q.shape[0]
        masks = self.mask_token.expand(n, self.num_patches, -1)
        tokens = torch.cat([masks, self.from_code(z_q)], dim=1) + self.dec_pos
        out = self.to_pixels(self.decoder(tokens)[:, :self.num_patches])
        r = self.cfg.resolution
        return unpatchify(out, self.cfg.patch_size, self.cfg.in_channels, r, r)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self._quantize(x).indices

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self._decode_latents(self.quantizer.lookup(indices))

    def decode_prefix(self, indices: torch.Tensor, k: int) -> torch.Tensor:
        """Keep the first k latent tokens (the coarse, small-codebook ones); zero the later codes."""
        k = self.check_prefix(k)
        z_q = self.quantizer.lookup(indices)
        z_q[:, k:] = 0
        return self._decode_latents(z_q)

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        q = self._quantize(x)
        return TokenizerOutput(self._decode_latents(q.quantized), q.indices, q.losses)

    def code_embeddings(self, indices: torch.Tensor) -> torch.Tensor:
        return self.quantizer.lookup(indices)

    def last_layer_weight(self) -> torch.Tensor:
        return self.to_pixels.weight


@TOKENIZERS.register("vcq-tiny", family="vcq", scale="tiny",
                     description="16 latent tokens on 16x16 gray, cosine K_t from 2 to 64 (tests)")
def vcq_tiny() -> VCQConfig:
    return VCQConfig(resolution=16, in_channels=1, patch_size=4, enc_width=32, enc_depth=1, enc_heads=2,
                     dec_width=32, dec_depth=1, dec_heads=2, num_tokens=16, codebook_dim=8, k_max=64)


def _vcq_fmnist(schedule: str) -> VCQConfig:
    # 49 latent tokens (the token budget of vq-fmnist), K_max = 1024 like the other fmnist presets
    return VCQConfig(resolution=28, in_channels=1, patch_size=4, enc_width=128, enc_depth=4, enc_heads=4,
                     dec_width=128, dec_depth=4, dec_heads=4, num_tokens=49, codebook_dim=8,
                     schedule=schedule, k_min=2, k_max=1024)


for _schedule in ("constant", "cosine"):
    TOKENIZERS.add(f"vcq-{_schedule}-fmnist", lambda s=_schedule: _vcq_fmnist(s), family="vcq", scale="small",
                   description=f"1D tokenizer, 49 tokens on 28x28 Fashion-MNIST, {_schedule} K_t up to 1024")

for _schedule in ("constant", "linear", "cosine", "power"):
    TOKENIZERS.add(f"vcq-base-{_schedule}-imagenet", lambda s=_schedule: VCQConfig(schedule=s),
                   family="vcq", scale="paper", paper_params=172e6,
                   description=f"VCQ Base (ViT-B enc + ViT-B dec), 256 tokens, {_schedule} K_t 2..16384 (paper: 172M)")
    TOKENIZERS.add(f"vcq-large-{_schedule}-imagenet",
                   lambda s=_schedule: VCQConfig(schedule=s, dec_width=1024, dec_depth=24, dec_heads=16),
                   family="vcq", scale="paper",
                   description=f"VCQ Large (ViT-B enc + ViT-L dec), 256 tokens, {_schedule} K_t 2..16384 "
                               "(390M; the paper states 496M without the layout that adds up to it)")
