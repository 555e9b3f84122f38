"""How alike the code vectors of one image's tokens are.

- ``token_similarity``: per image, the mean cosine similarity between the code vectors of two different
  tokens (all ordered pairs of positions; a factorized position's sub-codes concatenated, as
  ``Tokenizer.code_embeddings`` gives them), averaged over images. The CVQ paper argues that channel
  tokens are more distinct from each other than patch tokens (Sec. 3.1, Fig. 4, t-SNE plots without a
  number) and the masked channel-wise paper that they "have low similarities between them"; this is a
  number for that statement. Compare tokenizers of the same code dimension (cosine similarity of random
  vectors concentrates at 0 faster in more dimensions).
- ``subcode_similarity``: factorized layouts (FQGAN), per position the squared cosine similarity of each
  pair of its sub-codes, the quantity FQGAN's disentanglement loss minimises (Eq. 7), averaged over
  pairs, positions and images; NaN with a reason for one code per position.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from harness.core.contracts import EvalBatch, Metric, TokenLayout
from harness.core.errors import VQBenchError
from harness.core.registry import METRICS


def _embeddings(batch: EvalBatch, name: str) -> torch.Tensor:
    z = batch.code_embeddings
    if z is None or z.dim() != 3:
        raise VQBenchError(f"{name} needs the batch's code embeddings as N x T x D")
    return z.detach().to("cpu", torch.float64)


@METRICS.register("token_similarity", description="mean cosine similarity between the code vectors of two "
                  "tokens of one image, mean over images (how alike an image's tokens are)")
class TokenSimilarity(Metric):
    name = "token_similarity"
    requires = frozenset({"code_embeddings"})
    higher_is_better = {"token_similarity": False}

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))

    def update(self, batch: EvalBatch) -> None:
        z = F.normalize(_embeddings(batch, self.name), dim=-1)
        t = z.shape[1]
        if t < 2:
            raise VQBenchError("token_similarity needs at least two tokens per image")
        sums = z.sum(1)                                   # sum_{i != j} <z_i, z_j> = |sum z|^2 - sum |z_i|^2
        pairs = sums.pow(2).sum(-1) - z.pow(2).sum((1, 2))
        self.total = self.total + (pairs / (t * (t - 1))).sum()
        self.count = self.count + z.shape[0]

    def compute(self) -> dict[str, float]:
        if int(self.count) == 0:
            raise VQBenchError("token_similarity saw no images")
        return {"token_similarity": float(self.total / self.count)}


@METRICS.register("subcode_similarity", description="factorized layouts: mean squared cosine similarity between "
                  "the sub-codes of one position (FQGAN's disentanglement quantity, Eq. 7)")
class SubcodeSimilarity(Metric):
    name = "subcode_similarity"
    requires = frozenset({"code_embeddings", "layout"})
    higher_is_better = {"subcode_similarity": False}

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64))
        self.add_state("count", torch.zeros((), dtype=torch.int64))

    def update(self, batch: EvalBatch) -> None:
        k = batch.layout.num_factors
        if k < 2:
            return                                        # compute says why there is no value
        z = _embeddings(batch, self.name)
        n, t, width = z.shape
        q = F.normalize(z.view(n, t, k, width // k), dim=-1)
        cos = q @ q.transpose(-1, -2)                      # n x t x k x k
        upper = torch.triu_indices(k, k, offset=1)
        per_image = cos[..., upper[0], upper[1]].pow(2).mean((1, 2))
        self.total = self.total + per_image.sum()
        self.count = self.count + n

    @classmethod
    def outputs(cls, layout: TokenLayout | None) -> tuple[str, ...]:
        return tuple(cls.higher_is_better)

    def compute(self) -> dict[str, float]:
        if int(self.count) == 0:
            self.reasons["subcode_similarity"] = "one code per position: no sub-codes to compare"
            return {"subcode_similarity": float("nan")}
        return {"subcode_similarity": float(self.total / self.count)}
