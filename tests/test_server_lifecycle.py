"""An embedded server does not outlive its use.

Unit: the stop rule, the users registry, and the watchdog loop against real processes standing in
for a server (a ``sleep`` leading its own process group). Integration (slow): a real vLLM server
started implicitly by one command survives while another live command uses it and stops when the
last one ends; one started with ``serve-llm --detach`` stops after ``server.idle_stop_s``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tools.server_lifecycle import (
    ServerUsers,
    leads_own_group,
    pid_alive,
    should_stop,
    stop_server,
    watch,
)
from tools.vllm_server import server_answers

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(
    ("mode", "users", "quiet", "idle", "stop"),
    [("implicit", 1, 999.0, 0.0, False),   # a live command keeps it
     ("implicit", 0, 1.0, 0.0, False),     # within the grace period
     ("implicit", 0, 6.0, 0.0, True),      # its last user left
     ("detached", 0, 6.0, 60.0, False),    # on purpose: not idle long enough
     ("detached", 0, 61.0, 60.0, True),    # idle past idle_stop_s
     ("detached", 0, 1e9, 0.0, False),     # idle_stop_s 0: until serve-llm --stop
     ("detached", 2, 1e9, 60.0, False)],   # commands using it keep it
)
def test_stop_rule(mode: str, users: int, quiet: float, idle: float, stop: bool) -> None:
    assert should_stop(mode, users, quiet, idle_stop_s=idle, grace_s=5.0) is stop  # type: ignore[arg-type]


def test_users_registry_forgets_dead_processes(tmp_path: Path) -> None:
    users = ServerUsers(tmp_path / "m.users")
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    users.register("implicit")
    users.register("implicit", pid=gone.pid)
    users.register("detached", pid=os.getppid())
    assert users.live() == {os.getpid(): "implicit", os.getppid(): "detached"}
    assert not (tmp_path / "m.users" / str(gone.pid)).exists()
    assert users.live_implicit() == 1 and users.live_implicit(excluding=os.getpid()) == 0
    users.register("detached")  # an implicit use in the same process outranks a detached one
    assert users.live()[os.getpid()] == "implicit"
    users.unregister()
    assert os.getpid() not in users.live()


def _fake_server(tmp_path: Path, mode: str, idle_stop_s: float) -> tuple[subprocess.Popen, Path]:
    server = subprocess.Popen(["sleep", "600"], start_new_session=True)
    record = tmp_path / "m.json"
    record.write_text(json.dumps({"pid": server.pid, "base_url": "http://127.0.0.1:9/v1",
                                  "mode": mode, "idle_stop_s": idle_stop_s}))
    return server, record


def test_watchdog_stops_an_implicit_server_when_its_killed_user_is_gone(tmp_path: Path) -> None:
    server, record = _fake_server(tmp_path, "implicit", 0.0)
    users = ServerUsers(tmp_path / "m.users")
    user = subprocess.Popen(["sleep", "600"])
    users.register("implicit", pid=user.pid)
    try:
        user.send_signal(signal.SIGKILL)  # the command dies without running its exit hook
        user.wait()
        why = watch(record, users, poll_s=0.2, grace_s=0.5)
        server.wait(timeout=30)
        assert why.startswith("stopped (implicit") and not record.exists()
        assert not pid_alive(server.pid)
    finally:
        server.kill()


def test_watchdog_stops_a_detached_server_after_idle_time(tmp_path: Path) -> None:
    server, record = _fake_server(tmp_path, "detached", 1.5)
    started = time.monotonic()
    try:
        why = watch(record, ServerUsers(tmp_path / "m.users"), poll_s=0.2, grace_s=0.5)
        server.wait(timeout=30)
        assert why.startswith("stopped (detached") and time.monotonic() - started >= 1.5
    finally:
        server.kill()


def test_watchdog_keeps_a_starting_server_for_its_live_starter_only(tmp_path: Path) -> None:
    # The fake server never answers: it is still starting. Its detached starter is alive past
    # idle_stop_s, so the server must stay; once the starter dies, the idle rule stops it.
    server, record = _fake_server(tmp_path, "detached", 0.5)
    users = ServerUsers(tmp_path / "m.users")
    starter = subprocess.Popen(["sleep", "600"])
    users.register("detached", pid=starter.pid)
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(
        watch(record, users, poll_s=0.1, grace_s=0.5)))
    try:
        thread.start()
        time.sleep(2.0)  # four times idle_stop_s
        assert not result and pid_alive(server.pid), "stopped while its starter still waited"
        starter.send_signal(signal.SIGKILL)
        starter.wait()
        thread.join(timeout=30)
        assert result and result[0].startswith("stopped (detached")
        server.wait(timeout=30)
    finally:
        starter.kill()
        server.kill()


def test_watchdog_leaves_a_replaced_server_alone(tmp_path: Path) -> None:
    server, record = _fake_server(tmp_path, "implicit", 0.0)
    (tmp_path / "other").mkdir()
    other, _ = _fake_server(tmp_path / "other", "implicit", 0.0)
    result: list[str] = []
    thread = threading.Thread(target=lambda: result.append(
        watch(record, ServerUsers(tmp_path / "m.users"), poll_s=0.1, grace_s=60.0)))
    try:
        thread.start()
        time.sleep(0.5)
        record.write_text(json.dumps({"pid": other.pid, "base_url": "http://127.0.0.1:9/v1"}))
        thread.join(timeout=10)
        assert result == ["server replaced or exited"]
        assert pid_alive(server.pid) and pid_alive(other.pid)
    finally:
        server.kill()
        other.kill()


def test_stop_refuses_a_pid_that_leads_no_group_of_its_own() -> None:
    child = subprocess.Popen(["sleep", "600"])  # in our process group
    try:
        assert not leads_own_group(child.pid) and not leads_own_group(1)
        stop_server(child.pid, grace_s=0.5)
        assert pid_alive(child.pid)
    finally:
        child.kill()


# --- a real vLLM server in a data directory of its own -------------------------------------

USER_SCRIPT = """
import sys
from core.settings import load_settings
from tools.vllm_server import EmbeddedServer
server = EmbeddedServer(load_settings())
print(server.ensure_running(), flush=True)
sys.stdin.read()  # stay a live user until the test closes stdin
"""


def _env(data_dir: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("RETEST_")}
    return {**env, "RETEST_DATA_DIR": str(data_dir),
            "RETEST_MODELS_DIR": str(REPO / ".retest" / "models"), **extra}


def _record(data_dir: Path) -> dict | None:
    path = data_dir / "servers" / "smollm2-135m-instruct.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _wait_dead(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            return True
        time.sleep(0.5)
    return False


@pytest.mark.slow
def test_implicit_server_stops_when_its_last_command_ends(tmp_path: Path) -> None:
    env = _env(tmp_path)
    first = subprocess.Popen([sys.executable, "-c", USER_SCRIPT], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    second = None
    try:
        url = first.stdout.readline().strip()
        assert url.endswith("/v1"), url
        record = _record(tmp_path)
        assert record and record["mode"] == "implicit"
        second = subprocess.Popen([sys.executable, "-c", USER_SCRIPT], stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
        assert second.stdout.readline().strip() == url  # reused, not a second server
        first.stdin.close()
        first.wait(timeout=120)
        time.sleep(8)  # past the watchdog's grace period
        assert pid_alive(record["pid"]), "stopped while another command still used it"
        second.stdin.close()
        second.wait(timeout=120)
        assert _wait_dead(record["pid"], 60), "the server outlived its last user"
        assert _record(tmp_path) is None
    finally:
        for proc in (first, second):
            if proc and proc.poll() is None:
                proc.kill()
        record = _record(tmp_path)
        if record and pid_alive(record["pid"]):
            os.killpg(record["pid"], signal.SIGKILL)


@pytest.mark.slow
def test_a_server_whose_starter_is_killed_during_start_up_stops(tmp_path: Path) -> None:
    # The server is recorded and watched from launch: a command SIGKILLed in the ~30 s before
    # vLLM answers must not leave an unrecorded server running in its own session.
    user = subprocess.Popen([sys.executable, "-c", USER_SCRIPT], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=_env(tmp_path), cwd=REPO)
    record = None
    try:
        deadline = time.monotonic() + 120
        while record is None and time.monotonic() < deadline and user.poll() is None:
            record = _record(tmp_path)
            time.sleep(0.2)
        assert record, "no record was written while the server started"
        assert pid_alive(record["pid"])
        assert not server_answers(record["base_url"]), "recorded only once it answered"
        # The watchdog is spawned right after the record is written (milliseconds); a kill
        # inside that gap is not what this test is about, so give the spawn a moment.
        time.sleep(1.0)
        user.kill()  # half-way up (vLLM takes ~30 s to answer): no exit hook runs
        user.wait(timeout=30)
        assert _wait_dead(record["pid"], 90), "the server outlived the starter killed mid-start"
        assert _record(tmp_path) is None
    finally:
        if user.poll() is None:
            user.kill()
        if record and pid_alive(record["pid"]):
            os.killpg(record["pid"], signal.SIGKILL)


@pytest.mark.slow
def test_detached_server_stops_after_idle_time(tmp_path: Path) -> None:
    env = _env(tmp_path, RETEST_SERVER__IDLE_STOP_S="6")
    done = subprocess.run([sys.executable, "-m", "agent.cli", "serve-llm", "--detach"],
                          capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    record = _record(tmp_path)
    try:
        assert done.returncode == 0, done.stderr
        assert record and record["mode"] == "detached" and record["idle_stop_s"] == 6
        assert pid_alive(record["pid"]), "a detached server must outlive serve-llm --detach"
        assert _wait_dead(record["pid"], 90), "the detached server never idled out"
    finally:
        if record and pid_alive(record["pid"]):
            os.killpg(record["pid"], signal.SIGKILL)
