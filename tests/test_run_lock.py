"""A run folder has one writer at a time: RUN_DIR/.lock (flock), taken before the checkpoints are read,
named in the refusal, and gone with its process (a killed trainer leaves no stale lock)."""
import fcntl
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from conftest import REPO
from harness.core.distributed import Dist
from harness.core.errors import VQBenchError
from harness.training.checkpointing import RunCheckpoints, RunLock

RUN_INFO = {"kind": "tokenizer", "config_hash": "x", "model_config": {}, "train_config": {}}
FORK = multiprocessing.get_context("fork")


def _hold(run_dir, ready, release):
    """Child process: hold the run folder's lock like a trainer would, until told to stop."""
    lock = RunLock(run_dir)
    ready.set()
    release.wait(60)
    lock.release()


def _start_holder(run_dir):
    ready, release = FORK.Event(), FORK.Event()
    child = FORK.Process(target=_hold, args=(run_dir, ready, release), daemon=True)
    child.start()
    assert ready.wait(30), "the holder process did not start"
    return child, release


def _try_lock(path, result):
    fd = os.open(path, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        result.value = 1
    except BlockingIOError:
        result.value = 0
    finally:
        os.close(fd)


def _held_by_someone(run_dir) -> bool:
    """Whether another process finds RUN_DIR/.lock locked (a child: flock conflicts per open file)."""
    result = FORK.Value("i", -1)
    p = FORK.Process(target=_try_lock, args=(str(run_dir / ".lock"), result))
    p.start()
    p.join(30)
    assert result.value in (0, 1)
    return result.value == 0


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_blocks_nothing(tmp_path):
    run = tmp_path / "run"
    child, _ = _start_holder(run)
    try:
        info = json.loads((run / ".lock").read_text())
        assert info["pid"] == child.pid and info["host"] == socket.gethostname()
        for resume in (False, True):           # the lock is checked before anything else, even a resume
            with pytest.raises(VQBenchError) as e:
                RunCheckpoints(run, RUN_INFO, "x", resume, Dist())
            msg = str(e.value)
            assert msg == (f"run folder {run} is being written by pid {child.pid} on {socket.gethostname()} "
                           f"since {info['since']}; wait for it to finish or choose another --run-dir")
        assert not (run / "checkpoints").exists()
    finally:
        os.kill(child.pid, signal.SIGKILL)     # a crash: the lock file keeps the dead holder's note
        child.join(30)
    assert json.loads((run / ".lock").read_text())["pid"] == child.pid
    ckpts = RunCheckpoints(run, RUN_INFO, "x", True, Dist())      # ... which blocks nothing
    assert json.loads((run / ".lock").read_text())["pid"] == os.getpid() and _held_by_someone(run)
    ckpts.close()
    assert (run / ".lock").read_text() == "" and not _held_by_someone(run)


def test_a_lock_held_through_another_open_file_of_this_process_also_refuses(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    with open(run / ".lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.write(json.dumps({"pid": 4242, "host": "elsewhere", "since": "2026-01-01T00:00:00"}))
        held.flush()
        with pytest.raises(VQBenchError, match=f"run folder {run} is being written by pid 4242 on elsewhere"):
            RunCheckpoints(run, RUN_INFO, "x", True, Dist())
        held.truncate(0)
        with pytest.raises(VQBenchError, match="being written by another process"):
            RunCheckpoints(run, RUN_INFO, "x", True, Dist())
    RunCheckpoints(run, RUN_INFO, "x", True, Dist()).close()


def test_the_lock_lives_as_long_as_the_run_checkpoints(tmp_path):
    run = tmp_path / "run"
    ckpts = RunCheckpoints(run, RUN_INFO, "x", False, Dist())
    assert _held_by_someone(run)
    assert json.loads((run / ".lock").read_text())["pid"] == os.getpid()
    ckpts.close()
    assert not _held_by_someone(run) and (run / ".lock").read_text() == ""
    with RunCheckpoints(run, RUN_INFO, "x", False, Dist()):
        assert _held_by_someone(run)
    assert not _held_by_someone(run)
    ckpts = RunCheckpoints(run, RUN_INFO, "x", False, Dist())
    del ckpts                                  # garbage collected: released
    assert not _held_by_someone(run)


def test_a_failed_call_in_this_process_does_not_block_the_next(tmp_path):
    """A RunCheckpoints kept alive by a traceback (pytest.raises, a failed run) is taken over, not waited for."""
    run = tmp_path / "run"
    first = RunCheckpoints(run, RUN_INFO, "x", False, Dist())
    second = RunCheckpoints(run, RUN_INFO, "x", True, Dist())
    first.close()                              # the earlier holder lets go: the new one keeps the lock
    assert _held_by_someone(run)
    second.close()
    assert not _held_by_someone(run)


def test_only_rank_zero_locks(tmp_path):
    run = tmp_path / "run"
    child, release = _start_holder(run)
    try:
        RunCheckpoints(run, RUN_INFO, "x", True, Dist(rank=1)).close()     # rank 0 does the locking
    finally:
        release.set()
        child.join(30)


@pytest.mark.slow          # three in-process trainings: ~15 s on a busy 2-core CPU
def test_in_process_training_twice_after_a_refusal(tmp_path):
    """The resume test's pattern: train, fail a resume with another configuration, train again."""
    from harness.training.train_tokenizer import train_tokenizer
    from tokenizer_helpers import TINY_VQ_SETTINGS, train_tiny_vq
    train_tiny_vq(tmp_path)
    with pytest.raises(VQBenchError, match="another configuration") as kept:    # its traceback survives
        train_tokenizer("vq-tiny", tmp_path, overrides=list(TINY_VQ_SETTINGS) + ["lr=1e-3"],
                        dataset="procedural", resume=True, progress=False)
    assert not _held_by_someone(tmp_path)
    with pytest.raises(VQBenchError, match="already holds checkpoints"):
        train_tokenizer("vq-tiny", tmp_path, overrides=list(TINY_VQ_SETTINGS), dataset="procedural", progress=False)
    final = train_tokenizer("vq-tiny", tmp_path, overrides=list(TINY_VQ_SETTINGS), dataset="procedural",
                            resume=True, progress=False)
    assert final.name == "step_00000002" and kept.value is not None
    assert not _held_by_someone(tmp_path)


# ------------------------------------------------------------------------------------ real CLI processes
TINY = ["--dataset", "procedural", "--quiet", "--set", "perceptual_weight=0", "--set", "batch_size=8",
        "--set", "disc_layers=1", "--set", "disc_channels=8", "--set", "disc_start=1"]


def _cli(run, steps, *extra):
    return [sys.executable, "-m", "harness.cli", "train", "vq-tiny", "--run-dir", str(run), *TINY,
            "--set", f"steps={steps}", "--set", "ckpt_every=2", *extra]


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    return env


@pytest.mark.slow
def test_two_trainers_on_one_folder_exactly_one_succeeds(tmp_path):
    run = tmp_path / "run"
    procs = [subprocess.Popen(_cli(run, 40), cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 2], outs
    err = next(e for p, (_, e) in zip(procs, outs) if p.returncode == 2).strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    # the loser came either while the winner trained (the lock) or after it finished (its checkpoints)
    assert "is being written by pid" in err[0] or "already holds checkpoints" in err[0], err


HOLD_AFTER_FIRST_CHECKPOINT = """
import os, signal, sys
from harness.training import checkpointing
save = checkpointing.RunCheckpoints.save
def stop_after_save(self, *a, **k):
    path = save(self, *a, **k)
    os.kill(os.getpid(), signal.SIGSTOP)      # frozen mid-run, holding the lock, until killed
    return path
checkpointing.RunCheckpoints.save = stop_after_save
from harness.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_a_running_trainer_refuses_resume_and_its_kill_frees_the_folder(tmp_path):
    run = tmp_path / "run"
    args = _cli(run, 4)[3:]                    # after `python -m harness.cli`
    holder = subprocess.Popen([sys.executable, "-c", HOLD_AFTER_FIRST_CHECKPOINT, *args], cwd=REPO, env=_env())
    try:
        deadline = time.time() + 300
        while not (run / "checkpoints" / "latest").exists() and holder.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert holder.poll() is None, "the holder exited before its first checkpoint"
        r = subprocess.run(_cli(run, 4, "--resume"), cwd=REPO, env=_env(), capture_output=True, text=True,
                           timeout=300)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert lines[0].startswith(f"error: run folder {run} is being written by pid {holder.pid} on "
                                   f"{socket.gethostname()} since "), lines
    finally:
        holder.kill()                          # SIGKILL: no clean-up, the lock file keeps its note
        holder.wait(30)
    assert json.loads((run / ".lock").read_text())["pid"] == holder.pid
    r = subprocess.run(_cli(run, 4, "--resume"), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert (run / "checkpoints" / "latest").read_text().strip() == "step_00000004"
    assert (run / ".lock").read_text() == ""
