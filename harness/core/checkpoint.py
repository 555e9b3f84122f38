"""Checkpoints: safetensors for every tensor (weights, EMA, optimizer moments), JSON for the rest.

A checkpoint is a folder ``step_XXXXXXXX/`` with ``weights.safetensors``, ``optimizer.safetensors``
and ``state.json`` (step, configs and their hash, RNG states, optimizer hyper-parameters, and under
``files`` the sha256 of both tensor files). It is written under a temporary name and renamed into
place, and ``latest`` is replaced atomically after, so a kill at any moment leaves the previous
checkpoint intact and discoverable.

A run trained with ``parallel=fsdp`` writes *sharded* checkpoints instead (``state["format"] ==
"sharded"``): the tensors lie in ``sharded/`` in torch.distributed.checkpoint's format, one file per
process plus ``.metadata``, each checksummed in ``files``. ``load`` reads their weights whole in one
process, so evaluation and sampling take either format; ``consolidate`` turns one into the
single-file format (weights only) for release.

Reading is defensive: ``latest`` must name a ``step_XXXXXXXX`` folder directly inside its
``checkpoints/`` folder, ``state.json`` must be an object with a non-negative integer ``step`` and a
``kind``, and the tensor files must match their recorded sha256 (checkpoints written before the
checksums existed load unchecked). Every failure is one VQBenchError line naming the file.
"""
from __future__ import annotations

import base64
import errno
import json
import os
import random
import re
import shutil
import warnings
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from harness.core.errors import VQBenchError, error_text
from harness.core.io import write_atomic
from harness.core.weights import file_sha256

KEEP_LAST = 2
STEP_NAME = re.compile(r"step_[0-9]{8}")                        # the only names ``latest`` may hold
TENSOR_FILES = ("weights.safetensors", "optimizer.safetensors")  # checksummed in state["files"]
SHARDED_FORMAT, SHARDED_DIR = "sharded", "sharded"   # parallel=fsdp: state["format"], the DCP folder
SHARDED_FILE = re.compile(r"sharded/(\.metadata|__[0-9]+_[0-9]+\.distcp)")   # what DCP writes there
OPTIMIZER_PART = "optim"                # the sharded tree's optimizer states (the rest is weights)
_SHA256 = re.compile(r"[0-9a-f]{64}")


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
    tmp, final = _begin(ckpt_root, step)
    save_file({k: v.detach().cpu().contiguous() for k, v in weights.items()}, tmp / "weights.safetensors")
    save_file(optim_tensors, tmp / "optimizer.safetensors")
    state = {**state, "files": {name: file_sha256(tmp / name) for name in TENSOR_FILES}}
    return _commit(ckpt_root, tmp, final, state)


def save_sharded(ckpt_root: Path, step: int, tree: dict, state: dict) -> Path:
    """Write a sharded checkpoint (``parallel=fsdp``): ``tree`` (module name -> state dict, ``ema`` ->
    the EMA's, ``optim`` -> optimizer name -> ``{"state": {parameter name: {key: tensor}}}``; DTensors or
    plain tensors) goes to ``sharded/`` in torch.distributed.checkpoint's format, each process writing
    its own shards. Collective: every process calls it; the main process writes ``state.json`` (with
    the sha256 of every file) and moves the folder into place, and every process learns whether that
    worked. The folder must be on a file system every process sees (one machine's disk, or a shared
    one across nodes)."""
    import torch.distributed.checkpoint as dcp
    from harness.core.distributed import in_process_group, is_main_process, on_main_then_all
    main = is_main_process()
    tmp, final = _paths(ckpt_root, step)
    on_main_then_all(lambda: _begin(ckpt_root, step), main, f"cannot prepare the checkpoint folder {tmp}")
    _dcp(lambda: dcp.save(tree, checkpoint_id=tmp / SHARDED_DIR, no_dist=not in_process_group()),
         f"writing the sharded checkpoint {tmp} failed ({{error}}); free space or fix the run folder, then "
         "resume from the last checkpoint")

    def commit():
        files = {f"{SHARDED_DIR}/{f.name}": file_sha256(f) for f in sorted((tmp / SHARDED_DIR).iterdir())}
        _commit(ckpt_root, tmp, final, {**state, "format": SHARDED_FORMAT, "files": files})
    # the agreement ends the save on every process together: none reads ``latest`` before it names this one
    on_main_then_all(commit, main, f"cannot finish the checkpoint {final}")
    return final


