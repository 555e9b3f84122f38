"""Checkpoints: safetensors for every tensor (weights, EMA, optimizer moments), JSON for the rest.

A checkpoint is a folder ``step_XXXXXXXX/`` with ``weights.safetensors``, ``optimizer.safetensors``
and ``state.json`` (step, configs and their hash, RNG states, optimizer hyper-parameters). It is
written under a temporary name and renamed into place, and ``latest`` is replaced atomically after,
so a kill at any moment leaves the previous checkpoint intact and discoverable.
"""
from __future__ import annotations

import base64
import json
import os
import random
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from harness.core.errors import VQBenchError
from harness.core.io import write_atomic

KEEP_LAST = 2


def rng_state() -> dict:
    state = {"torch": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode(),
             "python": repr(random.getstate()),
             "numpy": _numpy_state_to_json(np.random.get_state())}
    if torch.cuda.is_available():
        state["cuda"] = [base64.b64encode(s.numpy().tobytes()).decode()
                         for s in torch.cuda.get_rng_state_all()]
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["torch"])), dtype=torch.uint8))
    random.setstate(_literal(state["python"]))
    np.random.set_state(_numpy_state_from_json(state["numpy"]))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.frombuffer(bytearray(base64.b64decode(s)), dtype=torch.uint8)
                                      for s in state["cuda"]])


def _literal(text: str):
    import ast
    return ast.literal_eval(text)


def _numpy_state_to_json(s) -> list:
    return [s[0], s[1].tolist(), int(s[2]), int(s[3]), float(s[4])]


def _numpy_state_from_json(s) -> tuple:
    return (s[0], np.array(s[1], dtype=np.uint32), s[2], s[3], s[4])


def flatten_optimizer(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    """Split an optimizer state dict into tensors (for safetensors) and JSON-able rest."""
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            if torch.is_tensor(v):
                tensors[f"{prefix}.{idx}.{k}"] = v.detach().cpu().contiguous()
            else:
                scalars[f"{idx}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def unflatten_optimizer(opt: torch.optim.Optimizer, prefix: str, tensors: dict, meta: dict) -> None:
    state: dict[int, dict] = {}
    for key, v in tensors.items():
        p, idx, k = key.split(".", 2)
        if p == prefix:
            state.setdefault(int(idx), {})[k] = v
    for key, v in meta["scalars"].items():
        idx, k = key.split(".", 1)
        state.setdefault(int(idx), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save(ckpt_root: Path, step: int, weights: dict[str, torch.Tensor],
         optim_tensors: dict[str, torch.Tensor], state: dict) -> Path:
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / f"step_{step:08d}"
    tmp = ckpt_root / f".step_{step:08d}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, tmp / "weights.safetensors")
    save_file(optim_tensors, tmp / "optimizer.safetensors")
    write_atomic(tmp / "state.json", json.dumps(state, indent=1))
    if final.exists():               # re-saving the same step (e.g. final == periodic)
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_atomic(ckpt_root / "latest", final.name + "\n")
    for old in sorted(ckpt_root.glob("step_*"))[:-KEEP_LAST]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(ckpt_root: Path) -> Path | None:
    pointer = ckpt_root / "latest"
    if not pointer.exists():
        return None
    path = ckpt_root / pointer.read_text().strip()
    if not (path / "state.json").exists():
        raise VQBenchError(f"checkpoint pointer {pointer} names {path.name}, which is missing or "
                           "incomplete; delete the pointer to start over or restore the folder")
    return path


def load(path: Path) -> tuple[dict, dict, dict]:
    """Return (weights, optimizer tensors, state) of a checkpoint folder."""
    try:
        state = json.loads((path / "state.json").read_text())
        weights = load_file(path / "weights.safetensors")
        optim = load_file(path / "optimizer.safetensors")
    except (OSError, ValueError) as e:
        raise VQBenchError(f"checkpoint {path} is unreadable or corrupt ({e.__class__.__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return weights, optim, state


def load_state(path: Path) -> dict:
    """The ``state.json`` of a checkpoint folder (no tensors read)."""
    try:
        return json.loads((Path(path) / "state.json").read_text())
    except (OSError, ValueError) as e:
        raise VQBenchError(f"checkpoint {path} has an unreadable state.json ({e.__class__.__name__}); "
                           "restore it or train again") from None


def run_name(path_or_run: str | Path) -> str:
    """The run folder's name of a run folder or of one of its step_* checkpoints (default row label)."""
    p = resolve(path_or_run)
    return p.parent.parent.name


def resolve(path_or_run: str | Path) -> Path:
    """A checkpoint folder, or a run folder (its latest checkpoint)."""
    p = Path(path_or_run)
    if (p / "state.json").exists():
        return p
    for root in (p / "checkpoints", p):
        found = latest(root) if root.is_dir() else None
        if found:
            return found
    raise VQBenchError(f"no checkpoint found at {p} (expected a run folder with checkpoints/latest "
                       "or a step_XXXXXXXX folder)")
