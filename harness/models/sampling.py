"""Sampling building blocks shared by every generator: filtering, classifier-free guidance (CFG) and
its schedules, CodebookSize-Aware CFG and VCQ's per-position codebook masks.

CFG (Ho & Salimans 2022) mixes logits as ``l_u + w (l_c - l_u)``; w = 1 is the conditional model alone
(no guidance). The masked channel-wise paper's ``t l_c - (t - 1) l_u`` is the same mix with w = t.

Guidance schedules give a scale per generated position (AR) or decoding step (masked), from the
progress ``u = i / n`` of step i = 0..n-1:

- ``constant``: w_i = w.
- ``linear``:   w_i = 1 + (w - 1) u.
- ``cosine``:   w_i = 1 + (w - 1) (1 - cos(pi u^p)) / 2, p = ``cfg_power``. The VCQ paper's App. B lists
  "cosine, scale=s, p=q" without a formula; this is the power-cosine schedule of the MDT/RAR line of AR
  samplers that uses exactly these two knobs (it starts at 1 and reaches ~w at the end). Assumed.

CodebookSize-Aware CFG (VCQ paper Sec. 3, Eq. 4; the formula is assumed, see below) scales the guidance
by the excess capacity of position t, ``r_t = (log2 K_t - log2 K_min) / (log2 K_max - log2 K_min)``
(r_t = 1 for a constant codebook, whose ratio is 0/0), and is combined with the schedule above as

    w_t = 1 + (w - 1) * s_t * r_t          (s_t: the schedule's progress term, 1 for ``constant``)

Assumption: the paper says "w_t = 0 (no CFG) at K_min, the base scale at K_max"; in our convention
no CFG is w = 1, so r_t scales the guidance *excess* w - 1 (literally ``w * r_t`` would make position 0
fully unconditional, which is not "no CFG"). For a constant codebook r_t = 1 and this is exactly
ordinary CFG with the same schedule (tested).

VCQ (per-position codebook sizes): logits of codes >= K_t are set to -inf, in training and sampling.
Mask *after* mixing cond and uncond logits: ``-inf - (-inf)`` is NaN.
"""
from __future__ import annotations

import math

import torch

from harness.core.contracts import SamplerConfig

NEG_INF = float("-inf")


# ---------------------------------------------------------------- filtering and drawing
def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits on the last axis (ties with the k-th kept); k <= 0 keeps all."""
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]
    return logits.masked_fill(logits < kth, NEG_INF)


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering: keep the smallest set of most likely codes whose probability reaches p
    (always at least the most likely one); p >= 1 keeps all."""
    if p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = sorted_logits.softmax(-1)
    # drop a code when the mass strictly before it already reaches p
    drop_sorted = (probs.cumsum(-1) - probs) >= p
    drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, NEG_INF)