def _dcp(call, failure: str):
    """Run a torch.distributed.checkpoint ``call`` (quiet about running in one process, which is meant);
    its failure becomes one VQBenchError, ``failure`` with ``{error}`` filled by the first line of the
    (first process's) error."""
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="torch.distributed is disabled, unavailable or uninitialized")
            return call()
    except _checkpoint_errors() as e:
        raise VQBenchError(failure.replace("{error}", _first_line(e))) from None   # paths may hold braces


def _checkpoint_errors() -> tuple[type[BaseException], ...]:
    """What torch.distributed.checkpoint raises: it wraps every process's failure in CheckpointException,
    a BaseException, so ``except Exception`` would let it through as a traceback."""
    from torch.distributed.checkpoint.api import CheckpointException
    return (CheckpointException, OSError, RuntimeError, ValueError, KeyError, EOFError)


def _first_line(e: BaseException) -> str:
    """The first line of ``e``; of a CheckpointException, that of the first process's own error."""
    failures = getattr(e, "failures", None)
    if isinstance(failures, dict) and failures:      # rank -> (exception, stack)
        inner = next(iter(failures.values()))
        inner = inner[0] if isinstance(inner, tuple) and inner else inner
        e = inner if isinstance(inner, BaseException) else e
    text = error_text(e) if isinstance(e, Exception) else f"{type(e).__name__}: {e}"
    return text.strip().splitlines()[0] if text.strip() else type(e).__name__


def sharded_listing(path: Path) -> dict:
    """key -> TensorStorageMetadata (size, dtype) of every tensor a sharded checkpoint holds."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata
    listed = _dcp(lambda: dcp.FileSystemReader(str(Path(path) / SHARDED_DIR)).read_metadata().state_dict_metadata,
                  f"sharded checkpoint {path} has an unreadable .metadata ({{error}}); restore it or train again")
    return {k: m for k, m in listed.items() if isinstance(m, TensorStorageMetadata)}


def _paths(ckpt_root: Path, step: int) -> tuple[Path, Path]:
    """(temporary name, final name) of the checkpoint folder of ``step``."""
    return Path(ckpt_root) / f".step_{step:08d}.tmp", Path(ckpt_root) / f"step_{step:08d}"


def _begin(ckpt_root: Path, step: int) -> tuple[Path, Path]:
    """An empty temporary folder to write the checkpoint of ``step`` into, and its final name."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    tmp, final = _paths(ckpt_root, step)
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp, final


