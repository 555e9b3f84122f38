"""The long results store: one JSON line per (run, metric), with the protocol in every row.

Each row carries everything needed to judge whether two numbers are comparable (``ROW_COLUMNS``):
dataset, split, resolution, number of images, seed, the metric's protocol and feature extractor,
package versions and the git commit. ``extra`` is a JSON object string for anything else (sampler
settings, a checkpoint step, the reason a value is missing).

Every row is checked when written (``encode_row``) and again when read (``records``): the text
columns are strings, ``value`` a number or null, ``higher_is_better`` a boolean, ``n_images``,
``resolution`` and ``seed`` integers or null, ``extra`` a string holding a JSON object and ``kind``
one of ``KINDS``. A bad line raises a ``VQBenchError`` naming ``path:line`` and the column.

Writes. ``append`` adds its lines at the end of the file in place (the existing bytes and the inode
are kept): one ``write`` of all new lines in append mode, then fsync. A crash during an append can
leave at most a partial last line without its newline; ``records`` ignores such a torn line (a final
line without a newline that is not valid JSON) and the next ``append`` cuts it off before writing,
while a corrupt line anywhere else still raises (a reader running during an append sees at most
the same unfinished last line). A complete last line that only lacks its newline (edited by hand) is
kept and the newline added. ``replace_run`` / ``replace_where`` write the whole
new content to a temporary file in the same folder (``harness.core.io.write_atomic``: same
permission bits as the old file), fsync it and ``os.replace`` it over the store, so a crash leaves
either the old or the new file, never a half-written one; temporaries that a killed writer left
(``.{name}.{pid}.{random}.tmp`` of a process that no longer runs) are removed at the next write.
An advisory lock on the folder (POSIX) keeps two processes sharing a store from losing each other's
rows. A store path that is a folder, cannot be read or written, or a full disk gives a one-line
``VQBenchError`` naming the path.

Non-finite values (a metric that could not be computed) are stored as JSON ``null`` and read back
as NaN; ``extra["reason"]`` says why.
"""
from __future__ import annotations

import json
import math
import os
import re
import subprocess
from collections.abc import Iterable, Mapping
from contextlib import contextmanager
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import pandas as pd

from harness.core.errors import VQBenchError
from harness.core.io import TMP_SUFFIX, file_error, fsync_folder, stale_temporaries, write_atomic

try:
    import fcntl
except ImportError:          # Windows: no advisory lock; atomic replacement still holds
    fcntl = None

ROW_COLUMNS = ("run_id", "kind", "model", "preset", "config_hash", "dataset", "split", "resolution",
               "n_images", "seed", "metric", "value", "higher_is_better", "protocol",
               "feature_extractor", "package_versions", "git_sha", "started_at", "finished_at", "extra")
# The columns make_rows takes from the run description; the rest are per metric or filled in.
RUN_COLUMNS = ("run_id", "kind", "model", "preset", "config_hash", "dataset", "split", "resolution",
               "seed", "started_at")
KINDS = ("tokenizer", "generator")
# The type of every column as make_rows / encode_row write it (and records checks it).
INT_COLUMNS = ("resolution", "n_images", "seed")            # an integer or null
STRING_COLUMNS = tuple(c for c in ROW_COLUMNS if c not in INT_COLUMNS + ("value", "higher_is_better", "extra"))

