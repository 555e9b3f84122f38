"""Bad inputs of text-to-image sampling (issue #16): `vqbench sample --prompts` and `vqbench geneval generate`.

The world's generator run is class-conditional (procedural data), so asking it for prompts is refused;
a prompts file that is missing, empty or not UTF-8 is refused before any checkpoint is read.
"""
from __future__ import annotations

import json
from pathlib import Path

from bad_input_cases import Case, World


def _prompts(w: World, content: bytes | None) -> Path:
    path = w.root / "prompts.txt"
    if content is not None:
        path.write_bytes(content)
    return path


def _sample(content: bytes | None):
    return lambda w: ["sample", w.generator_run, "--prompts", _prompts(w, content), "--out", w.root / "s.npz"]


def _malformed_conditioning(w: World) -> list:
    folder = w.generator_run / "checkpoints" / (w.generator_run / "checkpoints" / "latest").read_text().strip()
    state = json.loads((folder / "state.json").read_text())
    state["conditioning"] = {"kind": "text", "text_dim": "384"}
    (folder / "state.json").write_text(json.dumps(state))
    return ["sample", w.generator_run, "--n", "2", "--out", w.root / "s.npz"]


CASES = [
    Case("prompts-file-missing", _sample(None), lambda w: f"{w.root / 'prompts.txt'}", needs_generator=True),
    Case("prompts-file-empty", _sample(b"\n  \n"), lambda w: f"--prompts {w.root / 'prompts.txt'} holds no prompt",
         needs_generator=True),
    Case("prompts-file-not-utf8", _sample(b"a photo of a \xff\xfe bag\n"),
         lambda w: f"--prompts {w.root / 'prompts.txt'} is not UTF-8", needs_generator=True),
    Case("prompts-for-a-class-conditional-generator", _sample(b"a photo of a bag\n"),
         "this generator is class-conditional", needs_generator=True),
    Case("geneval-generate-with-a-class-conditional-generator",
         lambda w: ["geneval", "generate", w.generator_run, "--out", w.root / "geneval"],
         "GenEval needs one trained on a captioned dataset", needs_generator=True),
    Case("generator-state-malformed-conditioning", _malformed_conditioning,
         "malformed 'conditioning' entry", needs_generator=True),
]
