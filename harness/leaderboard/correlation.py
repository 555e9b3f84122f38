"""Rank correlations across a track's entries: does a tokenizer metric order the entries as the AR probe's
results do?

Spearman's rho (Pearson's correlation of average ranks, so ties share a rank) with a bootstrap interval:
the entries are redrawn with replacement ``draws`` times (seeded) and the interval is the percentile range
of rho over the draws in which neither variable is constant (the others are counted, not used). With ten
entries the interval is wide; that width is the honest answer.

``oriented`` turns rho so that +1 always reads "the entry better on this metric is the better one to
generate from": rho is negated when one of the two is higher-is-better and the other lower-is-better
(PSNR up against NLL down).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

DRAWS = 2000
LEVEL = 0.95


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (as scipy.stats.rankdata's default)."""
    order = np.argsort(x, kind="mergesort")
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.arange(1, len(x) + 1)
    values, inverse = np.unique(x, return_inverse=True)
    sums = np.bincount(inverse, weights=ranks)
    counts = np.bincount(inverse)
    return (sums / counts)[inverse]


def spearman(x, y) -> float:
    """Spearman's rho of paired samples; NaN for fewer than 3 pairs or a constant variable."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    rx, ry = average_ranks(x), average_ranks(y)
    return float(np.corrcoef(rx, ry)[0, 1])


def bootstrap_interval(x, y, draws: int = DRAWS, seed: int = 0, level: float = LEVEL) -> tuple[float, float, int]:
    """(low, high, draws used): the percentile interval of Spearman's rho over entries redrawn with replacement."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if len(x) < 3:
        return math.nan, math.nan, 0
    rng = np.random.default_rng(seed)
    rhos = [spearman(x[i], y[i]) for i in rng.integers(0, len(x), size=(draws, len(x)))]
    rhos = np.array([r for r in rhos if math.isfinite(r)])
    if len(rhos) == 0:
        return math.nan, math.nan, 0
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(rhos, [tail, 100 - tail])
    return float(low), float(high), len(rhos)


@dataclass(frozen=True)
class RankCorrelation:
    predictor: str
    outcome: str
    n: int                 # entries with both values
    rho: float
    low: float
    high: float
    draws_used: int
    same_direction: bool   # both higher-is-better, or both lower-is-better

    @property
    def sign(self) -> int:
        return 1 if self.same_direction else -1

    @property
    def oriented(self) -> tuple[float, float, float]:
        """(rho, low, high) turned so that + means the better entry on the metric generates better."""
        if self.same_direction:
            return self.rho, self.low, self.high
        return -self.rho, -self.high, -self.low


def rank_correlations(values: Mapping[str, Mapping[str, float]], predictors, outcomes,
                      higher_is_better: Mapping[str, bool], draws: int = DRAWS, seed: int = 0) -> list[RankCorrelation]:
    """Every (predictor, outcome) pair over the entries of ``values`` ({entry: {metric: value}}) that have both
    as finite numbers; pairs with fewer than 3 such entries are left out."""
    out = []
    for outcome in outcomes:
        for predictor in predictors:
            pairs = [(v[predictor], v[outcome]) for v in values.values()
                     if math.isfinite(v.get(predictor, math.nan)) and math.isfinite(v.get(outcome, math.nan))]
            if len(pairs) < 3:
                continue
            x, y = zip(*pairs)
            low, high, used = bootstrap_interval(x, y, draws, seed)
            out.append(RankCorrelation(predictor, outcome, len(pairs), spearman(x, y), low, high, used,
                                       higher_is_better.get(predictor, True) == higher_is_better.get(outcome, True)))
    return out


def plot_rank_correlations(correlations: list[RankCorrelation], path) -> list:
    """One panel per outcome: each predictor's oriented rho with its bootstrap interval (PNG and PDF)."""
    from harness.reporting.figures import FULL_WIDTH, new_figure, plain_text, print_styled, save_figure

    @print_styled
    def draw():
        outcomes = list(dict.fromkeys(c.outcome for c in correlations))
        fig, axes = new_figure(len(outcomes), width=FULL_WIDTH if len(outcomes) > 1 else None)
        for ax, outcome in zip(axes, outcomes):
            mine = [c for c in correlations if c.outcome == outcome]
            ys = np.arange(len(mine))[::-1]
            rho = np.array([c.oriented[0] for c in mine])
            low = np.array([c.oriented[1] for c in mine])
            high = np.array([c.oriented[2] for c in mine])
            errors = np.nan_to_num(np.vstack([rho - low, high - rho]).clip(min=0))
            ax.barh(ys, rho, xerr=errors, color=["C0" if r >= 0 else "C3" for r in rho], capsize=2, height=0.6)
            ax.axvline(0, color="0.4", lw=0.6)
            ax.set_yticks(ys, [plain_text(c.predictor) for c in mine])
            ax.set(xlim=(-1.05, 1.05), xlabel="oriented Spearman ρ",
                   title=f"against AR-probe {plain_text(outcome)} (n = {max(c.n for c in mine)})")
        fig.supxlabel("+: the entry better on the metric generates better (95 % bootstrap interval)", fontsize=7)
        return save_figure(fig, path)

    return draw()
