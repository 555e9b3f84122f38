"""Channel-wise lookup of CVQ: one code per latent channel map.

The CVQ/CAR paper ("Channel-wise Vector Quantization", Sec. 3.1 and App. B): the encoder's
C x H1 x W1 latent is read as C tokens, channel c's H1*W1 map flattened to one vector and matched to
its nearest code by Frobenius (= flattened L2) distance, with VQ-VAE's codebook and commitment losses
(beta = 0.25) and a straight-through estimator. Under nested channel dropout only the first k
channels are active: their codes are kept, the others are zeroed, and the quantization losses cover
the active channels only; every channel is still tokenized.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.models.quantizers.base import QuantizerOutput
from harness.models.quantizers.vq import VectorQuantizer


class ChannelQuantizer(VectorQuantizer):
    def __init__(self, codebook_size: int, map_size: int, beta: float = 0.25):
        super().__init__(codebook_size, map_size, beta)

    def forward(self, z: torch.Tensor, active_channels: int | None = None) -> QuantizerOutput:
        """``z``: N x C x (H1*W1) channel maps; ``active_channels``: keep the first k (default: all C)."""
        c = z.shape[1]
        k = c if active_channels is None else active_channels
        q = super().forward(z[:, :k])                             # losses over active channels only
        if k == c:
            return q
        with torch.no_grad():
            indices = super().forward(z).indices
        return QuantizerOutput(F.pad(q.quantized, (0, 0, 0, c - k)), indices, q.losses)
