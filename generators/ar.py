"""LlamaGen-style decoder-only autoregressive generator (next-token prediction over a 1-factor layout).

Papers: VCQ ("Variable Codebook Size Quantization", Sec. 3-4, App. A/B) trains a vanilla Llama-style AR
with standard next-token prediction on its 1D tokens: class-label dropout 0.1, AR dropout 0.1,
token-embedding dropout 0.1 (App. A), cosine CFG with scale and power (App. B), and CodebookSize-Aware
CFG (Eq. 4). LlamaGen (Sun et al. 2024) defines the architecture: the class embedding (a table of
num_classes + 1 rows, the last one the null class of CFG) is the first token, code embeddings follow,
RMSNorm/SwiGLU/RoPE blocks, a bias-free linear head over the codebook.

VCQ: position t may only emit codes < K_t, so logits beyond K_t are -inf in the training loss and in
sampling (``layout.codebook_sizes``). ``SamplerConfig.codebook_aware_cfg`` turns on CodebookSize-Aware
CFG (see ``sampling.py`` for the formula and its assumption).

Works on every layout with ``num_factors == 1`` (spatial raster, channel, latent): the order is the
layout's position order. Conditioning: ``class`` (int64 labels, ``conditioning.null_label`` = null),
``text`` (N x L x D or N x D embeddings through LlamaGen's 2-layer caption MLP, all-zero = null) or
``none`` (one learned start token). ``cond=None`` means the null condition for every sample.

Presets AR-B/L/XL use the VCQ paper's layers/heads/widths (App. A: 12/12/768, 24/16/1024, 32/20/1280);
counts are for T = 256, K = 16384, 1000 classes. AR-L (342.9M vs the paper's 343M) and AR-XL (693.4M vs
684M, 1.4%) are claimed. AR-B gives 110.9M, LlamaGen GPT-B's own 111M; the VCQ paper states 115M (3.6%
more) without saying what the extra 4M are, so that count is not claimed. They carry App. A's AR recipe
for the Base-tokenizer group (their paper layout, K_max = 16384): linear decay, biases and norms
without weight decay.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from harness.core.contracts import Conditioning, Generator, SamplerConfig, TokenLayout
from harness.core.registry import GENERATORS
from harness.models.conditioning import IMAGENET_CLASSES, ONE_FACTOR_LAYOUTS, ConditionEmbedder
from harness.models.paper_recipes import VCQ_AR
from harness.models.sampling import decode_next_token, mask_beyond_codebook, register_invalid_codes
from harness.models.transformer import Transformer, init_weights

@dataclass(frozen=True)
class ARConfig:
    width: int = 768
    depth: int = 12
    heads: int = 12
    mlp_ratio: float = 4.0
    multiple_of: int = 256          # SwiGLU hidden size rounding (LlamaGen)
    dropout: float = 0.1            # attention / residual / FFN dropout ("AR dropout", VCQ App. A)
    token_dropout: float = 0.1      # dropout on the input embeddings (VCQ App. A)
    class_dropout: float = 0.1      # condition dropout for CFG
    init_std: float = 0.02

    def build(self, layout: TokenLayout, conditioning: Conditioning,
              codebook: torch.Tensor | None = None) -> "ARGenerator":
        return ARGenerator(self, layout, conditioning)


class ARGenerator(Generator):
    family = "ar"

    def __init__(self, cfg: ARConfig, layout: TokenLayout, conditioning: Conditioning):
        super().__init__(layout)
        self.cfg, self.layout, self.conditioning = cfg, layout, conditioning
        self.vocab = layout.max_codebook_size
        self.cond_embed = ConditionEmbedder(conditioning, cfg.width, cfg.class_dropout)
        self.tok_embed = nn.Embedding(self.vocab, cfg.width)
        self.tok_dropout = nn.Dropout(cfg.token_dropout)
        self.backbone = Transformer(cfg.width, cfg.depth, cfg.heads, cfg.mlp_ratio, causal=True,
                                    dropout=cfg.dropout, multiple_of=cfg.multiple_of)
        self.head = nn.Linear(cfg.width, self.vocab, bias=False)
        init_weights(self, cfg.init_std)
        nn.init.zeros_(self.head.weight)     # LlamaGen: the output starts uniform
        register_invalid_codes(self, layout, self.vocab)

    # ------------------------------------------------------------------ training
    def logits(self, indices: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Teacher-forced logits N x T x V (float32; codes >= K_t at -inf); no condition dropout."""
        self._check_indices(indices)
        n = indices.shape[0]
        prefix = self.cond_embed(self.cond_embed.check(cond, n, indices.device), n)
        x = torch.cat([prefix, self.tok_dropout(self.tok_embed(indices[:, :-1]))], dim=1)
        h = self.backbone(x)[:, prefix.shape[1] - 1:]          # the state that predicts each position
        return mask_beyond_codebook(self.head(h).float(), self.invalid)

    def _predict(self, indices, cond):
        return self.logits(indices, cond), indices

    @torch.no_grad()
    def token_nll(self, indices: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """N x T negative log-likelihood (nats) of each code given the condition and the codes before it,
        as the model stands (call in eval mode: no dropout); ``cond=None``: the null condition."""
        logits = self.logits(indices, cond)
        return F.cross_entropy(logits.transpose(1, 2), indices, reduction="none")

    # ------------------------------------------------------------------ sampling
    def _sample(self, n, cond, sampler: SamplerConfig, generator) -> torch.Tensor:
        guided = sampler.guided and self.conditioning.kind != "none"
        prefix = self.cond_embed.sampling_prefix(cond, n, guided, self.tok_embed.weight.device)
        return decode_next_token(self.backbone, prefix, n, self.layout, embed=self.tok_embed,
                                 head=lambda h: self.head(h).float(), invalid=self.invalid, sampler=sampler,
                                 generator=generator)


# ---------------------------------------------------------------------- presets
def _paper_layout() -> TokenLayout:
    # the VCQ paper's AR setting: 256 1D tokens, K_max = 16384 (the count depends only on K_max)
    return TokenLayout.constant(256, 16384, position_kind="latent")


PAPER_CONDITIONING = IMAGENET_CLASSES


@GENERATORS.register("ar-tiny", family="ar", scale="tiny", layouts=ONE_FACTOR_LAYOUTS, kv_cache=True,
                     description="2-layer Llama AR, width 32 (tests)")
def ar_tiny() -> ARConfig:
    return ARConfig(width=32, depth=2, heads=4, multiple_of=16, dropout=0.0, token_dropout=0.0)


@GENERATORS.register("ar-fmnist", family="ar", scale="small", layouts=ONE_FACTOR_LAYOUTS, kv_cache=True,
                     description="4-layer Llama AR, width 128, for 49-token Fashion-MNIST layouts (default suite)")
def ar_fmnist() -> ARConfig:
    # small data, few steps: LlamaGen's dropouts would only slow the fit down
    return ARConfig(width=128, depth=4, heads=4, multiple_of=64, dropout=0.0, token_dropout=0.0)


@GENERATORS.register("ar-b", family="ar", scale="paper", layouts=ONE_FACTOR_LAYOUTS, kv_cache=True, recipe=VCQ_AR,
                     paper_layout=_paper_layout(), paper_conditioning=PAPER_CONDITIONING,
                     description="AR-B (VCQ App. A): 12 layers, 12 heads, width 768; 110.9M "
                                 "(= LlamaGen GPT-B's 111M; the VCQ paper states 115M, not claimed)")
def ar_b() -> ARConfig:
    return ARConfig(width=768, depth=12, heads=12)


@GENERATORS.register("ar-l", family="ar", scale="paper", layouts=ONE_FACTOR_LAYOUTS, kv_cache=True, recipe=VCQ_AR,
                     paper_layout=_paper_layout(), paper_conditioning=PAPER_CONDITIONING, paper_params=343e6,
                     description="AR-L (VCQ App. A): 24 layers, 16 heads, width 1024 (paper: 343M)")
def ar_l() -> ARConfig:
    return ARConfig(width=1024, depth=24, heads=16)


@GENERATORS.register("ar-xl", family="ar", scale="paper", layouts=ONE_FACTOR_LAYOUTS, kv_cache=True, recipe=VCQ_AR,
                     paper_layout=_paper_layout(), paper_conditioning=PAPER_CONDITIONING, paper_params=684e6,
                     description="AR-XL (VCQ App. A): 32 layers, 20 heads, width 1280 (paper: 684M)")
def ar_xl() -> ARConfig:
    return ARConfig(width=1280, depth=32, heads=20)
