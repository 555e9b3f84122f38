"""Atomic file writes: readers, other ranks and crashes see the old file or the new one, never half.

``file_error`` turns an ``OSError`` met while reading or writing a user-named path into one
``VQBenchError`` line that names the path and says what to do.
"""
from __future__ import annotations

import errno
import os
import stat
import uuid
from pathlib import Path
from typing import Callable

from harness.core.errors import VQBenchError

TMP_SUFFIX = ".tmp"


class FileAccessError(VQBenchError, OSError):
    """A file or folder could not be read or written (permissions, a folder where a file was expected,
    a full disk). Both a VQBenchError (the CLI prints it as one line) and an OSError (callers that
    catch OSError keep working)."""


_ADVICE = {
    errno.EACCES: "permission denied; make it accessible or choose another path",
    errno.EPERM: "operation not permitted; make it accessible or choose another path",
    errno.EROFS: "the file system is read-only; choose a writable location",
    errno.ENOSPC: "no space left on the device; free some space or choose another location",
    errno.EDQUOT: "disk quota exceeded; free some space or choose another location",
    errno.EISDIR: "it is a folder; pass a file path",
    errno.ENOTDIR: "a parent of it is a file, not a folder; choose another path",
    errno.EEXIST: "a file is in the way of a folder; remove it or choose another path",
    errno.ENAMETOOLONG: "the name is too long; choose a shorter path",
    errno.ELOOP: "too many symbolic links; fix the link or choose another path",
}


def file_error(e: OSError, path: str | Path, action: str = "access") -> FileAccessError:
    """One-line error for ``e`` raised while trying to ``action`` (read, write, create) ``path``."""
    if isinstance(e, VQBenchError):
        return e                                    # already explained
    reason = _ADVICE.get(e.errno) or f"{e.strerror or e}; check the path and try again"
    culprit = f" ({e.filename})" if e.filename and str(e.filename) != str(path) else ""
    message = f"cannot {action} {path}{culprit}: {reason}"
    return FileAccessError(" ".join(message.split()))      # one line, whatever the OS said


def write_atomic(path: str | Path, content: bytes | str | Callable[[Path], object]) -> None:
    """Replace ``path`` with ``content``: bytes, text (written as UTF-8), or a writer called with the
    temporary path, e.g. ``lambda tmp: torch.save(obj, tmp)``.

    The temporary file sits in the same folder (a rename within one file system is atomic) under a
    name unique to this call, ``.{name}.{pid}.{random}.tmp`` (``stale_temporaries`` finds those a
    killed process left), so concurrent writers never collide; it is fsynced before the rename and
    the folder after, so the new content also survives a power cut. A replaced file keeps its
    permission bits; a new one gets the default (umask) mode. Parent folders are created.
    """
    path = Path(path)
    try:
        _write_atomic(path, content)
    except VQBenchError:
        raise
    except OSError as e:                 # name the file the user asked for, not the temporary
        raise file_error(e, path, "write") from None


def _write_atomic(path: Path, content) -> None:
    if path.is_dir():
        raise IsADirectoryError(errno.EISDIR, "is a folder", str(path))
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except (FileNotFoundError, NotADirectoryError):
        mode = None
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TMP_SUFFIX}")
    try:
        if callable(content):
            content(tmp)
        else:
            with open(tmp, "xb") as f:
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
        fd = os.open(tmp, os.O_RDWR)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if mode is not None:             # after the writes: the old mode may be read-only
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_folder(path.parent)


def stale_temporaries(path: str | Path) -> list[Path]:
    """The temporaries ``write_atomic(path, ...)`` left behind in processes that no longer run (killed
    mid-write). A temporary of a live process, of this process, or whose owner cannot be told is kept."""
    path = Path(path)
    prefix = f".{path.name}."
    out = []
    try:
        names = os.listdir(path.parent)
    except OSError:
        return []
    for name in names:
        if not (name.startswith(prefix) and name.endswith(TMP_SUFFIX)):
            continue
        parts = name[len(prefix):-len(TMP_SUFFIX)].split(".")
        if len(parts) != 2 or not parts[0].isdigit():
            continue
        pid = int(parts[0])
        if pid == os.getpid() or pid <= 0:
            continue
        if not _pid_alive(pid):
            out.append(path.parent / name)
    return out


def _pid_alive(pid: int) -> bool:
    if os.name == "nt":      # os.kill(pid, 0) would terminate the process there
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):
        return True          # another user's process (or not knowable here): keep its file
    return True


def fsync_folder(folder: Path) -> None:
    """Make a rename or a new file in ``folder`` durable; not possible (nor needed) on every platform."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


_fsync_folder = fsync_folder        # the old private name
