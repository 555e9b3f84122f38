"""VCQ: variable codebook size quantization on a 1D tokenizer ("Variable Codebook Size Quantization",
Sec. 3 and App. A).

The tokenizer is TiTok-style: a ViT encoder reads the image patches together with T learned latent
tokens, and the T latent outputs, projected to the code dimension, are the 1D token sequence; a ViT
decoder reads the quantized latents together with one mask token per patch and predicts the
patches (the paper presets layer-normalise each ViT's input sequence first, TiTok's ln_pre). Position
t is quantized against only the first K_t entries of one shared codebook, with K_t from a schedule
(constant / linear / cosine / power, harness.models.schedules): no extra parameters, unchanged gradients.
Indices at position t are therefore < K_t.

Paper presets: Base = ViT-B encoder + ViT-B decoder (paper: 172M), Large = ViT-B encoder + ViT-L
decoder (paper: 496M), T = 256, K_min = 2, cosine by default; K_max = 16384 for Base and 11264 for Large
(Table 2's "Cosine-L" row: K from 2 to 11264, average 4100, BPP 0.042, which this schedule reproduces;
App. A's own values are blank in our copy). The paper trains Large with the cosine schedule only; the
other Large schedules are ablations on its codebook. A standard ViT-L (width 1024, depth 24, 16 heads)
decoder gives 390M for Large; the paper does not say what makes up the other ~106M (a pixel decoder, a
deeper ViT?), so that count is not claimed to match. Both carry App. A's tokenizer recipe.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from harness.core.contracts import TokenLayout, Tokenizer, TokenizerOutput
from harness.models.nn import Decoder, Encoder, crop_to, latent_side
from harness.models.quantizers.vq import FMNIST_CODEBOOK_INIT, CodebookInit, VectorQuantizer
from harness.core.registry import TOKENIZERS
from harness.models.paper_recipes import VCQ_LARGE_TOKENIZER, VCQ_TOKENIZER
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
    # "conv": the patch embedding and the pixel head are a small VQGAN encoder / decoder (conv_* fields):
    # the encoder's grid cells are the ViT's patch tokens and the decoder ViT's outputs at the patch
    # positions form the grid the conv decoder upsamples (the 1D latent tokens are unchanged)
    stem: Literal["patch", "conv"] = "patch"
    codebook_init: CodebookInit = "uniform"    # "data": codes start as latents of the first batches
    conv_ch: int = 32
    conv_ch_mult: tuple[int, ...] = (1, 2, 2)
    conv_res_blocks: int = 1
    conv_groups: int = 16
    # TiTok's ln_pre (the ViT input sequence layer-normalised, encoder and decoder): on for the paper
    # presets; off by default (checkpoints written before the field load unchanged) and for the fmnist
    # presets, where it slows learning at 200 steps (README, "Codebook collapse")
    ln_pre: bool = False
    # > 0: every attention layer of both ViTs adds a learned logit per head and (query, key) position pair,
    # drawn from N(0, std^2). Random routing at initialisation: each latent token reads, and each decoded
    # patch reads, its own mix from the first step. Without it the fmnist presets settle where every latent
    # token of an image carries one vector (README, "Codebook collapse"). 0 (none) for the paper presets, as
    # in TiTok, and by default (checkpoints written before the field load unchanged)
    attention_position_bias_std: float = 0.0

    def build(self) -> "VCQTokenizer":
        return VCQTokenizer(self)


class VCQTokenizer(Tokenizer):
    family = "vcq"

    def __init__(self, cfg: VCQConfig):
        super().__init__()
        self.cfg = cfg
        p, c = cfg.patch_size, cfg.in_channels
        if cfg.stem == "conv":
            conv = dict(ch=cfg.conv_ch, ch_mult=cfg.conv_ch_mult, num_res_blocks=cfg.conv_res_blocks,
                        groups=cfg.conv_groups, attention=False)
            self.side = latent_side(cfg.resolution, cfg.conv_ch_mult)
            self.conv_encoder = Encoder(c, z_channels=cfg.enc_width, **conv)
            self.conv_decoder = Decoder(c, z_channels=cfg.dec_width, **conv)
        else:
            self.side = cfg.resolution // p
            self.patch_embed = nn.Linear(c * p * p, cfg.enc_width)
        self.num_patches = self.side ** 2
        scale = cfg.enc_width ** -0.5
        self.enc_pos = nn.Parameter(scale * torch.randn(self.num_patches + cfg.num_tokens, cfg.enc_width))
        self.latent_tokens = nn.Parameter(scale * torch.randn(cfg.num_tokens, cfg.enc_width))
        self.enc_ln_pre = nn.LayerNorm(cfg.enc_width) if cfg.ln_pre else nn.Identity()
        position_bias = ((self.num_patches + cfg.num_tokens, cfg.attention_position_bias_std)
                         if cfg.attention_position_bias_std > 0 else None)
        self.encoder = Transformer(cfg.enc_width, cfg.enc_depth, cfg.enc_heads, position_bias)
        self.to_code = nn.Linear(cfg.enc_width, cfg.codebook_dim)
        self.quantizer = VectorQuantizer(cfg.k_max, cfg.codebook_dim, cfg.beta, cfg.l2_norm)
        dscale = cfg.dec_width ** -0.5
        self.from_code = nn.Linear(cfg.codebook_dim, cfg.dec_width)
        self.mask_token = nn.Parameter(dscale * torch.randn(cfg.dec_width))
        self.dec_pos = nn.Parameter(dscale * torch.randn(self.num_patches + cfg.num_tokens, cfg.dec_width))
        self.dec_ln_pre = nn.LayerNorm(cfg.dec_width) if cfg.ln_pre else nn.Identity()
        self.decoder = Transformer(cfg.dec_width, cfg.dec_depth, cfg.dec_heads, position_bias)
        if cfg.stem == "patch":
            self.to_pixels = nn.Linear(cfg.dec_width, c * p * p)
        sizes = codebook_schedule(cfg.schedule, cfg.k_min, cfg.k_max, cfg.num_tokens, cfg.schedule_power)
        self.register_buffer("codebook_sizes", torch.tensor(sizes), persistent=False)
        self.layout = TokenLayout(cfg.num_tokens, sizes, position_kind="latent")

    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> the T latent tokens' vectors to quantize, N x T x D."""
        n = x.shape[0]
        if self.cfg.stem == "conv":
            patches = self.conv_encoder(x).flatten(2).transpose(1, 2)               # N x side^2 x width
        else:
            patches = self.patch_embed(patchify(x, self.cfg.patch_size))
        tokens = torch.cat([patches, self.latent_tokens.expand(n, -1, -1)], dim=1) + self.enc_pos
        return self.to_code(self.encoder(self.enc_ln_pre(tokens))[:, self.num_patches:])

    def _quantize(self, x: torch.Tensor):
        return self.quantizer(self._latents(x), self.codebook_sizes.expand(x.shape[0], -1))

    def quantizer_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self._latents(x).reshape(-1, self.cfg.codebook_dim)

    def decoder_patch_outputs(self, z_q: torch.Tensor) -> torch.Tensor:
        """The decoder ViT's outputs at the patch positions (what the pixel head reads), N x patches x width."""
        n = z_q.shape[0]
        masks = self.mask_token.expand(n, self.num_patches, -1)
        tokens = torch.cat([masks, self.from_code(z_q)], dim=1) + self.dec_pos
        return self.decoder(self.dec_ln_pre(tokens))[:, :self.num_patches]

    def _decode_latents(self, z_q: torch.Tensor) -> torch.Tensor:
        n, out = z_q.shape[0], self.decoder_patch_outputs(z_q)
        r = self.cfg.resolution
        if self.cfg.stem == "conv":
            grid = out.transpose(1, 2).reshape(n, -1, self.side, self.side)
            return crop_to(self.conv_decoder(grid), (r, r))
        return unpatchify(self.to_pixels(out), self.cfg.patch_size, self.cfg.in_channels, r, r)

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
        return self.conv_decoder.conv_out.weight if self.cfg.stem == "conv" else self.to_pixels.weight


