"""Atomic file writes: a reader (or a kill) sees either the old file or the new one, never half.

The new content goes to a temporary file in the same directory (so the final ``os.replace`` is a
rename within one filesystem, which POSIX makes atomic), is flushed and fsynced, and only then
replaces the target. The directory is fsynced too so the rename survives a power cut.

:func:`storage_errors` turns a full or read-only disk met anywhere below a folder (a raw
``OSError`` or SQLite's "database or disk is full") into one :class:`WriteError` naming the path.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import sqlite3
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from core.errors import EXIT_STORAGE, RetestError

# OS errors that mean "this storage cannot take the write", as opposed to a bug.
_STORAGE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS}
# SQLite's primary result codes for the same: FULL, READONLY, IOERR (a full tmpfs), CANTOPEN.
_STORAGE_SQLITE_CODES = {13, 8, 10, 14}


class WriteError(RetestError):
    """A file could not be written (read-only directory, disk full, permission); names the path."""

    exit_code = EXIT_STORAGE


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; create parent directories; return the path.

    Raises WriteError naming ``path`` when the directory is read-only, the disk is full or any
    other OS error stops the write; the previous content of ``path`` is then left untouched.
    """
    atomic_write_files({Path(path): data})
    return Path(path)


def atomic_write_files(files: dict[Path, bytes | str]) -> None:
    """Write several files (``str`` as UTF-8) atomically, replacing none until all are written.

    Each new content is written and fsynced to a temporary file beside its target; only when all
    of them are on disk are they renamed into place. A full disk therefore fails before any
    target changes (a new report.json never sits beside the previous run's report.md), and no
    temporary file is left behind. Raises WriteError naming the file that could not be written.
    """
    staged: list[tuple[str, Path]] = []
    try:
        for target, data in files.items():
            payload = data.encode("utf-8") if isinstance(data, str) else data
            staged.append((_stage(Path(target), payload), Path(target)))
        while staged:
            tmp_name, target = staged[0]
            try:
                os.replace(tmp_name, target)
            except OSError as exc:
                raise WriteError(f"cannot write {target}: {exc.strerror}") from exc
            staged.pop(0)
            _fsync_dir(target.parent)
    finally:
        for tmp_name, _ in staged:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)


def _stage(target: Path, data: bytes) -> str:
    """Write ``data`` to a fsynced temporary file beside ``target``; return its name."""
    tmp_name: str | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp",
                                        dir=target.parent)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        # mkstemp creates 0600; a report is meant to be read by others (a web server, a mail hook).
        os.chmod(tmp_name, 0o644)
    except OSError as exc:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
        reason = exc.strerror or type(exc).__name__
        raise WriteError(f"cannot write {target}: {reason}") from exc
    return tmp_name


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (dates and paths as strings) to ``path`` atomically."""
    return atomic_write_text(path, json_text(obj))


def json_text(obj: Any) -> str:
    """Return ``obj`` as the indented JSON text the atomic writers store (ending in a newline)."""
    return json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"


def _fsync_dir(directory: Path) -> None:
    """Persist a rename; some filesystems refuse to open a directory, which is harmless."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def as_write_error(exc: BaseException, path: Path | str | None = None) -> WriteError | None:
    """Return a WriteError naming where ``exc`` failed when it is a storage failure, else None.

    An ``OSError`` names its own file when it has one, else ``path``; a SQLite error never names
    its file, so it gets ``path`` and a diagnosis of the filesystem under it (full or read-only).
    """
    if isinstance(exc, WriteError):
        return exc
    if isinstance(exc, OSError) and exc.errno in _STORAGE_ERRNOS:
        where = exc.filename or path
        reason = exc.strerror or str(exc)
        return WriteError(f"cannot write {where}: {reason}" if where else f"cannot write: {reason}")
    if isinstance(exc, sqlite3.Error) and _sqlite_storage_failure(exc):
        diagnosis = _diagnose(Path(path)) if path is not None else ""
        reason = f"{diagnosis}; sqlite: {exc}" if diagnosis else f"sqlite: {exc}"
        return WriteError(f"cannot write {path}: {reason}" if path else f"cannot write: {reason}")
    return None


@contextlib.contextmanager
def storage_errors(path: Path | str) -> Iterator[None]:
    """Re-raise a full or read-only disk met in the block as a WriteError naming ``path``.

    For the edge of a command (a run, an eval), not for each write: other errors pass unchanged.
    """
    try:
        yield
    except (OSError, sqlite3.Error) as exc:
        mapped = as_write_error(exc, path)
        if mapped is None:
            raise
        raise mapped from exc


def _sqlite_storage_failure(exc: sqlite3.Error) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF in _STORAGE_SQLITE_CODES
    text = str(exc).lower()
    return any(s in text for s in ("disk is full", "readonly database", "disk i/o error",
                                   "unable to open database"))


def _diagnose(path: Path) -> str:
    """Say whether the filesystem holding ``path`` is read-only or full; "" when neither."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        fs = os.statvfs(probe)
    except OSError:
        return ""
    if fs.f_flag & os.ST_RDONLY:
        return "read-only file system"
    free = fs.f_bavail * fs.f_frsize
    if free < 1 << 20:  # SQLite needs room for a journal page or two, a WAL index, a new page
        return f"no space left on device ({free:,} bytes free)"
    return ""
