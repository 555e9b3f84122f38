"""Damaged, hand-edited or hostile checkpoints, pointers, token caches and run-folder locks.

Each case damages the fresh copy of the world in ``setup`` (the protected-files snapshot is taken after),
so the check is that the CLI refuses with one line naming the file and changes nothing further. Pickle
payloads append to the results store when they run: an executed payload shows as a changed protected file.
"""
from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
from pathlib import Path

import torch

from bad_input_cases import Case, World

TINY_VQ = ["--set", "perceptual_weight=0", "--set", "batch_size=8", "--set", "disc_layers=1",
           "--set", "disc_channels=8", "--set", "steps=2", "--set", "ckpt_every=2", "--set", "disc_start=1"]
GEN = ["--set", "steps=2", "--set", "batch_size=8", "--set", "ckpt_every=2", "--set", "warmup_steps=1"]


# ---------------------------------------------------------------------------------------------- commands
def _eval(w: World, run: Path | None = None) -> list:
    return ["eval", run or w.tokenizer_run, "--results", w.results, "--n-eval", "8", "--quiet"]


def _resume(w: World) -> list:
    """Resuming the (finished) template run: exit 0 if nothing were wrong."""
    return ["train", "vq-tiny", "--run-dir", w.tokenizer_run, "--resume", "--dataset", "procedural", "--quiet",
            *TINY_VQ]


def _fresh(w: World) -> list:
    return ["train", "vq-tiny", "--run-dir", w.tokenizer_run, "--dataset", "procedural", "--quiet", *TINY_VQ]


def _progressive(w: World) -> list:
    return ["progressive", w.tokenizer_run, "--results", w.results, "--n-eval", "8", "--quiet"]


def _train_generator(w: World) -> list:
    return ["train", "ar-tiny", "--tokenizer", w.tokenizer_run, "--run-dir", w.root / "new-gen", "--quiet", *GEN]


# ------------------------------------------------------------------------------------------------ damage
def _file(w: World, name: str) -> Path:
    return w.tokenizer_ckpt / name


def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:keep if keep is not None else len(data) // 2])


def _flip_data_byte(path: Path) -> None:
    """One byte of tensor data changed; the file stays well-formed safetensors."""
    data = bytearray(path.read_bytes())
    data[8 + int.from_bytes(data[:8], "little") + 3] ^= 0x55
    path.write_bytes(bytes(data))


def _edit_state(folder: Path, edit) -> None:
    f = folder / "state.json"
    f.write_text(json.dumps(edit(json.loads(f.read_text()))))


def _drop(key):
    return lambda s: {k: v for k, v in s.items() if k != key}


def _without_checksums(w: World, folder: Path | None = None) -> None:
    _edit_state(folder or w.tokenizer_ckpt, _drop("files"))


class _Payload:
    """Unpickled, it appends to ``target`` (the world's results store, a protected file)."""
    def __init__(self, target: Path):
        self.target = str(target)

    def __reduce__(self):
        return exec, (f"open({self.target!r}, 'a').write('payload executed\\n')",)


def _pickle_at(path: Path, w: World) -> Path:
    torch.save({"indices": _Payload(w.results)}, path)
    return path


def _latest(w: World, text: str) -> None:
    (w.tokenizer_run / "checkpoints" / "latest").write_text(text)


def _pointer(w: World) -> str:
    return str(w.tokenizer_run / "checkpoints" / "latest")