# The schema of ``extra``: every key a row may carry, and what it means. Rows built by the evaluation
# pipeline (harness.evaluation.recording.build_rows) are checked against it; readers use ``row_extra``.
EXTRA_SCHEMA = {
    "evaluation": "the registered evaluation that produced the row",
    "settings": "that evaluation's settings (the skip rule compares them)",
    "run_info": "the run's self-description: tokens, factors, codebook_size(s), schedule, bits_per_image, parameters",
    "checkpoint_step": "training step of the evaluated checkpoint",
    "eval_seconds": "wall time of the evaluation",
    "world_size": "number of processes that evaluated",
    "metric_source": "registry name of the metric that emitted the value",
    "reason": "why the value is missing (NaN)",
    "k": "prefix length / position of a curve row",
    "k_total": "the full prefix length", "unit": "what k counts (channels, positions, factors, position)",
    "n_train": "probe training images", "train_split": "probe training split", "l2": "probe L2 penalty",
    "lbfgs_iterations": "probe optimizer iterations", "feature_dim": "probe feature width",
    "factor": "the one sub-codebook a probe read (factorized tokenizers)",
    "num_classes": "probe classes", "probe": "the probe protocol in words",
    "factors": "entropy: joint or flatten factors", "threshold_bits": "entropy: t* threshold",
    "codebook_size": "entropy: K_t of the position", "distinct_prefixes": "entropy: distinct x_<=t",
    "tokenizer_run": "generation: the tokenizer checkpoint decoding the samples",
    "tokenizer_preset": "generation: its preset", "reference_split": "generation: reference split",
    "reference_n": "generation: reference images", "sampler": "generation: SamplerConfig",
    "sample_seed": "generation: sampling seed", "n_samples": "generation: samples",
    "class_balanced": "generation: labels i mod C", "samples_per_class": "generation: samples per class",
    "conditions": "generation: what each sample was conditioned on (class labels or which prompts)",
    "kid_subset_size": "KID: images per subset used (the protocol's 1000, or N when N is smaller)",
    "kid_subset_shrunk": "KID: true when N forced the subsets below 1000 images (they overlap; the std understates)",
    "generated_by": "geneval: what `vqbench geneval generate` recorded of the samples (checkpoint, sampler, seed)",
    "distinct_prompts": "generation (text-conditioned): the number of distinct prompts sampled",
    "stderr": "standard error of the value: bootstrap over redrawn evaluation images (harness.evaluation.metrics.bootstrap), "
              "or binomial for an accuracy (stderr_kind)",
    "stderr_kind": "how stderr was estimated when not by the bootstrap: binomial (an accuracy over n_images)",
    "ci95": "bootstrap 95 % percentile interval [low, high] of a mean over images",
    "bootstrap_bias": "FID, codebook usage: mean of the bootstrap draws minus the value (redrawn sets repeat images, "
                      "which raises FID and lowers usage)",
    "bootstrap_resamples": "number of bootstrap draws behind stderr (0: skipped, an FID of more than 2,048 images per set)",
    "bootstrap_seed": "seed of the bootstrap draws",
    "batch_images": "images per evaluation batch (per-batch legacy values such as taming's perplexity depend on it)",
}


SEED_SUFFIX = re.compile(r"\.seed([1-9][0-9]*)$")


def seed_label(label: str, seed: int) -> str:
    """The run label of ``label`` trained with seed ``seed``: seed 0 keeps the label (``vq-fmnist``),
    another seed gets a suffix (``vq-fmnist.seed1``), so a run of several seeds keeps its seed-0 rows."""
    return label if seed == 0 else f"{label}.seed{seed}"


def unseeded(label: str) -> tuple[str, int]:
    """``seed_label``'s inverse: (``vq-fmnist``, 1) from ``vq-fmnist.seed1`` (also of a ``suite/label`` run id)."""
    m = SEED_SUFFIX.search(label)
    return (label[:m.start()], int(m.group(1))) if m else (label, 0)


def check_extra(extra: Mapping, what: str) -> None:
    """Raise naming the keys of ``extra`` that ``EXTRA_SCHEMA`` does not define."""
    unknown = sorted(set(extra) - set(EXTRA_SCHEMA))
    if unknown:
        raise VQBenchError(f"{what}: extra keys {', '.join(unknown)} are not in harness.core.results.EXTRA_SCHEMA")