def sample_logits(logits: torch.Tensor, *, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Draw one code per row of ``logits`` (... x V) -> int64 (...). temperature 0 is greedy (argmax)."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = filter_top_p(filter_top_k(logits.float() / temperature, top_k), top_p)
    probs = logits.softmax(-1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return flat.view(probs.shape[:-1])


def sample_with(logits: torch.Tensor, sampler: SamplerConfig, generator: torch.Generator | None = None):
    """``sample_logits`` with a ``SamplerConfig``'s temperature, top-k and top-p."""
    return sample_logits(logits, temperature=sampler.temperature, top_k=sampler.top_k, top_p=sampler.top_p,
                         generator=generator)


# ---------------------------------------------------------------- classifier-free guidance
def cfg_mix(cond_logits: torch.Tensor, uncond_logits: torch.Tensor, scale) -> torch.Tensor:
    """``l_u + w (l_c - l_u)``; ``scale`` is a float or a tensor broadcasting against the logits."""
    return uncond_logits + scale * (cond_logits - uncond_logits)


def schedule_progress(schedule: str, power: float, num: int) -> torch.Tensor:
    """s_i in [0, 1] for i = 0..num-1 (float64): how much of the guidance excess step i gets."""
    u = torch.arange(num, dtype=torch.float64) / max(num, 1)
    if schedule == "constant":
        return torch.ones(num, dtype=torch.float64)
    if schedule == "linear":
        return u
    if schedule == "cosine":
        return (1 - torch.cos(math.pi * u ** power)) / 2
    raise ValueError(f"unknown cfg_schedule {schedule!r} (constant, linear or cosine)")


def codebook_capacity_ratio(codebook_sizes: tuple[int, ...] | list[int]) -> torch.Tensor:
    """r_t = (log2 K_t - log2 K_min) / (log2 K_max - log2 K_min) per position (float64); all ones for a
    constant codebook."""
    logk = torch.tensor([math.log2(k) for k in codebook_sizes], dtype=torch.float64)
    lo, hi = logk.min(), logk.max()
    if hi == lo:
        return torch.ones_like(logk)
    return (logk - lo) / (hi - lo)


def guidance_scales(sampler: SamplerConfig, num: int,
                    codebook_sizes: tuple[int, ...] | None = None) -> torch.Tensor:
    """The CFG scale w_i of each of ``num`` generation steps (float64, shape num).

    With ``sampler.codebook_aware_cfg`` and ``codebook_sizes`` (one per step: the layout's K_t for AR
    over positions), each step's guidance excess is also scaled by its capacity ratio r_t.
    """
    excess = (sampler.cfg_scale - 1.0) * schedule_progress(sampler.cfg_schedule, sampler.cfg_power, num)
    if sampler.codebook_aware_cfg and codebook_sizes is not None:
        if len(codebook_sizes) != num:
            raise ValueError(f"codebook-aware CFG needs one codebook size per step: got {len(codebook_sizes)} "
                             f"for {num} steps")
        excess = excess * codebook_capacity_ratio(codebook_sizes)
    return 1.0 + excess


# ---------------------------------------------------------------- VCQ per-position codebooks
def codebook_invalid_mask(codebook_sizes: tuple[int, ...] | list[int], vocab: int,
                          device=None) -> torch.Tensor | None:
    """Bool T x vocab, True where code >= K_t; None when every position uses the whole vocabulary."""
    if all(k >= vocab for k in codebook_sizes):
        return None
    sizes = torch.tensor(codebook_sizes, device=device)
    return torch.arange(vocab, device=device)[None, :] >= sizes[:, None]


def register_invalid_codes(module: torch.nn.Module, layout, vocab: int) -> None:
    """``module.invalid``: the T x vocab mask of codes >= K_t as a non-persistent buffer (empty when
    every position uses the whole vocabulary), so it follows the module across devices."""
    invalid = codebook_invalid_mask(layout.codebook_sizes, vocab)
    module.register_buffer("invalid", invalid if invalid is not None else torch.zeros(0, dtype=torch.bool),
                           persistent=False)


def mask_beyond_codebook(logits: torch.Tensor, invalid: torch.Tensor, positions: int | slice = slice(None)
                         ) -> torch.Tensor:
    """Set logits of codes >= K_t to -inf. ``invalid``: the T x V mask of ``register_invalid_codes``
    (empty: every position uses the whole vocabulary, nothing to mask); ``invalid[positions]`` must
    broadcast against ``logits`` (... x T x V for all positions, ... x V for one position t)."""
    if invalid.numel() == 0:
        return logits
    return logits.masked_fill(invalid[positions], NEG_INF)


# ---------------------------------------------------------------- the next-token loop (AR, CAR)
def decode_next_token(backbone, prefix: torch.Tensor, n: int, layout, *, embed, head, invalid: torch.Tensor,
                      sampler: SamplerConfig, generator: torch.Generator | None) -> torch.Tensor:
    """Sample ``layout.num_positions`` codes one after another after ``prefix`` (n rows, or 2n with
    guidance: conditional rows first). ``embed`` maps codes to backbone inputs, ``head`` a state to
    float logits; codes beyond K_t (``invalid``, see ``mask_beyond_codebook``) are never drawn. With ``sampler.kv_cache`` each step feeds
    one token through the cache; without it the whole sequence is recomputed (the reference)."""
    T = layout.num_positions
    P, rows = prefix.shape[1], prefix.shape[0]
    guided = rows == 2 * n
    scales = guidance_scales(sampler, T, layout.codebook_sizes).tolist()
    out = torch.zeros(n, T, dtype=torch.long, device=prefix.device)
    cache = backbone.new_cache(rows, P + T - 1) if sampler.kv_cache else None
    for t in range(T):
        if cache is not None:
            x = prefix if t == 0 else embed(out[:, t - 1:t]).repeat(rows // n, 1, 1)
            h = backbone(x, cache=cache, start_pos=0 if t == 0 else P + t - 1)
        else:
            h = backbone(torch.cat([prefix, embed(out[:, :t]).repeat(rows // n, 1, 1)], dim=1))
        logits = head(h[:, -1])
        if guided:
            cond_logits, uncond_logits = logits.chunk(2)
            logits = cfg_mix(cond_logits, uncond_logits, scales[t])
        out[:, t] = sample_with(mask_beyond_codebook(logits, invalid, t), sampler, generator)
    return out
