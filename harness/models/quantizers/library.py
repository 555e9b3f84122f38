"""Shared plumbing for the quantizers taken from vector-quantize-pytorch (Phil Wang, lucidrains).

The library reads 4-D inputs as channel-first images, so inputs (N x ... x D, code dimension last)
are flattened to sequences N x L x D around each call and the outputs reshaped back. Without a graph
the adapters return ``lookup(indices)`` itself, so decoding indices sees exactly what eval saw.
"""
from __future__ import annotations

import torch

from harness.core.errors import MissingWeightsError
from harness.models.quantizers.base import Quantizer, QuantizerOutput


def vector_quantize_pytorch():
    try:
        import vector_quantize_pytorch as library
    except ImportError:
        raise MissingWeightsError("the FSQ/LFQ/SimVQ/RVQ baselines need the PyPI package "
                                  "'vector-quantize-pytorch' (pip install vector-quantize-pytorch, or run "
                                  "`bash scripts/setup.sh`)") from None
    return library


class LibraryQuantizer(Quantizer):
    """Base of the adapters: ``as_sequence`` before the library call, ``output`` after it."""
    level_axis = False               # indices carry a trailing axis of residual levels (RVQ)

    @staticmethod
    def as_sequence(z: torch.Tensor) -> torch.Tensor:
        """N x ... x D -> N x L x D."""
        return z.reshape(z.shape[0], -1, z.shape[-1])

    def output(self, quantized: torch.Tensor, indices: torch.Tensor, losses: dict[str, torch.Tensor],
               z: torch.Tensor) -> QuantizerOutput:
        """Library outputs (N x L x D, N x L [x levels]) in the shape of the input ``z``."""
        positions = z.shape[:-1]
        quantized = quantized.reshape(*positions, *quantized.shape[2:])
        indices = indices.reshape(*positions, *indices.shape[2:]).long()
        if not z.requires_grad:     # no graph: return the codes themselves, as decode(indices) sees them
            quantized = self.lookup(indices)
        return QuantizerOutput(quantized, indices, losses)

    def index_sequence(self, indices: torch.Tensor) -> tuple[torch.Tensor, torch.Size]:
        """N x ... [x levels] -> (N x L [x levels], the position shape N x ...)."""
        positions = indices.shape[:-1] if self.level_axis else indices.shape
        return indices.reshape(indices.shape[0], -1, *indices.shape[len(positions):]), positions