def now() -> str:
    """A UTC timestamp as stored in ``started_at`` / ``finished_at``."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@lru_cache(maxsize=1)
def package_versions() -> str:
    """``"vqbench=0.1.0 torch=2.4.1 ..."`` for the packages that decide the numbers."""
    from importlib.metadata import PackageNotFoundError, version
    parts = []
    for pkg in ("vqbench", "torch", "torchvision", "numpy"):
        try:
            parts.append(f"{pkg}={version(pkg)}")
        except PackageNotFoundError:
            pass
    return " ".join(parts)


@lru_cache(maxsize=4)
def git_sha(root: str | Path | None = None) -> str:
    """The commit of the checkout holding ``root`` (default: the one harness runs from), with
    ``+dirty`` when tracked files are modified; ``""`` outside a checkout or without git."""
    root = Path(root) if root is not None else Path(__file__).resolve().parents[2]
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True,
                              timeout=5)
        if head.returncode != 0:
            return ""
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return ""
    sha = head.stdout.strip()
    return f"{sha}+dirty" if sha and dirty.stdout.strip() else sha


def _per_metric(value, metric: str, what: str):
    """``value`` itself, or its entry for ``metric`` when it is a mapping."""
    if not isinstance(value, Mapping):
        return value
    if metric not in value:
        raise VQBenchError(f"no {what} given for metric {metric!r}")
    return value[metric]


def row_extra(row: Mapping) -> dict:
    """A row's ``extra`` as a dict (stored rows hold it as a JSON string; missing or empty: {})."""
    extra = row["extra"]
    if isinstance(extra, str):
        return json.loads(extra) if extra else {}
    return dict(extra) if isinstance(extra, Mapping) else {}


def make_rows(run: Mapping, metrics: Mapping[str, float], higher_is_better: Mapping[str, bool],
              protocol: str | Mapping[str, str] = "canonical", *, n_images: int | Mapping[str, int],
              feature_extractor: str | Mapping[str, str] = "", extra: Mapping | None = None,
              reasons: Mapping[str, str] | None = None) -> list[dict]:
    """One store row per entry of ``metrics``.

    ``run`` holds the run's columns (``RUN_COLUMNS``; ``finished_at``, ``package_versions`` and
    ``git_sha`` default to now / this environment). ``protocol``, ``n_images`` and
    ``feature_extractor`` are one value for every metric or a mapping per metric. ``extra`` is shared
    by all rows; ``reasons[metric]`` explains a non-finite value.
    """
    missing = [c for c in RUN_COLUMNS if c not in run]
    if missing:
        raise VQBenchError(f"run description lacks {', '.join(missing)}")
    unknown = set(run) - set(RUN_COLUMNS) - {"finished_at", "package_versions", "git_sha"}
    if unknown:
        raise VQBenchError(f"run description has columns {', '.join(sorted(unknown))} that are not "
                           "run-level; pass them as arguments or in extra")
    base = {"finished_at": now(), "package_versions": package_versions(), "git_sha": git_sha()} | dict(run)
    rows = []
    for metric, value in metrics.items():
        value = float(value)
        row_extra = dict(extra or {})
        if not math.isfinite(value):
            row_extra["reason"] = (reasons or {}).get(metric, f"value was {value}")
        rows.append(base | {
            "n_images": int(_per_metric(n_images, metric, "n_images")),
            "metric": metric, "value": value,
            "higher_is_better": bool(_per_metric(higher_is_better, metric, "higher_is_better")),
            "protocol": _per_metric(protocol, metric, "protocol"),
            "feature_extractor": _per_metric(feature_extractor, metric, "feature_extractor"),
            "extra": json.dumps(row_extra, sort_keys=True)})
    return rows


