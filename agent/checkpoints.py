"""Where graph checkpoints and the run lock live: the data directory, or a shared PostgreSQL.

One knob, ``RETEST_CHECKPOINT_URL`` (``Settings.checkpoint_url``). Empty (the default): the
LangGraph SQLite saver in ``<data_dir>/checkpoints.sqlite`` and the data directory's file lock,
for one machine. ``postgresql://...``: the LangGraph Postgres saver in that database and a
PostgreSQL advisory lock there, so several workers on several machines share run state: a run
killed on one machine resumes on another with ``--resume RUN_ID``, and two workers never run a
report at once.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import psycopg
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres import PostgresSaver
from langgraph.checkpoint.sqlite import SqliteSaver
from psycopg.rows import dict_row

from core.errors import ServiceError
from core.fsutil import storage_errors
from core.lock import RunLock
from core.settings import Settings
from tools.pg_lock import PgAdvisoryLock, connect, describe_url

CHECKPOINT_FILE = "checkpoints.sqlite"


def uses_postgres(settings: Settings) -> bool:
    """Tell whether checkpoints and the run lock live in PostgreSQL."""
    return bool(settings.checkpoint_url)


def run_lock(settings: Settings, name: str = "run") -> AbstractContextManager[object]:
    """Return the lock one run of ``name`` holds: advisory in PostgreSQL, else the file lock.

    Both raise LockedError (exit 4) at once when another holder has it and are re-entrant
    within a process.
    """
    if uses_postgres(settings):
        return PgAdvisoryLock(settings.checkpoint_url, name)
    return RunLock(settings.data_dir, name)


@contextmanager
def open_checkpointer(settings: Settings) -> Iterator[BaseCheckpointSaver]:
    """Yield the checkpoint saver chosen by settings, creating its tables on first use.

    ServiceError (one line) when the PostgreSQL database is unreachable; the SQLite file's
    storage errors become WriteError naming the path.
    """
    if uses_postgres(settings):
        # The saver's own settings: autocommit, no prepared statements, dict rows.
        conn = connect(settings.checkpoint_url, "retest-checkpoints")
        conn.prepare_threshold = 0
        conn.row_factory = dict_row  # type: ignore[assignment]
        try:
            saver = PostgresSaver(conn)  # type: ignore[arg-type]
            try:
                saver.setup()  # idempotent: runs only the migrations not yet applied
            except psycopg.Error as exc:
                raise ServiceError(f"cannot create checkpoint tables at "
                                   f"{describe_url(settings.checkpoint_url)}: "
                                   f"{str(exc).strip().splitlines()[0]}") from None
            yield saver
        finally:
            conn.close()
        return
    path = Path(settings.data_dir) / CHECKPOINT_FILE
    with storage_errors(path):
        sqlite_conn = sqlite3.connect(path, check_same_thread=False, timeout=30)
    try:
        yield SqliteSaver(sqlite_conn)
    finally:
        sqlite_conn.close()


def checkpoint_exists(settings: Settings, run_id: str) -> bool:
    """Tell whether a checkpoint for ``run_id`` exists where settings keep checkpoints."""
    config = {"configurable": {"thread_id": run_id}}
    if uses_postgres(settings):
        with open_checkpointer(settings) as saver:
            return saver.get_tuple(config) is not None  # type: ignore[arg-type]
    path = Path(settings.data_dir) / CHECKPOINT_FILE
    if not path.is_file():
        return False
    with storage_errors(path), SqliteSaver.from_conn_string(str(path)) as saver:
        return saver.get_tuple(config) is not None  # type: ignore[arg-type]
