"""A training run's ``checkpoints/`` folder: refuse to overwrite a run unless resuming, save every
tensor that training depends on, and restore it exactly on ``--resume``.

A checkpoint (file format: ``harness.core.checkpoint``) holds each module's weights under its name
(``model.``, ``disc.``, ``lecam.``), the EMA under ``ema.``, each optimizer's moments under its name
(``g``, ``d``), the RNG states, and the run description (preset, configs and their hash, data).
With the batch order a pure function of (seed, step), a run killed and resumed ends with the same
weights, bit for bit, as an uninterrupted one.

A run folder has one writer at a time: ``RunCheckpoints`` takes an exclusive ``flock`` on
``RUN_DIR/.lock`` (rank 0) before it looks at the checkpoints, and holds it until the final checkpoint
is written, ``close()`` is called, the object is garbage collected or the process ends. The kernel drops
the lock with the process, so a crashed or killed trainer never leaves a stale lock behind; the file
itself stays (empty when nobody holds it; the holder's pid, host and start time while held).
"""
from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path

import torch

from harness.core import checkpoint as ckpt
from harness.core.distributed import Dist, all_true
from harness.core.errors import VQBenchError, error_text
from harness.core.io import stale_temporaries
from harness.models.checkpoints import state_part
from harness.training.optim import EMA
from harness.training.sharding import broadcast_buffers

try:
    import fcntl
except ImportError:                       # not POSIX: no lock (one writer is then the user's business)
    fcntl = None

LOCK_NAME = ".lock"


@dataclass
class TrainingState:
    """What a checkpoint saves and restores; parts that are None (no discriminator, no EMA) are skipped."""
    modules: dict[str, torch.nn.Module | None]          # name -> module, e.g. {"model": ..., "disc": ...}
    optimizers: dict[str, torch.optim.Optimizer | None]  # name -> optimizer, e.g. {"g": ..., "d": ...}
    ema: EMA | None = None
    optimizes: dict[str, str] = field(default_factory=lambda: {"g": "model", "d": "disc"})  # optimizer -> module

    def sharded_tree(self, listed: dict | None = None) -> dict:
        """The state as torch.distributed.checkpoint saves it (``parallel=fsdp``): each module's state
        dict (this process's shards), ``ema``, and under ``optim`` each optimizer's per-parameter state
        keyed by parameter name, so it reshards to any number of processes. With ``listed`` (a
        checkpoint's ``sharded_listing``) the optimizer part is an empty template of what that
        checkpoint holds, to load into: a parameter the optimizer never stepped (frozen, unused, a
        discriminator before its start) has no state, as in the optimizer's own state_dict."""
        from torch.distributed.checkpoint.state_dict import get_model_state_dict
        for module in self.modules.values():
            if module is not None:
                broadcast_buffers(module)
        tree = {name: get_model_state_dict(m) for name, m in self.modules.items() if m is not None}
        if self.ema is not None:
            tree["ema"] = self.ema.shadow
        tree[ckpt.OPTIMIZER_PART] = {}
        for name, opt in self.optimizers.items():
            if opt is not None:
                module = self.modules[self.optimizes[name]]
                prefix = f"{ckpt.OPTIMIZER_PART}.{name}.state."
                tree[ckpt.OPTIMIZER_PART][name] = {"state": _optimizer_state(module, opt) if listed is None
                                                   else _optimizer_template(module, prefix, listed)}
        return tree

    def load_sharded_tree(self, tree: dict) -> None:
        """Put a ``sharded_tree`` filled from a checkpoint back into the modules and optimizers."""
        from torch.distributed.checkpoint.state_dict import set_model_state_dict
        for name, module in self.modules.items():
            if module is not None:
                set_model_state_dict(module, tree[name])
        if self.ema is not None:
            self.ema.shadow = tree["ema"]
        for name, opt in self.optimizers.items():
            if opt is not None:
                params = dict(self.modules[self.optimizes[name]].named_parameters())
                opt.state.clear()
                for fqn, values in tree[ckpt.OPTIMIZER_PART][name]["state"].items():
                    opt.state[params[fqn]] = values


def _optimizer_state(module: torch.nn.Module, opt: torch.optim.Optimizer) -> dict:
    """parameter name -> its optimizer state (moments, step), for the parameters that have one."""
    names = {id(p): n for n, p in module.named_parameters()}
    return {names[id(p)]: dict(values) for p, values in opt.state.items() if values}


def _optimizer_template(module: torch.nn.Module, prefix: str, listed: dict) -> dict:
    """Tensors to load a checkpoint's optimizer state into: parameter-shaped ones like the parameter
    (a DTensor shard under FSDP), the rest (the step count) plain."""
    params = dict(module.named_parameters())
    state: dict[str, dict] = {}
    for key, meta in listed.items():
        if key.startswith(prefix):
            fqn, what = key[len(prefix):].rsplit(".", 1)
            if fqn not in params:
                raise VQBenchError(f"the checkpoint holds optimizer state of {fqn!r}, which this model does not "
                                   "have; resume with the settings it was trained with")
            p = params[fqn]
            state.setdefault(fqn, {})[what] = (torch.zeros_like(p, dtype=meta.properties.dtype)
                                               if tuple(meta.size) == tuple(p.shape)
                                               else torch.zeros(meta.size, dtype=meta.properties.dtype))
    return state


