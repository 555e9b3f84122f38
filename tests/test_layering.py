"""Imports only go down the layers, and no module imports itself back through a cycle.

Read from the source with `ast`, so a function-level import (the usual way a cycle is hidden) counts as
much as one at the top of the file. Plugin folders are loaded by path as ``vqbench_plugins.<folder>.<file>``
(see harness.core.plugins) and may build only on core, models and data (a dataset plugin).
"""
from __future__ import annotations

import ast
from pathlib import Path

from conftest import REPO

# Layer of each group; a group may import from its own group and from lower ranks only, so two
# groups of the same rank (models and data, training and evaluation) may not import each other.
LAYERS = {
    "harness.core": 0,
    "harness.models": 1,
    "harness.data": 1,
    "harness.training": 2,
    "harness.evaluation": 2,
    "harness.reporting": 3,
    "harness": 4,           # the top: harness.suites, harness.cli
}
PLUGIN_FOLDERS = ("tokenizers", "generators", "baselines")
PLUGINS_MAY_IMPORT = ("harness.core", "harness.models", "harness.data")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[0] in PLUGIN_FOLDERS:
        return ".".join(["vqbench_plugins", *parts])
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _source_modules() -> dict[str, Path]:
    files = sorted((REPO / "harness").rglob("*.py"))
    for folder in PLUGIN_FOLDERS:
        files += sorted((REPO / folder).glob("*.py"))
    return {_module_name(path): path for path in files}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every ``harness.*`` module that `name` imports, at module level or inside functions."""
    is_package = path.name == "__init__.py"
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:      # relative import: resolve against the importing module's package
                package = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(package + ([base] if base else []))
            # `from pkg import mod` imports the submodule pkg.mod; `from mod import func` imports mod
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base
                       for alias in node.names]
        else:
            continue
        found.update(t for t in targets if t == "harness" or t.startswith("harness."))
    found.discard(name)
    return found


def _group(module: str) -> str:
    """The most specific entry of LAYERS that contains `module`."""
    return max((g for g in LAYERS if module == g or module.startswith(g + ".")), key=len)


def _import_graph() -> dict[str, set[str]]:
    modules = _source_modules()
    return {name: _imports(name, path, set(modules)) for name, path in modules.items()}


def _forbidden(importer: str, imported: str) -> bool:
    if importer.startswith("vqbench_plugins."):
        return not any(imported == g or imported.startswith(g + ".") for g in PLUGINS_MAY_IMPORT)
    if imported == "harness":
        return False        # the empty top package; importing anything runs it anyway
    mine, theirs = _group(importer), _group(imported)
    return mine != theirs and LAYERS[theirs] >= LAYERS[mine]


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, on_stack, stack, components = {}, {}, set(), [], []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in graph:
                continue
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return components


def test_the_layer_table_covers_every_module():
    unplaced = [m for m in _source_modules() if not m.startswith("vqbench_plugins.")
                and not any(m == g or m.startswith(g + ".") for g in LAYERS)]
    assert not unplaced, unplaced


def test_imports_only_go_down_the_layers():
    graph = _import_graph()
    upward = sorted(f"{a} -> {b}" for a, targets in graph.items() for b in targets if _forbidden(a, b))
    assert not upward, "imports that go up or sideways:\n  " + "\n  ".join(upward)


def test_no_import_cycles():
    graph = _import_graph()
    lines = []
    for component in _cycles(graph):
        members = set(component)
        edges = sorted(f"{a} -> {b}" for a in component for b in graph[a] if b in members)
        lines.append("cycle among " + ", ".join(component) + ":\n    " + "\n    ".join(edges))
    assert not lines, "import cycles:\n  " + "\n  ".join(lines)
