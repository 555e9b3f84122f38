"""Bad results stores and report folders: `vqbench report RESULTS --out DIR` and `vqbench eval RUN --results
RESULTS` on a corrupt, wrongly typed, missing or misplaced store, or an --out that cannot be a folder.

Every store case corrupts a copy of the world's store (``bad.jsonl`` under the world's root), never the
store itself, so the protected files stay unchanged. The error must name ``path:line`` and the column.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

from bad_input_cases import Case, World

BAD = "bad.jsonl"
EVAL_ARGS = ["--n-eval", "8", "--batch-size", "8", "--quiet"]


def _copy(world: World) -> Path:
    dst = world.root / BAD
    shutil.copyfile(world.results, dst)
    return dst


def _lines(path: Path) -> list[str]:
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) >= 3, f"the world's store needs three rows for a middle line, has {len(lines)}"
    return lines


def _edit_line(edit, line: int = 2):
    """A copy of the store with line ``line`` (1-based, a middle one) replaced by ``edit(row) -> str``."""
    def make(world: World) -> Path:
        path = _copy(world)
        lines = _lines(path)
        lines[line - 1] = edit(json.loads(lines[line - 1]))
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path
    return make


def _column(column: str, value):
    return _edit_line(lambda row: json.dumps(row | {column: value}))


def _report(make):
    return lambda world: ["report", make(world), "--out", world.root / "tables"]


def _eval(make):
    return lambda world: ["eval", world.tokenizer_run, "--results", make(world), *EVAL_ARGS]


def _at(line: int = 2, what: str = ""):
    """The culprit: ``<root>/bad.jsonl:<line>`` followed by ``what``."""
    return lambda world: f"{world.root / BAD}:{line}{what}"


def _raw_line(text: bytes, line: int = 2):
    def make(world: World) -> Path:
        path = _copy(world)
        lines = path.read_bytes().splitlines()
        assert len(lines) >= 3
        lines[line - 1] = text
        path.write_bytes(b"\n".join(lines) + b"\n")
        return path
    return make


def _folder(world: World) -> Path:
    path = world.root / BAD
    path.mkdir()
    return path


def _missing(world: World) -> Path:
    return world.root / "no_such_results.jsonl"


def _under_a_file(world: World) -> Path:
    blocker = world.root / "blocker.txt"
    blocker.write_text("not a folder")
    return blocker / "results.jsonl"


def _out_is_a_file(world: World) -> list:
    out = world.root / "tables.md"
    out.write_text("an existing file")
    return ["report", world.results, "--out", out]


def _out_under_a_file(world: World) -> list:
    blocker = world.root / "blocker.txt"
    blocker.write_text("not a folder")
    return ["report", world.results, "--out", blocker / "tables"]


def _second_store_bad(world: World) -> list:
    return ["report", world.results, _column("value", "high")(world), "--out", world.root / "tables"]


COLUMN_CASES = [
    # (case name, column, bad value, what the error says)
    ("run_id-number", "run_id", 7, ": column 'run_id' must be a string"),
    ("metric-null", "metric", None, ": column 'metric' must be a string"),
    ("dataset-number", "dataset", 3.5, ": column 'dataset' must be a string"),
    ("protocol-list", "protocol", ["canonical"], ": column 'protocol' must be a string"),
    ("value-text", "value", "high", ": column 'value' must be a number or null"),
    ("value-bool", "value", True, ": column 'value' must be a number or null"),
    ("higher_is_better-text", "higher_is_better", "yes", ": column 'higher_is_better' must be true or false"),
    ("n_images-text", "n_images", "100", ": column 'n_images' must be an integer or null"),
    ("n_images-fraction", "n_images", 7.5, ": column 'n_images' must be an integer or null"),
    ("resolution-text", "resolution", "32px", ": column 'resolution' must be an integer or null"),
    ("seed-bool", "seed", False, ": column 'seed' must be an integer or null"),
    ("kind-unknown", "kind", "tokeniser", ": column 'kind' must be one of tokenizer, generator"),
    ("extra-object-not-string", "extra", {"checkpoint_step": 2}, ": column 'extra' must be a string holding"),
    ("extra-array", "extra", "[1, 2]", ": column 'extra' must hold a JSON object"),
    ("extra-not-json", "extra", "{checkpoint_step: 2", ": column 'extra' is not valid JSON"),
]

CASES = [
    Case(f"report-store-{name}", _report(_column(column, value)), _at(2, what))
    for name, column, value, what in COLUMN_CASES
] + [
    Case("report-store-corrupt-json-middle-line", _report(_raw_line(b'{"run_id": "vq", "kind": "tok')),
         _at(2, " is not valid JSON")),
    Case("report-store-middle-line-not-utf8", _report(_raw_line(b'{"run_id": "\xff\xfe"}')),
         _at(2, " is not UTF-8")),
    Case("report-store-line-is-an-array", _report(_raw_line(b"[1, 2, 3]")), _at(2, " is not a results row")),
    Case("report-store-line-lacks-columns", _report(_edit_line(lambda r: json.dumps({"run_id": r["run_id"]}))),
         _at(2, " is not a results row: it lacks the columns kind")),
    Case("report-store-unknown-column", _report(_column("typo", 1)), _at(2, ": unknown columns typo")),
    Case("report-store-last-complete-line-bad", _report(_edit_line(lambda r: json.dumps(r | {"seed": "0"}), 3)),
         _at(3, ": column 'seed'")),
    Case("report-results-is-a-folder", _report(_folder), lambda w: f"{w.root / BAD}: it is a folder"),
    Case("report-results-missing", _report(_missing),
         lambda w: f"results file {w.root / 'no_such_results.jsonl'} does not exist"),
    Case("report-results-under-a-file", _report(_under_a_file), lambda w: str(w.root / "blocker.txt")),
    Case("report-second-store-bad", _second_store_bad, _at(2, ": column 'value'")),
    Case("report-out-is-a-file", _out_is_a_file, lambda w: f"report folder {w.root / 'tables.md'} is an existing file"),
    Case("report-out-under-a-file", _out_under_a_file, lambda w: str(w.root / "blocker.txt")),
    Case("eval-store-corrupt-json-middle-line", _eval(_raw_line(b"{not json")), _at(2, " is not valid JSON")),
    Case("eval-store-kind-unknown", _eval(_column("kind", "tokeniser")), _at(2, ": column 'kind'")),
    Case("eval-store-extra-not-object", _eval(_column("extra", '"a string"')), _at(2, ": column 'extra'")),
    Case("eval-store-n_images-text", _eval(_column("n_images", "8")), _at(2, ": column 'n_images'")),
    Case("eval-results-is-a-folder", _eval(_folder), lambda w: f"{w.root / BAD} is a folder"),
    Case("eval-results-under-a-file", _eval(_under_a_file), lambda w: str(w.root / "blocker.txt")),
]
