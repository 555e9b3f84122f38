"""The machine a benchmark ran on, and whether it was quiet: shared by the benchmark scripts."""
from __future__ import annotations

import datetime as _dt
import os
import platform
from pathlib import Path

import torch

from harness.core.machine import cpu_model


def loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return " ".join(f"{v:.2f}" for v in os.getloadavg())


def describe(load_before: str) -> dict:
    """Date, CPU, threads and versions, the load average before and now, and a quiet/not-quiet verdict
    (quiet: the 1-min load before the run below 0.5 per CPU)."""
    first = float(load_before.split()[0])
    return {"date": _dt.datetime.now().astimezone().isoformat(timespec="seconds"), "cpu": cpu_model(),
            "cpus": os.cpu_count(), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "python": platform.python_version(), "load_before": load_before, "load_after": loadavg(),
            "quiet": ("quiet: 1-min load below 0.5 per CPU" if first < 0.5 * (os.cpu_count() or 1)
                      else "NOT quiet: other work was running; absolute times are noisy")}


def header(m: dict) -> str:
    """The 'Date. Machine. Load average' sentence every results table opens with (``m``: ``describe``)."""
    return (f"Date: {m['date']}. Machine: {m['cpu']}, {m['cpus']} logical CPUs, torch {m['torch']} with "
            f"{m['threads']} threads, Python {m['python']}. Load average before starting: {m['load_before']} "
            f"({m['quiet']}); after: {m['load_after']}.")


def write_report(out: Path, text: str) -> None:
    """Write a results table atomically (a killed run leaves the previous one) and show it."""
    from harness.core.io import write_atomic
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, text.encode())
    print(text)
    print(f"wrote {out}")
