"""The results store survives crashes and bad files (issue #13): append writes in place (old bytes and
inode kept, one write, fsync), a torn last line is ignored while a corrupt or wrongly typed line anywhere
else raises naming path:line, replacements keep the file's permissions, temporaries of dead writers are
removed, and unusable paths give one VQBenchError line naming the path."""
import errno
import json
import os
import stat
import subprocess
import sys

import pandas as pd
import pytest

from harness.cli import main
from harness.core import io as vqio
from harness.core.errors import VQBenchError
from harness.core.io import write_atomic
from harness.core.results import ResultsStore, make_rows


def _run(run_id="r1", **kw):
    return {"run_id": run_id, "kind": "tokenizer", "model": "vq", "preset": "vq-tiny", "config_hash": "h",
            "dataset": "fmnist", "split": "test", "resolution": 28, "seed": 0, "started_at": "t0"} | kw


def rows(run_id="r1", metrics=None, **kw):
    metrics = metrics or {"psnr": 20.0}
    return make_rows(_run(run_id, **kw), metrics, {m: True for m in metrics}, n_images=100,
                     extra={"checkpoint_step": 2})


@pytest.fixture
def store(tmp_path):
    s = ResultsStore(tmp_path / "res.jsonl")
    s.append(rows("r1", {"psnr": 20.0, "ssim": 0.5}))
    return s


# -------------------------------------------------------------------------------------------- append
def test_append_keeps_old_bytes_and_inode(store):
    before, inode = store.path.read_bytes(), os.stat(store.path).st_ino
    store.append(rows("r2"))
    after = store.path.read_bytes()
    assert after.startswith(before) and len(after) > len(before)
    assert os.stat(store.path).st_ino == inode                      # appended in place, not replaced
    assert [r["run_id"] for r in store.records()] == ["r1", "r1", "r2"]


def test_append_is_one_write_then_fsync(store, monkeypatch):
    calls = []
    real_write, real_fsync = os.write, os.fsync
    monkeypatch.setattr(os, "write", lambda fd, data: calls.append(("write", bytes(data))) or real_write(fd, data))
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append(("fsync", None)) or real_fsync(fd))
    store.append(rows("r2", {"psnr": 1.0, "ssim": 2.0, "rfid": 3.0}))
    writes = [c for c in calls if c[0] == "write"]
    assert len(writes) == 1 and writes[0][1].count(b"\n") == 3       # all three lines in one write
    assert ("fsync", None) in calls[calls.index(writes[0]) + 1:]    # flushed to disk after the write


def test_append_on_a_missing_file_creates_it(tmp_path):
    store = ResultsStore(tmp_path / "sub" / "res.jsonl")
    store.append(rows())
    assert len(store.records()) == 1 and store.path.read_bytes().endswith(b"\n")


