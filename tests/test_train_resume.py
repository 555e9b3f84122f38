"""Training: exact resume after SIGKILL, NaN handling, configuration checks."""
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO, run_cli
from harness.core.errors import VQBenchError
from harness.training.train_tokenizer import train_tokenizer

TINY = ["--set", "perceptual_weight=0", "--set", "batch_size=8", "--set", "disc_layers=1",
        "--set", "disc_channels=8", "--set", "ema_decay=0.9", "--set", "warmup_steps=5"]


def _train_cmd(run_dir, steps, extra=()):
    return [sys.executable, "-m", "harness.cli", "train", "vq-tiny", "--run-dir", str(run_dir),
            "--dataset", "procedural", "--quiet", *TINY, "--set", f"steps={steps}",
            "--set", "ckpt_every=10", "--set", f"disc_start={steps // 3}", *extra]


def _final_tensors(run_dir: Path) -> dict:
    ckpt = run_dir / "checkpoints" / (run_dir / "checkpoints" / "latest").read_text().strip()
    return load_file(ckpt / "weights.safetensors") | load_file(ckpt / "optimizer.safetensors")


def test_sigkill_then_resume_gives_identical_weights(tmp_path, cli_env):
    steps = 150
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_train_cmd(full, steps), check=True, env=cli_env, cwd=REPO, timeout=300)

    proc = subprocess.Popen(_train_cmd(killed, steps), env=cli_env, cwd=REPO)
    latest = killed / "checkpoints" / "latest"
    deadline = time.time() + 120
    while not latest.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    state = json.loads((killed / "checkpoints" / latest.read_text().strip() / "state.json").read_text())
    assert state["step"] < steps, "the run finished before it could be killed; the test proves nothing"

    subprocess.run(_train_cmd(killed, steps, ["--resume"]), check=True, env=cli_env, cwd=REPO, timeout=300)
    a, b = _final_tensors(full), _final_tensors(killed)
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _tiny_overrides(steps=4):
    return ["perceptual_weight=0", "batch_size=8", "disc_layers=1", "disc_channels=8",
            f"steps={steps}", "ckpt_every=2", "disc_start=1"]


def test_resume_with_other_configuration_is_refused(tmp_path):
    train_tokenizer("vq-tiny", tmp_path, overrides=_tiny_overrides(), dataset="procedural", progress=False)
    with pytest.raises(VQBenchError, match="another configuration"):
        train_tokenizer("vq-tiny", tmp_path, overrides=_tiny_overrides() + ["lr=1e-3"],
                        dataset="procedural", resume=True, progress=False)
    with pytest.raises(VQBenchError, match="already holds checkpoints"):
        train_tokenizer("vq-tiny", tmp_path, overrides=_tiny_overrides(), dataset="procedural", progress=False)


def test_nan_loss_stops_with_step_and_keeps_last_good_checkpoint(tmp_path, monkeypatch):
    from tokenizer_helpers import poison_forward_after
    poison_forward_after(monkeypatch, "vq-tiny", calls=3)
    with pytest.raises(VQBenchError, match=r"non-finite training loss at step 3.*step_00000002"):
        train_tokenizer("vq-tiny", tmp_path, overrides=_tiny_overrides(6), dataset="procedural",
                        progress=False)
    ckpts = sorted(p.name for p in (tmp_path / "checkpoints").glob("step_*"))
    assert ckpts == ["step_00000002"]
    weights = load_file(tmp_path / "checkpoints" / "step_00000002" / "weights.safetensors")
    assert all(torch.isfinite(v).all() for v in weights.values() if v.dtype.is_floating_point)


def test_cli_errors_are_one_line_with_nonzero_exit(tmp_path, cli_env):
    cases = [
        ["train", "vq-tnyi", "--run-dir", tmp_path / "r"],                       # unknown preset
        ["train", "vq-tiny", "--run-dir", tmp_path / "r", "--set", "lrr=1"],     # unknown setting
        ["train", "vq-tiny", "--run-dir", tmp_path / "r", "--set", "steps=abc"],  # bad type
        ["train", "vq-tiny", "--run-dir", tmp_path / "r", "--dataset", f"imagefolder:{tmp_path / 'none'}"],
        ["eval", tmp_path / "nothing", "--results", tmp_path / "res.jsonl"],     # no checkpoint
    ]
    for args in cases:
        r = run_cli(*args, env=cli_env)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (args, r.stderr)
    assert "did you mean vq-tiny" in run_cli(*cases[0], env=cli_env).stderr
    assert "did you mean lr" in run_cli(*cases[1], env=cli_env).stderr


def test_stylegan_lecam_recipe_trains_and_resumes_exactly(tmp_path):
    """The masked-generation recipe (StyleGAN discriminator + LeCam) carried by a preset; rolling the
    run back to its step-3 checkpoint and resuming reproduces step 6 bit for bit (LeCam EMAs included)."""
    over = ["perceptual_weight=0", "batch_size=8", "disc_start=1", "ckpt_every=3", "steps=6"]
    full = tmp_path / "full"
    train_tokenizer("cvq-maskgen-tiny", full, overrides=over, dataset="procedural", progress=False)
    final = full / "checkpoints" / "step_00000006"
    state = json.loads((final / "state.json").read_text())
    assert state["train_config"]["disc_arch"] == "stylegan" and state["train_config"]["lecam_weight"] == 0.001
    expected = load_file(final / "weights.safetensors")
    assert float(expected["lecam.ema_real"]) != 0.0 and any(k.startswith("disc.blocks") for k in expected)

    import shutil
    rolled = tmp_path / "rolled"
    shutil.copytree(full, rolled)
    shutil.rmtree(rolled / "checkpoints" / "step_00000006")
    (rolled / "checkpoints" / "latest").write_text("step_00000003\n")
    train_tokenizer("cvq-maskgen-tiny", rolled, overrides=over, dataset="procedural", resume=True, progress=False)
    again = load_file(rolled / "checkpoints" / "step_00000006" / "weights.safetensors")
    assert expected.keys() == again.keys() and all(torch.equal(expected[k], again[k]) for k in expected)
