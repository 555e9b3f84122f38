"""Bootstrap uncertainty of a metric value (Efron 1979): draw the evaluated images with replacement
``resamples`` times (a seeded generator), recompute the value on each draw; the standard error is the
standard deviation of the redrawn values (for a mean also the 95 % interval, their 2.5th and 97.5th
percentiles).

It measures the uncertainty that comes from evaluating N images rather than infinitely many (not the
training seed's). Every value it applies to records it in its row's ``extra``: ``stderr``,
``bootstrap_resamples``, ``bootstrap_seed``, and for means the interval ``ci95`` [low, high], for FIDs the
offset ``bootstrap_bias`` of the redrawn values (repeated images raise FID); tables show ``value ± stderr``.
"""
from __future__ import annotations

from collections.abc import Callable

import torch

from harness.core.distributed import batch_image_ids, check_distinct_ids, gather_rows

MEAN_RESAMPLES = 1000        # means of per-image values: cheap, so many
STATISTIC_RESAMPLES = 100    # FID: one covariance and eigenproblem per draw
SEED = 0
LEVEL = 0.95


CHUNK = 64                   # draws of a mean generated at a time (memory: CHUNK x N indices)


def resample_indices(n: int, resamples: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    for start in range(0, resamples, CHUNK):
        yield torch.randint(n, (min(CHUNK, resamples - start), n), generator=g)


def bootstrap_mean(values: torch.Tensor, resamples: int = MEAN_RESAMPLES, seed: int = SEED) -> dict:
    """The bootstrap record of the mean of per-image ``values`` (one draw of N images per resample):
    standard error and 95 % percentile interval."""
    values = values.double().flatten()
    if len(values) < 2:
        return {}
    draws = torch.cat([values[idx].mean(1) for idx in resample_indices(len(values), resamples, seed)])
    tail = (1 - LEVEL) / 2
    low, high = torch.quantile(draws, torch.tensor([tail, 1 - tail], dtype=draws.dtype)).tolist()
    return {"stderr": float(draws.std()), "ci95": [low, high], "bootstrap_resamples": resamples,
            "bootstrap_seed": seed}


def bootstrap_statistic(statistic: Callable[[torch.Tensor], float], n: int, value: float,
                        resamples: int = STATISTIC_RESAMPLES, seed: int = SEED) -> dict:
    """The bootstrap record of a set statistic such as FID: ``statistic(indices)`` over ``resamples`` draws
    of ``n`` image indices (for paired sets, real images and their reconstructions, the same indices index
    both). A redrawn set repeats images, which raises FID: the draws sit above ``value``, so no percentile
    interval is given, only their spread (``stderr``) and that offset (``bootstrap_bias``)."""
    if n < 2:
        return {}
    draws = torch.tensor([statistic(idx) for chunk in resample_indices(n, resamples, seed) for idx in chunk],
                         dtype=torch.float64)
    return {"stderr": float(draws.std()), "bootstrap_bias": float(draws.mean()) - value,
            "bootstrap_resamples": resamples, "bootstrap_seed": seed}


class PerImageValues:
    """The per-image values a metric has seen (one number, or one row such as an image's codes, per image),
    with their image ids: ``gathered`` collects every rank's in image order, so a sharded evaluation
    bootstraps the same draws; ``record`` bootstraps the mean of one number per image."""

    def __init__(self, what: str, dtype: torch.dtype = torch.float64, width: int = 1):
        self.what, self.dtype, self.width = what, dtype, width     # width: numbers per image (a rank without
                                                                   # images still gathers rows of that width)
        self.values: list[torch.Tensor] = []
        self.ids: list[torch.Tensor] = []
        self.seen = 0

    def add(self, values: torch.Tensor, image_ids: torch.Tensor | None) -> None:
        n = len(values)
        if n == 0:
            return
        self.ids.append(batch_image_ids(image_ids, self.seen, n, self.what))
        self.values.append(values.detach().to("cpu", self.dtype).reshape(n, -1))
        self.seen += n

    def gathered(self) -> torch.Tensor:
        """N x D: every rank's rows in image-id order."""
        ids = gather_rows(torch.cat(self.ids) if self.ids else torch.zeros(0, dtype=torch.int64))
        values = gather_rows(torch.cat(self.values) if self.values else torch.zeros(0, self.width, dtype=self.dtype))
        check_distinct_ids(ids, self.what)
        return values[ids.argsort()]

    def record(self) -> dict:
        return bootstrap_mean(self.gathered().flatten())
