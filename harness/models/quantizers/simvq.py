"""SimVQ: a frozen random codebook reparameterized by one learned linear layer.

Zhu et al., "Addressing Representation Collapse in Vector Quantized Models with One Linear Layer",
2024: the codes are W C with C a frozen random basis and W learned, so every code moves with each
update and the codebook does not collapse to a few used codes. Implementation (and its loss weights):
vector-quantize-pytorch's ``SimVQ``.
"""
from __future__ import annotations

import torch

from harness.models.quantizers.base import QuantizerOutput
from harness.models.quantizers.library import LibraryQuantizer, vector_quantize_pytorch


class SimVQAdapter(LibraryQuantizer):
    def __init__(self, codebook_size: int, dim: int):
        super().__init__()
        self.simvq = vector_quantize_pytorch().SimVQ(dim=dim, codebook_size=codebook_size)
        self.codebook_size, self.code_dim = codebook_size, dim

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        quantized, indices, commit_loss = self.simvq(self.as_sequence(z))
        return self.output(quantized, indices, {"simvq_commit": commit_loss}, z)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        seq, positions = self.index_sequence(indices)
        return self.simvq.indices_to_codes(seq).reshape(*positions, -1)