@TOKENIZERS.register("vcq-tiny", family="vcq", scale="tiny",
                     description="16 latent tokens on 16x16 gray, cosine K_t from 2 to 64 (tests)")
def vcq_tiny() -> VCQConfig:
    return VCQConfig(resolution=16, in_channels=1, patch_size=4, enc_width=32, enc_depth=1, enc_heads=2,
                     dec_width=32, dec_depth=1, dec_heads=2, num_tokens=16, codebook_dim=8, k_max=64)


def _vcq_fmnist(schedule: str) -> VCQConfig:
    # 49 latent tokens (the token budget of vq-fmnist), K_max = 1024 like the other fmnist presets. A conv
    # stem and head (vq-fmnist's backbone widths; its 7x7 grid cells are the ViT's 49 patch tokens) and
    # codes initialised from latents: with 4x4 pixel patches the ViT autoencoder stays at the mean image
    # for the default suite's 200 steps, even without quantization; a random position-pair attention logit
    # (std 4): without it all 49 latent tokens of an image carry one vector (README, "Codebook collapse")
    return VCQConfig(resolution=28, in_channels=1, patch_size=4, enc_width=128, enc_depth=4, enc_heads=4,
                     dec_width=128, dec_depth=4, dec_heads=4, num_tokens=49, codebook_dim=8,
                     schedule=schedule, k_min=2, k_max=1024, stem="conv", conv_ch=32, conv_ch_mult=(1, 2, 2),
                     conv_res_blocks=1, conv_groups=16, codebook_init=FMNIST_CODEBOOK_INIT,
                     attention_position_bias_std=4.0)


for _schedule in ("constant", "cosine"):
    TOKENIZERS.add(f"vcq-{_schedule}-fmnist", lambda s=_schedule: _vcq_fmnist(s), family="vcq", scale="small",
                   description=f"1D tokenizer (conv stem), 49 tokens on 28x28 Fashion-MNIST, {_schedule} K_t up to 1024")

LARGE_K_MAX = 11264        # Table 2, "Cosine-L"

for _schedule in ("constant", "linear", "cosine", "power"):
    TOKENIZERS.add(f"vcq-base-{_schedule}-imagenet", lambda s=_schedule: VCQConfig(schedule=s, ln_pre=True),
                   family="vcq", scale="paper", paper_params=172e6, recipe=VCQ_TOKENIZER,
                   description=f"VCQ Base (ViT-B enc + ViT-B dec), 256 tokens, {_schedule} K_t 2..16384 (paper: 172M)")
    TOKENIZERS.add(f"vcq-large-{_schedule}-imagenet",
                   lambda s=_schedule: VCQConfig(schedule=s, dec_width=1024, dec_depth=24, dec_heads=16,
                                                 k_max=LARGE_K_MAX, ln_pre=True),
                   family="vcq", scale="paper", recipe=VCQ_LARGE_TOKENIZER,
                   description=f"VCQ Large (ViT-B enc + ViT-L dec), 256 tokens, {_schedule} K_t 2..{LARGE_K_MAX} "
                               + ("(Table 2: Cosine-L) " if _schedule == "cosine" else "(ablation; the paper's "
                                  "Large is cosine) ")
                               + "(390M; the paper states 496M without the layout that adds up to it)")