def _commit(ckpt_root: Path, tmp: Path, final: Path, state: dict) -> Path:
    """Write ``state.json``, move the written folder into place, point ``latest`` at it, prune old ones."""
    write_atomic(tmp / "state.json", json.dumps(state, indent=1))
    if final.exists():               # re-saving the same step (e.g. final == periodic)
        shutil.rmtree(final)
    os.replace(tmp, final)
    write_atomic(ckpt_root / "latest", final.name + "\n")
    for old in sorted(ckpt_root.glob("step_*"))[:-KEEP_LAST]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def latest(ckpt_root: Path) -> Path | None:
    """The checkpoint ``ckpt_root/latest`` names, or None when there is no pointer.

    The pointer is a text file holding one ``step_XXXXXXXX`` name of a folder directly inside
    ``ckpt_root``; anything else (a path, ``..``, a symlink, a folder that resolves elsewhere) is refused.
    """
    ckpt_root = Path(ckpt_root)
    pointer = ckpt_root / "latest"
    fix = "write the name of one of its step_XXXXXXXX folders into it, or delete it to start over"
    if pointer.is_symlink():            # vqbench writes a text file; a link could lead anywhere
        raise VQBenchError(f"checkpoint pointer {pointer} is a symbolic link; it must be a text file "
                           f"naming a step_XXXXXXXX folder next to it: {fix}")
    if not _exists(pointer):
        return None
    try:
        text = pointer.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise VQBenchError(f"checkpoint pointer {pointer} is unreadable ({error_text(e)}); {fix}") from None
    name = text.strip()
    if not STEP_NAME.fullmatch(name):
        shown = name if len(name) <= 80 else name[:77] + "..."
        raise VQBenchError(f"checkpoint pointer {pointer} holds {shown!r}, not the name of a step_XXXXXXXX "
                           f"folder inside {ckpt_root}; {fix}")
    path = ckpt_root / name
    if not _exists(path / "state.json"):
        raise VQBenchError(f"checkpoint pointer {pointer} names {path.name}, which is missing or "
                           "incomplete; delete the pointer to start over or restore the folder")
    try:
        inside = path.resolve(strict=True).parent == ckpt_root.resolve(strict=True)
    except (OSError, RuntimeError) as e:
        raise VQBenchError(f"checkpoint {path} cannot be resolved ({error_text(e)}); restore it or train again") from None
    if not inside:
        raise VQBenchError(f"checkpoint {path} (named by {pointer}) is a symbolic link that leads outside "
                           f"{ckpt_root}; replace it with the checkpoint folder itself")
    return path


def load(path: Path) -> tuple[dict, dict, dict]:
    """Return (weights, optimizer tensors, state) of a checkpoint folder, every file verified. A
    sharded checkpoint's weights are read whole (its optimizer states are left out: only
    ``load_sharded`` into a live training state restores them)."""
    path = Path(path)
    state = load_state(path)
    if state.get("format") == SHARDED_FORMAT:
        return _read_sharded_weights(path, state), {}, state
    weights, optim = (_read_tensors(path, name, state.get("files")) for name in TENSOR_FILES)
    return weights, optim, state


def load_sharded(path: Path, make_tree) -> dict:
    """A tree of the live training state (the structure ``save_sharded`` took: DTensors of any number of
    processes, or plain tensors in one), built by ``make_tree(listing)`` from the checkpoint's
    ``sharded_listing`` and filled in place from the checkpoint. Collective when several processes run:
    the main process verifies the files, then all read."""
    import torch.distributed.checkpoint as dcp
    from harness.core.distributed import in_process_group, is_main_process, on_main_then_all
    path = Path(path)
    on_main_then_all(lambda: _verify_sharded(path, load_state(path)), is_main_process(),
              f"cannot verify the checkpoint {path}")
    tree = make_tree(sharded_listing(path))
    _dcp(lambda: dcp.load(tree, checkpoint_id=path / SHARDED_DIR, no_dist=not in_process_group()),
         f"checkpoint {path} is corrupt or does not fit this run ({{error}}); restore it, resume with the "
         "settings it was trained with, or train again")
    return tree


def consolidate(checkpoint: Path, out: Path) -> Path:
    """Write the weights of sharded ``checkpoint`` (a run folder or step folder) as one single-file
    checkpoint folder ``out`` that every vqbench command reads (no optimizer states: it is for
    evaluation and release; training resumes from the sharded one)."""
    path, out = resolve(checkpoint), Path(out)
    if _exists(out):
        raise VQBenchError(f"--out {out} already exists; choose a new folder for the consolidated checkpoint")
    if load_state(path).get("format") != SHARDED_FORMAT:
        raise VQBenchError(f"checkpoint {path} is already a single-file checkpoint (weights.safetensors); "
                           "nothing to consolidate")
    weights, _, state = load(path)
    tmp = out.parent / f".{out.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in weights.items()}, tmp / "weights.safetensors")
    save_file({}, tmp / "optimizer.safetensors")
    state = {k: v for k, v in state.items() if k not in ("format", "files")}
    state |= {"optimizer": {}, "consolidated_from": str(path),
              "files": {name: file_sha256(tmp / name) for name in TENSOR_FILES}}
    write_atomic(tmp / "state.json", json.dumps(state, indent=1))
    os.replace(tmp, out)
    return out


