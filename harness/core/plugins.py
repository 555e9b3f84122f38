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


def load_plugin_file(path: str | Path) -> str:
    """Import one plugin file (``vqbench enter --plugin FILE``) as ``vqbench_plugins.entry.<stem>``; returns
    the module name. A missing file or one that fails to import is one line naming it."""
    path = Path(path)
    if not path.is_file() or path.suffix != ".py":
        raise VQBenchError(f"--plugin {path}: not a Python file; give the .py file that registers your preset")
    for loaded_name, module in list(sys.modules.items()):     # already imported (a plugin folder holds it)
        file = getattr(module, "__file__", None)
        if loaded_name.startswith("vqbench_plugins.") and file and Path(file).resolve() == path.resolve():
            return loaded_name
    name = f"vqbench_plugins.entry.{path.stem}"
    if name in sys.modules:
        raise VQBenchError(f"--plugin {path}: another plugin file named {path.name} is already loaded; rename one")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except VQBenchError:
        del sys.modules[name]
        raise
    except Exception as e:
        del sys.modules[name]
        raise VQBenchError(f"--plugin {path}: importing it failed ({type(e).__name__}: {e})") from e
    return name
