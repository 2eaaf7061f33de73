"""Atomic file writes: a reader (or a crash) never sees half a file.

Write to a temporary file in the same folder, flush, fsync, give it the permissions a plain open() would,
then os.replace it over the destination (atomic on POSIX and Windows).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def _plain_file_mode() -> int:
    """0o666 less the umask: what open() would give (mkstemp makes files private, 0o600)."""
    umask = os.umask(0o022)
    os.umask(umask)
    return 0o666 & ~umask


FILE_MODE = _plain_file_mode()


@contextmanager
def atomic_file(path: str | os.PathLike, mode: str = "wb", **open_kwargs) -> Iterator:
    """`with atomic_file(p) as f: ...` writes f to p atomically; on an exception p is left untouched."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, mode, **open_kwargs) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_file(path) as f:
        f.write(data)


def atomic_write_json(path: str | os.PathLike, value, indent: int | None = 1) -> None:
    atomic_write_bytes(path, (json.dumps(value, indent=indent, ensure_ascii=False) + "\n").encode())
