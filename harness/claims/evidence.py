"""Reading a claim's numbers from a results store: one seed's rows at a time (``SeedRows``), each
number an ``Estimate`` with its standard error where the rows give one.

Runs of seed 0 keep their suite label (``vq-fmnist``); a claim's extra seeds are the same run trained
with ``--set seed=s`` under the label ``seed_label(label, s)`` (``vq-fmnist.seed1``), as ``vqbench run --seeds`` trains them."""
from __future__ import annotations

import json
import math
from dataclasses import dataclass

import pandas as pd

from harness.core.errors import VQBenchError
from harness.core.registry import DEFAULT_PROTOCOL
from harness.core.results import seed_label
from harness.evaluation.protocols import row_protocol

# the rows claims read: those no evaluation protocol changes (pixel, token and curve metrics: "canonical")
# and the Inception metrics' under the default protocol
READ_PROTOCOLS = ("canonical", "", DEFAULT_PROTOCOL)


class MissingEvidence(VQBenchError):
    """A row a claim needs is not in the results store (its run or evaluation has not been done)."""


@dataclass(frozen=True)
class Estimate:
    """A measured number; ``stderr`` None when nothing estimates its error (one seed, no bootstrap)."""
    value: float
    stderr: float | None = None

    def __sub__(self, other: "Estimate") -> "Estimate":
        return Estimate(self.value - other.value, _combined(self.stderr, other.stderr))

    def __neg__(self) -> "Estimate":
        return Estimate(-self.value, self.stderr)


def _combined(a: float | None, b: float | None) -> float | None:
    """Standard error of a difference of independent estimates (None if either has none)."""
    return None if a is None or b is None else math.hypot(a, b)


def mean_of(estimates: list[Estimate]) -> Estimate:
    """The mean of ``estimates`` as one estimate (independent errors)."""
    n = len(estimates)
    errors = [e.stderr for e in estimates]
    se = None if any(s is None for s in errors) else math.sqrt(sum(s * s for s in errors)) / n
    return Estimate(sum(e.value for e in estimates) / n, se)


class SeedRows:
    """The rows of one seed of the runs of ``suites`` (``suite/label`` run ids), read by run label; a
    label found under several suites is read from the first."""

    def __init__(self, rows: pd.DataFrame, suites: tuple[str, ...], seed: int):
        self.rows, self.suites, self.seed = rows, tuple(suites), seed

    def _select(self, run: str, metric: str, split: str | None, k: int | None) -> pd.DataFrame:
        """The rows of ``metric`` of run ``run`` from the first suite that has them."""
        ids = [f"{suite}/{seed_label(run, self.seed)}" for suite in self.suites]
        df = self.rows[self.rows["run_id"].isin(ids) & (self.rows["metric"] == metric)] if not self.rows.empty \
            else self.rows
        if not df.empty:       # the default protocol's rows only (a --protocol adm rerun shares the run id)
            df = df[[row_protocol(r) in READ_PROTOCOLS for r in df.to_dict("records")]]
        if split is not None and not df.empty:
            df = df[df["split"] == split]
        if k is not None and not df.empty:
            df = df[df["extra"].map(lambda e: json.loads(e).get("k")) == k]
        if df.empty:
            where = f"{metric}" + (f" (split {split})" if split else "") + (f" at k={k}" if k is not None else "")
            raise MissingEvidence(f"no {where} row of run {' or '.join(ids)}")
        first = df[df["run_id"] == next(i for i in ids if (df["run_id"] == i).any())]
        # a run retrained under another configuration in the same folder: its latest configuration only
        latest = first.sort_values("finished_at", kind="stable")["config_hash"].iloc[-1]
        return first[first["config_hash"] == latest]

    def value(self, run: str, metric: str, *, split: str | None = None, k: int | None = None,
              binomial: bool = False) -> Estimate:
        """The latest row's value; its bootstrap ``stderr`` when recorded, else with ``binomial`` (an
        accuracy over n_images) the binomial standard error sqrt(p (1 - p) / n)."""
        row = self._select(run, metric, split, k).iloc[-1]
        value, extra = float(row["value"]), json.loads(row["extra"])
        stderr = extra.get("stderr")
        if stderr is None and binomial and row["n_images"]:
            stderr = math.sqrt(max(value * (1 - value), 0.0) / int(row["n_images"]))
        # a recorded but non-finite error stays NaN: the check is then inconclusive, not margin-only
        return Estimate(value, None if stderr is None else float(stderr))

    def curve(self, run: str, metric: str, *, split: str | None = None) -> pd.Series:
        """A curve's values by k (the latest row of each k), sorted by k."""
        df = self._select(run, metric, split, None)
        ks = df["extra"].map(lambda e: json.loads(e).get("k"))
        df = df.assign(k=ks).dropna(subset=["k"]).drop_duplicates("k", keep="last")
        return pd.Series(df["value"].astype(float).to_numpy(), index=df["k"].astype(int).to_numpy()).sort_index()

    def entropy_profile(self, run: str, *, split: str):
        """The run's entropy-per-position profile on ``split`` (harness.evaluation.entropy)."""
        from harness.evaluation.entropy import CURVE_METRIC, profiles_from_rows
        (profile,) = profiles_from_rows(self._select(run, CURVE_METRIC, split, None)).values()
        return profile

    def run_info(self, run: str, metric: str) -> dict:
        """The run's self-description stored with a row of ``metric`` (parameters, tokens, ...)."""
        row = self._select(run, metric, None, None).iloc[-1]
        return json.loads(row["extra"]).get("run_info", {})