class RunCheckpoints:
    """The checkpoints of one run. ``run_info`` is the run description written into every
    ``state.json`` (``kind``, ``config_hash``, ``model_config``, ``train_config``, ...); a checkpoint
    is resumed only if it was written for the same description. ``hash_covers`` names, for the error
    message, what the config hash is computed from.

    Creating it takes the run folder's lock (``RunLock``, rank 0) before reading ``latest``; the lock is
    released by ``save(done=True)``, ``close()`` (or leaving a ``with`` block), a failed construction or
    restore, garbage collection, or the end of the process.

    ``sharded`` (``parallel=fsdp``): checkpoints are written and restored in the sharded format by
    every process together, and restore onto any number of processes."""

    def __init__(self, run_dir: Path, run_info: dict, hash_covers: str, resume: bool, d: Dist,
                 sharded: bool = False):
        self.root = Path(run_dir) / "checkpoints"
        self.run_info, self.hash_covers, self.d, self.sharded = run_info, hash_covers, d, sharded
        self._lock: RunLock | None = None
        # the lock comes first: a fresh run and a resume racing on one folder cannot both pass the check below
        failure = None
        if d.is_main:
            try:
                self._lock = RunLock(Path(run_dir))
            except VQBenchError as e:
                failure = e
        if not all_true(failure is None, d):         # every rank stops, not only rank 0
            raise failure or VQBenchError(f"rank 0 could not take the run folder {run_dir} (its error says "
                                          "why); wait for the other writer to finish or choose another --run-dir")
        try:
            if d.is_main:
                self._remove_killed_writes()
            self.latest = ckpt.latest(self.root)     # the last one written
            if self.latest is not None and not resume:
                raise VQBenchError(f"{run_dir} already holds checkpoints; pass --resume to continue that run "
                                   "or choose another --run-dir")
        except BaseException:
            self.close()
            raise

    def _remove_killed_writes(self) -> None:
        """Temporaries of checkpoint writes a kill interrupted: safe to remove while this process
        holds the run folder's lock (no other writer can own them)."""
        if not self.root.is_dir():
            return
        for tmp in self.root.glob(".step_*.tmp"):
            shutil.rmtree(tmp, ignore_errors=True)
        for tmp in stale_temporaries(self.root / "latest"):
            tmp.unlink(missing_ok=True)

    def close(self) -> None:
        """Release the run folder (idempotent); training calls it through ``save(done=True)``."""
        lock, self._lock = getattr(self, "_lock", None), None
        if lock is not None:
            lock.release()

    def __enter__(self) -> RunCheckpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        self.close()

    def restore(self, held: TrainingState) -> int:
        """Load the latest checkpoint (if any) into ``held`` and the RNGs; returns the step to start at."""
        if self.latest is None:
            return 0
        path = self.latest
        try:
            if self.sharded:
                return self._restore_sharded(path, held)
            weights, optim, state = ckpt.load(path)
            self._check_compatible(path, state)
            try:
                for name, module in held.modules.items():
                    if module is not None:
                        module.load_state_dict(state_part(weights, name))
                if held.ema is not None:
                    held.ema.shadow = state_part(weights, "ema")
                for name, opt in held.optimizers.items():
                    if opt is not None:
                        ckpt.unflatten_optimizer(opt, name, optim, state["optimizer"][name])
                ckpt.set_rng_state(state["rng"])
            except (KeyError, TypeError, ValueError, IndexError, SyntaxError, RuntimeError) as e:
                raise VQBenchError(f"checkpoint {path} does not fit this run ({e.__class__.__name__}: "
                                   f"{str(e).splitlines()[0] if str(e) else ''}); its state.json or tensors "
                                   "were edited: restore them or train again") from None
        except BaseException:
            self.close()                 # a failed restore leaves the folder to the next attempt
            raise
        return int(state["step"])

    def _restore_sharded(self, path: Path, held: TrainingState) -> int:
        state = ckpt.load_state(path)
        self._check_compatible(path, state)
        if state.get("format") != ckpt.SHARDED_FORMAT:
            raise VQBenchError(f"checkpoint {path} is a single-file checkpoint, not a sharded one; resume it "
                               "with the parallel setting it was trained with")
        tree = ckpt.load_sharded(path, lambda listed: held.sharded_tree(listed))
        held.load_sharded_tree(tree)
        ckpt.set_rng_state(state["rng"])
        return int(state["step"])

    def _check_compatible(self, path: Path, state: dict) -> None:
        kind, expected = self.run_info["kind"], self.run_info["config_hash"]
        if state.get("kind") != kind:
            raise VQBenchError(f"checkpoint {path} is not a {kind} checkpoint (kind={state.get('kind')!r})")
        differ = [f"{k}={v} (now {self.run_info[part][k]})" for part in ("model_config", "train_config")
                  for k, v in (state.get(part) or {}).items()
                  if k in self.run_info[part] and self.run_info[part][k] != v]
        if state.get("config_hash") != expected:
            what = f"another configuration ({', '.join(differ)})" if differ else \
                f"another configuration (hash {state.get('config_hash')}, now {expected})"
            raise VQBenchError(f"checkpoint {path} was trained with {what}; resume with the "
                               f"same {self.hash_covers}, or use another --run-dir")
        # the hash covers non-default settings only: a default that changed between versions shows here
        changed = [f"{part}.{k}" for part in ("model_config", "train_config")
                   for k, v in state.get(part, {}).items()
                   if k in self.run_info[part] and self.run_info[part][k] != v]
        if changed:
            raise VQBenchError(f"checkpoint {path} was trained with other values of {', '.join(changed)} "
                               "(defaults changed since); resume with the vqbench version that wrote it "
                               "or set them explicitly with --set")

    def save(self, step: int, held: TrainingState, done: bool, train_seconds: float) -> Path:
        """Write the checkpoint of ``step`` (rank 0 writes, or every rank its shards; every rank gets its path)."""
        path = self.root / f"step_{step:08d}"
        state = {**self.run_info, "step": step, "done": done, "rng": ckpt.rng_state(),
                 "train_seconds": train_seconds}
        if self.sharded:                 # every process writes its shards
            path = ckpt.save_sharded(self.root, step, held.sharded_tree(), state)
        elif self.d.is_main:
            state["optimizer"] = {}
            weights = {}
            for name, module in held.modules.items():
                if module is not None:
                    weights |= {f"{name}.{k}": v for k, v in module.state_dict().items()}
            if held.ema is not None:
                weights |= {f"ema.{k}": v for k, v in held.ema.shadow.items()}
            tensors = {}
            for name, opt in held.optimizers.items():
                if opt is not None:
                    t, state["optimizer"][name] = ckpt.flatten_optimizer(opt, name)
                    tensors |= t
            path = ckpt.save(self.root, step, weights, tensors, state)
        self.latest = path
        if done:                         # nothing more to write: the folder is free
            self.close()
        return path


class RunLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock``, held until ``release()`` (or garbage collection, or
    the end of the process: the kernel drops it then, so a killed holder leaves no stale lock).

    ``flock`` conflicts between open files even within one process; a second ``RunLock`` on a folder
    this process already holds (a training call that failed and whose ``RunCheckpoints`` survives in a
    traceback) takes the lock over instead of refusing.
    """
    _held: weakref.WeakValueDictionary = weakref.WeakValueDictionary()   # real lock path -> holder
    _guard = threading.Lock()

    def __init__(self, run_dir: Path):
        self.run_dir, self.path, self.fd = Path(run_dir), Path(run_dir) / LOCK_NAME, None
        if fcntl is None:
            return
        try:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            key = os.path.realpath(self.path)
        except (OSError, RuntimeError) as e:
            raise VQBenchError(f"cannot create the run folder {self.run_dir} ({error_text(e)}); "
                               "choose another --run-dir") from None
        with RunLock._guard:
            previous = RunLock._held.get(key)
            if previous is not None and previous.fd is not None:     # this process holds it already
                self.fd, previous.fd = previous.fd, None
            else:
                self.fd = self._acquire()
            RunLock._held[key] = self
        self._write_holder()

    def _acquire(self) -> int:
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except (OSError, RuntimeError) as e:
            raise VQBenchError(f"cannot open the lock file {self.path} ({error_text(e)}); "
                               "check the --run-dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder_text(fd)
            os.close(fd)
            raise VQBenchError(f"run folder {self.run_dir} is being written by {holder}; wait for it to "
                               "finish or choose another --run-dir") from None
        except OSError as e:           # e.g. a file system without locks
            os.close(fd)
            raise VQBenchError(f"cannot lock {self.path} ({error_text(e)}); put the run folder on a file "
                               "system that supports flock") from None
        return fd

    def _write_holder(self) -> None:
        since = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime())
        text = json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n"
        try:
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, text.encode(), 0)
        except OSError:
            pass                       # the lock holds regardless; the note is for the error message

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)        # nobody holds it: no holder to name
        except OSError:
            pass
        try:
            os.close(fd)               # closing the last descriptor drops the flock
        except OSError:
            pass

    def __del__(self):
        try:
            self.release()
        except Exception:              # interpreter shutdown: the process exit releases it anyway
            pass


def _holder_text(fd: int) -> str:
    """``pid N on HOST since T`` from the lock file, or a vaguer phrase when it is empty or garbled."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode())
        return f"pid {int(info['pid'])} on {info['host']} since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "another process (its pid is not recorded yet)"
