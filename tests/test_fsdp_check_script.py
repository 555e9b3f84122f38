"""benchmarks/fsdp_check.py's logic on the CPU (the GPU run is benchmarks/results/gpu_fsdp_h200.md)."""
import json
import os
import subprocess
import sys

from conftest import REPO


def test_fsdp_check_steps_section_runs_on_the_cpu(tmp_path):
    # a subprocess: the check joins a one-rank process group, which must not outlive it
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "benchmarks/fsdp_check.py", "--quick", "--device", "cpu", "--only", "steps",
                        "--out", str(tmp_path)], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    result = json.loads((tmp_path / "fsdp_check.json").read_text())
    rows = result["sections"]["steps"]["rows"]
    assert [row["way"] for row in rows] == ["ddp", "fsdp", "fsdp+ac"]
    assert all(row["status"] == "ok" and row["losses_finite"] and row["steps_per_s"] > 0 for row in rows)
    # same seed, same batch, fp32 on the CPU: the first step's loss is the same every way
    assert all(abs(row["first_loss_vs_ddp"]) < 1e-5 for row in rows)
    assert "| ar-tiny | fsdp+ac |" in (tmp_path / "fsdp_check.md").read_text()
