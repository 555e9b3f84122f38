"""Load the plugin folders (tokenizers/, baselines/ and any in $VQBENCH_PLUGIN_PATH) by file path.

These folders are deliberately not importable packages: `tokenizers` is Hugging Face's package and
`baselines` is OpenAI's, and a top-level package of that name in the repository root would shadow
them for anyone running from the root. Each file is imported under ``vqbench_plugins.<folder>.<file>``
and registers itself through the decorators in harness.core.registry.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from harness.core.errors import VQBenchError

REPO_ROOT = Path(__file__).resolve().parents[2]
BUILTIN_FOLDERS = ("tokenizers", "generators", "baselines")


def plugin_folders() -> list[Path]:
    folders = [REPO_ROOT / name for name in BUILTIN_FOLDERS]
    extra = os.environ.get("VQBENCH_PLUGIN_PATH", "")
    folders += [Path(p) for p in extra.split(os.pathsep) if p]
    return folders


def load_plugins() -> list[str]:
    """Import every ``*.py`` in the plugin folders once; returns the module names loaded."""
    loaded = []
    for folder in plugin_folders():
        if not folder.is_dir():
            if folder.name in BUILTIN_FOLDERS and folder.parent == REPO_ROOT:
                continue
            raise VQBenchError(f"VQBENCH_PLUGIN_PATH entry {folder} is not a folder")
        for path in sorted(folder.glob("*.py")):
            if path.name.startswith("_"):
                continue
            name = f"vqbench_plugins.{folder.name}.{path.stem}"
            if name in sys.modules:
                continue
            spec = importlib.util.spec_from_file_location(name, path)
            module = importlib.util.module_from_spec(spec)
            sys.modules[name] = module      # dataclasses and pickling look modules up here
            try:
                spec.loader.exec_module(module)
            except Exception:
                del sys.modules[name]
                raise
            loaded.append(name)
    return loaded
