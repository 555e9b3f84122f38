"""Masked token prediction: masked channel-wise prediction (CVQ tokens) and MaskGIT (patch-wise VQ tokens).

Paper: "Image Generation with Channel-wise Quantization" (Sec. 3.3, 4.1, Tables 1, 2, 7), which follows
MaskGIT (Chang et al. 2022) on channel tokens:

- a bidirectional transformer with query-key RMSNorm (the shared Llama blocks of ``transformer.py``
  with ``causal=False, qk_norm=True``); an extra ``[MASK]`` token id = K_max;
- training: per sample u ~ U(0, 1), mask ratio r = cos(pi/2 * u), ``ceil(r * T)`` positions (at least 1)
  chosen uniformly are replaced by ``[MASK]``, cross-entropy on the masked positions only;
- 10% condition dropout (the null class / all-zero text embedding), CFG at inference
  ``l_g = t l_c - (t - 1) l_u`` (``SamplerConfig.cfg_scale`` = t; ``cfg_schedule`` varies t over the
  decoding steps, see ``sampling.py``);
- iterative confidence-based decoding (MaskGIT Sec. 3.2), ``steps`` iterations (paper: 10, and 64 for
  its starred rows; ``SamplerConfig.steps = 0`` takes the preset's ``default_steps``). Step s = 0..S-1,
  all positions masked at the start:
    1. one forward pass gives logits at every position (CFG mixed, codes >= K_t set to -inf);
    2. a code is drawn at every still-masked position from the sampler's distribution (temperature,
       top-k, top-p); positions decoded earlier keep their code;
    3. at the last step every position keeps its draw; otherwise ``n_s = floor(T cos(pi/2 (s+1)/S))``
       positions (MaskGIT's rule: max(1, min(masked - 1, n_s))) are masked again: the ones with the lowest
       confidence = log-probability of the drawn code plus Gumbel noise of scale
       ``choice_temperature * (1 - (s+1)/S)`` (MaskGIT's annealed "choice temperature", 4.5 in its
       reference); earlier-decoded positions have confidence +inf and are never re-masked.
  So every position is filled after exactly ``steps`` forward passes.

It runs on any one-code-per-position layout: ``channel`` (CVQ: masked channel-wise prediction),
``spatial`` (VQ: the MaskGIT baseline), ``latent`` (VCQ: logits beyond K_t are masked in training and
decoding; ``codebook_aware_cfg`` scales the guidance excess per position by its capacity ratio r_t).

Positions: the shared blocks' 1D RoPE over the sequence ``[condition prefix, T tokens]`` (MaskGIT uses
learned absolute embeddings; RoPE gives a bidirectional stack the same information). The MLP is SwiGLU
with ``mlp_hidden(width, mlp_dim / width, multiple_of)`` = 2/3 of the paper's "MLP dim", the size at
which SwiGLU has the parameters of the GELU MLP the paper's count refers to.

Parameter counts (Table 1: B 305M, L 634M, H 1.0B): the paper lists the *same* count for codebooks of
16384 and 65536 (Table 7), so its counts cannot include the K x width input embedding and output
layer (65536 x 1024 alone is 67M). ``body_parameter_count`` counts everything else (blocks, final norm,
class table, [MASK] row): B 304.6M (-0.1%), L 635.8M (+0.3%), H 1020.9M (+2.1%), registered as
``paper_body_params`` and tested in tests/test_generators_channel.py. They are deliberately not
``paper_params`` (which the contract tests compare with the full count): the full models at K = 16384
have B 338.2M, L 677.7M, H 1071.2M, 7-11% above the paper's numbers.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import nn

from harness.core.contracts import Conditioning, Generator, SamplerConfig, TokenLayout
from harness.core.errors import VQBenchError
from harness.core.registry import GENERATORS
from harness.models.conditioning import ONE_FACTOR_LAYOUTS, ConditionEmbedder
from harness.models.paper_recipes import MASKGEN_GENERATOR
from harness.models.sampling import (cfg_mix, codebook_capacity_ratio, filter_top_k, filter_top_p,
                       guidance_scales, mask_beyond_codebook, register_invalid_codes)
from harness.models.transformer import Transformer, init_weights


# ---------------------------------------------------------------------- the cosine masking schedule
def cosine_mask_ratio(u: torch.Tensor | float) -> torch.Tensor:
    """MaskGIT's gamma(u) = cos(pi/2 * u): the fraction of masked tokens at progress u in [0, 1]."""
    return torch.cos(math.pi / 2 * torch.as_tensor(u, dtype=torch.float64))


def num_masked_for_training(u: torch.Tensor, num_positions: int) -> torch.Tensor:
    """ceil(cos(pi/2 u) T), at least 1 and at most T (int64, one per sample)."""
    return torch.ceil(cosine_mask_ratio(u) * num_positions).long().clamp(1, num_positions)