def _verify_sharded(path: Path, state: dict) -> None:
    """Every file of ``sharded/`` is listed in ``files`` and matches its sha256 (an unlisted shard would
    go unchecked; a listed one that is gone is named)."""
    fix = "restore it or train again"
    try:
        present = {f"{SHARDED_DIR}/{f.name}" for f in (path / SHARDED_DIR).iterdir()}
    except OSError as e:
        raise VQBenchError(f"checkpoint folder {path}/{SHARDED_DIR} cannot be read ({error_text(e)}); {fix}") from None
    unlisted = sorted(present - set(state["files"]))
    if unlisted:
        raise VQBenchError(f"checkpoint {path} holds {unlisted[0]}, which its state.json does not list; {fix}")
    for name, digest in state["files"].items():
        try:
            actual = file_sha256(path / name)
        except OSError as e:
            raise VQBenchError(f"checkpoint file {path}/{name} cannot be read ({error_text(e)}); {fix}") from None
        if actual != digest:
            raise VQBenchError(f"checkpoint {path}/{name} does not match its recorded sha256 (corrupted or "
                               f"edited); {fix}")


def _read_sharded_weights(path: Path, state: dict) -> dict[str, torch.Tensor]:
    """Every weight tensor of a sharded checkpoint (all but the optimizer part), whole, in one process."""
    import torch.distributed.checkpoint as dcp
    _verify_sharded(path, state)
    weights = {k: torch.empty(m.size, dtype=m.properties.dtype) for k, m in sharded_listing(path).items()
               if not k.startswith(OPTIMIZER_PART + ".")}
    _dcp(lambda: dcp.load(weights, checkpoint_id=path / SHARDED_DIR, no_dist=True),
         f"sharded checkpoint {path} is unreadable or corrupt ({{error}}); restore it or train again")
    return weights


def load_state(path: Path) -> dict:
    """The validated ``state.json`` of a checkpoint folder (no tensors read)."""
    file = Path(path) / "state.json"
    fix = "restore it or train again"
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, RuntimeError, ValueError) as e:      # ValueError covers JSON and UTF-8 errors
        raise VQBenchError(f"checkpoint file {file} is not readable JSON ({error_text(e)}); {fix}") from None
    if not isinstance(state, dict):
        raise VQBenchError(f"checkpoint file {file} holds a JSON {type(state).__name__}, not an object; {fix}")
    for key in ("step", "kind"):
        if key not in state:
            raise VQBenchError(f"checkpoint file {file} lacks {key!r}; {fix}")
    step = state["step"]
    if not isinstance(step, int) or isinstance(step, bool) or step < 0:
        raise VQBenchError(f"checkpoint file {file} has step {step!r}, not a non-negative integer; {fix}")
    folder = Path(path).name
    if STEP_NAME.fullmatch(folder) and int(folder[5:]) != step:
        raise VQBenchError(f"checkpoint file {file} says step {step} but lies in {folder}; {fix}")
    if not isinstance(state["kind"], str):
        raise VQBenchError(f"checkpoint file {file} has kind {state['kind']!r}, not a string; {fix}")
    # what rebuilding, resuming and recording read (a dotted key lies inside an object)
    common = (("preset", str), ("model_config", dict), ("train_config", dict), ("config_hash", str), ("data", dict))
    needed = {"tokenizer": common + (("data.dataset", str),),
              "generator": common + (("num_classes", int), ("data.tokenizer", str))}
    for key, kind in needed.get(state["kind"], ()):
        value = state
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, kind) or isinstance(value, bool):
            json_type = {str: "string", dict: "object", int: "integer"}[kind]
            raise VQBenchError(f"checkpoint file {file} lacks {key!r} or it is not a JSON {json_type}; {fix}")
    conditioning = state.get("conditioning")       # generators since text conditioning; absent: class
    if conditioning is not None and not _valid_conditioning(conditioning):
        raise VQBenchError(f"checkpoint file {file} has a malformed 'conditioning' entry (expected kind class "
                           f"with num_classes >= 1, or text with text_dim >= 1, a text_encoder name and "
                           f"text_tokens >= 0); {fix}")
    files = state.get("files")
    if state.get("format", SHARDED_FORMAT) != SHARDED_FORMAT:
        raise VQBenchError(f"checkpoint file {file} has format {state['format']!r}; vqbench writes "
                           f"{SHARDED_FORMAT!r} or none; {fix}")
    if state.get("format") == SHARDED_FORMAT:
        if not (isinstance(files, dict) and files and all(
                isinstance(n, str) and SHARDED_FILE.fullmatch(n) and isinstance(h, str) and _SHA256.fullmatch(h)
                for n, h in files.items()) and f"{SHARDED_DIR}/.metadata" in files):
            raise VQBenchError(f"checkpoint file {file} has a malformed 'files' entry (expected the sha256 of "
                               f"every file in {SHARDED_DIR}/, .metadata included); {fix}")
    elif files is not None and not (isinstance(files, dict) and all(
            isinstance(files.get(n), str) and _SHA256.fullmatch(files[n]) for n in TENSOR_FILES)):
        raise VQBenchError(f"checkpoint file {file} has a malformed 'files' entry (expected the sha256 of "
                           f"{' and '.join(TENSOR_FILES)}); {fix}")
    return state


