"""Channel-wise VQ (CVQ): each latent channel's H1 x W1 map is one token.

CVQ/CAR paper ("Channel-wise Vector Quantization", Sec. 3.1, App. B) and the channel-wise
masked-generation paper ("Image Generation with Channel-wise Quantization", Sec. 3.2). The encoder
maps the image to C x H1 x W1; channel c, flattened to an H1*W1 vector, is matched to the nearest
code by Frobenius (= flattened L2) distance, with the codebook and
commitment losses and a straight-through estimator. With ``C = H1 * W1`` a CVQ tokenizer has the
same number of tokens and the same code dimension as the patch-wise VQ of the same grid
("dimensionality parity", as the papers compare them).

Nested channel dropout (App. B): with probability ``dropout_p`` a training step keeps the first
k ~ U{1..C} channels and zeroes the rest; the quantization loss then covers only active channels,
and the adversarial weight is scaled by ``sigmoid((k - C/2) / tau) / sigmoid((C/2) / tau)``, tau = C/8
by default. App. B's sigmoid GAN weight (Eq. 8) lost its formula in our copy: the text says only that
tau sets the smoothness, that lambda is the base GAN weight and that the adversarial weight grows with
the active channels, so the form is assumed. It is normalised by its full-width value because Eq. 9's
full-width term is "standard training" at the base weight: every full-width step (k = C, with or without
dropout) gets exactly lambda, as a tokenizer without dropout does (the bare sigmoid gave 0.982 lambda).

Variable resolution (App. D), option ``resampler``: before the lookup, ``resample_side``^2 learned
queries cross-attend the encoder features of any spatial size (positions as tokens, channels as
features), so every channel token keeps the same code dimension; after the lookup, target queries
generated from the output grid's coordinates cross-attend the quantized map back to the decoder's
spatial size. Images of any size divisible by the downsampling factor then share one codebook.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from harness.core.contracts import TokenLayout, Tokenizer, TokenizerOutput
from harness.core.recipes import Recipe, assumed
from harness.models.nn import DownsamplePadding, crop_to, encoder_decoder, latent_side
from harness.models.quantizers.channel import ChannelQuantizer
from harness.models.quantizers.vq import FMNIST_CODEBOOK_INIT, CodebookInit
from harness.core.registry import TOKENIZERS
from harness.models.paper_recipes import CVQ_TOKENIZER, MASKGEN_TOKENIZER


@dataclass(frozen=True)
class CVQConfig:
    resolution: int = 256
    in_channels: int = 3
    ch: int = 128
    ch_mult: tuple[int, ...] = (1, 1, 2, 2, 4)
    num_res_blocks: int = 2
    num_tokens: int = 256          # latent channels C = tokens per image
    norm_groups: int = 32
    attention: bool = True
    codebook_size: int = 16384
    beta: float = 0.25
    dropout_p: float = 0.0         # probability of a nested-channel-dropout step (paper: 0, 0.25, 0.5)
    gan_tau: float = 0.0           # sigmoid smoothness of the per-k GAN weight; 0 -> C / 8
    resampler: bool = False        # variable-resolution resampling around the lookup (App. D)
    resample_side: int = 0         # fixed side of the resampled map; 0 -> the native latent side
    downsample_padding: DownsamplePadding = "symmetric"    # or taming's "right-bottom" (harness.models.nn)
    codebook_init: CodebookInit = "uniform"    # "data": codes start as channel maps of the first batches

    def build(self) -> "CVQTokenizer":
        return CVQTokenizer(self)


class CVQTokenizer(Tokenizer):
    family = "cvq"

    def __init__(self, cfg: CVQConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.decoder = encoder_decoder(cfg, cfg.num_tokens)    # one latent channel per token
        self.down = 2 ** (len(cfg.ch_mult) - 1)
        side = latent_side(cfg.resolution, cfg.ch_mult, cfg.downsample_padding)
        if cfg.resampler:
            side = cfg.resample_side or side
            self.resample_in = Resampler(cfg.num_tokens, side * side)
            self.resample_out = CoordinateResampler(cfg.num_tokens)
        self.grid = (side, side)
        self.code_dim = side * side
        self.quantizer = ChannelQuantizer(cfg.codebook_size, self.code_dim, cfg.beta)
        self.layout = TokenLayout.constant(cfg.num_tokens, cfg.codebook_size, position_kind="channel")

    def _latents(self, x: torch.Tensor) -> torch.Tensor:
        """Image -> N x C x (H1*W1) channel vectors (resampled to the fixed grid when enabled)."""
        h = self.encoder(x)
        return self.resample_in(h) if self.cfg.resampler else h.flatten(2)

    def _decode_channels(self, z_q: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """z_q: N x C x (H1*W1) -> image of ``size`` (default: the configured resolution)."""
        size = size or (self.cfg.resolution, self.cfg.resolution)
        if self.cfg.resampler:
            feat = self.resample_out(z_q, (math.ceil(size[0] / self.down), math.ceil(size[1] / self.down)))
        else:
            feat = z_q.view(z_q.shape[0], -1, *self.grid)
        return crop_to(self.decoder(feat), size)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.quantizer(self._latents(x)).indices

    def quantizer_inputs(self, x: torch.Tensor) -> torch.Tensor:
        return self._latents(x).reshape(-1, self.code_dim)

    def decode(self, indices: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        return self._decode_channels(self.quantizer.lookup(indices), size)

    prefix_unit = "channels"

    def decode_prefix(self, indices: torch.Tensor, k: int, size: tuple[int, int] | None = None) -> torch.Tensor:
        """Decode from the first k channel tokens only (the rest zeroed), as nested dropout trains."""
        k = self.check_prefix(k)
        z_q = self.quantizer.lookup(indices)
        z_q[:, k:] = 0
        return self._decode_channels(z_q, size)

    def forward(self, x: torch.Tensor) -> TokenizerOutput:
        z = self._latents(x)                                      # N x C x (H1*W1)
        c = z.shape[1]
        k = c
        if self.training and self.cfg.dropout_p > 0 and torch.rand(()) < self.cfg.dropout_p:
            k = int(torch.randint(1, c + 1, ()))
        q = self.quantizer(z, active_channels=k)
        scale = gan_weight_scale(k, c, self.cfg.gan_tau or c / 8) if self.cfg.dropout_p > 0 else 1.0
        return TokenizerOutput(self._decode_channels(q.quantized, tuple(x.shape[-2:])), q.indices, q.losses,
                               logs={"active_channels": float(k)}, gan_weight_scale=scale)

    def code_embeddings(self, indices: torch.Tensor) -> torch.Tensor:
        return self.quantizer.lookup(indices)

    def last_layer_weight(self) -> torch.Tensor:
        return self.decoder.conv_out.weight


def gan_weight_scale(k: int, channels: int, tau: float) -> float:
    """App. B's per-k GAN weight as a multiple of the base weight: a sigmoid in the active channels k,
    normalised so that the full width (k = C) is exactly 1 (the module docstring says why)."""
    def sigmoid(v: float) -> float:
        return 1.0 / (1.0 + math.exp(-v))
    return sigmoid((k - channels / 2) / tau) / sigmoid((channels / 2) / tau)


class Resampler(nn.Module):
    """``queries`` learned queries cross-attend a C x H x W map of any size (positions as tokens)."""

    def __init__(self, channels: int, queries: int, heads: int = 1):
        super().__init__()
        self.queries = nn.Parameter(torch.randn(queries, channels) * channels ** -0.5)
        self.pos = CoordinateEmbedding(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        n, c, hh, ww = h.shape
        tokens = h.flatten(2).transpose(1, 2) + self.pos(hh, ww)
        out, _ = self.attn(self.queries.expand(n, -1, -1), tokens, tokens, need_weights=False)
        return out.transpose(1, 2)                                   # N x C x queries


class CoordinateResampler(nn.Module):
    """Target queries generated from the output grid's coordinates cross-attend the quantized map."""

    def __init__(self, channels: int, heads: int = 1):
        super().__init__()
        self.pos = CoordinateEmbedding(channels)
        self.attn = nn.MultiheadAttention(channels, heads, batch_first=True)

    def forward(self, z_q: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        n, c, _ = z_q.shape
        queries = self.pos(*size).expand(n, -1, -1)
        memory = z_q.transpose(1, 2)                                  # N x positions x C
        out, _ = self.attn(queries, memory, memory, need_weights=False)
        return out.transpose(1, 2).reshape(n, c, *size)


class CoordinateEmbedding(nn.Module):
    """An MLP of Fourier features of (y, x) in [0, 1]: the same embedding for any grid size."""

    def __init__(self, channels: int, frequencies: int = 8):
        super().__init__()
        self.register_buffer("freqs", (2.0 ** torch.arange(frequencies)) * math.pi, persistent=False)
        self.mlp = nn.Sequential(nn.Linear(4 * frequencies, channels), nn.GELU(), nn.Linear(channels, channels))

    def forward(self, h: int, w: int) -> torch.Tensor:
        ys = torch.linspace(0, 1, h, device=self.freqs.device)
        xs = torch.linspace(0, 1, w, device=self.freqs.device)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1).view(-1, 2, 1) * self.freqs
        feats = torch.cat([grid.sin(), grid.cos()], -1).flatten(1)
        return self.mlp(feats)[None]                                  # 1 x (h*w) x C


