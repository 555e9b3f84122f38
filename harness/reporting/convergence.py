"""Is a tokenizer comparison at convergence? The criteria the main job states and checks.

Per run (fixed before any run): a tokenizer run counts as converged when its training PSNR, from the
logged L2 pixel loss (PSNR = 10 log10(4 / MSE) on images in [-1, 1]), rises by less than
``THRESHOLD_DB`` from the fourth fifth of training to the last (means of the logged values in each
fifth). Each logged value is one batch's loss, so the rise carries a standard error (delta method on the
two means; the trend inside a fifth counts as noise, so it is conservative); suite runs log every step
because at every tenth step (4 values per fifth) the noise decided the verdict.

Per comparison (stated 2026-12-02, before the main job was run with it): runs trained for the same steps
on the same batches (same batch size and seed) are ordered the same way by their training PSNR in the fourth fifth and in the last
fifth. A pair whose order flips is not settled at this budget; a table whose pairs all keep their order
compares tokenizers whose ranking the last fifth of training did not change, even where the runs
themselves still improve.
"""
from __future__ import annotations

import itertools
import math
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

    @property
    def psnr(self) -> float:
        return 10 * math.log10(4 / self.mean) if self.mean > 0 else math.nan


def fifth(curve: list[tuple[int, float]], steps: int, index: int) -> FifthMean:
    """The ``index``-th fifth (0-based): logged steps s with index/5 < s/steps <= (index+1)/5."""
    values = [v for s, v in curve if index * steps / 5 < s <= (index + 1) * steps / 5]
    n = len(values)
    if n == 0:
        return FifthMean(math.nan, math.nan, 0)
    mean = sum(values) / n
    var = sum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else math.nan
    return FifthMean(mean, math.sqrt(var / n) if n > 1 else math.nan, n)


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
    batch_size: int
    seed: int
    curve: list[tuple[int, float]]


def order_flips(runs: list[TokenizerCurve]) -> tuple[int, list[tuple[str, str, float, float]]]:
    """Among runs with the same steps, batch size and seed (the same batches): (number of pairs compared, the pairs whose order by
    training PSNR differs between the fourth and the last fifth, each with both gaps in dB)."""
    compared, flips = 0, []
    for a, b in itertools.combinations(runs, 2):
        if (a.steps, a.batch_size, a.seed) != (b.steps, b.batch_size, b.seed):
            continue
        gap4 = fifth(a.curve, a.steps, 3).psnr - fifth(b.curve, b.steps, 3).psnr
        gap5 = fifth(a.curve, a.steps, 4).psnr - fifth(b.curve, b.steps, 4).psnr
        if math.isnan(gap4) or math.isnan(gap5):
            continue
        compared += 1
        if (gap4 > 0) != (gap5 > 0):
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
        found.append(TokenizerCurve(run_dir.name, int(tc["steps"]), int(tc["batch_size"]), int(tc["seed"]),
                                    pixel_curve(run_dir)))
    return found


def convergence_table(out_dir: str | Path) -> str:
    """Markdown: each tokenizer run's training PSNR rise over the last fifth (with its standard error) and
    whether it meets the per-run criterion; then the pairs of runs whose order the last fifth changed."""
    curves = tokenizer_curves(out_dir)
    lines = [f"Per run: training PSNR (from the L2 pixel loss) rising by less than {THRESHOLD_DB} dB from the "
             "fourth fifth of training to the last (harness/reporting/convergence.py). Standard error from the "
             "spread of the logged batch losses in each fifth.", "",
             "| tokenizer run | steps | logged values per fifth | PSNR rise over the last fifth (dB) | "
             "standard error (dB) | converged |", "|---|---:|---:|---:|---:|---|"]
    for run in curves:
        rise, se = psnr_rise_last_fifth(run.curve, run.steps)
        verdict = "n/a (no log)" if math.isnan(rise) else ("yes" if rise < THRESHOLD_DB else "no")
        shown = "" if math.isnan(rise) else f"{rise:.2f}"
        shown_se = "" if math.isnan(se) else f"{se:.2f}"
        lines.append(f"| {run.label} | {run.steps} | {fifth(run.curve, run.steps, 4).n} | {shown} | {shown_se} "
                     f"| {verdict} |")
    met = sum(1 for run in curves if psnr_rise_last_fifth(run.curve, run.steps)[0] < THRESHOLD_DB)
    lines += ["", f"{met} of {len(curves)} runs meet the per-run criterion."]
    compared, flips = order_flips(curves)
    lines += ["", "Per comparison: runs with the same steps, batch size and seed ordered by training PSNR in the fourth "
              "fifth and in the last; a pair whose order flips is not settled at this budget.", ""]
    if compared == 0:
        lines.append("No pair of runs with the same steps, batch size and seed to compare.")
    else:
        lines.append(f"{compared - len(flips)} of {compared} pairs keep their order"
                     + (": the ranking is settled at this budget." if not flips else "; these flip:"))
        if flips:
            lines += ["", "| run | run | PSNR gap, fourth fifth (dB) | PSNR gap, last fifth (dB) |",
                      "|---|---|---:|---:|"]
            lines += [f"| {a} | {b} | {g4:+.2f} | {g5:+.2f} |" for a, b, g4, g5 in flips]
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
