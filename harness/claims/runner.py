"""Running the claims: train and evaluate the runs they need (resumably, through the suites), measure
each claim on the folder's results store, and write the claims table.

``python run_all.py`` measures the main-job claims on the default suite's runs (``claims_for_main_job``);
``vqbench claims --all`` also runs the suite ``claims`` (the extra runs) into the same folder, then
measures every claim. A claim whose runs are not in the folder is listed as not measured, saying how
to measure it."""
from __future__ import annotations

from pathlib import Path

from harness.claims.claim import NOT_MEASURED, Claim, Outcome, evaluate
from harness.claims.report import write_claims
from harness.core.errors import VQBenchError
from harness.core.registry import CLAIMS
from harness.core.results import ResultsStore

SUITES_READ = ("default", "claims")      # the suites whose runs claims read, in this order


def all_claims() -> list[Claim]:
    return [e.obj for e in CLAIMS.entries()]


def measure_claims(rows, *, include_all: bool) -> list[Outcome]:
    """Every registered claim's outcome on ``rows``; without ``include_all`` the claims outside the main
    job are listed as not measured."""
    out = []
    for claim in all_claims():
        if include_all or claim.main_job:
            out.append(evaluate(claim, rows, SUITES_READ))
        else:
            out.append(Outcome(claim, {}, {}, (), NOT_MEASURED, "outside the main job: `vqbench claims --all`"))
    return out


def write_claims_table(out_dir: str | Path, *, include_all: bool) -> list[Path]:
    """Measure the claims on ``out_dir``'s results store and write the claims table there."""
    store = Path(out_dir) / "results.jsonl"
    if not store.is_file():
        raise VQBenchError(f"{store}: no results store; run `python run_all.py --out {out_dir}` (or `vqbench "
                           "claims` without --table-only) first")
    rows = ResultsStore(store).read()
    return write_claims(measure_claims(rows, include_all=include_all), out_dir)


def run_claims(out_dir: str | Path, *, include_all: bool, device: str = "auto", progress: bool = True) -> Path:
    """Run the default suite (and with ``include_all`` the suite ``claims``) into ``out_dir``, resumably,
    then write the claims table; returns its Markdown path."""
    from harness.core.distributed import is_main_process
    from harness.suites import run_suite
    run_suite("default", out_dir, device=device, progress=progress)
    if include_all:
        run_suite("claims", out_dir, device=device, progress=progress)
    if not is_main_process():
        return Path(out_dir) / "claims.md"
    return write_claims_table(out_dir, include_all=include_all)[0]
