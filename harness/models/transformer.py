"""Llama-style transformer blocks shared by every generator (AR, FAR, CAR, masked).

Architecture of LlamaGen (Sun et al. 2024, "Autoregressive Model Beats Diffusion"), which the VCQ
paper's AR-B/L/XL and FQGAN's FAR follow: pre-norm blocks with RMSNorm, SwiGLU MLP, rotary position
embeddings (1D, over sequence positions), bias-free linear layers. ``qk_norm`` adds RMSNorm on
queries and keys per head (the masked channel-wise generation paper's bidirectional transformer).

API (what the generator modules use)::

    net = Transformer(width=256, depth=4, heads=4, mlp_ratio=4.0, causal=True, qk_norm=False)
    h = net(x)                                   # x: N x L x width -> N x L x width (final RMSNorm applied)

    cache = net.new_cache(batch=N, max_len=L_total)        # causal incremental decoding
    h = net(prefix, cache=cache, start_pos=0)               # prefill positions 0..P-1
    h = net(x_next, cache=cache, start_pos=P)               # one (or more) new positions
    # equals net(torch.cat([prefix, x_next], 1))[:, P:] up to float rounding

``start_pos`` is the sequence position of ``x[:, 0]``; it sets the rotary phases and, with a cache, where
the new keys/values are written. Without a cache and ``start_pos=0`` the call is the ordinary full
forward (causal mask when ``causal``). Bidirectional stacks (``causal=False``) may use a cache too (all
cached positions are visible), but generators here recompute them in full.

``mlp_hidden`` follows LlamaGen: ``hidden = multiple_of * ceil(int(2 * mlp_ratio * width / 3) / multiple_of)``
(SwiGLU's two input projections keep the parameter count of a ratio-``mlp_ratio`` GELU MLP).
``init_weights`` applies LlamaGen's initialisation (normal, std 0.02, for linear and embedding weights).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # normalise in float32: bf16 squares lose too much precision
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def mlp_hidden(width: int, mlp_ratio: float, multiple_of: int = 256) -> int:
    hidden = int(2 * mlp_ratio * width / 3)
    return multiple_of * math.ceil(hidden / multiple_of)


class SwiGLU(nn.Module):
    def __init__(self, width: int, hidden: int, dropout: float = 0.0):
        super().__init__()
        self.w1 = nn.Linear(width, hidden, bias=False)   # gate
        self.w3 = nn.Linear(width, hidden, bias=False)   # value
        self.w2 = nn.Linear(hidden, width, bias=False)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.w2(F.silu(self.w1(x)) * self.w3(x)))


class RotaryEmbedding(nn.Module):
    """1D RoPE (rotate-half convention) computed on the fly for the positions asked for."""

    def __init__(self, head_dim: int, base: float = 10000.0):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim))
        self.register_buffer("inv_freq", inv_freq, persistent=False)

    def forward(self, start_pos: int, length: int, device) -> tuple[torch.Tensor, torch.Tensor]:
        pos = torch.arange(start_pos, start_pos + length, device=device, dtype=torch.float32)
        freqs = torch.outer(pos, self.inv_freq.to(device))
        angles = torch.cat([freqs, freqs], dim=-1)          # L x head_dim
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: N x heads x L x head_dim; cos/sin: L x head_dim."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    return (x.float() * cos + rotated.float() * sin).type_as(x)


@dataclass
class LayerCache:
    keys: torch.Tensor      # N x heads x max_len x head_dim
    values: torch.Tensor


class KVCache:
    """Pre-allocated keys/values of every layer for incremental decoding (one per sampling call)."""

    def __init__(self, layers: list[LayerCache]):
        self.layers = layers

    @property
    def max_len(self) -> int:
        return self.layers[0].keys.shape[2] if self.layers else 0


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, causal: bool, qk_norm: bool = False, dropout: float = 0.0,
                 norm_eps: float = 1e-5):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads, self.head_dim, self.causal = heads, width // heads, causal
        self.qkv = nn.Linear(width, 3 * width, bias=False)
        self.proj = nn.Linear(width, width, bias=False)
        self.q_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else nn.Identity()
        self.k_norm = RMSNorm(self.head_dim, norm_eps) if qk_norm else nn.Identity()
        self.dropout = dropout
        self.proj_dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor], cache: LayerCache | None,
                start_pos: int) -> torch.Tensor:
        n, length, width = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k = self.q_norm(q), self.k_norm(k)
        q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        end = start_pos + length
        if cache is not None:
            cache.keys[:, :, start_pos:end] = k
            cache.values[:, :, start_pos:end] = v
            # a float32 cache under bf16 autocast: attend in the queries' dtype
            k, v = cache.keys[:, :, :end].to(q.dtype), cache.values[:, :, :end].to(q.dtype)
        mask, is_causal = None, False
        if self.causal and length > 1:
            if end == length:
                is_causal = True              # the whole sequence: the fused causal path
            else:                             # a chunk after cached positions: query i sees keys <= start_pos + i
                key_pos = torch.arange(end, device=x.device)
                query_pos = torch.arange(start_pos, end, device=x.device)
                mask = key_pos[None, :] <= query_pos[:, None]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=is_causal,
                                             dropout_p=self.dropout if self.training else 0.0)
        return self.proj_dropout(self.proj(out.transpose(1, 2).reshape(n, length, width)))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float, causal: bool, qk_norm: bool = False,
                 dropout: float = 0.0, multiple_of: int = 256, norm_eps: float = 1e-5):
        super().__init__()
        self.attn_norm = RMSNorm(width, norm_eps)
        self.attn = Attention(width, heads, causal, qk_norm, dropout, norm_eps)
        self.mlp_norm = RMSNorm(width, norm_eps)
        self.mlp = SwiGLU(width, mlp_hidden(width, mlp_ratio, multiple_of), dropout)

    def forward(self, x, rope, cache: LayerCache | None = None, start_pos: int = 0):
        x = x + self.attn(self.attn_norm(x), rope, cache, start_pos)
        return x + self.mlp(self.mlp_norm(x))


class Transformer(nn.Module):
    """A stack of ``depth`` Llama blocks plus the final RMSNorm (input and output: N x L x width).

    ``dropout`` is LlamaGen's attention/residual/FFN dropout (active in train mode only);
    ``multiple_of`` rounds the SwiGLU hidden size (LlamaGen: 256; tiny test models may use 8 or 16).
    """

    def __init__(self, width: int, depth: int, heads: int, mlp_ratio: float = 4.0, causal: bool = True,
                 qk_norm: bool = False, dropout: float = 0.0, multiple_of: int = 256,
                 rope_base: float = 10000.0, norm_eps: float = 1e-5):
        super().__init__()
        self.width, self.depth, self.heads, self.causal = width, depth, heads, causal
        self.rope = RotaryEmbedding(width // heads, rope_base)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_ratio, causal, qk_norm, dropout, multiple_of, norm_eps)
                                    for _ in range(depth))
        self.norm = RMSNorm(width, norm_eps)

    def new_cache(self, batch: int, max_len: int, device=None, dtype=None) -> KVCache:
        ref = self.norm.weight
        shape = (batch, self.heads, max_len, self.width // self.heads)
        device, dtype = device or ref.device, dtype or ref.dtype
        return KVCache([LayerCache(torch.zeros(shape, device=device, dtype=dtype),
                                   torch.zeros(shape, device=device, dtype=dtype)) for _ in self.blocks])

    def forward(self, x: torch.Tensor, cache: KVCache | None = None, start_pos: int = 0) -> torch.Tensor:
        if cache is not None and start_pos + x.shape[1] > cache.max_len:
            raise ValueError(f"positions up to {start_pos + x.shape[1]} exceed the cache length {cache.max_len}")
        rope = self.rope(start_pos, x.shape[1], x.device)
        for i, block in enumerate(self.blocks):
            x = block(x, rope, cache.layers[i] if cache is not None else None, start_pos)
        return self.norm(x)


def init_weights(module: nn.Module, std: float = 0.02) -> None:
    """LlamaGen's initialisation: N(0, std) for linear and embedding weights, zero biases."""
    for m in module.modules():
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=std)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=std)
