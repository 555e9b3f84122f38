"""The quantizer interface every tokenizer's lookup implements.

A quantizer maps continuous vectors (code dimension last) to discrete indices and back:
``forward(z)`` returns the quantized vectors (with straight-through or equivalent gradients to ``z``),
the indices, and its named training losses; ``lookup(indices)`` returns the code vectors of given
indices, in the shape ``forward`` gives its quantized output. In eval mode without gradients,
``lookup(forward(z).indices)`` equals ``forward(z).quantized``: decoding indices sees what training saw.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor          # same shape as the input, straight-through gradients
    indices: torch.Tensor            # input shape without the code dimension (plus one axis per factor/level)
    losses: dict[str, torch.Tensor]


class Quantizer(nn.Module):
    """Subclasses set the three attributes and implement ``forward`` and ``lookup``."""
    codebook_size: int               # codes per index (per level for residual VQ, per sub-codebook for FQ)
    code_dim: int                    # dimension of one code vector
    num_factors: int = 1             # indices per position: residual levels or sub-codebooks

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        raise NotImplementedError

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError
