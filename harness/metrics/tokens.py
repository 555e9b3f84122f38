"""Token statistics over a whole split: codebook usage, code entropy/perplexity, unique ratio.

Canonical usage (design.md section 4): distinct codes used over the evaluation split divided by the
codebook size; per factor for factorized layouts (FQGAN), and per position for variable codebook
sizes (VCQ). States are code histograms, so sharded evaluations sum exactly.
"""
from __future__ import annotations

import torch

from ..contracts import EvalBatch, Metric, TokenLayout
from ..registry import METRICS


def _factor_indices(indices: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """N x T x k view of the indices (k = 1 for single-code layouts)."""
    return indices.view(indices.shape[0], layout.num_positions, layout.num_factors)


@METRICS.register("codebook_usage", description="distinct codes over the split / codebook size "
                                                "(per factor for FQ, per position for VCQ); code entropy and perplexity")
class CodebookUsage(Metric):
    name = "codebook_usage"
    requires = frozenset({"indices", "layout"})
    higher_is_better = {"codebook_usage": True, "code_entropy_bits": True, "code_perplexity": True,
                        "codebook_usage_per_position": True}

    def __init__(self):
        super().__init__()
        self.layout: TokenLayout | None = None

    def update(self, batch: EvalBatch) -> None:
        layout = batch.layout
        if self.layout is None:
            self.layout = layout
            k, t, kmax = layout.num_factors, layout.num_positions, layout.max_codebook_size
            self.add_state("per_factor", torch.zeros(k, kmax, dtype=torch.int64))
            self.add_state("per_position", torch.zeros(t, kmax, dtype=torch.int64))
        idx = _factor_indices(batch.indices, layout).cpu()
        kmax = layout.max_codebook_size
        n, t, k = idx.shape
        factor_offset = torch.arange(k).view(1, 1, k) * kmax
        self.per_factor = self.per_factor + torch.bincount(
            (idx + factor_offset).flatten(), minlength=k * kmax).view(k, kmax)
        position_offset = torch.arange(t).view(1, t, 1) * kmax
        self.per_position = self.per_position + torch.bincount(
            (idx + position_offset).flatten(), minlength=t * kmax).view(t, kmax)

    def compute(self) -> dict[str, float]:
        layout = self.layout
        hist = self.per_factor.double()
        # usage relative to the largest codebook (= the codebook for constant layouts)
        usage = (hist > 0).sum(1).double() / layout.max_codebook_size
        p = hist / hist.sum(1, keepdim=True)
        entropy = -(p * torch.where(p > 0, p.log2(), torch.zeros_like(p))).sum(1)
        out = {"codebook_usage": float(usage.mean()),
               "code_entropy_bits": float(entropy.mean()),
               "code_perplexity": float((2 ** entropy).mean())}
        if layout.num_factors > 1:
            out |= {f"codebook_usage_f{i}": float(u) for i, u in enumerate(usage)}
            self.higher_is_better = {**type(self).higher_is_better,
                                     **{f"codebook_usage_f{i}": True for i in range(layout.num_factors)}}
        if len(set(layout.codebook_sizes)) > 1:
            sizes = torch.tensor(layout.codebook_sizes, dtype=torch.float64)
            out["codebook_usage_per_position"] = float(((self.per_position > 0).sum(1) / sizes).mean())
        return out


@METRICS.register("unique_ratio", description="distinct tokens in an image / tokens per image, mean over images")
class UniqueRatio(Metric):
    name = "unique_ratio"
    requires = frozenset({"indices", "layout"})
    higher_is_better = {"unique_ratio": True}

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.float64))

    def update(self, batch: EvalBatch) -> None:
        layout = batch.layout
        idx = _factor_indices(batch.indices, layout)
        # distinct (factor, code) pairs per image: sort each row, count value changes
        keyed = (idx + torch.arange(layout.num_factors, device=idx.device) * layout.max_codebook_size).flatten(1)
        s = keyed.sort(1).values
        distinct = 1 + (s[:, 1:] != s[:, :-1]).sum(1)
        self.total = self.total + (distinct.double() / keyed.shape[1]).sum().cpu()
        self.count = self.count + keyed.shape[0]

    def compute(self) -> dict[str, float]:
        return {"unique_ratio": float(self.total / self.count)}

