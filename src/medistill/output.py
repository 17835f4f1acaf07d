"""Checking an output location before the work that fills it, tidying a reopened folder, and
writing a file atomically (:func:`atomic_write_bytes`: never half a file at its path).

Commands check where they will write before they start (a file in the way of a folder, a
read-only location), so a long run or a batch prediction does not fail at its very end; the
message is one line naming the path (:class:`~medistill.errors.OutputError`).
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from pathlib import Path

from medistill.errors import MedistillError, OutputError

#: when this process started (temporary files older than this are stale)
PROCESS_START = time.time()
#: the temporary files of :func:`atomic_write_bytes`
_TMP_NAME = re.compile(r"^\..+\.[A-Za-z0-9_]+\.tmp$")


def _nearest_existing(path: Path) -> Path:
    p = path.absolute()
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def _check_base(shown: Path, start: Path, what: str) -> None:
    base = _nearest_existing(start)
    if not base.is_dir():
        raise OutputError(f"{what} {shown}: {base} is a file, not a folder")
    if not os.access(base, os.W_OK | os.X_OK):
        raise OutputError(f"{what} {shown}: cannot write in {base} (read-only or no "
                          "permission)")


def check_output_dir(path: str | Path, what: str = "--out") -> Path:
    """``path`` can be (or become) a folder this process may write into."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"{what} {path}: exists and is not a folder")
    _check_base(path, path, what)
    return path


def check_output_file(path: str | Path, what: str = "--out") -> Path:
    """``path`` can be (over)written as a file: not a folder, its folder writable (the
    atomic write puts a temporary file next to it)."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"{what} {path}: is a folder, expected a file name")
    _check_base(path, path.parent, what)
    return path


def remove_stale_tmp(folder: str | Path, before: float = PROCESS_START) -> list[Path]:
    """Delete the ``.<name>.*.tmp`` files of interrupted atomic writes below ``folder`` that
    are older than ``before`` (default: this process's start); returns them."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    removed = []
    for p in folder.rglob(".*.tmp"):
        try:
            if p.is_file() and _TMP_NAME.match(p.name) and p.stat().st_mtime < before:
                p.unlink()
                removed.append(p)
        except OSError:
            continue  # gone already or not ours to delete
    return removed


def atomic_write_bytes(path: str | Path, write) -> Path:
    """Call ``write(file_object)`` on a temporary file next to ``path``, then rename it."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:  # a file in the way, read-only, out of space: one line naming it
        raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and not isinstance(e, MedistillError):
            raise OutputError(f"cannot write {path}: {e.strerror or e}") from None
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, lambda f: f.write(text.encode()))