def _valid_conditioning(c) -> bool:
    def count(key, least):
        v = c.get(key, 0)
        return isinstance(v, int) and not isinstance(v, bool) and v >= least
    if not isinstance(c, dict) or not set(c) <= {"kind", "num_classes", "text_dim", "text_encoder", "text_tokens"}:
        return False
    if c.get("kind") == "class":
        return count("num_classes", 1) and "text_encoder" not in c
    if c.get("kind") == "text":
        return (count("text_dim", 1) and count("text_tokens", 0) and isinstance(c.get("text_encoder"), str)
                and bool(c["text_encoder"]))
    return c.get("kind") == "none"


def _read_tensors(path: Path, name: str, recorded: dict | None) -> dict:
    """The tensors of ``path/name``, checked against its recorded sha256 when there is one."""
    file = path / name
    fix = "restore it or train again"
    try:
        if recorded is not None and file_sha256(file) != recorded[name]:
            raise VQBenchError(f"checkpoint {path}/{name} does not match its recorded sha256 (corrupted or "
                               f"edited); {fix}")
        return load_file(file)
    except (OSError, RuntimeError, ValueError, SafetensorError) as e:
        raise VQBenchError(f"checkpoint file {file} is unreadable or corrupt ({error_text(e)}); {fix}") from None


def _exists(path: Path) -> bool:
    """Whether ``path`` exists; a symbolic-link loop or an unreadable path is a VQBenchError naming it."""
    try:
        os.stat(path)
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise VQBenchError(f"{path} is a symbolic link loop (or lies under one); remove the link "
                               "or point it at a real file or folder") from None
        raise VQBenchError(f"{path} cannot be read ({error_text(e)})") from None


def run_name(path_or_run: str | Path) -> str:
    """The run folder's name of a run folder or of one of its step_* checkpoints (default row label)."""
    p = resolve(path_or_run)
    return p.parent.parent.name


def resolve(path_or_run: str | Path) -> Path:
    """A checkpoint folder, or a run folder (its latest checkpoint)."""
    p = Path(path_or_run)
    if _exists(p / "state.json"):
        return p
    for root in (p / "checkpoints", p):
        found = latest(root) if _exists(root) and root.is_dir() else None
        if found:
            return found
    raise VQBenchError(f"no checkpoint found at {p} (expected a run folder with checkpoints/latest "
                       "or a step_XXXXXXXX folder)")