@TOKENIZERS.register("cvq-tiny", family="cvq", scale="tiny",
                     description="64 channel tokens of 8x8 on 16x16 gray, K=64, dropout 0.5 (tests)")
def cvq_tiny() -> CVQConfig:
    return CVQConfig(resolution=16, in_channels=1, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                     num_tokens=64, norm_groups=8, attention=False, codebook_size=64, dropout_p=0.5)


def _cvq_fmnist(dropout_p: float) -> CVQConfig:
    # parity with vq-fmnist: 49 tokens, codes of dim 7*7 = 49, K = 1024; codes start from channel maps
    return CVQConfig(resolution=28, in_channels=1, ch=32, ch_mult=(1, 2, 2), num_res_blocks=1,
                     num_tokens=49, norm_groups=16, attention=False, codebook_size=1024,
                     dropout_p=dropout_p, codebook_init=FMNIST_CODEBOOK_INIT)


@TOKENIZERS.register("cvq-fmnist", family="cvq", scale="small",
                     description="49 channel tokens of 7x7 on 28x28 Fashion-MNIST, K=1024 initialised from data, no dropout")
def cvq_fmnist() -> CVQConfig:
    return _cvq_fmnist(0.0)


@TOKENIZERS.register("cvq-fmnist-drop25", family="cvq", scale="small",
                     description="cvq-fmnist with nested channel dropout p=0.25")
