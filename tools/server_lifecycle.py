"""Who uses an embedded vLLM server, and when it should stop.

An embedded server is started either *implicitly* (a command needed a model: ``retest report``,
``retest eval``, a test session) or *on purpose* (``retest serve-llm --detach``, the app). Each
process that uses it registers its pid in ``<servers>/<model>.users/<pid>`` (the file holds the
purpose). The rules, applied by a small watchdog process that the server's starter spawns beside
it (and, promptly, by each user's exit hook):

- an implicit server stops once no live process is registered as an implicit user (after
  ``grace_s``, which also covers a user that was SIGKILLed and never ran its exit hook);
- a server started on purpose stops after ``idle_stop_s`` seconds without a live implicit user
  and without a request (vLLM's own ``http_requests_total`` counter tells us about requests);
  ``idle_stop_s`` 0 keeps it until ``serve-llm --stop``;
- until the server first answers it is starting: any live user keeps it, and a starter killed
  half-way up leaves no live user, so the rules above stop it.

Pure rule: :func:`should_stop`. Registry I/O: :class:`ServerUsers`. Loop: :func:`watch`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import time
from pathlib import Path
from typing import Literal

import requests

from core.lock import pid_alive as process_exists

log = logging.getLogger(__name__)

Purpose = Literal["implicit", "detached"]
PURPOSES: tuple[Purpose, ...] = ("implicit", "detached")
# Requests that say nothing about use: the watchdog's own polls and health checks.
_NOT_USE = ('handler="/metrics"', 'handler="/health"', 'handler="/v1/models"')


def should_stop(mode: Purpose, live_implicit_users: int, quiet_s: float, *, idle_stop_s: float,
                grace_s: float) -> bool:
    """Decide whether the server should stop now.

    ``quiet_s`` is how long there has been neither a live implicit user nor a request. An
    implicit server stops ``grace_s`` after its last implicit user left; a detached one after
    ``idle_stop_s`` quiet seconds (never when ``idle_stop_s`` is 0). A live implicit user
    always keeps it running.
    """
    if live_implicit_users > 0:
        return False
    if mode == "implicit":
        return quiet_s >= grace_s
    return idle_stop_s > 0 and quiet_s >= idle_stop_s


def pid_alive(pid: int) -> bool:
    """Return whether a process with ``pid`` exists and is not a zombie (an exited user)."""
    if not process_exists(pid):
        return False
    with contextlib.suppress(OSError, IndexError):
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    return True


class ServerUsers:
    """The registry of processes using one server: a folder of ``<pid>`` files."""

    def __init__(self, folder: Path) -> None:
        """Keep the registry in ``folder`` (created on first registration)."""
        self.folder = folder

    def register(self, purpose: Purpose, pid: int | None = None) -> None:
        """Record that ``pid`` (default: this process) uses the server for ``purpose``."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / str(pid or os.getpid())
        # An implicit use outranks a detached one in the same process (the app that also runs
        # a report keeps the server while the report runs).
        if path.exists() and path.read_text().strip() == "implicit":
            return
        path.write_text(purpose)

    def unregister(self, pid: int | None = None) -> None:
        """Forget ``pid`` (default: this process)."""
        (self.folder / str(pid or os.getpid())).unlink(missing_ok=True)

    def live(self) -> dict[int, str]:
        """Return live users as pid -> purpose, deleting the entries of dead processes."""
        users: dict[int, str] = {}
        if not self.folder.is_dir():
            return users
        for path in self.folder.iterdir():
            if not path.name.isdigit():
                continue
            pid = int(path.name)
            if pid_alive(pid):
                with contextlib.suppress(OSError):
                    users[pid] = path.read_text().strip() or "implicit"
            else:
                path.unlink(missing_ok=True)
        return users

    def live_implicit(self, *, excluding: int | None = None) -> int:
        """Count live implicit users other than ``excluding``."""
        return sum(1 for pid, purpose in self.live().items()
                   if purpose == "implicit" and pid != excluding)


def request_count(root_url: str, timeout_s: float = 3.0) -> float | None:
    """Sum vLLM's ``http_requests_total`` over real API handlers; None when unreachable."""
    try:
        text = requests.get(f"{root_url}/metrics", timeout=timeout_s).text
    except requests.RequestException:
        return None
    total = 0.0
    for line in text.splitlines():
        if line.startswith("http_requests_total{") and not any(n in line for n in _NOT_USE):
            with contextlib.suppress(ValueError, IndexError):
                total += float(line.rsplit(" ", 1)[1])
    return total


def watch(record_path: Path, users: ServerUsers, *, poll_s: float = 2.0,
          grace_s: float = 5.0) -> str:
    """Watch the server in ``record_path`` until it should stop; stop it; return why.

    Returns at once (without stopping anything) when the record disappears or names another
    pid: the server was stopped or replaced by someone else.
    """
    first = json.loads(record_path.read_text())
    pid = int(first["pid"])
    root_url = str(first["base_url"]).removesuffix("/v1")
    last_count: float | None = None
    answered = False
    last_active = time.monotonic()
    while True:
        time.sleep(poll_s)
        try:
            record = json.loads(record_path.read_text())
        except (OSError, ValueError):
            return "record gone"
        if int(record["pid"]) != pid or not pid_alive(pid) or not leads_own_group(pid):
            return "server replaced or exited"
        implicit_users = users.live_implicit()
        count = request_count(root_url)
        answered = answered or count is not None
        # Before its first answer the server is starting: any live user (the starter) keeps it,
        # or a detached start with a short idle_stop_s would be stopped half-way up. With every
        # user gone (the starter was killed), the usual rules stop it.
        starting_for_someone = not answered and bool(users.live())
        if implicit_users or starting_for_someone or (count is not None and count != last_count):
            last_active = time.monotonic()
        last_count = count if count is not None else last_count
        mode = record.get("mode", "implicit")
        if should_stop(mode if mode in PURPOSES else "implicit", implicit_users,
                       time.monotonic() - last_active,
                       idle_stop_s=float(record.get("idle_stop_s", 0.0)), grace_s=grace_s):
            stop_server(pid)
            with contextlib.suppress(OSError):
                if json.loads(record_path.read_text()).get("pid") == pid:
                    record_path.unlink()
            return f"stopped ({mode}, no users)"


def leads_own_group(pid: int) -> bool:
    """Whether ``pid`` leads its own process group, as a server we started always does."""
    try:
        return pid > 1 and os.getpgid(pid) == pid and pid != os.getpgrp()
    except OSError:
        return False


def stop_server(pid: int, grace_s: float = 20.0) -> None:
    """Stop the server led by ``pid`` and its workers (its process group): TERM, then KILL.

    Refuses (does nothing) unless ``pid`` leads a process group of its own: a corrupt record
    must never make us signal init's group or our own.
    """
    if not leads_own_group(pid):
        log.warning("not stopping pid %d: it does not lead a process group of its own", pid)
        return
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and pid_alive(pid):
        time.sleep(0.3)
    if pid_alive(pid):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the watchdog process (``python -m tools.server_lifecycle``)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("record", type=Path)
    parser.add_argument("users", type=Path)
    parser.add_argument("--poll-s", type=float, default=2.0)
    parser.add_argument("--grace-s", type=float, default=5.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s watchdog %(message)s")
    why = watch(args.record, ServerUsers(args.users), poll_s=args.poll_s, grace_s=args.grace_s)
    log.info("%s: %s", args.record.name, why)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