class ResultsStore:
    """A JSON Lines file of result rows; see the module docstring."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    # ------------------------------------------------------------------------------------ reading
    def records(self) -> list[dict]:
        """The stored rows in file order (none when the file does not exist). A corrupt or wrongly
        typed line raises naming ``path:line``; a torn last line (module docstring) is ignored."""
        data = self._read_bytes()
        if data is None:
            return []
        lines = data.split(b"\n")
        rows = []
        for number, raw in enumerate(lines, 1):
            if not raw.strip():
                continue
            torn_ok = number == len(lines)       # the last piece has no newline: maybe a killed append
            where = f"{self.path}:{number}"
            try:
                row = json.loads(raw.decode("utf-8"))
            except UnicodeDecodeError:
                if torn_ok:
                    continue
                raise VQBenchError(f"{where} is not UTF-8 text; fix or delete that line") from None
            except ValueError:
                if torn_ok:
                    continue
                raise VQBenchError(f"{where} is not valid JSON; fix or delete that line") from None
            if not isinstance(row, dict):
                raise VQBenchError(f"{where} is not a results row (a JSON object); fix or delete that line")
            missing = [c for c in ROW_COLUMNS if c not in row]
            if missing:
                raise VQBenchError(f"{where} is not a results row: it lacks the columns {', '.join(missing)}; "
                                   "fix or delete that line")
            problem = row_problem(row)
            if problem:
                raise VQBenchError(f"{where}: {problem}; fix or delete that line")
            rows.append(row)
        return rows

    def _read_bytes(self) -> bytes | None:
        """The file's bytes; None when it does not exist."""
        try:
            return self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise file_error(e, self.path, "read results file") from None

    def read(self, must_exist: bool = False) -> pd.DataFrame:
        """All rows as a DataFrame with ``ROW_COLUMNS`` (empty when the file does not exist)."""
        records = self.records()
        if must_exist and not records and self._read_bytes() is None:
            raise VQBenchError(f"results file {self.path} does not exist; pass the path of a results .jsonl "
                               "(written by vqbench eval/run)")
        df = pd.DataFrame(records, columns=list(ROW_COLUMNS))
        df["value"] = pd.to_numeric(df["value"], errors="coerce").astype(float)
        return df

    def has(self, run_id: str, metric: str | None = None, protocol: str | None = None, **where) -> bool:
        """Whether a row of ``run_id`` (with this metric / protocol / other column values) is stored.

        A stored NaN counts: the evaluation ran and the metric was unavailable.
        """
        want = {"run_id": run_id, "metric": metric, "protocol": protocol} | where
        want = {k: v for k, v in want.items() if v is not None}
        return any(all(r.get(k) == v for k, v in want.items()) for r in self.records())

    # ------------------------------------------------------------------------------------ writing
    def append(self, rows: Iterable[Mapping]) -> None:
        """Add ``rows`` after the existing ones, in place: the existing bytes (and the file's inode) are
        kept; all new lines go out in one write, then fsync. A torn last line is cut off first
        (module docstring)."""
        new = "".join(encode_row(r) + "\n" for r in rows).encode("utf-8")
        with self._writing():
            created = not self.path.exists()
            fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                size = os.fstat(fd).st_size
                start, tail = _last_line(fd, size)
                if tail is not None:             # the file does not end with a newline
                    if _is_torn(tail):
                        os.ftruncate(fd, start)  # a killed append's remains: records() ignores them
                    else:
                        new = b"\n" + new       # a complete line that only lacks its newline
                kept = os.fstat(fd).st_size
                try:
                    _write_all(fd, new)
                    os.fsync(fd)
                except OSError:                  # a full disk mid-write: take back the part written
                    os.ftruncate(fd, kept)
                    raise
            finally:
                os.close(fd)
            if created:
                fsync_folder(self.path.parent)

    def replace_run(self, run_id: str, rows: Iterable[Mapping], where: Mapping | None = None,
                    metrics: Iterable[str] | None = None) -> None:
        """Drop the rows of ``run_id`` (only those matching the ``where`` column values, and only
        those whose metric is in ``metrics``, if given) and add ``rows``, in one atomic replacement."""
        rows = list(rows)
        foreign = {r.get("run_id") for r in rows} - {run_id}
        if foreign:
            raise VQBenchError(f"replace_run({run_id!r}) was given rows of other runs: {sorted(map(str, foreign))}")
        where = dict(where or {})
        new = [encode_row(r) for r in rows]
        with self._writing():
            dropped = None if metrics is None else set(metrics)
            kept = [json.dumps(r) for r in self.records()
                    if not (r["run_id"] == run_id and all(r.get(k) == v for k, v in where.items())
                            and (dropped is None or r["metric"] in dropped))]
            write_atomic(self.path, "".join(line + "\n" for line in kept + new).encode("utf-8"))

    def replace_where(self, run_id: str, rows: Iterable[Mapping], drop) -> None:
        """Drop the rows of ``run_id`` for which ``drop(row)`` is true and add ``rows``, in one atomic
        replacement (the evaluation pipeline's replacement rule passes its predicate here)."""
        rows = list(rows)
        foreign = {r.get("run_id") for r in rows} - {run_id}
        if foreign:
            raise VQBenchError(f"replace_where({run_id!r}) was given rows of other runs: {sorted(map(str, foreign))}")
        new = [encode_row(r) for r in rows]
        with self._writing():
            kept = [json.dumps(r) for r in self.records() if not (r["run_id"] == run_id and drop(r))]
            write_atomic(self.path, "".join(line + "\n" for line in kept + new).encode("utf-8"))

    def check_writable(self) -> None:
        """Raise one line now if rows could not be written later (a folder in the way, no permission,
        a read-only file system), so no evaluation starts that cannot record its result. The store
        itself is not created or changed."""
        if self.path.is_dir():
            raise VQBenchError(f"results path {self.path} is a folder; pass a .jsonl file path")
        with self._writing():
            if self.path.exists():
                os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND))
            else:
                probe = self.path.with_name(f".{self.path.name}.{os.getpid()}.probe{TMP_SUFFIX}")
                os.close(os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
                probe.unlink()

    @contextmanager
    def _writing(self):
        """The lock, stale temporaries removed, and any OSError as one line naming the store."""
        try:
            with self._locked():
                for tmp in stale_temporaries(self.path):
                    try:
                        tmp.unlink()
                    except OSError:
                        pass             # another writer removed it, or not ours to remove
                yield
        except VQBenchError:
            raise
        except OSError as e:
            raise file_error(e, self.path, "write results file") from None

    @contextmanager
    def _locked(self):
        # read-modify-write: without the lock, two writers would each drop the other's new rows. The
        # folder is locked, not the file: os.replace swaps the file's inode under a lock held on it.
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if fcntl is None:
            yield
            return
        fd = os.open(self.path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)             # releases the lock


def _last_line(fd: int, size: int) -> tuple[int, bytes | None]:
    """(offset, bytes) of the file's unterminated last line; (size, None) when the file is empty or
    ends with a newline."""
    def read_at(offset: int, n: int) -> bytes:
        os.lseek(fd, offset, os.SEEK_SET)     # reads only: O_APPEND writes still go to the end
        out = b""
        while len(out) < n:
            chunk = os.read(fd, n - len(out))
            if not chunk:
                break
            out += chunk
        return out
    if size == 0 or read_at(size - 1, 1) == b"\n":
        return size, None
    chunks, end = [], size
    while end > 0:
        start = max(0, end - (1 << 16))
        chunk = read_at(start, end - start)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            chunks.append(chunk[cut + 1:])
            return start + cut + 1, b"".join(reversed(chunks))
        chunks.append(chunk)
        end = start
    return 0, b"".join(reversed(chunks))


def _is_torn(line: bytes) -> bool:
    """A final line that is not valid JSON: what an append killed mid-write leaves."""
    try:
        json.loads(line.decode("utf-8"))
    except ValueError:                       # UnicodeDecodeError is a ValueError
        return True
    return False


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def row_problem(row: Mapping) -> str | None:
    """What is wrong with one stored row (it has every column of ``ROW_COLUMNS``), or None."""
    unknown = sorted(set(row) - set(ROW_COLUMNS))
    if unknown:
        return f"unknown columns {', '.join(unknown)} (put them in extra)"
    for c in STRING_COLUMNS:
        if not isinstance(row[c], str):
            return f"column {c!r} must be a string, not {_short(row[c])}"
    if row["kind"] not in KINDS:
        return f"column 'kind' must be one of {', '.join(KINDS)}, not {_short(row['kind'])}"
    value = row["value"]
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float))):
        return f"column 'value' must be a number or null, not {_short(value)}"
    if not isinstance(row["higher_is_better"], bool):
        return f"column 'higher_is_better' must be true or false, not {_short(row['higher_is_better'])}"
    for c in INT_COLUMNS:
        v = row[c]
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            return f"column {c!r} must be an integer or null, not {_short(v)}"
    extra = row["extra"]
    if not isinstance(extra, str):
        return f"column 'extra' must be a string holding a JSON object, not {_short(extra)}"
    try:
        parsed = json.loads(extra)
    except ValueError:
        return f"column 'extra' is not valid JSON: {_short(extra)}"
    if not isinstance(parsed, dict):
        return f"column 'extra' must hold a JSON object, not {_short(parsed)}"
    return None


