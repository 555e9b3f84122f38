"""A training run's ``checkpoints/`` folder: refuse to overwrite a run unless resuming, save every
tensor that training depends on, and restore it exactly on ``--resume``.

A checkpoint (file format: ``harness.core.checkpoint``) holds each module's weights under its name
(``model.``, ``disc.``, ``lecam.``), the EMA under ``ema.``, each optimizer's moments under its name
(``g``, ``d``), the RNG states, and the run description (preset, configs and their hash, data).
With the batch order a pure function of (seed, step), a run killed and resumed ends with the same
weights, bit for bit, as an uninterrupted one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from harness.core import checkpoint as ckpt
from harness.core.distributed import Dist
from harness.core.errors import VQBenchError
from harness.models.checkpoints import state_part
from harness.training.optim import EMA


@dataclass
class TrainingState:
    """What a checkpoint saves and restores; parts that are None (no discriminator, no EMA) are skipped."""
    modules: dict[str, torch.nn.Module | None]          # name -> module, e.g. {"model": ..., "disc": ...}
    optimizers: dict[str, torch.optim.Optimizer | None]  # name -> optimizer, e.g. {"g": ..., "d": ...}
    ema: EMA | None = None


class RunCheckpoints:
    """The checkpoints of one run. ``run_info`` is the run description written into every
    ``state.json`` (``kind``, ``config_hash``, ``model_config``, ``train_config``, ...); a checkpoint
    is resumed only if it was written for the same description. ``hash_covers`` names, for the error
    message, what the config hash is computed from."""

    def __init__(self, run_dir: Path, run_info: dict, hash_covers: str, resume: bool, d: Dist):
        self.root = Path(run_dir) / "checkpoints"
        self.run_info, self.hash_covers, self.d = run_info, hash_covers, d
        self.latest = ckpt.latest(self.root) if self.root.exists() else None    # the last one written
        if self.latest is not None and not resume:
            raise VQBenchError(f"{run_dir} already holds checkpoints; pass --resume to continue that run "
                               "or choose another --run-dir")

    def restore(self, held: TrainingState) -> int:
        """Load the latest checkpoint (if any) into ``held`` and the RNGs; returns the step to start at."""
        if self.latest is None:
            return 0
        path = self.latest
        weights, optim, state = ckpt.load(path)
        self._check_compatible(path, state)
        for name, module in held.modules.items():
            if module is not None:
                module.load_state_dict(state_part(weights, name))
        if held.ema is not None:
            held.ema.shadow = state_part(weights, "ema")
        for name, opt in held.optimizers.items():
            if opt is not None:
                ckpt.unflatten_optimizer(opt, name, optim, state["optimizer"][name])
        ckpt.set_rng_state(state["rng"])
        return int(state["step"])

    def _check_compatible(self, path: Path, state: dict) -> None:
        kind, expected = self.run_info["kind"], self.run_info["config_hash"]
        if state.get("kind") != kind:
            raise VQBenchError(f"checkpoint {path} is not a {kind} checkpoint (kind={state.get('kind')!r})")
        if state.get("config_hash") != expected:
            raise VQBenchError(f"checkpoint {path} was trained with another configuration "
                               f"(hash {state.get('config_hash')}, now {expected}); resume with the "
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
        """Write the checkpoint of ``step`` (rank 0 writes; every rank gets its path)."""
        path = self.root / f"step_{step:08d}"
        if self.d.is_main:
            state = {**self.run_info, "step": step, "done": done, "rng": ckpt.rng_state(),
                     "train_seconds": train_seconds, "optimizer": {}}
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
        return path
