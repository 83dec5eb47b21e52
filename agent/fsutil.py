"""Atomic file writes: a reader (or a kill) sees either the old file or the new one, never half.

The new content goes to a temporary file in the same directory (so the final ``os.replace`` is a
rename within one filesystem, which POSIX makes atomic), is flushed and fsynced, and only then
replaces the target. The directory is fsynced too so the rename survives a power cut.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from agent.errors import RetestError


class WriteError(RetestError):
    """A file could not be written (read-only directory, disk full, permission); names the path."""


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; create parent directories; return the path.

    Raises WriteError naming ``path`` when the directory is read-only, the disk is full or any
    other OS error stops the write; the previous content of ``path`` is then left untouched.
    """
    target = Path(path)
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
        os.replace(tmp_name, target)
        tmp_name = None
        _fsync_dir(target.parent)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise WriteError(f"cannot write {target}: {reason}") from exc
    finally:
        if tmp_name is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
    return target


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path | str, obj: Any) -> Path:
    """Write ``obj`` as indented JSON (dates and paths as strings) to ``path`` atomically."""
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n"
    return atomic_write_text(path, text)


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
