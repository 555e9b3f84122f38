"""Pre-norm Vision Transformer blocks for the 1D (TiTok-style) tokenizers."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Attention(nn.Module):
    def __init__(self, width: int, heads: int, position_bias: tuple[int, float] | None = None):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        # (sequence length, std): a learned logit per head and (query, key) position pair, drawn at random,
        # so that every position reads its own mix of positions from the first step
        if position_bias is not None:
            length, std = position_bias
            self.position_bias = nn.Parameter(std * torch.randn(heads, length, length))
        else:
            self.position_bias = None

    def forward(self, x):
        n, t, c = x.shape
        q, k, v = self.qkv(x).view(n, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=self.position_bias)
        return self.proj(out.transpose(1, 2).reshape(n, t, c))


class Block(nn.Module):
    def __init__(self, width: int, heads: int, mlp_ratio: float = 4.0,
                 position_bias: tuple[int, float] | None = None):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(width), Attention(width, heads, position_bias)
        self.norm2 = nn.LayerNorm(width)
        hidden = int(width * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, width))

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class Transformer(nn.Module):
    def __init__(self, width: int, depth: int, heads: int, position_bias: tuple[int, float] | None = None):
        """position_bias: (sequence length, std) gives every attention layer a random learned position-pair
        logit (Attention); None: none, as in TiTok."""
        super().__init__()
        self.blocks = nn.Sequential(*[Block(width, heads, position_bias=position_bias) for _ in range(depth)])
        self.norm = nn.LayerNorm(width)

    def forward(self, x):
        return self.norm(self.blocks(x))


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """N x C x H x W -> N x (H/p * W/p) x (C * p * p)."""
    n, c, h, w = x.shape
    return x.view(n, c, h // p, p, w // p, p).permute(0, 2, 4, 1, 3, 5).reshape(n, (h // p) * (w // p), c * p * p)


def unpatchify(tokens: torch.Tensor, p: int, c: int, h: int, w: int) -> torch.Tensor:
    n = tokens.shape[0]
    return tokens.view(n, h // p, w // p, c, p, p).permute(0, 3, 1, 4, 2, 5).reshape(n, c, h, w)
