"""Is a tokenizer comparison at convergence? The criterion the main job states and checks.

Criterion (fixed before any run): a tokenizer run counts as converged when its training PSNR, from the
logged L2 pixel loss (PSNR = 10 log10(4 / MSE) on images in [-1, 1]), rises by less than
``THRESHOLD_DB`` from the fourth fifth of training to the last (means of the logged values in each
fifth). The default suite cannot train longer within its hour, so ``convergence.md`` says for each of
its tokenizers whether it meets this and by how much it misses; comparisons of runs that miss it
compare tokenizers at a fixed budget, not at convergence.
"""
from __future__ import annotations

import math
from pathlib import Path

from harness.core import checkpoint as ckpt
from harness.core.errors import VQBenchError
from harness.core.io import write_atomic

THRESHOLD_DB = 0.2


def pixel_curve(run_dir: Path) -> list[tuple[int, float]]:
    """(step, pixel loss) logged by the run's training (TensorBoard ``train/pixel``), sorted by step."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    ea = EventAccumulator(str(run_dir / "tensorboard"), size_guidance={"scalars": 0})
    ea.Reload()
    if "train/pixel" not in ea.Tags().get("scalars", []):
        return []
    return sorted({e.step: e.value for e in ea.Scalars("train/pixel")}.items())


def psnr_rise_last_fifth(curve: list[tuple[int, float]], steps: int) -> float:
    """Training PSNR (from L2 pixel loss) of the last fifth minus that of the fourth fifth, in dB."""
    def mean_in(lo: float, hi: float) -> float:
        values = [v for s, v in curve if lo < s <= hi]
        return sum(values) / len(values) if values else math.nan
    fourth, last = mean_in(0.6 * steps, 0.8 * steps), mean_in(0.8 * steps, steps)
    if not (fourth > 0 and last > 0):
        return math.nan
    return 10 * math.log10(fourth / last)


def convergence_table(out_dir: str | Path) -> str:
    """Markdown: each tokenizer run under ``out_dir``/runs with an L2 pixel loss, its training PSNR rise
    over the last fifth and whether it meets the criterion."""
    runs = Path(out_dir) / "runs"
    lines = [f"Criterion: training PSNR (from the L2 pixel loss) rising by less than {THRESHOLD_DB} dB from the "
             "fourth fifth of training to the last (harness/reporting/convergence.py).", "",
             "| tokenizer run | steps | PSNR rise over the last fifth (dB) | converged |", "|---|---:|---:|---|"]
    for run_dir in sorted(p for p in runs.iterdir() if p.is_dir()) if runs.is_dir() else []:
        state = _final_state(run_dir)
        if state is None or state.get("kind") != "tokenizer" or state["train_config"].get("pixel_loss") != "l2":
            continue
        steps = int(state["train_config"]["steps"])
        rise = psnr_rise_last_fifth(pixel_curve(run_dir), steps)
        verdict = "n/a (no log)" if math.isnan(rise) else ("yes" if rise < THRESHOLD_DB else "no")
        shown = "" if math.isnan(rise) else f"{rise:.2f}"
        lines.append(f"| {run_dir.name} | {steps} | {shown} | {verdict} |")
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
