"""The run lock across machines: a PostgreSQL session-level advisory lock.

:class:`PgAdvisoryLock` is :class:`core.lock.RunLock`'s twin for several workers that share one
PostgreSQL database (``RETEST_CHECKPOINT_URL``) instead of one data directory. It behaves the
same way: a second holder anywhere fails at once with :class:`core.errors.LockedError` (exit 4)
naming the holder, and the lock is re-entrant within one process (the scheduler holds it and the
report it starts takes it again). The lock lives as long as its connection: PostgreSQL drops it
when the holder disconnects, so a killed worker's lock is freed as soon as the server sees its
socket close, with no stale file to take over.

The lock key is a signed 64-bit integer derived from the lock's name, so every machine computes
the same key; the holder's pid, host and start time travel in the connection's
``application_name`` so a refused run can say who holds it.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from types import TracebackType

import psycopg
from psycopg.conninfo import conninfo_to_dict

from core.errors import LockedError, ServiceError

# Locks this process holds: (url, key) -> (connection, depth). Guarded by _HELD_GUARD.
_HELD: dict[tuple[str, int], tuple[psycopg.Connection, int]] = {}
_HELD_GUARD = threading.Lock()
_APP_PREFIX = "retest-lock"
CONNECT_TIMEOUT_S = 10


def lock_key(name: str) -> int:
    """Return the advisory-lock key of ``name``: the first 8 bytes of its SHA-256, signed."""
    digest = hashlib.sha256(f"retest:{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def describe_url(url: str) -> str:
    """Return ``host:port/dbname`` of a PostgreSQL URL, without user or password (for messages)."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the configured PostgreSQL database"
    return f"{info.get('host', 'localhost')}:{info.get('port', 5432)}/{info.get('dbname', '')}"


def connect(url: str, application_name: str = "retest") -> psycopg.Connection:
    """Open an autocommit connection to ``url``; ServiceError (one line) when it cannot."""
    try:
        return psycopg.connect(url, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name=application_name[:63])
    except psycopg.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceError(f"cannot reach PostgreSQL at {describe_url(url)}: {reason}") from None


class PgAdvisoryLock:
    """Context manager holding the advisory lock ``name`` in the database at ``url``.

    ``with PgAdvisoryLock(url, "run"):`` raises LockedError (exit 4) at once when another
    session, on any machine, holds the same name; ServiceError when the database is unreachable.
    Nested acquisitions in one process are counted; the outermost release unlocks.
    """

    def __init__(self, url: str, name: str = "run") -> None:
        self.url = url
        self.name = name
        self.key = lock_key(name)

    def acquire(self) -> None:
        """Take the lock or raise LockedError naming the holder; see the class docstring."""
        slot = (self.url, self.key)
        with _HELD_GUARD:
            if slot in _HELD:
                conn, depth = _HELD[slot]
                _HELD[slot] = (conn, depth + 1)
                return
            app = (f"{_APP_PREFIX} {self.name} pid {os.getpid()} on {socket.gethostname()} "
                   f"since {time.strftime('%Y-%m-%dT%H:%M:%S%z')}")
            conn = connect(self.url, app)
            try:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
            except psycopg.Error as exc:
                conn.close()
                raise ServiceError(f"advisory lock at {describe_url(self.url)} failed: "
                                   f"{str(exc).strip().splitlines()[0]}") from None
            if not (row and row[0]):
                message = self._held_message(conn)
                conn.close()
                raise LockedError(message)
            _HELD[slot] = (conn, 1)

    def release(self) -> None:
        """Release one level; the outermost release unlocks and closes the connection."""
        slot = (self.url, self.key)
        with _HELD_GUARD:
            if slot not in _HELD:
                return
            conn, depth = _HELD[slot]
            if depth > 1:
                _HELD[slot] = (conn, depth - 1)
                return
            del _HELD[slot]
        try:
            conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))
        except psycopg.Error:
            pass  # closing the session below releases it all the same
        finally:
            conn.close()

    def _held_message(self, conn: psycopg.Connection) -> str:
        """Say who holds the lock, from the holder's application_name in pg_stat_activity."""
        # An advisory lock on a bigint key shows in pg_locks as classid (high 32 bits) and
        # objid (low 32 bits), objsubid 1.
        high, low = (self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF
        try:
            row = conn.execute(
                "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a "
                "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND l.granted "
                "AND l.classid::bigint = %s AND l.objid::bigint = %s AND l.objsubid = 1 "
                "LIMIT 1", (high, low)).fetchone()
        except psycopg.Error:
            row = None
        holder = row[0] if row and row[0] else "another session"
        holder = holder.removeprefix(f"{_APP_PREFIX} {self.name} ")
        return (f"another retest {self.name} is in progress ({holder}); PostgreSQL advisory lock "
                f"{self.key} at {describe_url(self.url)} — wait for it to finish")

    def __enter__(self) -> PgAdvisoryLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
