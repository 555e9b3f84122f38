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
from harness.core.distributed import max_over_ranks
from harness.core.registry import METRICS
from harness.evaluation.metrics.bootstrap import SEED as BOOTSTRAP_SEED, PerImageValues, resample_indices

USAGE_RESAMPLES = 200             # each draw: one histogram of N x T x k codes
BOOTSTRAP_MAX_CODES = 4_000_000   # above this many codes no bootstrap (ImageNet's 50k x 256 would take minutes)


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


def n_codes_per_image(layout: TokenLayout) -> int:
    return layout.num_positions * layout.num_factors


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
        self.per_image_codes = PerImageValues("metric 'codebook_usage'", torch.int32)

    @classmethod
    def outputs(cls, layout: TokenLayout | None) -> tuple[str, ...]:
        names = ("codebook_usage", "code_entropy_bits", "code_perplexity")
        if layout is None:
            return names
        names += tuple(f"codebook_usage_f{i}" for i in range(layout.num_factors)) if layout.num_factors > 1 else ()
        return names + (("codebook_usage_per_position",) if len(set(layout.codebook_sizes)) > 1 else ())

    def _start(self, layout: TokenLayout) -> None:
        self.layout = layout
        self.per_image_codes = PerImageValues("metric 'codebook_usage'", torch.int32, n_codes_per_image(layout))
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
        self.per_image_codes = PerImageValues("metric 'codebook_usage'", torch.int32)

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
        if (self.per_image_codes.seen + n) * n_codes_per_image(self.layout) <= BOOTSTRAP_MAX_CODES:
            # past the cap (of this rank's codes, a lower bound of the split's) no bootstrap is drawn:
            # stop keeping every image's codes
            self.per_image_codes.add(by_factor.reshape(n, -1).to(torch.int32), batch.image_ids)
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
        self.value_extra = self._bootstrap(out)
        return out

    def _usage_of(self, hist: torch.Tensor) -> dict[str, float]:
        """The split-level values of a k x K_max code histogram (as ``compute``)."""
        usage = (hist > 0).sum(1).double() / self.layout.max_codebook_size
        entropy = float(entropy_bits(hist).mean())
        out = {"codebook_usage": float(usage.mean()), "code_entropy_bits": entropy, "code_perplexity": 2.0 ** entropy}
        return out | ({f"codebook_usage_f{i}": float(u) for i, u in enumerate(usage)} if len(usage) > 1 else {})

    def _bootstrap(self, out: dict[str, float]) -> dict[str, dict]:
        """Usage, entropy and perplexity over the evaluated images redrawn with replacement (not the per-position
        usage). A redrawn set holds fewer distinct images, so usage draws sit below the value: like FID, the
        record gives their spread and that offset (``bootstrap_bias``), no interval. Skipped above
        ``BOOTSTRAP_MAX_CODES`` codes (each draw is a histogram of all of them)."""
        skipped = {name: {"bootstrap_resamples": 0} for name in out if name != "codebook_usage_per_position"}
        if int(self.codes.sum()) > BOOTSTRAP_MAX_CODES:  # synced over ranks: all skip the gather together
            return skipped
        codes = self.per_image_codes.gathered()
        if len(codes) < 2:
            return skipped
        size = self.layout.num_factors * self.layout.max_codebook_size
        kmax = self.layout.max_codebook_size
        draws = [self._usage_of(torch.bincount(codes[idx].flatten().long(), minlength=size).view(-1, kmax))
                 for chunk in resample_indices(len(codes), USAGE_RESAMPLES, BOOTSTRAP_SEED) for idx in chunk]
        record = {}
        for name in draws[0]:
            values = torch.tensor([d[name] for d in draws], dtype=torch.float64)
            record[name] = {"stderr": float(values.std()), "bootstrap_bias": float(values.mean()) - out[name],
                            "bootstrap_resamples": USAGE_RESAMPLES, "bootstrap_seed": BOOTSTRAP_SEED}
        return record


@METRICS.register("unique_ratio", description="distinct tokens in an image / tokens per image, mean over images")
class UniqueRatio(Metric):
    name = "unique_ratio"
    requires = frozenset({"indices", "layout"})
    higher_is_better = {"unique_ratio": True}

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))
        self.per_image_values = PerImageValues("metric 'unique_ratio'")

    def reset(self) -> None:
        super().reset()
        self.per_image_values = PerImageValues("metric 'unique_ratio'")

    def update(self, batch: EvalBatch) -> None:
        layout = batch.layout
        idx = factor_indices(batch.indices, layout)
        # (factor, code) pairs as one key; sort each image's keys and count value changes
        keys = (idx + torch.arange(layout.num_factors) * layout.max_codebook_size).flatten(1)
        s = keys.sort(1).values
        distinct = 1 + (s[:, 1:] != s[:, :-1]).sum(1)
        ratio = distinct.double() / keys.shape[1]
        self.total = self.total + ratio.sum()
        self.count = self.count + keys.shape[0]
        self.per_image_values.add(ratio, batch.image_ids)

    def compute(self) -> dict[str, float]:
        if int(self.count) == 0:
            raise VQBenchError("unique_ratio saw no images")
        self.value_extra = {"unique_ratio": self.per_image_values.record()}     # a mean over images
        return {"unique_ratio": float(self.total / self.count)}


