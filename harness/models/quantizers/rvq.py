"""Residual vector quantization (RVQ).

Lee et al., "Autoregressive Image Generation using Residual Quantization" (RQ-VAE), CVPR 2022,
Sec. 3.1: ``depth`` codebooks quantize in turn the residual the previous levels left, and a position's
code vector is the sum of its ``depth`` codes; indices carry a trailing axis of levels, so the token
layout has ``num_factors = depth``. Implementation (EMA codebooks and commitment weight):
vector-quantize-pytorch's ``ResidualVQ``.
"""
from __future__ import annotations

import torch

from harness.models.quantizers.base import QuantizerOutput
from harness.models.quantizers.library import LibraryQuantizer, vector_quantize_pytorch


class ResidualVQAdapter(LibraryQuantizer):
    level_axis = True

    def __init__(self, codebook_size: int, dim: int, depth: int):
        super().__init__()
        self.rvq = vector_quantize_pytorch().ResidualVQ(dim=dim, num_quantizers=depth, codebook_size=codebook_size)
        self.codebook_size, self.code_dim, self.num_factors = codebook_size, dim, depth

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        quantized, indices, commit_losses = self.rvq(self.as_sequence(z))
        return self.output(quantized, indices, {"rvq_commit": commit_losses.sum()}, z)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        seq, positions = self.index_sequence(indices)
        return self.rvq.get_output_from_indices(seq).reshape(*positions, -1)
