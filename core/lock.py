"""The project's one file lock: one holder at a time, and a lock file that says who holds it.

:class:`FileLock` is an advisory ``flock`` on any path; :class:`RunLock` is the data directory's
case, ``<data_dir>/locks/<name>.lock``. An eval's output folder and the embedded server's start
use ``FileLock`` too, so there is one implementation of locking. The file also records the
holder's pid, host and start time so a refused run can say who holds it. ``flock`` is released by
the kernel when its holder dies, so a lock file left behind by a killed run (a dead pid) is simply
taken over. By default a second concurrent holder fails at once with
:class:`core.errors.LockedError` (exit 4) instead of waiting: cron and systemd would otherwise pile
up blocked runs. ``wait=True`` blocks instead (a server start that another process is doing).

The lock is re-entrant within one process (the scheduler holds it and the report it starts may
take it again); nested acquisitions are counted and only the outermost release unlocks.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from types import TracebackType

from core.errors import LockedError
from core.fsutil import WriteError

log = logging.getLogger(__name__)

# Locks this process holds: resolved path -> (fd, depth). Guarded by _HELD_GUARD.
_HELD: dict[Path, tuple[int, int]] = {}
_HELD_GUARD = threading.Lock()


def pid_alive(pid: int) -> bool:
    """Return True when a process with ``pid`` exists (signal 0 probes without touching it)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


class FileLock:
    """Context manager holding the lock file ``path`` for the duration of a ``with`` block.

    ``name`` says what is locked in the refusal message ("another retest <name> is in
    progress"). With ``wait=False`` it raises LockedError (exit 4) at once when another live
    process holds the lock; with ``wait=True`` it blocks until that holder releases it. A lock
    file whose holder is gone is taken over with a log line.
    """

    def __init__(self, path: Path | str, name: str, *, wait: bool = False) -> None:
        self.path = Path(path)
        self.name = name
        self.wait = wait

    def holder(self) -> dict | None:
        """Return the metadata recorded by the current (or last) holder, or None."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except OSError:
            return None
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            return None
        return data if isinstance(data, dict) else None

    def acquire(self) -> None:
        """Take the lock or raise LockedError naming the holder; see the class docstring."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WriteError(f"cannot create lock directory {self.path.parent}: "
                             f"{exc.strerror}") from exc
        if self.wait:
            # A waiting lock is not re-entrant: each holder has its own descriptor, and flock
            # makes two descriptors block each other even inside one process (two app threads
            # starting the same server wait for each other rather than both proceeding).
            self._fd = self._lock_fd()
            return
        key = self.path.parent.resolve() / self.path.name
        with _HELD_GUARD:
            if key in _HELD:
                fd, depth = _HELD[key]
                _HELD[key] = (fd, depth + 1)
            else:
                _HELD[key] = (self._lock_fd(), 1)
        self._key = key

    def release(self) -> None:
        """Release one level of the lock; the outermost release unlocks and removes the file."""
        fd = getattr(self, "_fd", None)
        if fd is not None:
            self._fd = None
            self._unlock(fd)
            return
        key = getattr(self, "_key", None)
        with _HELD_GUARD:
            if key not in _HELD:
                return
            fd, depth = _HELD[key]
            if depth > 1:
                _HELD[key] = (fd, depth - 1)
                return
            del _HELD[key]
        self._unlock(fd)

    def _unlock(self, fd: int) -> None:
        # Unlink while still holding the flock: a waiter that opened the old inode will see it
        # no longer matches the path and retry on a fresh file.
        with contextlib.suppress(OSError):
            self.path.unlink()
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)

    def _lock_fd(self) -> int:
        for _ in range(50):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise WriteError(f"cannot open lock file {self.path}: {exc.strerror}") from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX if self.wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise LockedError(self._held_message()) from None
            if not self._same_file(fd):
                # The previous holder removed the file between our open and our flock.
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                continue
            self._note_takeover()
            try:
                self._write_holder(fd)
            except OSError as exc:  # a full or read-only disk: no run could write anything
                with contextlib.suppress(OSError):
                    self.path.unlink()
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
                raise WriteError(f"cannot write lock file {self.path}: {exc.strerror}") from exc
            return fd
        raise LockedError(f"lock {self.path} keeps changing hands; try again")

    def _same_file(self, fd: int) -> bool:
        try:
            on_disk = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (mine.st_dev, mine.st_ino) == (on_disk.st_dev, on_disk.st_ino)

    def _note_takeover(self) -> None:
        previous = self.holder()
        if previous and previous.get("pid") not in (None, os.getpid()):
            state = "dead" if not pid_alive(int(previous["pid"])) else "no longer holding it"
            log.warning("taking over stale lock %s (pid %s, %s)", self.path, previous["pid"], state)

    def _write_holder(self, fd: int) -> None:
        record = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "name": self.name}
        data = json.dumps(record).encode("utf-8")
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        os.fsync(fd)

    def _held_message(self) -> str:
        holder = self.holder() or {}
        who = f"pid {holder['pid']}" if "pid" in holder else "another process"
        since = f" since {holder['started_at']}" if "started_at" in holder else ""
        return (f"another retest {self.name} is in progress ({who}{since}); lock file {self.path}"
                f" — wait for it to finish")

    def __enter__(self) -> FileLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


class RunLock(FileLock):
    """The data directory's lock ``<data_dir>/locks/<name>.lock``: one run of ``name`` at a time.

    ``with RunLock(data_dir):`` raises LockedError (exit 4) at once when another live process
    holds it; see :class:`FileLock`.
    """

    def __init__(self, data_dir: Path | str, name: str = "run") -> None:
        super().__init__(Path(data_dir) / "locks" / f"{name}.lock", name)