# --------------------------------------------------------------- legacy rows of published repositories
LLAMAGEN_WINDOW = 65536          # LlamaGen's VectorQuantizer keeps the last 65,536 codes it produced


def _one_codebook(name: str, layout: TokenLayout) -> None:
    if layout.num_factors > 1:
        raise VQBenchError(f"metric {name!r} reproduces a repository's single-codebook statistic; this layout has "
                           f"{layout.num_factors} sub-codebooks (use codebook_usage, per factor)")


@METRICS.register("codebook-usage-llamagen", description="codebook usage as LlamaGen logs it: distinct codes in a "
                                                         "window of the last 65,536 tokens (zero-initialized) / K")
class CodebookUsageLlamaGen(Metric):
    """LlamaGen's ``codebook_used`` buffer (tokenizer/tokenizer_image/vq_model.py): 65,536 zeros at the
    start, each batch's codes shifted in at the end, usage = distinct values in the window / codebook
    size. Here the window runs over the evaluation split in image order (tokens of an image in raster
    order, all factors), so on a split of fewer than 65,536 tokens the initial zeros still count as code
    0, as they do in LlamaGen's first steps. Divided by the largest codebook size."""
    name = "codebook-usage-llamagen"
    requires = frozenset({"indices", "layout"})
    higher_is_better = {"codebook_usage": True}
    protocol = "llamagen"

    def __init__(self):
        super().__init__()
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.layout: TokenLayout | None = None
        self.parts: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.seen = 0

    def update(self, batch: EvalBatch) -> None:
        from harness.core.distributed import batch_image_ids
        _one_codebook(self.name, batch.layout)
        self.layout = batch.layout
        idx = factor_indices(batch.indices, batch.layout).flatten(1)
        self.parts.append((batch_image_ids(batch.image_ids, self.seen, len(idx), f"metric {self.name!r}"), idx))
        self.seen += len(idx)

    def compute(self) -> dict[str, float]:
        from harness.core.distributed import check_distinct_ids, gather_rows
        if self.layout is None:
            raise VQBenchError(f"{self.name} saw no batches")
        width = self.layout.num_positions * self.layout.num_factors
        ids = gather_rows(torch.cat([i for i, _ in self.parts]) if self.parts else torch.zeros(0, dtype=torch.int64))
        codes = gather_rows(torch.cat([c for _, c in self.parts]) if self.parts
                            else torch.zeros(0, width, dtype=torch.int64))
        check_distinct_ids(ids, self.name)
        stream = codes[ids.argsort()].flatten()
        window = torch.cat([torch.zeros(LLAMAGEN_WINDOW, dtype=torch.int64), stream])[-LLAMAGEN_WINDOW:]
        return {"codebook_usage": len(window.unique()) / self.layout.max_codebook_size}


@METRICS.register("perplexity-taming", description="code perplexity as taming-transformers logs it: exp of the "
                                                   "entropy of each batch's code histogram (eps 1e-10), mean over batches")
class PerplexityTaming(Metric):
    """taming's VectorQuantizer: ``e_mean`` = mean one-hot code of a batch's tokens, perplexity =
    ``exp(-sum e_mean log(e_mean + 1e-10))``; here the mean over the evaluation's batches (so it depends
    on the batch size, which the row records). Factorized layouts: one histogram over all factors' codes."""
    name = "perplexity-taming"
    requires = frozenset({"indices", "layout"})
    higher_is_better = {"code_perplexity": True}
    protocol = "taming"
    per_batch_mean = True             # a mean of per-batch values: depends on the batching by definition

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))
        self.add_state("batch_images", torch.zeros((), dtype=torch.int64))

    def update(self, batch: EvalBatch) -> None:
        _one_codebook(self.name, batch.layout)
        idx = factor_indices(batch.indices, batch.layout).flatten()
        e_mean = torch.bincount(idx, minlength=batch.layout.max_codebook_size).double() / len(idx)
        self.total = self.total + torch.exp(-(e_mean * torch.log(e_mean + 1e-10)).sum())
        self.count = self.count + 1
        self.batch_images = torch.maximum(self.batch_images, torch.tensor(batch.indices.shape[0]))

    def sync(self) -> None:
        largest = max_over_ranks(int(self.batch_images))
        super().sync()                    # sums every state; the largest batch is a maximum
        self.batch_images = torch.tensor(largest)

    def compute(self) -> dict[str, float]:
        if int(self.count) == 0:
            raise VQBenchError(f"{self.name} saw no batches")
        self.value_extra = {"code_perplexity": {"batch_images": int(self.batch_images)}}
        return {"code_perplexity": float(self.total / self.count)}