def test_crash_mid_append_leaves_a_torn_last_line_that_is_ignored_and_cut(store, monkeypatch):
    before = store.path.read_bytes()
    real_write = os.write

    class Killed(BaseException):                # SIGKILL: nothing of the process runs after it
        pass

    def killed(fd, data):                       # half the line reaches the disk, then the process dies
        real_write(fd, bytes(data[: len(data) // 2]))
        raise Killed
    monkeypatch.setattr(os, "write", killed)
    with pytest.raises(Killed):
        store.append(rows("r2"))
    monkeypatch.undo()
    torn = store.path.read_bytes()
    assert torn.startswith(before) and len(torn) > len(before) and not torn.endswith(b"\n")
    assert [r["run_id"] for r in store.records()] == ["r1", "r1"]   # the torn line is ignored
    store.append(rows("r3"))                                          # ... and cut off before the next rows
    assert store.path.read_bytes().startswith(before)
    assert [r["run_id"] for r in store.records()] == ["r1", "r1", "r3"]


def test_a_write_error_mid_append_takes_back_the_part_written(store, monkeypatch):
    before = store.path.read_bytes()
    real_write = os.write

    def full(fd, data):                         # part of the rows reach the disk, then it is full
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(VQBenchError, match="no space left"):
        store.append(rows("r2") + rows("r3"))
    monkeypatch.undo()
    assert store.path.read_bytes() == before


def test_torn_last_line_that_is_not_utf8_is_ignored(store):
    with open(store.path, "ab") as f:
        f.write('{"run_id": "caf\u00e9'.encode("utf-8")[:-1])          # cut inside a UTF-8 character
    assert len(store.records()) == 2


def test_complete_last_line_without_newline_is_kept(store):
    store.path.write_bytes(store.path.read_bytes().rstrip(b"\n"))   # edited by hand: last newline gone
    assert len(store.records()) == 2
    store.append(rows("r2"))
    assert [r["run_id"] for r in store.records()] == ["r1", "r1", "r2"]


def test_corrupt_middle_line_raises_naming_path_and_line(store):
    lines = store.path.read_bytes().splitlines(keepends=True)
    store.path.write_bytes(lines[0] + b'{"run_id": "r1", "kind\n' + lines[1])
    with pytest.raises(VQBenchError, match=rf"{store.path}:2 is not valid JSON"):
        store.records()
    # a torn line that later appends buried in the middle is a corrupt line too
    store.path.write_bytes(lines[0] + b"\xff\xfe garbage\n" + lines[1])
    with pytest.raises(VQBenchError, match=rf"{store.path}:2 is not UTF-8"):
        store.records()
    store.append(rows("r2"))                            # an append does not read the old lines ...
    with pytest.raises(VQBenchError, match=rf"{store.path}:2"):
        store.replace_run("r2", rows("r2"))             # ... a replacement does, and refuses to drop them
    assert store.path.read_bytes().startswith(lines[0] + b"\xff\xfe garbage\n")


# ------------------------------------------------------------------------------------ column types
BAD_COLUMNS = [
    ("run_id", 5, "column 'run_id' must be a string"),
    ("metric", None, "column 'metric' must be a string"),
    ("protocol", ["canonical"], "column 'protocol' must be a string"),
    ("dataset", 1.5, "column 'dataset' must be a string"),
    ("split", {"a": 1}, "column 'split' must be a string"),
    ("kind", "tokeniser", "column 'kind' must be one of tokenizer, generator"),
    ("kind", 3, "column 'kind' must be a string"),
    ("value", "high", "column 'value' must be a number or null"),
    ("value", True, "column 'value' must be a number or null"),
    ("higher_is_better", "yes", "column 'higher_is_better' must be true or false"),
    ("higher_is_better", 1, "column 'higher_is_better' must be true or false"),
    ("n_images", "100", "column 'n_images' must be an integer or null"),
    ("n_images", 99.5, "column 'n_images' must be an integer or null"),
    ("resolution", True, "column 'resolution' must be an integer or null"),
    ("seed", "0", "column 'seed' must be an integer or null"),
    ("extra", {"reason": "x"}, "column 'extra' must be a string holding a JSON object"),
    ("extra", "[1, 2]", "column 'extra' must hold a JSON object"),
    ("extra", "{not json", "column 'extra' is not valid JSON"),
]


@pytest.mark.parametrize("column,value,message", BAD_COLUMNS, ids=[f"{c}={v!r}" for c, v, _ in BAD_COLUMNS])
def test_wrong_typed_column_raises_naming_the_line(store, column, value, message):
    first, second = store.path.read_text().splitlines()
    bad = json.loads(second) | {column: value}
    store.path.write_text(first + "\n" + json.dumps(bad) + "\n")
    with pytest.raises(VQBenchError, match=rf"^{store.path}:2: ") as e:
        store.records()
    assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(VQBenchError, match=f"{store.path}:2"):
        store.read()


def test_unknown_column_or_not_an_object_raises(store):
    first, second = store.path.read_text().splitlines()
    store.path.write_text(first + "\n" + json.dumps(json.loads(second) | {"typo": 1}) + "\n")
    with pytest.raises(VQBenchError, match=rf"{store.path}:2: unknown columns typo"):
        store.records()
    store.path.write_text("[1, 2]\n" + first + "\n")
    with pytest.raises(VQBenchError, match=rf"{store.path}:1 is not a results row"):
        store.records()


def test_what_the_code_writes_reads_back(tmp_path):
    store = ResultsStore(tmp_path / "res.jsonl")
    gen = make_rows(_run("g", kind="generator", seed=None, resolution=None), {"gfid": float("nan"), "gkid": 0.1},
                    {"gfid": False, "gkid": False}, "adm", n_images={"gfid": 10, "gkid": 10},
                    reasons={"gfid": "no weights"})
    store.append(rows("r1", {"psnr": -0.5}) + gen)
    df = store.read()
    assert len(df) == 3 and pd.isna(df.value[1]) and df.value[0] == -0.5 and df.seed.isna().tolist() == [False, True, True]
    assert [r["seed"] for r in store.records()] == [0, None, None]
    # rows that went through pandas (numpy scalars, a seed column holding NaN for the missing seed)
    again = ResultsStore(tmp_path / "copy.jsonl")
    records = pd.DataFrame(store.records()).to_dict("records")
    assert isinstance(records[0]["seed"], float)                    # pandas made the seed column float
    again.append(records)
    back = again.records()
    assert [r["seed"] for r in back] == [0, None, None] and isinstance(back[0]["seed"], int)
    assert [r["resolution"] for r in back] == [28, None, None]


def test_bad_types_are_refused_before_writing(tmp_path):
    store = ResultsStore(tmp_path / "res.jsonl")
    with pytest.raises(VQBenchError, match="column 'seed' must be an integer or null"):
        store.append([rows()[0] | {"seed": "0"}])
    with pytest.raises(VQBenchError, match="column 'dataset' must be a string"):
        store.append([rows()[0] | {"dataset": None}])
    assert not store.path.exists()


# ------------------------------------------------------------------------------ atomic replacement
def test_replace_run_keeps_permission_bits(store):
    os.chmod(store.path, 0o640)
    inode = os.stat(store.path).st_ino
    store.replace_run("r1", rows("r1", {"psnr": 30.0}))
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o640
    assert os.stat(store.path).st_ino != inode                      # it was replaced, not edited
    assert [(r["metric"], r["value"]) for r in store.records()] == [("psnr", 30.0)]
    os.chmod(store.path, 0o604)
    store.replace_where("r1", rows("r1", {"ssim": 0.9}), lambda r: False)
    assert stat.S_IMODE(os.stat(store.path).st_mode) == 0o604


def test_write_atomic_keeps_a_read_only_mode_and_new_files_get_the_umask(tmp_path):
    path = tmp_path / "f.txt"
    write_atomic(path, b"one")
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o666 & ~umask
    os.chmod(path, 0o444)
    write_atomic(path, b"two")
    write_atomic(path, lambda tmp: tmp.write_bytes(b"three"))
    assert path.read_bytes() == b"three" and stat.S_IMODE(os.stat(path).st_mode) == 0o444
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f.txt"]


def test_crash_during_replace_keeps_the_old_file_and_no_temporary(store, monkeypatch):
    before = store.path.read_bytes()

    def boom(*a, **k):
        raise OSError(errno.EIO, "disk gone")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(VQBenchError, match=f"cannot write (results file )?{store.path}: disk gone"):
        store.replace_run("r1", rows("r1", {"psnr": 1.0}))
    assert store.path.read_bytes() == before
    assert sorted(p.name for p in store.path.parent.iterdir()) == ["res.jsonl"]


def _dead_pid() -> int:
    child = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(child.stdout)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    return pid


@pytest.mark.parametrize("write", ["append", "replace_run"])
def test_stale_temporaries_of_dead_writers_are_removed_at_the_next_write(store, write):
    folder, dead = store.path.parent, _dead_pid()
    stale = folder / f".res.jsonl.{dead}.0123abcd.tmp"
    alive = folder / f".res.jsonl.{os.getppid()}.89abcdef.tmp"        # a live writer's: kept
    other = folder / f".other.jsonl.{dead}.0123abcd.tmp"              # another file's: not this store's
    for p in (stale, alive, other):
        p.write_bytes(b'{"half a row')
    assert vqio.stale_temporaries(store.path) == [stale]
    if write == "append":
        store.append(rows("r2"))
    else:
        store.replace_run("r1", rows("r1"))
    assert not stale.exists() and alive.exists() and other.exists()
    assert len(store.records()) >= 1


# ----------------------------------------------------------------------------------- unusable paths
def test_a_folder_as_results_path_is_one_error_naming_it(tmp_path, capsys):
    folder = tmp_path / "res.jsonl"
    folder.mkdir()
    store = ResultsStore(folder)
    for call in (store.records, store.read, lambda: store.append(rows()), lambda: store.replace_run("r1", rows())):
        with pytest.raises(VQBenchError, match=f"{folder}: it is a folder") as e:
            call()
        assert "\n" not in str(e.value)
    assert main(["report", str(folder), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and str(folder) in err[0]


def test_a_file_where_the_folder_should_be(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    store = ResultsStore(blocker / "res.jsonl")
    with pytest.raises(VQBenchError, match="blocker"):
        store.append(rows())
    with pytest.raises(VQBenchError, match=f"{blocker}"):
        store.read(must_exist=True)


def test_disk_full_and_permission_errors_name_the_path(store, monkeypatch):
    before = store.path.read_bytes()

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(VQBenchError, match=f"cannot write results file {store.path}: no space left") as e:
        store.append(rows("r2"))
    assert isinstance(e.value, OSError)                             # callers catching OSError still do
    monkeypatch.undo()
    assert store.path.read_bytes() == before

    def denied(self):
        raise PermissionError(errno.EACCES, "Permission denied", str(self))
    monkeypatch.setattr(type(store.path), "read_bytes", denied)
    with pytest.raises(VQBenchError, match=f"cannot read results file {store.path}: permission denied"):
        store.records()


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root reads and writes anything")
def test_unreadable_and_read_only_locations(store):
    os.chmod(store.path, 0)
    try:
        with pytest.raises(VQBenchError, match=f"{store.path}: permission denied"):
            store.records()
    finally:
        os.chmod(store.path, 0o644)
    os.chmod(store.path.parent, 0o500)
    try:
        with pytest.raises(VQBenchError, match="permission denied"):
            store.replace_run("r1", rows())
    finally:
        os.chmod(store.path.parent, 0o700)
