"""A claim as a registered experiment: its statement and source, the runs it needs, what it measures,
and the test declared before running it (``Check``s on the measured quantities, the number of seeds).

Verdict rule (the same for every claim, fixed before any run). A check "q > t" on a quantity measured
as value v with standard error s:
- holds if v - Z * s > t; does not hold if v + Z * s <= t; inconclusive otherwise (Z = 2);
- s is the standard error of the mean over the claim's seeds when it has two or more, scaled by
  t_{0.975, n-1} / Z so that Z * s is Student's 95 % half-width; with one seed, the bootstrap (or
  binomial) standard error its rows record (a recorded non-finite one makes the check inconclusive);
  with none, s = 0 and the verdict rests on the declared margin alone (the table says so).
A claim holds if all its checks hold, does not hold if any does not hold, and is inconclusive
otherwise; a claim whose rows are missing is "not measured" with what is missing.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Callable, Literal

from harness.claims.evidence import Estimate, MissingEvidence, SeedRows
from harness.core.errors import VQBenchError
from harness.core.registry import CLAIMS

Z = 2.0
HOLDS, FAILS, INCONCLUSIVE, NOT_MEASURED = "holds", "does not hold", "inconclusive", "not measured"
Measure = Callable[[SeedRows], dict[str, Estimate]]


@dataclass(frozen=True)
class Check:
    """``quantity`` (a key of the claim's measurement) ``relation`` ``threshold``, e.g. usage > 0.9."""
    quantity: str
    relation: Literal[">", "<"]
    threshold: float

    def __post_init__(self):
        if self.relation not in (">", "<"):
            raise VQBenchError(f"check on {self.quantity}: relation must be '>' or '<', got {self.relation!r}")

    def text(self) -> str:
        return f"{self.quantity} {self.relation} {self.threshold:g}"

    def verdict(self, e: Estimate) -> str:
        if not math.isfinite(e.value):
            return INCONCLUSIVE
        sign = 1.0 if self.relation == ">" else -1.0
        margin, spread = sign * (e.value - self.threshold), Z * (e.stderr or 0.0)
        if margin - spread > 0:
            return HOLDS
        if margin + spread <= 0:
            return FAILS
        return INCONCLUSIVE


@dataclass(frozen=True)
class Claim:
    """``runs``: the run labels the measurement reads, by suite (``{"default": (...), "claims": (...)}``);
    ``seeds``: how many training seeds the claim's runs are repeated with; ``main_job``: measured by
    ``python run_all.py`` (its runs are the default suite's), otherwise by ``vqbench claims --all``."""
    name: str
    statement: str
    source: str
    paper_value: str
    measures: str                       # what the measurement is, in words
    measure: Measure
    checks: tuple[Check, ...]
    runs: tuple[str, ...]
    seeds: int = 1
    main_job: bool = False
    shown: tuple[str, ...] = field(default=())   # quantities in the table (default: the checked ones)

    def __post_init__(self):
        if not self.checks:
            raise VQBenchError(f"claim {self.name}: declare at least one check")
        if self.seeds < 1:
            raise VQBenchError(f"claim {self.name}: seeds must be at least 1")


def register_claim(claim: Claim) -> Claim:
    CLAIMS.add(claim.name, claim, description=claim.statement)
    return claim


@dataclass(frozen=True)
class Outcome:
    """A claim's measurement over its seeds and its verdict."""
    claim: Claim
    quantities: dict[str, Estimate]             # mean over seeds, with the standard error the test used
    per_seed: dict[str, tuple[float, ...]]
    check_verdicts: tuple[str, ...]
    verdict: str
    note: str = ""

    @property
    def seeds_measured(self) -> int:
        return max((len(v) for v in self.per_seed.values()), default=0)


def evaluate(claim: Claim, rows, suites: tuple[str, ...]) -> Outcome:
    """Measure ``claim`` on every one of its seeds in ``rows`` (runs of ``suites``) and apply its checks."""
    per_seed: list[dict[str, Estimate]] = []
    try:
        for seed in range(claim.seeds):
            per_seed.append(claim.measure(SeedRows(rows, suites, seed)))
    except MissingEvidence as e:
        if not per_seed:
            return Outcome(claim, {}, {}, (), NOT_MEASURED, str(e))
        note = f"{len(per_seed)} of {claim.seeds} seeds measured ({e})"
    except (KeyError, IndexError, TypeError, ValueError, ZeroDivisionError) as e:
        # rows of an unexpected shape (a curve without the prefix, a profile without a bound): the
        # table says so instead of the whole report failing after the runs
        return Outcome(claim, {}, {}, (), NOT_MEASURED, f"could not be measured: {type(e).__name__}: {e}")
    else:
        note = ""
    quantities = {name: _over_seeds([m[name] for m in per_seed]) for name in per_seed[0]}
    missing = [c.quantity for c in claim.checks if c.quantity not in quantities]
    if missing:
        raise VQBenchError(f"claim {claim.name}: its measurement gives no {', '.join(missing)}")
    verdicts = tuple(c.verdict(quantities[c.quantity]) for c in claim.checks)
    verdict = FAILS if FAILS in verdicts else HOLDS if all(v == HOLDS for v in verdicts) else INCONCLUSIVE
    if note and verdict == HOLDS:
        verdict = INCONCLUSIVE               # fewer seeds than declared: the declared test was not run
    if len(per_seed) == 1 and any(quantities[c.quantity].stderr is None for c in claim.checks):
        note = (note + "; " if note else "") + "one seed without an error estimate: the margin alone decides"
    return Outcome(claim, quantities, {n: tuple(m[n].value for m in per_seed) for n in quantities},
                   verdicts, verdict, note)


def _over_seeds(values: list[Estimate]) -> Estimate:
    """One seed: its estimate. Several: their mean, with the standard error of that mean over seeds
    scaled so that Z of them is Student's 95 % half-width for n - 1 degrees of freedom."""
    if len(values) == 1:
        return values[0]
    from scipy.stats import t
    xs = [v.value for v in values]
    scale = float(t.ppf(0.975, len(xs) - 1)) / Z
    return Estimate(statistics.fmean(xs), scale * statistics.stdev(xs) / math.sqrt(len(xs)))
