"""Is a tokenizer comparison at convergence? The criteria the main job states and checks.

Per run (fixed before any run): a tokenizer run counts as converged when its training PSNR, from the
logged L2 pixel loss (PSNR = 10 log10(4 / MSE) on images in [-1, 1]), rises by less than
``THRESHOLD_DB`` from the fourth fifth of training to the last (means of the logged values in each
fifth). Each logged value is one batch's loss, so the rise carries a standard error (delta method on the
two means; the trend inside a fifth counts as noise, so it is conservative); suite runs log every step
because at every tenth step (4 values per fifth) the noise decided the verdict.

Per comparison (stated 2026-12-02, before the main job was run with it): runs trained for the same steps
on the same batches are ordered the same way by their training PSNR in the fourth fifth and in the last
fifth (the gap of a pair is the mean, over the steps, of their PSNR difference on the same batch, with its
standard error). A pair whose order flips is not settled at this budget; a table whose pairs all keep
their order compares tokenizers whose ranking the last fifth of training did not change, even where the
runs themselves still improve.
"""
from __future__ import annotations

import itertools
import json
import math
import statistics
from dataclasses import dataclass
from pathlib import Path

from harness.core import checkpoint as ckpt
from harness.core.errors import VQBenchError
from harness.core.io import write_atomic

THRESHOLD_DB = 0.2
DB_PER_LN = 10 / math.log(10)


def pixel_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, pixel loss) logged by the run's training (TensorBoard ``train/pixel``), sorted by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    if "train/pixel" not in ea.Tags().get("scalars", []):
        return []
    return sorted({e.step: e.value for e in ea.Scalars("train/pixel")}.items())


@dataclass(frozen=True)
class FifthMean:
    """Mean logged pixel loss over one fifth of training, its standard error and number of values."""
    mean: float
    se: float
    n: int


def in_fifth(step: int, steps: int, index: int) -> bool:
    """Whether logged ``step`` falls in the ``index``-th fifth (0-based): index/5 < step/steps <= (index+1)/5."""
    return index * steps / 5 < step <= (index + 1) * steps / 5


def mean_and_se(values: list[float]) -> tuple[float, float]:
    """The mean and its standard error (NaN without values; the error NaN with one)."""
    if not values:
        return math.nan, math.nan
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return statistics.fmean(values), se


def fifth(curve: list[tuple[int, float]], steps: int, index: int) -> FifthMean:
    values = [v for s, v in curve if in_fifth(s, steps, index)]
    return FifthMean(*mean_and_se(values), len(values))


def psnr_rise_last_fifth(curve: list[tuple[int, float]], steps: int) -> tuple[float, float]:
    """(rise, standard error) in dB: training PSNR of the last fifth minus that of the fourth fifth."""
    fourth, last = fifth(curve, steps, 3), fifth(curve, steps, 4)
    if not (fourth.mean > 0 and last.mean > 0):
        return math.nan, math.nan
    rise = 10 * math.log10(fourth.mean / last.mean)
    se = DB_PER_LN * math.sqrt((fourth.se / fourth.mean) ** 2 + (last.se / last.mean) ** 2)
    return rise, se


@dataclass(frozen=True)
class TokenizerCurve:
    label: str
    steps: int
    batches: tuple        # what decides which images each step sees: runs with equal ones saw the same batches
    curve: list[tuple[int, float]]


@dataclass(frozen=True)
class PairGap:
    """Training PSNR of run ``a`` minus run ``b`` in one fifth: the mean over the steps both logged of
    10 log10(loss_b / loss_a) (the same batch for both, so batch difficulty cancels), its standard error."""
    gap: float
    se: float

    @property
    def clear(self) -> bool:
        """Beyond two standard errors: the sign is not the noise of the logged batches."""
        return abs(self.gap) > 2 * self.se


def pair_gap(a: TokenizerCurve, b: TokenizerCurve, index: int) -> PairGap:
    loss_b = dict(b.curve)
    diffs = [10 * math.log10(loss_b[s] / v) for s, v in a.curve
             if in_fifth(s, a.steps, index) and s in loss_b and v > 0 and loss_b[s] > 0]
    return PairGap(*mean_and_se(diffs)) if len(diffs) > 1 else PairGap(math.nan, math.nan)


def order_flips(runs: list[TokenizerCurve]) -> tuple[int, list[tuple[str, str, PairGap, PairGap]]]:
    """Among runs that saw the same batches (same steps, batch sizes, seed, data, processes): (number of
    pairs compared, the pairs whose training-PSNR order differs between the fourth and the last fifth,
    each with both gaps, a minus b)."""
    compared, flips = 0, []
    for a, b in itertools.combinations(runs, 2):
        if (a.steps, a.batches) != (b.steps, b.batches):
            continue
        gap4, gap5 = pair_gap(a, b, 3), pair_gap(a, b, 4)
        if math.isnan(gap4.gap) or math.isnan(gap5.gap):
            continue
        compared += 1
        if (gap4.gap > 0) != (gap5.gap > 0):
            flips.append((a.label, b.label, gap4, gap5))
    return compared, flips


