"""The machine a run or benchmark ran on: wall times and 200-step trajectories depend on it (two 2-core
machines have differed 2x in the main job's time and in trained values; README, the three commands)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

import torch


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_description() -> str:
    """One line for a timings file: CPU model, threads, torch and its CPU capability, the GPU if any."""
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu_model()}, {os.cpu_count()} CPU threads visible, torch {torch.__version__} with CPU capability "
            f"{torch.backends.cpu.get_cpu_capability()} and {torch.get_num_threads()} threads{gpu}")
