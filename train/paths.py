"""Path confinement for folders a person types (the app's Train tab): everything stays inside one data root.

`confined_path("runs/a", root)` -> the resolved path inside `root`; '..', absolute paths elsewhere and symbolic
links that lead out of the root raise PathError with a message for a person.
"""

from __future__ import annotations

import re
from pathlib import Path

RUN_NAME = re.compile(r"[A-Za-z0-9._-]+")


class PathError(ValueError):
    """A typed path that leaves the data folder or does not exist; the message says which."""


def confined_path(text, root: Path, must_exist: bool = False) -> Path:
    """A path typed in the UI, resolved inside `root` (relative or absolute, symlinks followed).

    Rejects '..', absolute paths elsewhere and symlinks that lead out of the root, with a PathError.
    """
    root = Path(root)
    text = "" if text is None else str(text).strip()
    if not text:
        raise PathError(f"Type a folder inside the data folder {root}.")
    if "\x00" in text:
        raise PathError("The path contains a NUL character.")
    typed = Path(text)
    if ".." in typed.parts:
        raise PathError(f"'..' is not allowed in {text!r}: give a folder inside the data folder {root}.")
    root_real = root.resolve()
    resolved = (typed if typed.is_absolute() else root_real / typed).resolve()
    if not resolved.is_relative_to(root_real):
        reason = "a symbolic link leads" if not typed.is_absolute() else "it is"
        raise PathError(f"{text!r} is outside the data folder {root} ({reason} elsewhere); "
                        "only folders inside it can be used.")
    if must_exist and not resolved.exists():
        raise PathError(f"{text!r} does not exist inside the data folder {root}.")
    return resolved


def check_run_name(name: str) -> str:
    """A run folder name: letters, digits, '.', '_' and '-', not starting with '.' (no separators, no '..')."""
    if not RUN_NAME.fullmatch(name or "") or name.startswith("."):
        raise PathError("A run name uses letters, digits, '.', '_' and '-' only, and does not start with '.'.")
    return name


def relative_to(path: Path, root: Path) -> str:
    """`path` as shown to a person: relative to `root` when inside it, else as is."""
    try:
        return str(Path(path).relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)