def encode_row(row: Mapping) -> str:
    """Validate one row and return its JSON line (without the newline)."""
    name = row.get("run_id", "?")
    missing = [c for c in ROW_COLUMNS if c not in row]
    if missing:
        raise VQBenchError(f"results row for {name} lacks {', '.join(missing)}")
    unknown = sorted(set(row) - set(ROW_COLUMNS))
    if unknown:
        raise VQBenchError(f"results row for {name} has unknown columns {', '.join(unknown)}; put them in extra")
    out = {c: row[c] for c in ROW_COLUMNS}
    if out["kind"] not in KINDS:
        raise VQBenchError(f"results row for {name}: kind must be one of {KINDS}, not {out['kind']!r}")
    extra = out["extra"]
    if isinstance(extra, str):
        try:
            extra = json.loads(extra) if extra else {}
        except json.JSONDecodeError:
            raise VQBenchError(f"results row for {name}: extra is not a JSON string") from None
    if not isinstance(extra, dict):
        raise VQBenchError(f"results row for {name}: extra must be a JSON object")
    try:
        value = None if out["value"] is None else float(out["value"])
    except (TypeError, ValueError):
        raise VQBenchError(f"results row for {name}: value {out['value']!r} is not a number") from None
    if value is None or not math.isfinite(value):
        extra.setdefault("reason", f"value was {value}")   # JSON has no NaN/inf: keep what it was
        value = None
    out["value"] = value
    out["extra"] = json.dumps(extra, sort_keys=True, default=_plain)
    for c in INT_COLUMNS:          # rows that went through pandas: numpy integers, 28.0, NaN for missing
        out[c] = _as_int(out[c])
    if hasattr(out["higher_is_better"], "item"):
        out["higher_is_better"] = out["higher_is_better"].item()      # numpy.bool_
    problem = row_problem(out)
    if problem:
        raise VQBenchError(f"results row for {name}: {problem}")
    return json.dumps(out, ensure_ascii=False, default=_plain)


def _as_int(v):
    """An integer column's value as written: int or None (others are left for row_problem to name)."""
    if hasattr(v, "item") and not isinstance(v, (str, bytes)):
        v = v.item()
    if isinstance(v, float):
        if math.isnan(v):
            return None
        if v.is_integer():
            return int(v)
    return v


def _plain(obj):
    # numpy scalars arrive from rows that went through pandas (read().to_dict("records"))
    if hasattr(obj, "item"):
        return obj.item()
    raise TypeError(f"{type(obj).__name__} is not JSON serializable")
