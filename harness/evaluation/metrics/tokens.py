"""Token statistics: codebook usage, code entropy/perplexity and unique ratio.

Canonical codebook usage: distinct codes used over the whole evaluation split / codebook size, from a
histogram of codes summed over batches (and over DDP ranks by ``sync``), so sharding is exact.

- Factorized layouts (FQGAN, indices N x T x k): one histogram per factor; ``codebook_usage`` is the
  mean over factors and ``codebook_usage_f{i}`` the usage of factor i.
- Variable codebook sizes (VCQ, K_t per position): ``codebook_usage`` counts the union of codes over
  positions relative to the largest K, and ``codebook_usage_per_position`` is the mean over positions
  of (distinct codes at t) / K_t.
- ``code_entropy_bits``: Shannon entropy (log2) of the empirical code distribution of the split (mean
  over factors); ``code_perplexity`` = 2 ** ``code_entropy_bits``, the effective number of codes.

Unique ratio: per image, distinct tokens / tokens per image (distinct (factor, code) pairs / (T * k)
for factorized layouts), averaged over images.

Indices are read as N x T x k (any shape with T * k codes per image); codes outside [0, K_t) are an
error rather than silently landing in another position's histogram bin.
"""
from __future__ import annotations

import torch

from harness.core.contracts import EvalBatch, Metric, TokenLayout
from harness.core.errors import VQBenchError
from harness.core.registry import METRICS


def factor_indices(indices: torch.Tensor, layout: TokenLayout) -> torch.Tensor:
    """Validated N x T x k int64 CPU view of a batch of indices."""
    t, k = layout.num_positions, layout.num_factors
    n = indices.shape[0]
    if indices.numel() != n * t * k:
        raise VQBenchError(f"indices of shape {tuple(indices.shape)} do not match the layout "
                           f"(expected N x {' x '.join(map(str, layout.index_shape))})")
    idx = indices.detach().to("cpu", torch.int64).reshape(n, t, k)
    sizes = torch.tensor(layout.codebook_sizes).view(1, t, 1)
    if idx.numel() and (idx.min() < 0 or (idx >= sizes).any()):
        raise VQBenchError(f"indices outside the codebook: range [{int(idx.min())}, {int(idx.max())}] "
                           f"for codebook sizes {sorted(set(layout.codebook_sizes))}")
    return idx


def entropy_bits(hist: torch.Tensor) -> torch.Tensor:
    """Entropy (bits) of each row of a histogram (0 log 0 = 0)."""
    p = hist.double() / hist.sum(-1, keepdim=True).clamp_min(1)
    return -(p * torch.where(p > 0, p.log2(), torch.zeros_like(p))).sum(-1)


@METRICS.register("codebook_usage", description="distinct codes over the split / codebook size (per factor for "
                                                "FQ, per position for VCQ); code entropy and perplexity")
class CodebookUsage(Metric):
    """States (allocated at the first batch, sized by its layout): ``codes`` k x K_max histogram, and
    for variable K ``codes_per_position`` k x T x K_max. Under DDP every rank must therefore see at
    least one batch before ``sync``."""
    name = "codebook_usage"
    requires = frozenset({"indices", "layout"})
    higher_is_better = {"codebook_usage": True, "code_entropy_bits": True, "code_perplexity": True,
                        "codebook_usage_per_position": True}

    def __init__(self):
        super().__init__()
        self.layout: TokenLayout | None = None

    @classmethod
    def outputs(cls, layout: TokenLayout | None) -> tuple[str, ...]:
        names = ("codebook_usage", "code_entropy_bits", "code_perplexity")
        if layout is None:
            return names
        names += tuple(f"codebook_usage_f{i}" for i in range(layout.num_factors)) if layout.num_factors > 1 else ()
        return names + (("codebook_usage_per_position",) if len(set(layout.codebook_sizes)) > 1 else ())

    def _start(self, layout: TokenLayout) -> None:
        self.layout = layout
        k, t, kmax = layout.num_factors, layout.num_positions, layout.max_codebook_size
        self.add_state("codes", torch.zeros(k, kmax, dtype=torch.int64))
        if self.variable:
            self.add_state("codes_per_position", torch.zeros(k, t, kmax, dtype=torch.int64))
        if k > 1:   # emitted names depend on the layout: extend the per-instance direction map
            self.higher_is_better = {**type(self).higher_is_better,
                                     **{f"codebook_usage_f{i}": True for i in range(k)}}

    def reset(self) -> None:
        """Forget the layout too: the next split may come from another tokenizer."""
        self._states, self._defaults, self.layout = {}, {}, None
        self.higher_is_better = type(self).higher_is_better

    @property
    def variable(self) -> bool:
        return len(set(self.layout.codebook_sizes)) > 1

    def update(self, batch: EvalBatch) -> None:
        if self.layout is None:
            self._start(batch.layout)
        elif batch.layout != self.layout:
            raise VQBenchError("codebook_usage got batches with different token layouts")
        idx = factor_indices(batch.indices, self.layout)
        n, t, k = idx.shape
        kmax = self.layout.max_codebook_size
        # offset each factor's (and position's) codes into its own block, then one bincount
        by_factor = idx + torch.arange(k).view(1, 1, k) * kmax
        self.codes = self.codes + torch.bincount(by_factor.flatten(), minlength=k * kmax).view(k, kmax)
        if self.variable:
            slot = torch.arange(k).view(1, 1, k) * t + torch.arange(t).view(1, t, 1)
            counts = torch.bincount((idx + slot * kmax).flatten(), minlength=k * t * kmax)
            self.codes_per_position = self.codes_per_position + counts.view(k, t, kmax)

    def compute(self) -> dict[str, float]:
        if self.layout is None:
            raise VQBenchError("codebook_usage saw no batches")
        usage = (self.codes > 0).sum(1).double() / self.layout.max_codebook_size
        entropy = float(entropy_bits(self.codes).mean())
        out = {"codebook_usage": float(usage.mean()), "code_entropy_bits": entropy,
               "code_perplexity": 2.0 ** entropy}
        if self.layout.num_factors > 1:
            out |= {f"codebook_usage_f{i}": float(u) for i, u in enumerate(usage)}
        if self.variable:
            sizes = torch.tensor(self.layout.codebook_sizes, dtype=torch.float64)
            per_position = (self.codes_per_position > 0).sum(-1) / sizes     # k x T
            out["codebook_usage_per_position"] = float(per_position.mean())
        return out


@METRICS.register("unique_ratio", description="distinct tokens in an image / tokens per image, mean over images")
class UniqueRatio(Metric):
    name = "unique_ratio"
    requires = frozenset({"indices", "layout"})
    higher_is_better = {"unique_ratio": True}

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))

    def update(self, batch: EvalBatch) -> None:
        layout = batch.layout
        idx = factor_indices(batch.indices, layout)
        # (factor, code) pairs as one key; sort each image's keys and count value changes
        keys = (idx + torch.arange(layout.num_factors) * layout.max_codebook_size).flatten(1)
        s = keys.sort(1).values
        distinct = 1 + (s[:, 1:] != s[:, :-1]).sum(1)
        self.total = self.total + (distinct.double() / keys.shape[1]).sum()
        self.count = self.count + keys.shape[0]

    def compute(self) -> dict[str, float]:
        if int(self.count) == 0:
            raise VQBenchError("unique_ratio saw no images")
        return {"unique_ratio": float(self.total / self.count)}
