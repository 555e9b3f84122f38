"""The bad-input catalogue's framework (the cases live in this package, one module per family).

A case is a crafted bad input given to the real CLI in process: ``setup(world)`` prepares it (copies,
corrupts or edits files under ``world.root``) and returns the argv. The catalogue test then runs
``harness.cli.main(argv)`` and asserts the README's promise: exit status 2, exactly one stderr line,
``error: ...`` naming the culprit, no traceback, and every protected file (the run folders and the
results store of the world) unchanged byte for byte.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable


@dataclass
class World:
    """What a case starts from: fresh copies under ``root`` for every case.

    tokenizer_run: a two-step vq-tiny run folder (procedural data), checkpoints/latest -> step_00000002
    generator_run: a two-step ar run on that tokenizer's tokens (None until a family asks for it)
    results: a results store (.jsonl) holding real rows of tokenizer_run
    """
    root: Path
    tokenizer_run: Path
    results: Path
    generator_run: Path | None = None

    @property
    def tokenizer_ckpt(self) -> Path:
        return self.tokenizer_run / "checkpoints" / (self.tokenizer_run / "checkpoints" / "latest").read_text().strip()

    def protected(self) -> list[Path]:
        return [p for p in (self.tokenizer_run, self.results, self.generator_run) if p is not None]


@dataclass(frozen=True)
class Case:
    """One crafted bad input. ``culprit``: text the error line must contain (the file, argument or
    value it names); ``needs_generator``: the world must include a generator run."""
    name: str
    setup: Callable[[World], list]
    culprit: str | Callable[[World], str] = ""
    needs_generator: bool = False
    changed_ok: tuple[str, ...] = field(default=())   # protected paths (relative to root) the case may touch


def snapshot(paths: list[Path]) -> dict[str, str]:
    """sha256 of every file under ``paths`` (files and folders), keyed by path."""
    out = {}
    for p in paths:
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file()) if p.exists() else []
        for f in files:
            out[str(f)] = hashlib.sha256(f.read_bytes()).hexdigest()
    return out


def run_main(argv: list) -> tuple[int, str, str]:
    """``harness.cli.main(argv)`` in process: (exit status, stdout, stderr)."""
    from harness.cli import main
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            rc = main([str(a) for a in argv])
        except SystemExit as e:               # argparse exits itself
            rc = 0 if e.code is None else e.code if isinstance(e.code, int) else 1
    return rc, out.getvalue(), err.getvalue()


def write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj))


def copy_world(template: World, root: Path) -> World:
    """Fresh copies of the template's folders and files under ``root``."""
    def cp(p: Path | None) -> Path | None:
        if p is None:
            return None
        dst = root / p.name
        if p.is_dir():
            shutil.copytree(p, dst, symlinks=True)
        else:
            shutil.copy2(p, dst)
        return dst
    return World(root=root, tokenizer_run=cp(template.tokenizer_run), results=cp(template.results),
                 generator_run=cp(template.generator_run))
