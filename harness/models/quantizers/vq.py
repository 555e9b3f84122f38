"""Nearest-code vector quantization.

VQ-VAE (van den Oord, Vinyals and Kavukcuoglu, "Neural Discrete Representation Learning", NeurIPS 2017,
Eq. 3): each vector takes its nearest code; the codebook loss ||sg(z) - e||^2 moves codes to the
encoder outputs, the commitment loss beta * ||z - sg(e)||^2 keeps the encoder near its codes, and the
straight-through estimator copies the decoder's gradient to z. beta = 0.25 as in VQ-VAE and VQGAN
(Esser, Rombach and Ommer, CVPR 2021); codes start uniform in [-1/K, 1/K] as in VQGAN's released code
(taming-transformers).

Options:
- ``l2_norm``: inputs and codes are l2-normalized before the lookup, i.e. cosine-similarity matching
  (ViT-VQGAN, Yu et al., "Vector-quantized Image Modeling with Improved VQGAN", ICLR 2022; used by
  LlamaGen, Sun et al., "Autoregressive Model Beats Diffusion", 2024).
- ``rotation_trick``: the gradient reaches z through the rotation and rescaling that map z onto its
  code instead of straight through (Fifty et al., "Restructuring Vector Quantization with the
  Rotation Trick", 2024).
- ``num_codes`` in ``forward``: per-vector limits on the searched prefix of the codebook (VCQ).
- ``init_from_vectors``: codes set to encoder outputs before training (the codebook initialisation of
  k-means-initialised VQ, Zeghidour et al., SoundStream 2021, without the k-means iterations). Codes
  at +-1/K move at most the learning rate per Adam step, so against encoder outputs of norm ~2-8 they
  need thousands of steps to reach the data; a short run meanwhile settles on the few codes that
  moved first (measured for CVQ on Fashion-MNIST: README, "Codebook collapse").
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from harness.models.quantizers.base import Quantizer, QuantizerOutput
from harness.models.quantizers.lookup import nearest_code

# "uniform": +-1/K as taming-transformers; "data": encoder outputs of the first training batches
CodebookInit = Literal["uniform", "data"]
# The Fashion-MNIST presets cvq-fmnist*, vq-fmnist-d49 and vcq-*-fmnist train 200 steps: too few
# for +-1/K codes to reach their encoder outputs, so they start from data (README, "Codebook collapse")
FMNIST_CODEBOOK_INIT: CodebookInit = "data"


class VectorQuantizer(Quantizer):
    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, l2_norm: bool = False,
                 rotation_trick: bool = False):
        super().__init__()
        self.codebook_size, self.code_dim, self.beta, self.l2_norm = codebook_size, dim, beta, l2_norm
        self.rotation_trick = rotation_trick
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if l2_norm:
            self.embedding.weight.data = F.normalize(self.embedding.weight.data, dim=-1)

    @torch.no_grad()
    def init_from_vectors(self, vectors: torch.Tensor, generator: torch.Generator) -> None:
        """Set the codes to distinct rows of ``vectors`` (M x D) drawn with ``generator``; with fewer
        rows than codes, rows repeat with Gaussian noise of 1 % of their spread so no two codes tie."""
        vectors = vectors.detach().float().reshape(-1, self.code_dim)
        if self.l2_norm:
            vectors = F.normalize(vectors, dim=-1)
        k, m = self.codebook_size, len(vectors)
        order = torch.cat([torch.randperm(m, generator=generator) for _ in range(-(-k // m))])[:k]
        codes = vectors[order]
        if m < k:
            codes[m:] += 0.01 * vectors.std() * torch.randn(codes[m:].shape, generator=generator).to(codes.device)
        self.embedding.weight.copy_(F.normalize(codes, dim=-1) if self.l2_norm else codes)

    def codebook(self) -> torch.Tensor:
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.codebook())

    def forward(self, z: torch.Tensor, num_codes: torch.Tensor | None = None) -> QuantizerOutput:
        """``z``: ... x D (code dimension last); ``num_codes``: optional per-vector limits, shape z.shape[:-1]."""
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
        flat = z.reshape(-1, self.code_dim)
        limits = num_codes.reshape(-1) if num_codes is not None else None
        indices = nearest_code(flat, self.codebook(), limits).view(z.shape[:-1])
        z_q = self.lookup(indices)
        losses = {"codebook": F.mse_loss(z_q, z.detach()),
                  "commitment": self.beta * F.mse_loss(z, z_q.detach())}
        if not z.requires_grad:     # no graph: the estimators below would only add rounding error
            quantized = z_q
        elif self.rotation_trick:
            quantized = rotate_to(z, z_q.detach())
        else:
            quantized = z + (z_q - z).detach()
        return QuantizerOutput(quantized, indices, losses)


def rotate_to(z: torch.Tensor, e: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """The rotation trick (Fifty et al., 2024): the value is e, the gradient to z passes through the
    rotation R and scale ||e|| / ||z|| that map z onto e, both treated as constants.

    R = I - 2 r r^T + 2 q u^T with u = z/||z||, q = e/||e||, r = (u + q)/||u + q||.
    """
    z_norm, e_norm = z.norm(dim=-1, keepdim=True), e.norm(dim=-1, keepdim=True)
    u, q = (z / (z_norm + eps)).detach(), e / (e_norm + eps)
    r = F.normalize(u + q, dim=-1, eps=eps)
    rz = z - 2 * r * (r * z).sum(-1, keepdim=True) + 2 * q * (u * z).sum(-1, keepdim=True)
    return (e_norm / (z_norm + eps)).detach() * rz