def cvq_fmnist_drop25() -> CVQConfig:
    return _cvq_fmnist(0.25)


def _register_paper_presets():
    # Table 1: 256 and 1024 tokens, both at ratio 16, so every code is a 16x16 = 256-dim map (the 1024-token
    # tokenizer has 1024 latent channels); Table 3 varies K at 256 tokens. "Vanilla CVQ" (Tables 1, 3, and
    # Table 7's 0% row) has no nested dropout; CAR's tokenizer (Tables 4, 7) has p = 0.25.
    for tokens in (256, 1024):
        for k in (1024, 4096, 16384, 65536):
            def dropout(tokens=tokens, k=k) -> CVQConfig:
                return CVQConfig(num_tokens=tokens, codebook_size=k, dropout_p=0.25)
            TOKENIZERS.add(f"cvq-{tokens}-k{k // 1024}k-imagenet", dropout, family="cvq", scale="paper",
                           recipe=CVQ_TOKENIZER,
                           description=f"CVQ at 256x256: {tokens} channel tokens of 16x16, K={k}, nested dropout "
                                       f"0.25 as CAR's tokenizer (Tables 4/7)")
    for tokens, ks, table in ((256, (1024, 4096, 16384, 65536), "Tables 1, 3"), (1024, (16384,), "Table 1")):
        for k in ks:
            def vanilla(tokens=tokens, k=k) -> CVQConfig:
                return CVQConfig(num_tokens=tokens, codebook_size=k, dropout_p=0.0)
            TOKENIZERS.add(f"cvq-vanilla-{tokens}-k{k // 1024}k-imagenet", vanilla, family="cvq", scale="paper",
                           recipe=CVQ_TOKENIZER,
                           description=f"Vanilla CVQ ({table}): {tokens} channel tokens of 16x16 at 256x256, "
                                       f"K={k}, no nested dropout")


_register_paper_presets()

# The channel-wise masked-generation paper's tokenizer (its Sec. 3.2 and 4.1): VQGAN's architecture without
# its attention blocks, a StyleGAN discriminator (as ViT-VQGAN) with LeCam regularization, no entropy
# loss, Adam at 1e-4 decaying to 5e-5; compression ratio 16 (Tables 5, 6)
TOKENIZERS.add("cvq-maskgen-256-k16k-imagenet",
               lambda: CVQConfig(num_tokens=256, codebook_size=16384, attention=False),
               family="cvq", scale="paper", recipe=MASKGEN_TOKENIZER,
               description="CVQ of the masked-generation paper: 256 channel tokens of 16x16, K=16384, no attention "
                           "blocks; StyleGAN discriminator + LeCam")
# the recipe's loss settings on cvq-tiny, with a small discriminator (its schedule is the test's)
MASKGEN_TINY = Recipe(tuple(MASKGEN_TOKENIZER.get(k) for k in ("disc_arch", "lecam_weight", "lr", "pixel_loss"))) \
    + Recipe.of(("disc_channels", "8", assumed("a test-sized discriminator for the tiny preset")))
TOKENIZERS.add("cvq-maskgen-tiny", cvq_tiny, family="cvq", scale="tiny", recipe=MASKGEN_TINY,
               description="cvq-tiny trained with the masked-generation recipe's losses (tests)")
TOKENIZERS.add("cvq-resample-tiny", lambda: dataclasses.replace(cvq_tiny(), resampler=True, resample_side=4),
               family="cvq", scale="tiny", description="cvq-tiny with the variable-resolution resampler (tests)")
