"""Finite scalar quantization (FSQ).

Mentzer, Minnen, Agustsson and Tschannen, "Finite Scalar Quantization: VQ-VAE Made Simple", ICLR
2024: each of the d code dimensions is bounded and rounded to one of L_i levels, so the codebook is
implicit, of size prod(L_i), with no codebook or commitment loss (straight-through rounding). The
levels 8-5-5-5 for about 2^10 codes are the paper's recommendation (Table 1). Implementation:
vector-quantize-pytorch's ``FSQ``.
"""
from __future__ import annotations

import math

import torch

from harness.models.quantizers.base import QuantizerOutput
from harness.models.quantizers.library import LibraryQuantizer, vector_quantize_pytorch


class FSQAdapter(LibraryQuantizer):
    def __init__(self, levels: tuple[int, ...], dim: int):
        super().__init__()
        self.fsq = vector_quantize_pytorch().FSQ(levels=list(levels), dim=dim)
        self.codebook_size, self.code_dim = math.prod(levels), dim

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        quantized, indices = self.fsq(self.as_sequence(z))
        return self.output(quantized, indices, {}, z)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        seq, positions = self.index_sequence(indices)
        return self.fsq.indices_to_codes(seq).reshape(*positions, -1)
