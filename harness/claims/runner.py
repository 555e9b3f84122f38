"""Running the claims: train and evaluate the runs they need (resumably, through the suites), measure
each claim on the folder's results store, and write the claims table.

``python run_all.py`` trains the default suite and ``vqbench claims --all`` also the suite ``claims``
(the extra runs) into the same folder; either then measures every claim whose rows the folder holds.
A claim whose runs are not there is listed as not measured, saying how to measure it, so rerunning the
main job after ``--all`` keeps every measured claim in the table."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from harness.claims.claim import NOT_MEASURED, Claim, Outcome, evaluate
from harness.claims.report import write_claims
from harness.core.errors import VQBenchError
from harness.core.registry import CLAIMS
from harness.core.results import ResultsStore, unseeded

SUITES_READ = ("default", "claims")      # the suites whose runs claims read, in this order


def all_claims() -> list[Claim]:
    return [e.obj for e in CLAIMS.entries()]


def seeds_in(rows) -> int:
    """How many training seeds the folder's runs were repeated with (``<run>.seedS`` labels: the largest
    S + 1; 1 when there are none)."""
    if rows.empty:
        return 1
    return 1 + max(unseeded(str(r))[1] for r in rows["run_id"].unique())


def measure_claims(rows, seeds: int | None = None) -> list[Outcome]:
    """Every registered claim's outcome on ``rows``, over ``seeds`` training seeds (default: as many as the
    rows hold, at least the claim's own); a claim outside the main job whose rows are missing says that
    `vqbench claims --all` measures it."""
    seeds = seeds_in(rows) if seeds is None else seeds
    out = []
    for claim in all_claims():
        claim = dataclasses.replace(claim, seeds=max(claim.seeds, seeds))
        o = evaluate(claim, rows, SUITES_READ)
        if o.verdict == NOT_MEASURED and not claim.main_job:
            o = Outcome(claim, {}, {}, (), NOT_MEASURED, f"outside the main job: `vqbench claims --all` ({o.note})")
        out.append(o)
    return out


def write_claims_table(out_dir: str | Path, seeds: int | None = None) -> list[Path]:
    """Measure the claims on ``out_dir``'s results store (over ``seeds``; default: the seeds it holds) and
    write the claims table there."""
    store = Path(out_dir) / "results.jsonl"
    if not store.is_file():
        raise VQBenchError(f"{store}: no results store; run `python run_all.py --out {out_dir}` (or `vqbench "
                           "claims` without --table-only) first")
    return write_claims(measure_claims(ResultsStore(store).read(), seeds), out_dir)


def run_claims(out_dir: str | Path, *, include_all: bool, device: str = "auto", progress: bool = True,
               seeds: int = 1) -> Path | None:
    """Run the default suite (and with ``include_all`` the suite ``claims``) into ``out_dir``, resumably, with
    training seeds 0 .. ``seeds`` - 1, then write the claims table over those seeds; returns its Markdown
    path (None on processes other than the main one)."""
    from harness.core.distributed import is_main_process
    from harness.suites import run_suite
    # the main job's timings.md stays: the default suite's pass here is usually a resume with nothing to do
    run_suite("default", out_dir, device=device, progress=progress, timings="timings_claims_default.md", seeds=seeds)
    if include_all:
        run_suite("claims", out_dir, device=device, progress=progress, timings="timings_claims.md", seeds=seeds)
    if not is_main_process():
        return None
    return write_claims_table(out_dir, seeds)[0]
