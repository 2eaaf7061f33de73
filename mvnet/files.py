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


# ---------------------------------------------------------------------------------------------- folders

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _fsync_folder(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # Windows cannot open folders; its renames are durable enough
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one atomic step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    import ctypes
    import errno

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EXDEV):
        return False
    raise OSError(code, os.strerror(code), str(a))


def _staging_names(folder: Path) -> tuple[Path, Path]:
    return folder.parent / f".{folder.name}.saving", folder.parent / f".{folder.name}.replaced"


def recover_folder(folder: str | os.PathLike) -> None:
    """Finish a folder swap that a crash interrupted (only possible where renames cannot exchange).

    After `atomic_folder` the folder is the old complete one or the new complete one; on systems without an
    atomic exchange there is one moment when it is missing while the new one waits under its staging name.
    """
    folder = Path(folder)
    saving, replaced = _staging_names(folder)
    if not folder.exists() and replaced.is_dir():
        os.replace(saving if saving.is_dir() else replaced, folder)


def _carry_over(old: Path, new: Path) -> None:
    """Entries of the old folder that the new one did not write (model card, grids) come along (hard links)."""
    import shutil

    def link_or_copy(source, destination):
        try:
            os.link(source, destination)
        except OSError:
            shutil.copy2(source, destination)

    for entry in old.iterdir():
        target = new / entry.name
        if target.exists() or target.is_symlink():
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, target, copy_function=link_or_copy, symlinks=True)
        elif entry.is_symlink():
            os.symlink(os.readlink(entry), target)
        else:
            link_or_copy(entry, target)


@contextmanager
def atomic_folder(folder: str | os.PathLike) -> Iterator[Path]:
    """`with atomic_folder(p) as staging: <write files into staging>`: p becomes the new folder in one step.

    Files are written into a sibling staging folder; on success the old folder's other entries are carried over
    and the two folders are exchanged atomically, so a reader or a crash sees the old complete folder or the new
    complete one, never a mix. On an exception nothing changes. Write files inside with atomic_write_bytes
    (it fsyncs); the folder entries are fsynced here.
    """
    import shutil

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(folder)
    saving, replaced = _staging_names(folder)
    for leftover in (saving, replaced):  # from a crash before the swap (saving) or before the cleanup (replaced)
        shutil.rmtree(leftover, ignore_errors=True)
    saving.mkdir()
    try:
        yield saving
        if folder.is_dir():
            _carry_over(folder, saving)
        _fsync_folder(saving)
        if folder.is_dir() and _exchange(saving, folder):
            old = saving  # after the exchange the staging name holds the old folder
        else:
            old = None
            if folder.is_dir():
                os.replace(folder, replaced)
                old = replaced
            os.replace(saving, folder)
        _fsync_folder(folder.parent)
    except BaseException:
        shutil.rmtree(saving, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
