"""The generator pipeline: train on a frozen tokenizer's tokens, resume exactly, sample to ADM .npz."""
import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from conftest import run_cli
from harness.core.contracts import SamplerConfig
from harness.core.errors import VQBenchError
from harness.evaluation.record_generation import sample_to_npz
from harness.training.train_tokenizer import train_tokenizer
from harness.training.train_generator import train_generator

GEN = ["steps=6", "batch_size=16", "ckpt_every=3", "warmup_steps=2", "ema_decay=0.9"]


@pytest.fixture(scope="module")
def tokenizer_run(tmp_path_factory):
    run = tmp_path_factory.mktemp("vq")
    train_tokenizer("vq-tiny", run, overrides=["steps=4", "batch_size=8", "perceptual_weight=0",
                                              "disc_weight=0", "ckpt_every=4"],
                    dataset="procedural", progress=False)
    return run


def _weights(run):
    latest = (run / "checkpoints" / "latest").read_text().strip()
    return load_file(run / "checkpoints" / latest / "weights.safetensors")


def test_train_resume_equals_uninterrupted(tokenizer_run, tmp_path):
    full = train_generator("ar-tiny", tokenizer_run, tmp_path / "full", overrides=GEN, progress=False)
    train_generator("ar-tiny", tokenizer_run, tmp_path / "cut", overrides=["steps=3"] + GEN[1:],
                    progress=False)
    with pytest.raises(VQBenchError, match="another configuration"):      # steps differ from the cut run
        train_generator("ar-tiny", tokenizer_run, tmp_path / "cut", overrides=GEN, resume=True, progress=False)
    # the same configuration killed after its step-3 checkpoint, then resumed, ends where the full run ends
    import shutil
    cut = tmp_path / "killed"
    shutil.copytree(tmp_path / "full", cut)
    (cut / "checkpoints" / "latest").write_text("step_00000003\n")
    shutil.rmtree(cut / "checkpoints" / "step_00000006")
    resumed = train_generator("ar-tiny", tokenizer_run, cut, overrides=GEN, resume=True, progress=False)
    a, b = _weights(tmp_path / "full"), _weights(cut)
    assert full.name == resumed.name == "step_00000006"
    assert a.keys() == b.keys() and any(k.startswith("ema.") for k in a)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_sample_to_npz_is_class_balanced_and_reproducible(tokenizer_run, tmp_path):
    run = tmp_path / "ar"
    train_generator("ar-tiny", tokenizer_run, run, overrides=GEN, progress=False)
    s = SamplerConfig(cfg_scale=2.0, top_k=8)
    a = np.load(sample_to_npz(run, tmp_path / "a.npz", n=12, sampler=s, seed=3, batch_size=5, device="cpu")[0])
    b = np.load(sample_to_npz(run, tmp_path / "b.npz", n=12, sampler=s, seed=3, batch_size=5, device="cpu")[0])
    assert a["arr_0"].shape == (12, 16, 16, 3) and a["arr_0"].dtype == np.uint8
    assert np.bincount(a["arr_1"]).tolist() == [3, 3, 3, 3]          # procedural: 4 classes
    assert np.array_equal(a["arr_0"], b["arr_0"])


def test_cli_generator_errors(tokenizer_run, tmp_path, cli_env):
    r = run_cli("train", "ar-tiny", "--run-dir", tmp_path / "x", env=cli_env)
    assert r.returncode == 2 and "pass --tokenizer" in r.stderr
    r = run_cli("train", "ar-tiny", "--run-dir", tmp_path / "x", "--tokenizer", tmp_path / "nothing", env=cli_env)
    assert r.returncode == 2 and "no checkpoint found" in r.stderr
    r = run_cli("params", "ar-l", env=cli_env)
    assert r.returncode == 0 and "parameters" in r.stdout
