"""Checkpoints and the run lock in a real PostgreSQL (``RETEST_CHECKPOINT_URL``), several workers.

A PostgreSQL cluster from Debian's packages is started on 127.0.0.1 by the test (skipped with a
reason where it is not installed). ``retest report --offline`` (judged by the deterministic fake
model, as in test_reliability_kill) is SIGKILLed mid-run and resumed by a second process against
the same database; no SQLite checkpoint exists, so only PostgreSQL carries the run. (The data
directory is shared, as a volume would be: it holds the paper store, which several workers share
through a Chroma server instead; see docs/scaling.md.) The resumed report must equal an
uninterrupted run's. Two processes contend for the advisory lock:
the second exits 4 naming the first.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from report_harness import FAKE_CLI, cli_env, report_args, stable_md, stable_report
from scale_servers import or_skip, postgres_server

from agent.checkpoints import checkpoint_exists, run_lock
from core.errors import EXIT_LOCKED, LockedError, ServiceError
from core.settings import load_settings
from tools.pg_lock import PgAdvisoryLock

REPO = Path(__file__).resolve().parents[1]
FIRST_RESUMABLE_LINE = 3  # see test_reliability_kill


@pytest.fixture(scope="module")
def pg_url() -> Iterator[str]:
    with or_skip(postgres_server()) as url:
        yield url


def _env(data_dir: Path, url: str) -> dict[str, str]:
    return cli_env(data_dir) | {"RETEST_CHECKPOINT_URL": url}


def _report(data_dir: Path, out: Path, url: str, extra: list[str] | None = None,
            kill_after_lines: int | None = None) -> tuple[int | None, list[str]]:
    """Run the CLI against PostgreSQL; SIGKILL it after N progress lines (then return None)."""
    proc = subprocess.Popen([sys.executable, "-c", FAKE_CLI, *report_args(out), *(extra or [])],
                            cwd=REPO, env=_env(data_dir, url), stderr=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, text=True)
    lines: list[str] = []
    assert proc.stderr is not None
    for line in proc.stderr:
        lines.append(line.rstrip("\n"))
        progress = [ln for ln in lines if ln.startswith(("[", "run id"))]
        if kill_after_lines is not None and len(progress) >= kill_after_lines:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            return None, progress
    return proc.wait(timeout=600), lines


def _checkpoint_rows(url: str, run_id: str) -> int:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT count(*) FROM checkpoints WHERE thread_id = %s",
                           (run_id,)).fetchone()
    return int(row[0]) if row else 0


def test_report_killed_and_resumed_on_another_worker_matches(pg_url: str,
                                                             tmp_path: Path) -> None:
    code, lines = _report(tmp_path / "base-data", tmp_path / "base", pg_url)
    assert code == 0, lines[-5:]
    baseline = json.loads((tmp_path / "base" / "report.json").read_text())
    assert not (tmp_path / "base-data" / "checkpoints.sqlite").exists()
    assert _checkpoint_rows(pg_url, baseline["run_id"]) > 0
    progress = [ln for ln in lines if ln.startswith(("[", "run id"))]
    point = max(FIRST_RESUMABLE_LINE + 1, len(progress) // 2)

    out = tmp_path / "out"
    code, seen = _report(tmp_path / "worker", out, pg_url, kill_after_lines=point)
    assert code is None, "the run finished before the kill point"
    run_id = seen[0].split()[2]
    assert not (out / "report.json").exists()
    assert not (tmp_path / "worker" / "checkpoints.sqlite").exists()
    assert _checkpoint_rows(pg_url, run_id) > 0
    assert checkpoint_exists(load_settings(checkpoint_url=pg_url, data_dir=tmp_path / "x"), run_id)
    code, resumed = _report(tmp_path / "worker", out, pg_url, extra=["--resume", run_id])
    assert code == 0, resumed[-5:]
    assert any("resuming run" in ln for ln in resumed), resumed[:5]
    report = json.loads((out / "report.json").read_text())
    assert report["run_id"] == run_id
    assert stable_report(report) == stable_report(baseline)
    assert stable_md((out / "report.md").read_text()) == stable_md(
        (tmp_path / "base" / "report.md").read_text())


def test_unknown_run_id_is_bad_input_with_postgres(pg_url: str, tmp_path: Path) -> None:
    code, lines = _report(tmp_path / "data", tmp_path / "out", pg_url,
                          extra=["--resume", "nosuchrun00"])
    assert code == 2, lines[-3:]


def test_second_worker_gets_exit_4_while_the_lock_is_held(pg_url: str, tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom tools.pg_lock import PgAdvisoryLock\n"
         "with PgAdvisoryLock(sys.argv[1], 'run'):\n    print('locked', flush=True)\n"
         "    time.sleep(120)", pg_url], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        # Another data directory: the file lock alone would not see the holder.
        code, lines = _report(tmp_path / "other-machine", tmp_path / "out", pg_url)
        assert code == EXIT_LOCKED, lines[-3:]
        message = lines[-1]
        assert "another retest run is in progress" in message
        assert f"pid {holder.pid}" in message and "advisory lock" in message
        assert not (tmp_path / "out" / "report.json").exists()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait(timeout=30)
    # The killed holder's session is gone, so its lock is too: the next worker gets it.
    with PgAdvisoryLock(pg_url, "run"):
        pass


def test_advisory_lock_is_reentrant_and_exclusive_across_connections(pg_url: str) -> None:
    settings = load_settings(checkpoint_url=pg_url)
    with run_lock(settings), run_lock(settings):  # the scheduler holds it, the report retakes
        probe = subprocess.run(
            [sys.executable, "-c", "import sys\nfrom tools.pg_lock import PgAdvisoryLock\n"
             "with PgAdvisoryLock(sys.argv[1], 'run'):\n    pass", pg_url],
            cwd=REPO, capture_output=True, text=True, timeout=60)
        assert probe.returncode != 0 and "LockedError" in probe.stderr
        with PgAdvisoryLock(pg_url, "schedule-x"):  # another name is another lock
            pass
    with PgAdvisoryLock(pg_url, "run"):  # released by the outermost exit
        pass


def test_unreachable_database_is_one_line(tmp_path: Path) -> None:
    from scale_servers import free_port
    url = f"postgresql://retest@127.0.0.1:{free_port()}/postgres"
    with pytest.raises(ServiceError) as info, PgAdvisoryLock(url):
        pass
    assert not isinstance(info.value, LockedError) and info.value.exit_code == 1
    assert "cannot reach PostgreSQL at 127.0.0.1" in str(info.value)
    assert "\n" not in str(info.value)
