"""Real servers for the scaling tests and benches, started on 127.0.0.1 in temp dirs.

PostgreSQL and Redis come from Debian's packages (``postgresql``, ``redis-server``;
scripts/ci_deps.sh installs them); Chroma is the ``chroma`` CLI of the chromadb package beside
the running Python. Where a program is absent the starter raises :class:`ServerUnavailable`
naming what to install: a test wraps the starter in :func:`or_skip`, a bench (``bench/*``
imports this module too) reports it and exits. PostgreSQL refuses to run as root, so as root
the cluster is created and run as the ``postgres`` user (which Debian's package creates) in a
directory that user owns. Every server is stopped on the way out, also when the caller fails.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import NamedTuple, TypeVar

T = TypeVar("T")


class ServerUnavailable(RuntimeError):
    """The server's program (or the user to run it as) is missing; the message says which."""


class ChromaServer(NamedTuple):
    """A running ``chroma run``: its base URL and process id (a bench polls its memory)."""

    url: str
    pid: int


@contextlib.contextmanager
def or_skip(server: contextlib.AbstractContextManager[T]) -> Iterator[T]:
    """Enter a server's context in a test; skip the test when the server is unavailable."""
    import pytest

    with contextlib.ExitStack() as stack:
        try:
            value = stack.enter_context(server)
        except ServerUnavailable as exc:
            pytest.skip(str(exc))
        yield value


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return candidates[-1] if candidates else None


def _as_postgres(cmd: list[str]) -> list[str]:
    """Run ``cmd`` as the postgres user when we are root (initdb and postgres refuse root)."""
    if os.geteuid() != 0:
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServerUnavailable("running as root without runuser: cannot start PostgreSQL as "
                                "'postgres'")
    return [runuser, "-u", "postgres", "--", *cmd]


@contextlib.contextmanager
def postgres_server() -> Iterator[str]:
    """Start a throwaway PostgreSQL cluster on 127.0.0.1; yield its ``postgresql://`` URL."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if initdb is None or pg_ctl is None:
        raise ServerUnavailable("PostgreSQL server binaries (initdb, pg_ctl) not installed: "
                                "apt-get install postgresql")
    if os.geteuid() == 0:
        try:
            import pwd
            owner = pwd.getpwnam("postgres")
        except KeyError:
            raise ServerUnavailable("running as root and no 'postgres' user to run PostgreSQL "
                                    "as") from None
    # Not under pytest's tmp_path: its parents are private to root, and the server runs as
    # 'postgres'.
    root = Path(tempfile.mkdtemp(prefix="retest-pg-"))
    os.chmod(root, 0o755)
    data = root / "data"
    if os.geteuid() == 0:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    port = free_port()
    subprocess.run(_as_postgres([initdb, "-D", str(data), "-U", "retest", "-A", "trust",
                                 "--no-sync", "-E", "UTF8"]),
                   check=True, capture_output=True, timeout=120)
    opts = (f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
            "-c max_connections=50 -c shared_buffers=32MB")
    subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-o", opts, "-l",
                                 str(root / "log"), "-w", "-t", "60", "start"]),
                   check=True, capture_output=True, timeout=90)
    try:
        yield f"postgresql://retest@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "-w",
                                     "stop"]), capture_output=True, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def serving(cmd: list[str], ready: Callable[[], bool], what: str,
            timeout_s: float = 60.0) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``cmd``, wait until ``ready()`` is true, yield the process; stop it on the way out.

    Raise RuntimeError when the process exits or is not ready within ``timeout_s``. The server
    gets SIGTERM, then SIGKILL if it has not exited 30 s later.
    """
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + timeout_s
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start (exit status {proc.poll()})")
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=30)


def _accepts(port: int) -> bool:
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 1):
        return True
    return False


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    """Start a throwaway ``redis-server`` on 127.0.0.1 (no persistence); yield ``redis://`` URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServerUnavailable("redis-server not installed: apt-get install redis-server")
    root = Path(tempfile.mkdtemp(prefix="retest-redis-"))
    port = free_port()
    cmd = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
           "no", "--dir", str(root)]
    try:
        with serving(cmd, lambda: _accepts(port), f"redis-server on port {port}", 30):
            yield f"redis://127.0.0.1:{port}/0"
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def chroma_server(path: Path) -> Iterator[ChromaServer]:
    """Start ``chroma run`` on 127.0.0.1 with its data in ``path``; yield its URL and pid.

    Ready when ``/api/v2/heartbeat`` answers. The data directory is left for the caller.
    """
    exe = shutil.which("chroma", path=str(Path(sys.executable).parent))
    if exe is None:
        raise ServerUnavailable("the chromadb package's `chroma` CLI is not installed beside "
                                f"{sys.executable}")
    port = free_port()
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            urllib.request.urlopen(f"{url}/api/v2/heartbeat", timeout=2).close()  # noqa: S310
        except OSError:
            return False
        return True

    cmd = [exe, "run", "--path", str(path), "--host", "127.0.0.1", "--port", str(port)]
    with serving(cmd, ready, f"the Chroma server on port {port}") as proc:
        yield ChromaServer(url, proc.pid)