def random_cosine_mask(n: int, num_positions: int, device=None,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Bool n x T training mask: per row u ~ U(0, 1), then ``num_masked_for_training(u)`` positions
    chosen uniformly at random."""
    u = torch.rand(n, generator=generator, device=device)
    counts = num_masked_for_training(u, num_positions).to(device)
    scores = torch.rand(n, num_positions, generator=generator, device=device)
    return _ranks(scores) < counts[:, None]


def _ranks(scores: torch.Tensor) -> torch.Tensor:
    """Rank of each entry in its row (0 = smallest): selecting ``rank < m`` picks exactly m entries."""
    order = scores.argsort(dim=-1)
    ranks = torch.empty_like(order)
    return ranks.scatter_(-1, order, torch.arange(scores.shape[-1], device=scores.device).expand_as(order))


def decoding_mask_count(step: int, steps: int, num_positions: int) -> int:
    """floor(T cos(pi/2 (s+1)/S)): how many positions stay masked after step s (before clamping)."""
    return int(math.floor(num_positions * math.cos(math.pi / 2 * (step + 1) / steps)))


def _gumbel(shape, device, generator: torch.Generator | None) -> torch.Tensor:
    u = torch.rand(shape, generator=generator, device=device)
    return -torch.log((-torch.log(u.clamp_min(1e-20))).clamp_min(1e-20))


# ---------------------------------------------------------------------- model
@dataclass(frozen=True)
class MaskedConfig:
    width: int = 1024
    depth: int = 24
    heads: int = 16
    mlp_dim: int = 4096             # the paper's "MLP dim" (Table 1); SwiGLU uses 2/3 of it (see the docstring)
    multiple_of: int = 64           # SwiGLU hidden size rounding
    qk_norm: bool = True            # query-key RMSNorm (paper Sec. 3.3: training stability)
    dropout: float = 0.0
    class_dropout: float = 0.1      # condition dropout for CFG (paper Sec. 3.3)
    default_steps: int = 10         # decoding steps when SamplerConfig.steps == 0 (paper: 10; 64 for its * rows)
    choice_temperature: float = 4.5  # MaskGIT's Gumbel noise on the confidences, annealed to 0
    init_std: float = 0.02

    def build(self, layout: TokenLayout, conditioning: Conditioning,
              codebook: torch.Tensor | None = None) -> "MaskedGenerator":
        return MaskedGenerator(self, layout, conditioning)


class MaskedGenerator(Generator):
    family = "masked"

    def __init__(self, cfg: MaskedConfig, layout: TokenLayout, conditioning: Conditioning):
        super().__init__(layout)
        if cfg.mlp_dim < 1:
            raise VQBenchError(f"mlp_dim must be positive, got {cfg.mlp_dim}")
        self.cfg, self.layout, self.conditioning = cfg, layout, conditioning
        self.vocab = layout.max_codebook_size
        self.mask_id = self.vocab                 # the extra [MASK] row of the token table
        self.cond_embed = ConditionEmbedder(conditioning, cfg.width, cfg.class_dropout)
        self.tok_embed = nn.Embedding(self.vocab + 1, cfg.width)
        self.backbone = Transformer(cfg.width, cfg.depth, cfg.heads, cfg.mlp_dim / cfg.width, causal=False,
                                    qk_norm=cfg.qk_norm, dropout=cfg.dropout, multiple_of=cfg.multiple_of)
        self.head = nn.Linear(cfg.width, self.vocab, bias=False)
        init_weights(self, cfg.init_std)
        register_invalid_codes(self, layout, self.vocab)

    def body_parameter_count(self) -> int:
        """Parameters without the codebook-sized input rows and output layer (what the paper counts)."""
        codebook_sized = self.vocab * self.cfg.width * 2          # K token rows + the K-way head
        return sum(p.numel() for p in self.parameters()) - codebook_sized

    # ------------------------------------------------------------------ shared pieces
    def _logits(self, tokens: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """tokens: rows x T (with [MASK] ids), prefix: rows x P x width -> rows x T x K logits (float32)."""
        x = torch.cat([prefix, self.tok_embed(tokens)], dim=1)
        h = self.backbone(x)[:, prefix.shape[1]:]
        return self.head(h).float()

    # ------------------------------------------------------------------ training
    def _predict(self, indices, cond):
        """Only the masked positions are scored (MaskGIT)."""
        n, T = indices.shape
        masked = random_cosine_mask(n, T, device=indices.device)
        tokens = indices.masked_fill(masked, self.mask_id)
        logits = mask_beyond_codebook(self._logits(tokens, self.cond_embed(cond, n)), self.invalid)
        return logits[masked], indices[masked]

    # ------------------------------------------------------------------ decoding
    def guidance(self, sampler: SamplerConfig, steps: int) -> torch.Tensor:
        """steps x T CFG scales: the schedule over decoding steps, times the capacity ratio r_t of each
        position with ``codebook_aware_cfg`` (which is 1 everywhere for a constant codebook)."""
        plain = dataclasses.replace(sampler, codebook_aware_cfg=False)
        excess = guidance_scales(plain, steps) - 1.0
        ratio = (codebook_capacity_ratio(self.layout.codebook_sizes) if sampler.codebook_aware_cfg
                 else torch.ones(self.layout.num_positions, dtype=torch.float64))
        return 1.0 + excess[:, None] * ratio[None, :]

    def _sample(self, n: int, cond, sampler: SamplerConfig, generator) -> torch.Tensor:
        steps = sampler.steps or self.cfg.default_steps
        if steps < 1:
            raise VQBenchError(f"masked decoding needs steps >= 1, got {steps}")
        device = self.tok_embed.weight.device
        T = self.layout.num_positions
        guided = sampler.guided and self.conditioning.kind != "none"
        prefix = self.cond_embed.sampling_prefix(cond, n, guided, device)
        scales = self.guidance(sampler, steps).to(device=device, dtype=torch.float32)
        tokens = torch.full((n, T), self.mask_id, dtype=torch.long, device=device)
        for s in range(steps):
            unknown = tokens == self.mask_id
            logits = self._logits(tokens.repeat(prefix.shape[0] // n, 1), prefix)
            if guided:
                cond_logits, uncond_logits = logits.chunk(2)
                logits = cfg_mix(cond_logits, uncond_logits, scales[s][None, :, None])
            logits = mask_beyond_codebook(logits, self.invalid)
            drawn, logprob = self._draw(logits, sampler, generator)
            drawn = torch.where(unknown, drawn, tokens)
            if s == steps - 1:
                return drawn
            # MaskGIT: keep the most confident draws; the rest are masked again for the next step
            keep_masked = torch.clamp(unknown.sum(-1) - 1, max=decoding_mask_count(s, steps, T)).clamp_min(1)
            noise_scale = self.cfg.choice_temperature * (1.0 - (s + 1) / steps)
            confidence = torch.where(unknown, logprob, torch.full_like(logprob, math.inf))
            if noise_scale > 0:
                confidence = confidence + noise_scale * _gumbel(confidence.shape, device, generator)
            remask = _ranks(confidence) < keep_masked[:, None]
            tokens = drawn.masked_fill(remask, self.mask_id)
        raise AssertionError("unreachable: the last step returns")

    @staticmethod
    def _draw(logits: torch.Tensor, sampler: SamplerConfig, generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Draw a code per position from the sampler's distribution -> (codes, their log-probabilities)."""
        if sampler.temperature <= 0:
            drawn = logits.argmax(-1)
            return drawn, logits.log_softmax(-1).gather(-1, drawn[..., None])[..., 0]
        scaled = filter_top_p(filter_top_k(logits / sampler.temperature, sampler.top_k), sampler.top_p)
        probs = scaled.softmax(-1)
        drawn = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator).view(probs.shape[:-1])
        return drawn, scaled.log_softmax(-1).gather(-1, drawn[..., None])[..., 0]


