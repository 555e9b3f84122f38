"""The entropy-cliff metric (VCQ paper, Sec. 2) over the evaluated split's token sequences.

Exact prefix counts are not a sum of per-batch states, so this metric keeps the split's indices
(compact integers: 1.28M x 256 codes of K = 16384 are 655 MB) and, under DDP, ``sync`` gathers every
rank's rows; the conditional entropies do not depend on the order of the sequences, but the image
ids are gathered too so that an image seen twice (a padded sampler) is an error rather than a
silently doubled count. ``compute`` runs ``harness.evaluation.entropy.conditional_entropies`` with the layout's
K_t (factor tuples as one symbol) and emits:

- ``entropy_cliff_t_star`` (higher is better: a later cliff, the VCQ paper's aim): the empirical t*,
  the fewest leading tokens that leave at most 1 bit of the split's information;
- ``entropy_cliff_bound`` (higher is better): Proposition 1's t* for this N and the layout's K_t
  (NaN, with the reason, when the capacity never reaches log2 N within T positions);
- ``entropy_head_bits`` (lower is better: less information spent on the first tokens): mean
  H(x_t | x_<t) over the first 4 positions;
- ``entropy_residual_bits`` (lower is better): log2 N - H(x), the information lost to images
  whose token sequences are identical; 0 when every sequence is distinct.

The per-position curve is not emitted as T result rows (it would be T table columns); ``vqbench
analyze entropy`` writes it as CSV and figure, and with ``--results`` as curve rows the report draws.
Note the split is whatever the evaluation streams (usually the test split); the paper measures the
training split, which ``vqbench analyze entropy RUN`` encodes by default.
"""
from __future__ import annotations

import torch

from harness.core.contracts import EvalBatch, Metric, TokenLayout
from harness.evaluation.entropy import SUMMARY_HIGHER_IS_BETTER, conditional_entropies, summary_values
from harness.core.errors import VQBenchError
from harness.core.registry import METRICS
from harness.core.distributed import batch_image_ids, check_distinct_ids, gather_rows, is_multi_process
from harness.evaluation.metrics.tokens import factor_indices


@METRICS.register("entropy_cliff", description="VCQ entropy cliff: empirical and bound t*, head conditional "
                                               "entropy and duplicate residual of the split's token sequences")
class EntropyCliff(Metric):
    name = "entropy_cliff"
    requires = frozenset({"indices", "layout"})
    higher_is_better = SUMMARY_HIGHER_IS_BETTER

    def __init__(self):
        super().__init__()
        self.reset()

    def reset(self) -> None:
        super().reset()
        self.reasons = {}
        self.layout: TokenLayout | None = None
        self._indices: list[torch.Tensor] = []
        self._ids: list[torch.Tensor] = []
        self._seen = 0
        self._gathered: tuple[torch.Tensor, torch.Tensor] | None = None

    def update(self, batch: EvalBatch) -> None:
        if self.layout is None:
            self.layout = batch.layout
        elif batch.layout != self.layout:
            raise VQBenchError("entropy_cliff got batches with different token layouts")
        idx = factor_indices(batch.indices, self.layout)           # validated N x T x k int64
        dtype = torch.int16 if self.layout.max_codebook_size <= 2 ** 15 else torch.int32
        n = len(idx)
        ids = batch_image_ids(batch.image_ids, self._seen, n, "entropy_cliff")
        self._seen += n
        self._indices.append(idx.to(dtype))
        self._ids.append(ids)
        self._gathered = None

    def sync(self) -> None:
        """Gather every rank's rows (as ``codebook_usage``, every rank must have seen a batch: the
        row width comes from the layout)."""
        local = torch.cat(self._indices) if self._indices else torch.zeros((0, 1), dtype=torch.int16)
        ids = torch.cat(self._ids) if self._ids else torch.zeros(0, dtype=torch.int64)
        if is_multi_process():
            local = local.to(torch.int32)      # NCCL and gloo collectives have no int16
        self._gathered = (gather_rows(local.reshape(len(local), -1)), gather_rows(ids))

    def compute(self) -> dict[str, float]:
        if self._gathered is None:
            self.sync()
        indices, ids = self._gathered
        if self.layout is None or len(indices) == 0:
            raise VQBenchError("entropy_cliff saw no token sequences")
        if len(indices) < 2:
            raise VQBenchError("entropy_cliff needs at least 2 token sequences")
        check_distinct_ids(ids, "entropy_cliff")
        layout = self.layout
        x = indices.reshape(len(indices), layout.num_positions, layout.num_factors).numpy()
        x = x[:, :, 0] if layout.num_factors == 1 else x
        values, self.reasons = summary_values(conditional_entropies(x, layout.codebook_sizes, what="entropy_cliff"))
        return values
