import os
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parent.parent
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session", autouse=True)
def _registries_loaded():
    from harness.models.catalog import load_all
    load_all()


@pytest.fixture
def cli_env(tmp_path):
    """Environment for subprocesses: repo importable, isolated cache of converted weights kept shared."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def run_cli(*args, env=None, cwd=None, timeout=300):
    import subprocess
    return subprocess.run([sys.executable, "-m", "harness.cli", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd or REPO, timeout=timeout)


def run_torchrun(nproc: int, *args, env, timeout=300):
    """``torchrun --standalone --nproc_per_node NPROC -m harness.cli ARGS`` (gloo on the CPU)."""
    import subprocess
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "harness.cli", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def load_benchmark(name: str):
    """benchmarks/<name>.py imported as a module (the benchmarks are scripts, not a package)."""
    import importlib.util
    spec = importlib.util.spec_from_file_location(f"{name}_under_test", REPO / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def positive_finite(v) -> bool:
    """A real number (not a bool), finite and above zero: what a measured time or rate must be."""
    import math
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0
