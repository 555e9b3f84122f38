"""FAR: factorized autoregressive generation over FQGAN's k sub-codes per position.

Paper: FQGAN ("Factorized Visual Tokenization and Generation", Bai et al.), Sec. 3.3, Table 4, App. E.
Input side: k embedding layers, one per sub-codebook, whose outputs a linear layer aggregates into one
token per position (Sec. 4.1). Backbone: the Llama-style causal transformer of LlamaGen with the class
token as prefix. Output side (``head``):

- ``ar`` (the paper's factorized AR head): a small causal transformer that takes the backbone state g_t
  as prefix and predicts z_t^1, ..., z_t^k one after another, z_t^i = head_AR(g_t; z_t^1..z_t^{i-1});
  its inputs for the sub-codes reuse the input embedding tables (no new parameters, which the paper's
  counts also imply) and one linear classifier per sub-codebook reads its outputs.
- ``linear``: k independent linear classifiers on g_t (Table 4's first ablation).
- ``mlp``: k independent 2-layer MLP classifiers (Linear, GELU, Linear) on g_t (Table 4's second).

The loss is the mean cross-entropy over all T x k sub-codes; 10% condition dropout as in LlamaGen.
Sampling: KV-cached backbone (``SamplerConfig.kv_cache=False`` recomputes the whole prefix, same
samples), the AR head recomputed over its <= k inputs, CFG with cond and uncond rows in one batch, the
guidance scale of position t shared by its k sub-codes. Per-position codebook sizes (if any) mask every
factor of the position.

Presets FAR-Base/Large (App. E, Table 7): backbone 24/36 layers, AR head 3/4 layers, width 1024/1280,
16/20 heads; on FQGAN-Dual's layout (16 x 16 positions, k = 2 sub-codebooks of 16384, 1000 classes)
they count 417.3M / 901.3M against the paper's 415M / 898M.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import nn

from harness.core.contracts import Conditioning, Generator, SamplerConfig, TokenLayout
from harness.core.errors import VQBenchError
from harness.core.registry import GENERATORS
from harness.models.conditioning import IMAGENET_CLASSES as PAPER_CONDITIONING, ConditionEmbedder
from harness.models.paper_recipes import FAR
from harness.models.sampling import cfg_mix, guidance_scales, mask_beyond_codebook, register_invalid_codes, sample_with
from harness.models.transformer import Transformer, init_weights

FACTORIZED_LAYOUTS = ("factorized",)


@dataclass(frozen=True)
class FARConfig:
    width: int = 1024
    depth: int = 24                  # backbone layers
    heads: int = 16
    head: Literal["ar", "linear", "mlp"] = "ar"
    head_depth: int = 3              # layers of the factorized AR head (head="ar")
    mlp_ratio: float = 4.0
    multiple_of: int = 256
    dropout: float = 0.1
    token_dropout: float = 0.1
    class_dropout: float = 0.1
    init_std: float = 0.02

    def build(self, layout: TokenLayout, conditioning: Conditioning,
              codebook: torch.Tensor | None = None) -> "FARGenerator":
        return FARGenerator(self, layout, conditioning)


class FARGenerator(Generator):
    family = "far"

    def __init__(self, cfg: FARConfig, layout: TokenLayout, conditioning: Conditioning):
        super().__init__(layout)
        if cfg.head not in ("ar", "linear", "mlp"):
            raise VQBenchError(f"far head must be ar, linear or mlp, got {cfg.head!r}")
        self.cfg, self.layout, self.conditioning = cfg, layout, conditioning
        self.k, self.vocab, w = layout.num_factors, layout.max_codebook_size, cfg.width
        self.cond_embed = ConditionEmbedder(conditioning, w, cfg.class_dropout)
        self.tok_embeds = nn.ModuleList(nn.Embedding(self.vocab, w) for _ in range(self.k))
        self.aggregate = nn.Linear(self.k * w, w)
        self.tok_dropout = nn.Dropout(cfg.token_dropout)
        self.backbone = Transformer(w, cfg.depth, cfg.heads, cfg.mlp_ratio, causal=True, dropout=cfg.dropout,
                                    multiple_of=cfg.multiple_of)
        if cfg.head == "ar":
            self.head_net = Transformer(w, cfg.head_depth, cfg.heads, cfg.mlp_ratio, causal=True,
                                        dropout=cfg.dropout, multiple_of=cfg.multiple_of)
            self.classifiers = nn.ModuleList(nn.Linear(w, self.vocab, bias=False) for _ in range(self.k))
        elif cfg.head == "linear":
            self.classifiers = nn.ModuleList(nn.Linear(w, self.vocab, bias=False) for _ in range(self.k))
        else:
            self.classifiers = nn.ModuleList(nn.Sequential(nn.Linear(w, w), nn.GELU(), nn.Linear(w, self.vocab))
                                             for _ in range(self.k))
        init_weights(self, cfg.init_std)
        register_invalid_codes(self, layout, self.vocab)

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """N x L x k sub-codes -> N x L x width (k embeddings aggregated by the linear layer)."""
        parts = [emb(codes[..., i]) for i, emb in enumerate(self.tok_embeds)]
        return self.aggregate(torch.cat(parts, dim=-1))

    def head_logits(self, g: torch.Tensor, codes: torch.Tensor | None) -> list[torch.Tensor]:
        """Logits of sub-codes 1..m from states g (B x width): all k when ``codes`` (B x k, teacher
        forcing) is given or the head is parallel; for the AR head with ``codes`` of B x j (j < k) the
        j + 1 logits of sub-codes 1..j+1."""
        if self.cfg.head != "ar":
            return [cls(g) for cls in self.classifiers]
        j = self.k - 1 if codes is None else min(codes.shape[1], self.k - 1)
        inputs = [g[:, None]] + [self.tok_embeds[i](codes[:, i])[:, None] for i in range(j)]
        out = self.head_net(torch.cat(inputs, dim=1))
        return [self.classifiers[i](out[:, i]) for i in range(j + 1)]

    # ------------------------------------------------------------------ training
    def logits(self, indices: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        """Teacher-forced logits N x T x k x V (float32; codes >= K_t at -inf); no condition dropout."""
        self._check_indices(indices)
        n, T, k = indices.shape
        prefix = self.cond_embed(self.cond_embed.check(cond, n, indices.device), n)
        x = torch.cat([prefix, self.tok_dropout(self.embed_codes(indices[:, :-1]))], dim=1)
        g = self.backbone(x)[:, prefix.shape[1] - 1:]                       # n x T x width
        logits = self.head_logits(g.reshape(n * T, -1), indices.reshape(n * T, k))
        logits = torch.stack(logits, dim=1).view(n, T, k, self.vocab).float()
        return mask_beyond_codebook(logits, self.invalid[:, None])          # the same K_t for every sub-code

    def _predict(self, indices, cond):
        return self.logits(indices, cond), indices      # all T x k sub-codes

    # ------------------------------------------------------------------ sampling
    def _sample(self, n, cond, sampler: SamplerConfig, generator) -> torch.Tensor:
        device = self.aggregate.weight.device
        T, k = self.layout.num_positions, self.k
        guided = sampler.guided and self.conditioning.kind != "none"
        prefix = self.cond_embed.sampling_prefix(cond, n, guided, device)
        P, rows = prefix.shape[1], prefix.shape[0]
        reps = rows // n
        scales = guidance_scales(sampler, T, self.layout.codebook_sizes).tolist()
        out = torch.zeros(n, T, k, dtype=torch.long, device=device)
        cache = self.backbone.new_cache(rows, P + T - 1) if sampler.kv_cache else None
        for t in range(T):
            if cache is not None:
                x = prefix if t == 0 else self.embed_codes(out[:, t - 1:t]).repeat(reps, 1, 1)
                g = self.backbone(x, cache=cache, start_pos=0 if t == 0 else P + t - 1)[:, -1]
            else:
                x = torch.cat([prefix, self.embed_codes(out[:, :t]).repeat(reps, 1, 1)], dim=1)
                g = self.backbone(x)[:, -1]
            parallel = None if self.cfg.head == "ar" else self.head_logits(g, None)
            for i in range(k):
                if parallel is not None:
                    logits = parallel[i]
                else:   # the AR head sees the sub-codes already drawn at this position
                    logits = self.head_logits(g, out[:, t, :i].repeat(reps, 1))[i]
                logits = logits.float()
                if guided:
                    cond_logits, uncond_logits = logits.chunk(2)
                    logits = cfg_mix(cond_logits, uncond_logits, scales[t])
                out[:, t, i] = sample_with(mask_beyond_codebook(logits, self.invalid, t), sampler, generator)
        return out


# ---------------------------------------------------------------------- presets
def _fqgan_dual_layout() -> TokenLayout:
    # FQGAN-Dual at 256 px: 16 x 16 positions, two sub-codebooks of 16384
    return TokenLayout.constant(256, 16384, num_factors=2, grid=(16, 16))


@GENERATORS.register("far-tiny", family="far", scale="tiny", layouts=FACTORIZED_LAYOUTS, kv_cache=True,
                     description="2-layer FAR, width 32, 1-layer factorized AR head (tests)")
def far_tiny() -> FARConfig:
    return FARConfig(width=32, depth=2, heads=4, head_depth=1, multiple_of=16, dropout=0.0, token_dropout=0.0)


@GENERATORS.register("far-fmnist", family="far", scale="small", layouts=FACTORIZED_LAYOUTS, kv_cache=True,
                     description="4-layer FAR, width 128, 1-layer AR head, for fq-dual-fmnist (default suite)")
def far_fmnist() -> FARConfig:
    return FARConfig(width=128, depth=4, heads=4, head_depth=1, multiple_of=64, dropout=0.0, token_dropout=0.0)


@GENERATORS.register("far-base", family="far", scale="paper", layouts=FACTORIZED_LAYOUTS, kv_cache=True, recipe=FAR,
                     paper_layout=_fqgan_dual_layout(), paper_conditioning=PAPER_CONDITIONING, paper_params=415e6,
                     description="FAR-Base (FQGAN App. E): 24 + 3 head layers, width 1024, 16 heads (paper: 415M)")
def far_base() -> FARConfig:
    return FARConfig(width=1024, depth=24, heads=16, head_depth=3)


@GENERATORS.register("far-large", family="far", scale="paper", layouts=FACTORIZED_LAYOUTS, kv_cache=True, recipe=FAR,
                     paper_layout=_fqgan_dual_layout(), paper_conditioning=PAPER_CONDITIONING, paper_params=898e6,
                     description="FAR-Large (FQGAN App. E): 36 + 4 head layers, width 1280, 20 heads (paper: 898M)")
def far_large() -> FARConfig:
    return FARConfig(width=1280, depth=36, heads=20, head_depth=4)
