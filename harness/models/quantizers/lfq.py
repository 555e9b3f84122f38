"""Lookup-free quantization (LFQ).

Yu et al., "Language Model Beats Diffusion: Tokenizer is Key to Visual Generation" (MAGVIT-v2), ICLR
2024, Sec. 3.1: the codebook is the set {-1, 1}^d, so each of the d = log2 K dimensions is quantized
by its sign, the index is the binary number the signs spell, and an entropy penalty (low per-sample
entropy, high codebook-usage entropy) keeps the codes in use. The entropy weight 0.1 is
vector-quantize-pytorch's default; the commitment weight 0.25 is VQ-VAE's beta. Implementation:
vector-quantize-pytorch's ``LFQ``.
"""
from __future__ import annotations

import torch

from harness.models.quantizers.base import QuantizerOutput
from harness.models.quantizers.library import LibraryQuantizer, vector_quantize_pytorch


class LFQAdapter(LibraryQuantizer):
    def __init__(self, codebook_size: int, dim: int, entropy_weight: float, commitment_weight: float):
        super().__init__()
        self.lfq = vector_quantize_pytorch().LFQ(dim=dim, codebook_size=codebook_size,
                                                 entropy_loss_weight=entropy_weight,
                                                 commitment_loss_weight=commitment_weight)
        self.codebook_size, self.code_dim = codebook_size, dim

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        quantized, indices, aux_loss = self.lfq(self.as_sequence(z))
        return self.output(quantized, indices, {"lfq_entropy_commit": aux_loss}, z)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        seq, positions = self.index_sequence(indices)
        return self.lfq.indices_to_codes(seq).reshape(*positions, -1)
