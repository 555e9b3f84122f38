"""Factorized lookup of FQGAN: k independent sub-codebooks per position.

Bai et al., "Factorized Visual Tokenization and Generation" (FQGAN), 2024, Sec. 3.2: the encoder
feature of each position is turned into k vectors (one per adapter, in the tokenizer), and vector i
is quantized against sub-codebook i only (VQ with LlamaGen's l2-normalized codes), so every position
holds k codes. The disentanglement regularizer (Eq. 7) is the squared cosine between each pair of a
position's sub-codes, averaged over positions and summed over pairs; its weight lambda1 = 0.1 is the
paper's.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.models.quantizers.base import Quantizer, QuantizerOutput
from harness.models.quantizers.vq import VectorQuantizer


class FactorizedQuantizer(Quantizer):
    """``forward(z: ... x k x D)``: indices ... x k, quantized and ``lookup`` ... x k x D.

    Sub-codebook i is the child module named ``str(i)``, so parameters keep the names a ModuleList of
    k VectorQuantizers has (``0.embedding.weight``, ...).
    """

    def __init__(self, num_factors: int, codebook_size: int, dim: int, beta: float = 0.25,
                 l2_norm: bool = True, disentangle_weight: float = 0.0):
        super().__init__()
        self.num_factors, self.codebook_size, self.code_dim = num_factors, codebook_size, dim
        self.disentangle_weight = disentangle_weight
        for i in range(num_factors):
            self.add_module(str(i), VectorQuantizer(codebook_size, dim, beta, l2_norm))

    def sub_codebooks(self) -> list[VectorQuantizer]:
        return list(self.children())

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        parts = [vq(z[..., i, :]) for i, vq in enumerate(self.sub_codebooks())]
        losses = {f"{name}_f{i}": v for i, p in enumerate(parts) for name, v in p.losses.items()}
        if self.num_factors > 1 and self.disentangle_weight > 0:
            losses["disentangle"] = self.disentangle_weight * disentangle_loss([p.quantized for p in parts])
        return QuantizerOutput(torch.stack([p.quantized for p in parts], dim=-2),
                               torch.stack([p.indices for p in parts], dim=-1), losses)

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return torch.stack([vq.lookup(indices[..., i]) for i, vq in enumerate(self.sub_codebooks())], dim=-2)


def disentangle_loss(codes: list[torch.Tensor]) -> torch.Tensor:
    """Mean over positions of the squared cosine between each pair of a position's sub-codes (Eq. 7)."""
    unit = [F.normalize(c.flatten(0, -2), dim=-1) for c in codes]
    total = 0.0
    for i in range(len(unit)):
        for j in range(i + 1, len(unit)):
            total = total + (unit[i] * unit[j]).sum(-1).pow(2).mean()
    return total
