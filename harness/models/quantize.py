"""Nearest-code vector quantization with a bounded-memory lookup.

``nearest_code`` never materializes more than ``max_elements`` entries of the M x K distance matrix:
rows are processed in chunks, so K = 262,144 codes cost the same peak memory as K = 1,024 with
proportionally smaller chunks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_MAX_ELEMENTS = 1 << 24   # 64 MiB of fp32 distances per chunk


@torch.no_grad()
def nearest_code(z: torch.Tensor, codebook: torch.Tensor, num_codes: int | torch.Tensor | None = None,
                 max_elements: int = DEFAULT_MAX_ELEMENTS) -> torch.Tensor:
    """Index of the nearest (squared L2) row of ``codebook`` for each row of ``z`` (M x D).

    ``num_codes`` restricts the search to the first entries: an int for all rows, or a length-M
    tensor of per-row limits (VCQ's shared codebook, where position t sees only the first K_t codes).
    """
    per_row = torch.is_tensor(num_codes)
    if num_codes is not None and not per_row:
        codebook = codebook[:num_codes]
    z, codebook = z.float(), codebook.float()
    c_sq = torch.linalg.vector_norm(codebook, dim=1).square()   # no K x D temporary
    code_ids = torch.arange(codebook.shape[0], device=z.device)
    rows = max(1, max_elements // codebook.shape[0])
    out = torch.empty(z.shape[0], dtype=torch.long, device=z.device)
    for start in range(0, z.shape[0], rows):
        chunk = z[start:start + rows]
        # ||z||^2 is constant per row and does not change the argmin
        dist = torch.addmm(c_sq, chunk, codebook.t(), beta=1.0, alpha=-2.0)
        if per_row:
            dist.masked_fill_(code_ids[None] >= num_codes[start:start + rows, None], float("inf"))
        out[start:start + rows] = dist.argmin(1)
    return out


@dataclass
class QuantizerOutput:
    quantized: torch.Tensor          # same shape as the input, straight-through gradients
    indices: torch.Tensor            # input shape without the code dimension
    losses: dict[str, torch.Tensor]


class VectorQuantizer(nn.Module):
    """Codebook with the VQ-VAE codebook and commitment losses and a straight-through estimator.

    ``l2_norm`` (LlamaGen) normalizes inputs and codes before the lookup, i.e. cosine-similarity
    matching; the codebook loss is ||sg(z) - e||^2 and the commitment loss beta * ||z - sg(e)||^2
    (van den Oord et al. 2017; beta = 0.25 in VQGAN/LlamaGen).
    """

    def __init__(self, codebook_size: int, dim: int, beta: float = 0.25, l2_norm: bool = False,
                 rotation_trick: bool = False):
        super().__init__()
        self.codebook_size, self.dim, self.beta, self.l2_norm = codebook_size, dim, beta, l2_norm
        self.rotation_trick = rotation_trick
        self.embedding = nn.Embedding(codebook_size, dim)
        nn.init.uniform_(self.embedding.weight, -1.0 / codebook_size, 1.0 / codebook_size)
        if l2_norm:
            self.embedding.weight.data = F.normalize(self.embedding.weight.data, dim=-1)

    def codebook(self) -> torch.Tensor:
        w = self.embedding.weight
        return F.normalize(w, dim=-1) if self.l2_norm else w

    def lookup(self, indices: torch.Tensor) -> torch.Tensor:
        return F.embedding(indices, self.codebook())

    def forward(self, z: torch.Tensor, num_codes: torch.Tensor | None = None) -> QuantizerOutput:
        """``z``: ... x D (code dimension last); ``num_codes``: optional per-vector limits, shape z.shape[:-1]."""
        if self.l2_norm:
            z = F.normalize(z, dim=-1)
        flat = z.reshape(-1, self.dim)
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
