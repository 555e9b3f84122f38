"""Which training images form the batch at each step, and which of them are mirrored: a pure function
of (seed, step), so a run resumed from a checkpoint sees exactly the batches an uninterrupted run would
have seen."""
from __future__ import annotations

import torch

from harness.core.distributed import Dist
from harness.core.errors import VQBenchError

FLIP_STREAM = 2 ** 62          # offsets the flips' generator seeds from the epoch permutations'


class BatchOrder:
    """Global batch at step s = slice of an epoch permutation seeded by (seed, epoch); rank r takes its part."""

    def __init__(self, n: int, batch_size: int, seed: int, d: Dist):
        self.n, self.b, self.seed, self.d = n, batch_size, seed, d
        self.per_epoch = n // (batch_size * d.world_size)
        if self.per_epoch == 0:
            raise VQBenchError(f"the training set has {n} images, fewer than one global batch "
                               f"({batch_size} x {d.world_size} processes); lower --set batch_size")
        self._epoch, self._perm = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, i = divmod(step, self.per_epoch)
        if epoch != self._epoch:
            g = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._perm = epoch, torch.randperm(self.n, generator=g)
        start = (i * self.d.world_size + self.d.rank) * self.b
        return self._perm[start:start + self.b]

    def flips(self, step: int) -> torch.Tensor:
        """Which images of this rank's batch at ``step`` to mirror (random horizontal flip, p = 1/2): drawn
        for the whole global batch from (seed, step), so a resumed run flips as an uninterrupted one and
        the same global batch flips alike on any number of processes."""
        g = torch.Generator().manual_seed(FLIP_STREAM + self.seed * 1_000_003 + step)
        flipped = torch.rand(self.b * self.d.world_size, generator=g) < 0.5
        start = self.d.rank * self.b
        return flipped[start:start + self.b]


def mirror(images: torch.Tensor, which: torch.Tensor) -> torch.Tensor:
    """``images`` (N x C x H x W) with those where ``which`` (N booleans) is true flipped left to right."""
    return torch.where(which.to(images.device).view(-1, 1, 1, 1), images.flip(-1), images)