def tokenizer_curves(out_dir: str | Path) -> list[TokenizerCurve]:
    """Every tokenizer run under ``out_dir``/runs trained with an L2 pixel loss, with its logged curve."""
    runs = Path(out_dir) / "runs"
    found = []
    for run_dir in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        state = _final_state(run_dir)
        if state is None or state.get("kind") != "tokenizer" or state["train_config"].get("pixel_loss") != "l2":
            continue
        tc = state["train_config"]
        batches = (tc["batch_size"], tc.get("global_batch_size"), tc["seed"], state.get("world_size"),
                   json.dumps(state.get("data"), sort_keys=True))
        found.append(TokenizerCurve(run_dir.name, int(tc["steps"]), batches, pixel_curve(run_dir)))
    return found


def convergence_table(out_dir: str | Path) -> str:
    """Markdown: each tokenizer run's training PSNR rise over the last fifth (with its standard error) and
    whether it meets the per-run criterion; then the pairs of runs whose order the last fifth changed."""
    curves = tokenizer_curves(out_dir)
    lines = [f"Per run: training PSNR (from the L2 pixel loss) rising by less than {THRESHOLD_DB} dB from the "
             "fourth fifth of training to the last (harness/reporting/convergence.py). Standard error from the "
             "spread of the logged batch losses in each fifth.", "",
             "| tokenizer run | steps | logged values, last fifth | PSNR rise over the last fifth (dB) | "
             "standard error (dB) | converged |", "|---|---:|---:|---:|---:|---|"]
    rises = {run.label: psnr_rise_last_fifth(run.curve, run.steps) for run in curves}
    for run in curves:
        rise, se = rises[run.label]
        verdict = "n/a (no log)" if math.isnan(rise) else ("yes" if rise < THRESHOLD_DB else "no")
        shown = "" if math.isnan(rise) else f"{rise:.2f}"
        shown_se = "" if math.isnan(se) else f"{se:.2f}"
        lines.append(f"| {run.label} | {run.steps} | {fifth(run.curve, run.steps, 4).n} | {shown} | {shown_se} "
                     f"| {verdict} |")
    logged = [rise for rise, _ in rises.values() if not math.isnan(rise)]
    lines += ["", f"{sum(r < THRESHOLD_DB for r in logged)} of {len(logged)} runs with a log meet the per-run "
              f"criterion" + (f" ({len(curves) - len(logged)} without one)." if len(logged) < len(curves) else ".")]
    compared, flips = order_flips(curves)
    lines += ["", "Per comparison: runs that saw the same batches, ordered by training PSNR (mean over the steps "
              "of the PSNR difference on the same batch) in the fourth fifth and in the last; a pair whose order "
              "flips is not settled at this budget, clearly so when both gaps exceed two standard errors.", ""]
    if compared == 0:
        lines.append("No pair of runs that saw the same batches to compare.")
    else:
        clear = sum(g4.clear and g5.clear for _, _, g4, g5 in flips)
        lines.append(f"{compared - len(flips)} of {compared} " + ("pairs keep their" if compared > 1 else "pair keeps its")
                     + " order"
                     + (": the ranking did not change over the last fifth." if not flips else
                        f"; {len(flips)} flip, {clear} of them beyond two standard errors in both fifths:"))
        if flips:
            lines += ["", "| run a | run b | PSNR a - b, fourth fifth (dB) | PSNR a - b, last fifth (dB) |",
                      "|---|---|---:|---:|"]
            lines += [f"| {a} | {b} | {g4.gap:+.2f} ± {g4.se:.2f} | {g5.gap:+.2f} ± {g5.se:.2f} |"
                      for a, b, g4, g5 in flips]
    return "\n".join(lines) + "\n"


def _final_state(run_dir: Path) -> dict | None:
    """The state of the checkpoint the run folder's ``latest`` names; None for a folder without one (or a
    damaged one: this report leaves it out rather than fail after the suite's work is done)."""
    try:
        path = ckpt.latest(run_dir / "checkpoints")
        return ckpt.load_state(path) if path is not None else None
    except VQBenchError:
        return None


def write_convergence(out_dir: str | Path) -> Path:
    path = Path(out_dir) / "convergence.md"
    write_atomic(path, convergence_table(out_dir).encode("utf-8"))
    return path
