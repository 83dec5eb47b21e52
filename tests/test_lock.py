"""The run lock (one run at a time, stale locks taken over) and atomic writes under SIGKILL."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tmpfs import mounted_tmpfs

from core.errors import EXIT_LOCKED, LockedError
from core.fsutil import WriteError, atomic_write_json, atomic_write_text
from core.lock import RunLock, pid_alive

REPO = Path(__file__).resolve().parents[1]

_HOLD_LOCK = textwrap.dedent("""
    import sys, time
    from core.lock import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(float(sys.argv[2]))
""")


def _python(code: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_second_lock_in_other_process_fails_at_once(tmp_path: Path) -> None:
    holder = _python(_HOLD_LOCK, str(tmp_path), "30")
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked"
        started = time.monotonic()
        with pytest.raises(LockedError) as info, RunLock(tmp_path):
            pass
        assert time.monotonic() - started < 2, "a locked run must fail at once, not wait"
        assert info.value.exit_code == EXIT_LOCKED == 4
        assert f"pid {holder.pid}" in str(info.value)
    finally:
        holder.kill()
        holder.wait()


def test_lock_of_killed_holder_is_taken_over(tmp_path: Path) -> None:
    holder = _python(_HOLD_LOCK, str(tmp_path), "30")
    assert holder.stdout is not None
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    lock = RunLock(tmp_path)
    assert lock.path.exists(), "a SIGKILLed holder leaves its lock file behind"
    assert lock.holder()["pid"] == holder.pid
    with lock:
        assert lock.holder()["pid"] == os.getpid()
    assert not lock.path.exists()


def test_stale_lock_file_with_dead_pid_is_taken_over(tmp_path: Path) -> None:
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    dead_pid = int(dead.stdout)
    assert not pid_alive(dead_pid)
    lock = RunLock(tmp_path)
    lock.path.parent.mkdir(parents=True)
    lock.path.write_text(json.dumps({"pid": dead_pid, "started_at": "2026-01-01T00:00:00"}))
    with lock:
        assert lock.holder()["pid"] == os.getpid()


def test_lock_is_reentrant_in_one_process_and_released(tmp_path: Path) -> None:
    with RunLock(tmp_path), RunLock(tmp_path):
        pass
    with RunLock(tmp_path):
        probe = _python(_HOLD_LOCK, str(tmp_path), "0")
        _, err = probe.communicate(timeout=60)
        assert probe.returncode != 0 and "LockedError" in err
    probe = _python(_HOLD_LOCK, str(tmp_path), "0")
    out, err = probe.communicate(timeout=60)
    assert probe.returncode == 0, err
    assert out.strip() == "locked"


def test_different_lock_names_do_not_conflict(tmp_path: Path) -> None:
    with RunLock(tmp_path, "schedule"), RunLock(tmp_path, "run"):
        assert (tmp_path / "locks" / "schedule.lock").exists()
        assert (tmp_path / "locks" / "run.lock").exists()


_WRITER = textwrap.dedent("""
    import sys
    from core.fsutil import atomic_write_text
    path = sys.argv[1]
    print("ready", flush=True)
    i = 0
    while True:
        i += 1
        atomic_write_text(path, ("payload-%d|" % i) * 20000 + "END")
""")


def test_atomic_write_survives_sigkill(tmp_path: Path) -> None:
    target = tmp_path / "report.md"
    atomic_write_text(target, "old|" * 1000 + "END")
    for delay in (0.05, 0.13, 0.31):
        writer = _python(_WRITER, str(target))
        assert writer.stdout is not None
        writer.stdout.readline()
        time.sleep(delay)
        writer.send_signal(signal.SIGKILL)
        writer.wait()
        text = target.read_text()
        assert text.endswith("END"), "a kill must never leave a half-written file"
        chunks = text[: -len("END")].split("|")[:-1]
        assert len(set(chunks)) == 1, "the file mixes two writes"
        assert len(chunks) in (1000, 20000)
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "report.md"]
    # A killed writer may leave its temp file; it never replaces the target.
    assert all(name.startswith(".report.md.") and name.endswith(".tmp") for name in leftovers)


def test_atomic_write_json_round_trips(tmp_path: Path) -> None:
    path = atomic_write_json(tmp_path / "a" / "b.json", {"x": 1, "when": tmp_path})
    assert json.loads(path.read_text()) == {"x": 1, "when": str(tmp_path)}


def test_write_into_read_only_dir_names_the_path(tmp_path: Path) -> None:
    # A read-only mount, not chmod: root (CI) ignores directory permissions.
    with mounted_tmpfs(tmp_path / "ro") as fs:
        (fs.path / "report.json").write_text("old")
        fs.read_only()
        try:
            with pytest.raises(WriteError, match=f"{fs.path / 'report.json'}: Read-only file"):
                atomic_write_text(fs.path / "report.json", "new")
            with pytest.raises(WriteError, match=f"lock .*{fs.path}.*Read-only file system"):
                RunLock(fs.path).acquire()
            assert (fs.path / "report.json").read_text() == "old"
            assert sorted(p.name for p in fs.path.iterdir()) == ["report.json"]
        finally:
            fs.read_write()


def test_write_below_a_file_names_the_path(tmp_path: Path) -> None:
    blocker = tmp_path / "not_a_dir"
    blocker.write_text("x")
    with pytest.raises(WriteError, match="cannot write .*not_a_dir/report.json"):
        atomic_write_text(blocker / "report.json", "new")


def test_report_while_another_run_holds_the_lock_exits_4(tmp_path: Path, seed_prompt: Path) -> None:
    data_dir = tmp_path / "data"
    holder = _python(_HOLD_LOCK, str(data_dir), "120")
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        env = {"PATH": "/usr/bin:/bin", "RETEST_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1",
               # Never reached: the lock is checked before any model is asked.
               "RETEST_LLM_BASE_URL": "http://127.0.0.1:9/v1"}
        done = subprocess.run([str(REPO / ".venv" / "bin" / "retest"), "report", str(seed_prompt),
                               "--offline", "--out", str(tmp_path / "out")], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300, check=False)
        assert done.returncode == 4, done.stderr
        assert f"pid {holder.pid}" in done.stderr and "Traceback" not in done.stderr
        assert not (tmp_path / "out" / "report.json").exists()
    finally:
        holder.kill()
        holder.wait()
