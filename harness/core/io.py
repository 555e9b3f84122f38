"""Atomic file writes: readers, other ranks and crashes see the old file or the new one, never half."""
from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Callable


def write_atomic(path: str | Path, content: bytes | str | Callable[[Path], object]) -> None:
    """Replace ``path`` with ``content``: bytes, text (written as UTF-8), or a writer called with the
    temporary path, e.g. ``lambda tmp: torch.save(obj, tmp)``.

    The temporary file sits in the same folder (a rename within one file system is atomic) under a
    name unique to this call, so concurrent writers never collide; it is fsynced before the rename
    and the folder after, so the new content also survives a power cut. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
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
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_folder(path.parent)


def _fsync_folder(folder: Path) -> None:
    # makes the rename itself durable; not possible (nor needed) on every platform
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
