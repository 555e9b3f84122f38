"""The long results store: one JSON line per (run, metric), protocol in every row.

Appends and replacements rewrite the file through a temporary file and ``os.replace``, so a crash
never leaves a half-written store. Read with ``ResultsStore(path).read()`` (a pandas DataFrame).
"""
from __future__ import annotations

import json
import math
import os
import subprocess
from functools import lru_cache
from pathlib import Path

import pandas as pd

from .errors import VQBenchError

ROW_COLUMNS = ("run_id", "kind", "model", "preset", "config_hash", "dataset", "split", "resolution",
               "n_images", "seed", "metric", "value", "higher_is_better", "protocol",
               "feature_extractor", "package_versions", "git_sha", "started_at", "finished_at", "extra")


@lru_cache(maxsize=1)
def package_versions() -> str:
    from importlib.metadata import PackageNotFoundError, version
    parts = []
    for pkg in ("vqbench", "torch", "torchvision", "numpy"):
        try:
            parts.append(f"{pkg}={version(pkg)}")
        except PackageNotFoundError:
            pass
    return " ".join(parts)


@lru_cache(maxsize=1)
def git_sha() -> str:
    """The commit of the checkout harness runs from ('' outside a git checkout; '+dirty' if modified)."""
    root = Path(__file__).resolve().parent.parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                             timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""
    return f"{sha}+dirty" if sha and dirty else sha


class ResultsStore:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def _lines(self) -> list[str]:
        if not self.path.exists():
            return []
        return [ln for ln in self.path.read_text().splitlines() if ln.strip()]

    def read(self, must_exist: bool = False) -> pd.DataFrame:
        if must_exist and not self.path.exists():
            raise VQBenchError(f"results file {self.path} does not exist")
        rows = []
        for number, line in enumerate(self._lines(), 1):
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                raise VQBenchError(f"{self.path}:{number} is not valid JSON; fix or delete that line") from None
        df = pd.DataFrame(rows, columns=list(ROW_COLUMNS))
        df["value"] = pd.to_numeric(df["value"], errors="coerce")
        return df

    def append(self, rows: list[dict]) -> None:
        self._write(self._lines() + [self._encode(r) for r in rows])

    def replace_run(self, run_id: str, rows: list[dict], where: dict | None = None) -> None:
        """Drop the run's earlier rows (matching ``where`` columns, if given) and add ``rows``."""
        where = where or {}

        def stale(line: str) -> bool:
            r = json.loads(line)
            return r.get("run_id") == run_id and all(r.get(k) == v for k, v in where.items())
        self._write([ln for ln in self._lines() if not stale(ln)] + [self._encode(r) for r in rows])

    def _encode(self, row: dict) -> str:
        missing = [c for c in ROW_COLUMNS if c not in row]
        if missing:
            raise VQBenchError(f"results row for {row.get('run_id', '?')} lacks {', '.join(missing)}")
        row = {c: row[c] for c in ROW_COLUMNS}
        if isinstance(row["value"], float) and not math.isfinite(row["value"]):
            row["value"] = None          # JSON has no NaN; the reason goes into `extra`
        return json.dumps(row, sort_keys=False)

    def _write(self, lines: list[str]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp{os.getpid()}")
        with open(tmp, "w") as f:
            f.write("".join(ln + "\n" for ln in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