# ---------------------------------------------------------------------- presets
def _paper_layout() -> TokenLayout:
    # the paper's default generator setting: 256 channel tokens, K = 16384, ImageNet classes
    return TokenLayout.constant(256, 16384, position_kind="channel")


PAPER_CONDITIONING = Conditioning(kind="class", num_classes=1000)


@GENERATORS.register("masked-tiny", family="masked", scale="tiny", layouts=ONE_FACTOR_LAYOUTS,
                     description="2-layer bidirectional transformer with QK RMSNorm, width 32, 4 steps (tests)")
def masked_tiny() -> MaskedConfig:
    return MaskedConfig(width=32, depth=2, heads=4, mlp_dim=128, multiple_of=16, default_steps=4)


@GENERATORS.register("masked-fmnist", family="masked", scale="small", layouts=ONE_FACTOR_LAYOUTS,
                     description="4-layer masked generator, width 128, 10 steps: masked channel-wise prediction "
                                 "on CVQ, MaskGIT on VQ (default suite)")
def masked_fmnist() -> MaskedConfig:
    return MaskedConfig(width=128, depth=4, heads=4, mlp_dim=512, multiple_of=64)


def _register_paper_presets():
    # Table 1: (name, params, heads, layers, hidden, MLP dim)
    for name, params, heads, depth, width, mlp in (("b", 305e6, 16, 24, 1024, 4096),
                                                   ("l", 634e6, 16, 32, 1280, 5120),
                                                   ("h", 1.0e9, 16, 36, 1536, 6144)):
        def preset(heads=heads, depth=depth, width=width, mlp=mlp) -> MaskedConfig:
            return MaskedConfig(width=width, depth=depth, heads=heads, mlp_dim=mlp)
        GENERATORS.add(f"masked-{name}", preset, family="masked", scale="paper", layouts=ONE_FACTOR_LAYOUTS,
                       paper_layout=_paper_layout(), paper_conditioning=PAPER_CONDITIONING,
                       paper_body_params=params, recipe=MASKGEN_GENERATOR,
                       description=f"Ours-{name.upper()} (channel-wise masked generation, Table 1): {depth} layers, "
                                   f"{heads} heads, width {width}, MLP dim {mlp}; paper {params / 1e6:.0f}M "
                                   f"(without the codebook-sized embedding and head, as the paper counts)")


_register_paper_presets()
