"""Find and import every module that registers something, so no list of modules has to be kept.

Built-in modules: every ``harness/**/*.py`` that calls a registry, read from its syntax tree without
importing it: a call ``NAME.register(...)`` or ``NAME.add(...)`` on an upper-case name
(``@METRICS.register(...)``, ``FEATURE_EXTRACTORS.add(...)``), or a call or decorator of a function
that makes such a call (``@register_evaluation``, whose body calls ``EVALUATIONS.add``). Modules that
only read registries (harness.cli, the training loops) are not imported. Plugin folders (tokenizers/,
generators/, baselines/, $VQBENCH_PLUGIN_PATH) are imported whole by harness.core.plugins.

This module must not import harness.core.registry: the registry calls ``load_all`` before every lookup.
"""
from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

from harness.core.plugins import load_plugins

HARNESS_ROOT = Path(__file__).resolve().parents[1]
REGISTRY_NAME = re.compile(r"[A-Z][A-Z0-9_]*")
REGISTRY_CALL_TEXT = re.compile(r"\b[A-Z][A-Z0-9_]*\.(?:register|add)\(")
_loaded = False


def _calls_a_registry(nodes: list[ast.AST]) -> bool:
    return any(isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute)
               and n.func.attr in ("register", "add") and isinstance(n.func.value, ast.Name)
               and REGISTRY_NAME.fullmatch(n.func.value.id) for node in nodes for n in ast.walk(node))


def _uses(nodes: list[ast.AST], helpers: set[str]) -> bool:
    """A call of, or a bare decorator naming, one of ``helpers``."""
    for n in (n for node in nodes for n in ast.walk(node)):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id in helpers:
            return True
        if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and any(
                isinstance(d, ast.Name) and d.id in helpers for d in n.decorator_list):
            return True
    return False


def _module_name(path: Path) -> str:
    parts = path.relative_to(HARNESS_ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def registering_modules() -> list[str]:
    """Dotted names of the harness modules that register something (see the module docstring), by path.

    Only files whose text mentions a registry call or a registering helper are parsed (parsing all of
    harness/ would cost half a second per process).
    """
    sources = {_module_name(p): p.read_text(encoding="utf-8") for p in sorted(HARNESS_ROOT.rglob("*.py"))}
    trees = {n: ast.parse(text, filename=n) for n, text in sources.items() if REGISTRY_CALL_TEXT.search(text)}
    helpers = {f.name for tree in trees.values() for f in tree.body
               if isinstance(f, ast.FunctionDef) and _calls_a_registry(f.body)}
    if helpers:
        mentions_helper = re.compile(r"\b(?:" + "|".join(sorted(helpers)) + r")\b")
        trees.update({n: ast.parse(text, filename=n) for n, text in sources.items()
                      if n not in trees and mentions_helper.search(text)})
    found = [n for n in sources if n in trees
             and (_calls_a_registry(trees[n].body) or _uses(trees[n].body, helpers))]
    return sorted(found, key=_load_rank)       # stable: path order within a layer


# Lower layers register first, so a module's import-time lookups (a suite checking its metric names)
# find what the layers below registered; the top (harness.suites, harness.claims, ...) loads last.
LOAD_ORDER = ("harness.core", "harness.models", "harness.data", "harness.training", "harness.evaluation",
              "harness.reporting")


def _load_rank(module: str) -> int:
    return next((i for i, p in enumerate(LOAD_ORDER) if module == p or module.startswith(p + ".")), len(LOAD_ORDER))


def load_all() -> None:
    """Import every registering built-in module and every plugin file, once per process."""
    global _loaded
    if not _loaded:
        _loaded = True          # set first: registry lookups made while loading must not recurse
        try:
            for name in registering_modules():
                importlib.import_module(name)
            load_plugins()
        except BaseException:
            _loaded = False
            raise
