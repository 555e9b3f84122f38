"""Nearest-code search with a bounded-memory distance matrix.

``nearest_code`` never materializes more than ``max_elements`` entries of the M x K distance matrix:
rows are processed in chunks, so K = 262,144 codes cost the same peak memory as K = 1,024 with
proportionally smaller chunks.
"""
from __future__ import annotations

import torch

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
