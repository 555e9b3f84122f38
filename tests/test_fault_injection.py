"""Faults at random points: SIGKILL a training run and an evaluation 20 times each and prove that
resuming ends bit-identical to an uninterrupted run and that no results row is lost or duplicated.

The kill points are drawn from a seeded generator (printed on failure): a training run is killed a
random 0-300 ms after it wrote a checkpoint (so kills land inside later steps and inside the writes
of the next checkpoint: ckpt_every=1), an evaluation at a random moment of its measured wall time.
"""
from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from conftest import REPO
from harness.core.results import ResultsStore, make_rows

pytestmark = pytest.mark.slow
KILLS = 20
SEED = 20261130
TINY = ["--set", "perceptual_weight=0", "--set", "batch_size=8", "--set", "disc_layers=1",
        "--set", "disc_channels=8", "--set", "ema_decay=0.9", "--set", "warmup_steps=5",
        "--set", "steps=80", "--set", "ckpt_every=1", "--set", "disc_start=20"]


def _cmd(*args) -> list[str]:
    return [sys.executable, "-m", "harness.cli", *map(str, args)]


def _train(run: Path, *extra) -> list[str]:
    return _cmd("train", "vq-tiny", "--run-dir", run, "--dataset", "procedural", "--quiet", *TINY, *extra)


def _latest(run: Path) -> str | None:
    pointer = run / "checkpoints" / "latest"
    try:
        return pointer.read_text().strip()
    except FileNotFoundError:
        return None


def _final(run: Path) -> dict:
    ckpt = run / "checkpoints" / _latest(run)
    return load_file(ckpt / "weights.safetensors") | load_file(ckpt / "optimizer.safetensors")


def test_training_killed_twenty_times_resumes_bit_identical(tmp_path, cli_env):
    rng = random.Random(SEED)
    full, killed = tmp_path / "full", tmp_path / "killed"
    subprocess.run(_train(full), check=True, env=cli_env, cwd=REPO, timeout=600)

    kills = 0
    while kills < KILLS:
        before = _latest(killed)
        proc = subprocess.Popen(_train(killed, "--resume"), env=cli_env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.time() + 300
        while _latest(killed) == before and proc.poll() is None and time.time() < deadline:
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.3))
        if proc.poll() is not None:              # finished (or failed) before the kill
            assert proc.returncode == 0, proc.stderr.read().decode()
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        state = json.loads((killed / "checkpoints" / _latest(killed) / "state.json").read_text())
        assert 0 < state["step"] <= 80
    assert kills == KILLS, f"the run finished after {kills} kills; lengthen it so every kill lands"

    subprocess.run(_train(killed, "--resume"), check=True, env=cli_env, cwd=REPO, timeout=600)
    a, b = _final(full), _final(killed)
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:5]
    leftovers = [p.name for p in (killed / "checkpoints").iterdir() if p.name.endswith(".tmp")]
    assert not leftovers, f"killed writes left temporaries behind: {leftovers}"
    assert len(list((killed / "checkpoints").glob("step_*"))) <= 2, "old checkpoints were not pruned"


def _key(row: dict) -> tuple:
    return row["run_id"], row["metric"], row["protocol"], row["dataset"], row["split"], \
        json.loads(row["extra"]).get("k")


def test_evaluation_killed_twenty_times_loses_and_duplicates_no_row(tmp_path, cli_env):
    from tokenizer_helpers import train_tiny_vq
    rng = random.Random(SEED + 1)
    run = tmp_path / "tok"
    train_tiny_vq(run)

    def evaluate(store: Path) -> list[str]:
        return _cmd("progressive", run, "--results", store, "--n-eval", "32", "--batch-size", "8", "--quiet")

    reference = tmp_path / "reference.jsonl"
    t0 = time.time()
    subprocess.run(evaluate(reference), check=True, env=cli_env, cwd=REPO, timeout=600)
    wall = time.time() - t0

    store = tmp_path / "store.jsonl"
    foreign = make_rows({"run_id": "other", "kind": "tokenizer", "model": "vq", "preset": "vq-tiny",
                         "config_hash": "x", "dataset": "procedural", "split": "test", "resolution": 16,
                         "seed": 0, "started_at": "2026-11-30T00:00:00+00:00"},
                        {"psnr": 20.0}, {"psnr": True}, n_images=8)
    ResultsStore(store).append(foreign)
    finished = 0
    for _ in range(KILLS):
        proc = subprocess.Popen(evaluate(store), env=cli_env, cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(rng.uniform(0.0, wall))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        finished += proc.returncode == 0
        rows = ResultsStore(store).records()            # parses: no torn or corrupt line
        counts = Counter(_key(r) for r in rows)
        assert max(counts.values()) == 1, [k for k, n in counts.items() if n > 1]
        assert any(r["run_id"] == "other" for r in rows), "a kill lost the other run's row"
        # rows are written only once the evaluation is done, so a row is present only if all are
        # no row is dropped: the other run's row always survives, and this run's rows appear all at once
        mine = [r for r in rows if r["run_id"] != "other"]
        assert len(mine) in (0, len(ResultsStore(reference).records()))
    assert finished < KILLS, "no evaluation was killed; the test proves nothing"

    subprocess.run(evaluate(store), check=True, env=cli_env, cwd=REPO, timeout=600)
    want = {_key(r): r["value"] for r in ResultsStore(reference).records()}
    got = {_key(r): r["value"] for r in ResultsStore(store).records() if r["run_id"] != "other"}
    assert got == want
    assert not list(tmp_path.glob(".store.jsonl.*.tmp")), "a killed write left its temporary file"