def _hold_lock(w: World, run: Path | None = None) -> None:
    """Hold RUN/.lock through an open file of this process, as a running trainer elsewhere would."""
    run = run or w.tokenizer_run
    run.mkdir(parents=True, exist_ok=True)
    held = open(run / ".lock", "a+")
    fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    held.truncate(0)
    held.write(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": "2026-01-02T03:04:05"}))
    held.flush()
    w._held_lock = held                    # open for as long as the world lives (flock dies with the file)


def _holder(w: World, run: Path | None = None) -> str:
    return f"run folder {run or w.tokenizer_run} is being written by pid {os.getpid()} on {socket.gethostname()}"


def _step_outside(w: World) -> None:
    step = w.tokenizer_ckpt
    outside = w.root / "outside-step"
    shutil.move(str(step), outside)
    step.symlink_to(outside, target_is_directory=True)


def _checkpoints_loop(w: World) -> None:
    ckpts = w.tokenizer_run / "checkpoints"
    shutil.move(str(ckpts), w.root / "moved-checkpoints")
    ckpts.symlink_to(ckpts)


def _gen_ckpt(w: World) -> Path:
    return w.generator_run / "checkpoints" / (w.generator_run / "checkpoints" / "latest").read_text().strip()


def _token_cache(w: World) -> Path:
    from harness.training.token_data import token_cache
    return token_cache(w.tokenizer_ckpt, "procedural", None)


def _out_of_range_cache(w: World) -> None:
    from safetensors.torch import save_file
    save_file({"indices": torch.full((4, 16), 10 ** 6), "labels": torch.zeros(4, dtype=torch.long)}, _token_cache(w))


def _setup(*steps, argv):
    """A setup that runs ``steps`` (each called with the world) and returns ``argv(world)``."""
    def setup(w: World) -> list:
        for step in steps:
            step(w)
        return argv(w)
    return setup


def _weights(w):
    return str(_file(w, "weights.safetensors"))


def _optimizer(w):
    return str(_file(w, "optimizer.safetensors"))


def _state(w):
    return str(_file(w, "state.json"))


CASES = [
    # tensor files: the recorded sha256 catches any change, safetensors catches the rest in old checkpoints
    Case("eval-weights-truncated", _setup(lambda w: _truncate(_file(w, "weights.safetensors")), argv=_eval),
         _weights),
    Case("eval-weights-flipped-byte", _setup(lambda w: _flip_data_byte(_file(w, "weights.safetensors")), argv=_eval),
         _weights),
    Case("eval-optimizer-zero-bytes", _setup(lambda w: _truncate(_file(w, "optimizer.safetensors"), 0), argv=_eval),
         _optimizer),
    Case("eval-optimizer-missing", _setup(lambda w: _file(w, "optimizer.safetensors").unlink(), argv=_eval),
         _optimizer),
    Case("eval-old-checkpoint-weights-truncated",
         _setup(_without_checksums, lambda w: _truncate(_file(w, "weights.safetensors")), argv=_eval), _weights),
    Case("eval-old-checkpoint-weights-garbage",
         _setup(_without_checksums, lambda w: _file(w, "weights.safetensors").write_bytes(b"\xff" * 100),
                argv=_eval), _weights),
    Case("eval-old-checkpoint-weights-are-a-pickle",
         _setup(_without_checksums, lambda w: _pickle_at(_file(w, "weights.safetensors"), w), argv=_eval), _weights),
    Case("eval-weights-are-a-folder",
         _setup(lambda w: (_file(w, "weights.safetensors").unlink(), _file(w, "weights.safetensors").mkdir()),
                argv=_eval), _weights),
    Case("eval-checksum-entry-malformed",
         _setup(lambda w: _edit_state(w.tokenizer_ckpt, lambda s: s | {"files": {"weights.safetensors": 1}}),
                argv=_eval), _state),
    Case("resume-weights-flipped-byte", _setup(lambda w: _flip_data_byte(_file(w, "weights.safetensors")),
                                               argv=_resume), _weights),
    Case("resume-optimizer-truncated", _setup(lambda w: _truncate(_file(w, "optimizer.safetensors")), argv=_resume),
         _optimizer),
    Case("progressive-weights-flipped-byte", _setup(lambda w: _flip_data_byte(_file(w, "weights.safetensors")),
                                                    argv=_progressive), _weights),

    # state.json edited by hand
    Case("eval-state-not-json", _setup(lambda w: _file(w, "state.json").write_text("{step: 2,"), argv=_eval), _state),
    Case("eval-state-a-list", _setup(lambda w: _file(w, "state.json").write_text("[2, \"tokenizer\"]"), argv=_eval),
         _state),
    Case("eval-state-empty", _setup(lambda w: _file(w, "state.json").write_text(""), argv=_eval), _state),
    Case("eval-state-not-utf8", _setup(lambda w: _file(w, "state.json").write_bytes(b"\xff\xfe{}"), argv=_eval),
         _state),
    Case("eval-state-missing-step", _setup(lambda w: _edit_state(w.tokenizer_ckpt, _drop("step")), argv=_eval),
         _state),
    Case("eval-state-missing-kind", _setup(lambda w: _edit_state(w.tokenizer_ckpt, _drop("kind")), argv=_eval),
         _state),
    Case("eval-state-step-word", _setup(lambda w: _edit_state(w.tokenizer_ckpt, lambda s: s | {"step": "abc"}),
                                        argv=_eval), _state),
    Case("eval-state-step-negative", _setup(lambda w: _edit_state(w.tokenizer_ckpt, lambda s: s | {"step": -2}),
                                            argv=_eval), _state),
    Case("eval-state-step-not-its-folder",
         _setup(lambda w: _edit_state(w.tokenizer_ckpt, lambda s: s | {"step": 9}), argv=_eval), _state),
    Case("eval-state-missing-model-config",
         _setup(lambda w: _edit_state(w.tokenizer_ckpt, _drop("model_config")), argv=_eval), _state),
    Case("eval-state-is-a-folder",
         _setup(lambda w: (_file(w, "state.json").unlink(), _file(w, "state.json").mkdir()), argv=_eval), _state),
    Case("resume-state-step-word", _setup(lambda w: _edit_state(w.tokenizer_ckpt, lambda s: s | {"step": "abc"}),
                                          argv=_resume), _state),
    Case("resume-state-a-list", _setup(lambda w: _file(w, "state.json").write_text("[]"), argv=_resume), _state),
    Case("resume-state-rng-edited",
         _setup(lambda w: _edit_state(w.tokenizer_ckpt, lambda s: s | {"rng": {"torch": "!!"}}), argv=_resume),
         lambda w: str(w.tokenizer_ckpt)),
    Case("progressive-state-missing-step",
         _setup(lambda w: _edit_state(w.tokenizer_ckpt, _drop("step")), argv=_progressive), _state),

    # the latest pointer
    Case("eval-latest-escapes-the-run", _setup(lambda w: _latest(w, "../../elsewhere\n"), argv=_eval), _pointer),
    Case("eval-latest-absolute", _setup(lambda w: _latest(w, "/etc\n"), argv=_eval), _pointer),
    Case("eval-latest-missing-step", _setup(lambda w: _latest(w, "step_00000007\n"), argv=_eval), "step_00000007"),
    Case("eval-latest-not-a-step-name", _setup(lambda w: _latest(w, "best\n"), argv=_eval), _pointer),
    Case("eval-latest-empty", _setup(lambda w: _latest(w, ""), argv=_eval), _pointer),
    Case("eval-latest-binary", _setup(lambda w: (w.tokenizer_run / "checkpoints" / "latest").write_bytes(b"\x80\x81"),
                                      argv=_eval), _pointer),
    Case("eval-latest-symlink-loop",
         _setup(lambda w: ((w.tokenizer_run / "checkpoints" / "latest").unlink(),
                           (w.tokenizer_run / "checkpoints" / "latest").symlink_to("latest")), argv=_eval), _pointer),
    Case("eval-latest-symlink-to-outside",
         _setup(lambda w: ((w.root / "pointer.txt").write_text("step_00000002\n"),
                           (w.tokenizer_run / "checkpoints" / "latest").unlink(),
                           (w.tokenizer_run / "checkpoints" / "latest").symlink_to(w.root / "pointer.txt")),
                argv=_eval), _pointer),
    Case("eval-step-folder-links-outside", _setup(_step_outside, argv=_eval), lambda w: str(w.tokenizer_ckpt)),
    Case("eval-checkpoints-symlink-loop", _setup(_checkpoints_loop, argv=_eval),
         lambda w: str(w.tokenizer_run / "checkpoints")),
    Case("eval-run-is-a-symlink-loop",
         _setup(lambda w: (w.root / "loop").symlink_to(w.root / "loop"), argv=lambda w: _eval(w, w.root / "loop")),
         lambda w: str(w.root / "loop")),
    Case("resume-latest-escapes-the-run", _setup(lambda w: _latest(w, "../../elsewhere"), argv=_resume), _pointer),
    Case("resume-latest-absolute", _setup(lambda w: _latest(w, "/etc"), argv=_resume), _pointer),
    Case("resume-latest-missing-step", _setup(lambda w: _latest(w, "step_00000099"), argv=_resume), "step_00000099"),
    Case("resume-checkpoints-symlink-loop", _setup(_checkpoints_loop, argv=_resume),
         lambda w: str(w.tokenizer_run / "checkpoints")),
    Case("fresh-train-latest-absolute", _setup(lambda w: _latest(w, "/etc"), argv=_fresh), _pointer),
    Case("progressive-latest-escapes-the-run", _setup(lambda w: _latest(w, "../.."), argv=_progressive), _pointer),

    # one writer per run folder
    Case("resume-while-another-writer-holds-the-run", _setup(_hold_lock, argv=_resume), _holder),
    Case("fresh-train-while-another-writer-holds-the-run", _setup(_hold_lock, argv=_fresh), _holder),
    Case("train-new-run-while-another-writer-holds-it",
         _setup(lambda w: _hold_lock(w, w.root / "new-run"),
                argv=lambda w: ["train", "vq-tiny", "--run-dir", w.root / "new-run", "--dataset", "procedural",
                                "--quiet", *TINY_VQ]),
         lambda w: _holder(w, w.root / "new-run")),

    # generators: their checkpoints and the tokenizer's token cache
    Case("generator-token-cache-is-a-pickle", _setup(lambda w: _pickle_at(_token_cache(w), w), argv=_train_generator),
         lambda w: str(_token_cache(w)), needs_generator=True),
    Case("generator-token-cache-truncated", _setup(lambda w: _truncate(_token_cache(w)), argv=_train_generator),
         lambda w: str(_token_cache(w)), needs_generator=True),
    Case("generator-token-cache-out-of-range", _setup(_out_of_range_cache, argv=_train_generator),
         lambda w: str(_token_cache(w)), needs_generator=True),
    Case("eval-generator-weights-flipped-byte",
         _setup(lambda w: _flip_data_byte(_gen_ckpt(w) / "weights.safetensors"),
                argv=lambda w: ["eval", w.generator_run, "--results", w.results, "--n-samples", "4", "--quiet"]),
         lambda w: str(_gen_ckpt(w) / "weights.safetensors"), needs_generator=True),
    Case("eval-generator-state-missing-num-classes",
         _setup(lambda w: _edit_state(_gen_ckpt(w), _drop("num_classes")),
                argv=lambda w: ["eval", w.generator_run, "--results", w.results, "--n-samples", "4", "--quiet"]),
         lambda w: str(_gen_ckpt(w) / "state.json"), needs_generator=True),
    Case("generator-tokenizer-weights-flipped-byte",
         _setup(lambda w: _flip_data_byte(_file(w, "weights.safetensors")), argv=_train_generator),
         _weights, needs_generator=True),
]
