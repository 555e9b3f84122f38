"""A factorized tokenizer seen as one code per position, so one-factor generators (AR) can model it.

FQGAN's k sub-codebooks and RVQ's k residual levels give k codes per position (``num_factors = k``). The
leaderboard's AR probe trains the same small AR on every tokenizer's tokens; for these it reads each
position's k codes as k consecutive positions: T * k tokens, position-major (t0 f0, t0 f1, ..., t1 f0,
...), a one-factor ``latent`` layout whose K at each new position is the factor's. The likelihood of an
image is unchanged by this reordering of its codes into one sequence (the chain rule holds for any order),
so bits per image compare across tokenizers; bits per token do not (the count differs).

A generator run records the choice as ``--set factors=as-positions`` (``GeneratorTrainConfig.factors``);
``checkpoints.load_pair`` puts the same view in front of the tokenizer, so samples decode as trained.
"""
from __future__ import annotations

import torch

from harness.core.contracts import Tokenizer, TokenLayout
from harness.core.errors import VQBenchError

FACTOR_MODES = ("native", "as-positions")


class FactorsAsPositions(Tokenizer):
    """``tokenizer`` with its k codes per position read as k positions (encode flattens, decode folds back)."""

    def __init__(self, tokenizer: Tokenizer):
        super().__init__()
        inner = tokenizer.layout
        if inner.num_factors == 1:
            raise VQBenchError(f"--set factors=as-positions: the {tokenizer.family} tokenizer has one code per "
                               "position; there are no factors to read as positions (leave factors=native)")
        self.inner = tokenizer
        self.cfg = tokenizer.cfg
        self.family = tokenizer.family
        self.layout = TokenLayout(inner.num_positions * inner.num_factors,
                                  tuple(k for k in inner.codebook_sizes for _ in range(inner.num_factors)),
                                  position_kind="latent")

    def flatten(self, indices: torch.Tensor) -> torch.Tensor:
        """N x T x k native indices -> N x (T * k)."""
        return indices.reshape(indices.shape[0], -1)

    def fold(self, indices: torch.Tensor) -> torch.Tensor:
        """N x (T * k) -> N x T x k, the inner tokenizer's shape."""
        return indices.reshape(indices.shape[0], *self.inner.layout.index_shape)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        return self.flatten(self.inner.encode(x))

    def decode(self, indices: torch.Tensor) -> torch.Tensor:
        return self.inner.decode(self.fold(indices))

    def code_embeddings(self, indices: torch.Tensor) -> torch.Tensor:
        # a position of the view is one sub-code: it has no code vector of its own (CAR needs one)
        raise NotImplementedError("a factorized tokenizer read as positions has no per-position code vectors")


def generator_view(tokenizer: Tokenizer, factors: str) -> Tokenizer:
    """What a generator trained with ``--set factors=<factors>`` sees of ``tokenizer``."""
    if factors == "native":
        return tokenizer
    if factors == "as-positions":
        return FactorsAsPositions(tokenizer).train(tokenizer.training)
    raise VQBenchError(f"--set factors={factors!r}: use one of {', '.join(FACTOR_MODES)}")
