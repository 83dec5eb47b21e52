"""Start, find, health-check and stop the embedded vLLM server (one per packaged model).

The server is ``python -m vllm.entrypoints.openai.api_server`` on 127.0.0.1 and a free port,
serving a converted model folder (see :mod:`tools.embedded_models`). Its pid, port and URL are
recorded in ``<data_dir>/servers/<model>.json`` so every command reuses one server; a stale record
(dead pid, or a pid that is no longer our vLLM) is detected and the server restarted. A file lock
serializes starts, so two commands never launch two servers for the same model.

A server does not outlive its use (see :mod:`tools.server_lifecycle`): each process using it
registers itself; one a command started implicitly stops when its last user exits, and one
started on purpose (``serve-llm --detach``, the app) after ``server.idle_stop_s`` idle seconds.
A watchdog process started beside the server applies those rules even to a SIGKILLed user.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import requests

from core.errors import ServiceError
from core.lock import FileLock
from core.lock import pid_alive as process_exists
from core.settings import Settings
from tools.embedded_models import EmbeddedModel, get_embedded_model, prepare_model
from tools.server_lifecycle import Purpose, ServerUsers

log = logging.getLogger(__name__)


@dataclass
class ServerRecord:
    """What we remember about a running server."""

    pid: int
    port: int
    base_url: str
    model_key: str
    served_name: str
    log_path: str
    started_at: float
    mode: str = "implicit"  # or "detached": started on purpose, stops when idle
    idle_stop_s: float = 0.0


def free_port(host: str = "127.0.0.1") -> int:
    """Ask the OS for a free TCP port on ``host``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Tell whether nothing listens on ``host:port``."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) != 0


def _pid_is_our_vllm(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return b"vllm.entrypoints.openai.api_server" in cmdline


def server_answers(base_url: str, timeout_s: float = 3.0) -> bool:
    """Tell whether ``{base_url}/models`` answers with HTTP 200."""
    try:
        return requests.get(f"{base_url}/models", timeout=timeout_s).status_code == 200
    except requests.RequestException:
        return False


def local_model(folder: Path, served_name: str) -> EmbeddedModel:
    """Describe a local model folder as an :class:`EmbeddedModel` (nothing to convert)."""
    if not (folder / "config.json").is_file():
        raise ServiceError(f"{folder} is not a model folder (no config.json)")
    tokenizer_config = folder / "tokenizer_config.json"
    has_template = (folder / "chat_template.jinja").is_file() or (
        tokenizer_config.is_file() and "chat_template" in tokenizer_config.read_text())

    def no_gguf(_: Path) -> Path:
        raise ServiceError(f"{folder} is served as is; it has no GGUF to convert")

    key = "local-" + "".join(c if c.isalnum() or c in "-_." else "_" for c in served_name)
    return EmbeddedModel(key, served_name, "fine_tuned", has_template, no_gguf)


class EmbeddedServer:
    """The embedded vLLM server for one packaged model."""

    def __init__(self, settings: Settings, model_key: str | None = None, *,
                 folder: Path | None = None, served_name: str | None = None) -> None:
        """Manage the server of ``model_key`` (default: ``settings.server.model``).

        With ``folder`` (any local HF-format model folder, e.g. a merged fine-tune) serve that
        folder as ``served_name`` instead of a packaged model; its state file is its own
        (``local-<served_name>``), so it never touches a packaged model's server.
        """
        self.settings = settings
        self.folder = folder
        if folder is not None:
            if not served_name:
                raise ValueError("a custom model folder needs a served_name")
            self.model = local_model(folder, served_name)
        else:
            self.model = get_embedded_model(model_key or settings.server.model)
        self.state_dir = settings.data_dir / "servers"
        self.record_path = self.state_dir / f"{self.model.key}.json"
        self.log_path = self.state_dir / f"{self.model.key}.log"
        self.users = ServerUsers(self.state_dir / f"{self.model.key}.users")
        self._exit_hook = False

    @property
    def served_name(self) -> str:
        """Model name to send in requests."""
        return self.model.served_name

    def running(self) -> ServerRecord | None:
        """Return the record of a live, answering server, or None."""
        record = self._read_record()
        if record is None:
            return None
        if _pid_is_our_vllm(record.pid) and server_answers(record.base_url):
            return record
        return None

    def ensure_running(self, purpose: Purpose = "implicit") -> str:
        """Return the base URL (ending in ``/v1``) of a live server, starting one if needed.

        This process is registered as a user for ``purpose``: "implicit" (a command that needs
        the model; the server stops when its last implicit user exits) or "detached" (started
        on purpose; it then stops after ``server.idle_stop_s`` idle seconds).
        """
        self._register(purpose)
        record = self.running()
        if record is None:
            with self._start_lock():
                record = self.running()  # another process may have started it meanwhile
                if record is None:
                    stale = self._read_record()
                    if stale is not None:
                        log.warning("embedded server record for %s is stale; restarting",
                                    self.model.key)
                        self._terminate(stale.pid)
                    record = self._start(purpose)
        if purpose == "detached" and record.mode != "detached":
            # Asked for on purpose while a command had it: keep it until it idles.
            record.mode, record.idle_stop_s = "detached", self.settings.server.idle_stop_s
            self._write_record(record)
        return record.base_url

    def _register(self, purpose: Purpose) -> None:
        self.users.register(purpose)
        if not self._exit_hook:
            self._exit_hook = True
            atexit.register(self.release)

    def release(self) -> None:
        """Unregister this process; stop an implicit server that no other live process uses."""
        self.users.unregister()
        record = self._read_record()
        if record is None or record.mode != "implicit":
            return
        if self.users.live_implicit(excluding=os.getpid()) == 0:
            log.info("stopping the embedded %s server (its last user is done)", self.model.key)
            self.stop()

    def stop(self) -> bool:
        """Stop the recorded server by pid; return whether one was running."""
        record = self._read_record()
        if record is None:
            return False
        was_running = _pid_is_our_vllm(record.pid)
        if was_running:
            self._terminate(record.pid)
        self.record_path.unlink(missing_ok=True)
        return was_running

    def _start(self, purpose: Purpose) -> ServerRecord:
        cfg = self.settings.server
        folder = self.folder or prepare_model(self.settings.resolved_models_dir, self.model.key)
        port = cfg.port or free_port(cfg.host)
        if not port_is_free(port, cfg.host):
            raise ServiceError(f"port {port} on {cfg.host} is taken; set RETEST_SERVER__PORT=0")
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", str(folder.resolve()), "--served-model-name", self.model.served_name,
            "--host", cfg.host, "--port", str(port), "--dtype", "bfloat16",
            "--max-model-len", str(cfg.max_model_len), "--seed", "0",
            "--disable-log-stats",
        ]
        if cfg.enforce_eager:
            cmd.append("--enforce-eager")  # ~30 s to ready instead of ~120 s of torch.compile
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log.info("starting vLLM for %s on %s:%d (log: %s)", self.model.key, cfg.host, port,
                 self.log_path)
        with self.log_path.open("ab") as log_file:
            process = subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                cmd, stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self._server_env(), start_new_session=True)
        base_url = f"http://{cfg.host}:{port}/v1"
        record = ServerRecord(process.pid, port, base_url, self.model.key,
                              self.model.served_name, str(self.log_path), time.time(),
                              mode=purpose, idle_stop_s=self.settings.server.idle_stop_s)
        # Recorded and watched from launch, not from readiness: a command killed during the
        # ~30 s start-up would otherwise leave a server that no record names and no watchdog
        # stops (its own session keeps it alive). Until it answers, running() still says None.
        self._write_record(record)
        self._start_watchdog()
        deadline = time.monotonic() + cfg.start_timeout_s
        while time.monotonic() < deadline:
            if process.poll() is not None:
                self._forget(process.pid)
                raise ServiceError(
                    f"vLLM for {self.model.key} exited with code {process.returncode} during "
                    f"start-up; last log line: {self._last_log_line()}")
            if server_answers(base_url, timeout_s=2.0):
                return record
            time.sleep(1.0)
        self._terminate(process.pid)
        self._forget(process.pid)
        raise ServiceError(f"vLLM for {self.model.key} not ready after {cfg.start_timeout_s:.0f} s;"
                           f" see {self.log_path}")

    def _forget(self, pid: int) -> None:
        """Remove the record if it still names ``pid`` (a failed start leaves nothing behind)."""
        record = self._read_record()
        if record is not None and record.pid == pid:
            self.record_path.unlink(missing_ok=True)

    def _start_watchdog(self) -> None:
        # Its own session, so it outlives the command that started the server; it exits when
        # it has stopped the server or the server is gone.
        with self.log_path.open("ab") as log_file:
            subprocess.Popen(  # noqa: S603 - fixed argv, no shell
                [sys.executable, "-m", "tools.server_lifecycle", str(self.record_path),
                 str(self.users.folder)],
                stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                start_new_session=True, cwd=str(Path(__file__).resolve().parents[1]))

    def _server_env(self) -> dict[str, str]:
        env = dict(os.environ)
        cores = os.cpu_count() or 1
        env.update({
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            # Else the engine's internal sockets bind a non-loopback address.
            "VLLM_HOST_IP": "127.0.0.1",
            "VLLM_CPU_KVCACHE_SPACE": str(self.settings.server.kv_cache_gib),
            # Else vLLM-CPU reserves one core of two for itself.
            "VLLM_CPU_OMP_THREADS_BIND": env.get("VLLM_CPU_OMP_THREADS_BIND", f"0-{cores - 1}"),
            "VLLM_CPU_NUM_OF_RESERVED_CPU": env.get("VLLM_CPU_NUM_OF_RESERVED_CPU", "0"),
            "VLLM_CACHE_ROOT": str((self.settings.data_dir / "vllm-cache").resolve()),
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        })
        return env

    def _terminate(self, pid: int, grace_s: float = 20.0) -> None:
        if not _pid_is_our_vllm(pid):
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)  # the server leads its own session (its workers too)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.3)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def _last_log_line(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(empty log)"

    def _read_record(self) -> ServerRecord | None:
        try:
            return ServerRecord(**json.loads(self.record_path.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def _write_record(self, record: ServerRecord) -> None:
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        tmp.replace(self.record_path)

    def _start_lock(self) -> FileLock:
        # Waiting, not failing: a second command that needs the same server waits for the first
        # one's start and then finds the server running.
        self.state_dir.mkdir(parents=True, exist_ok=True)
        return FileLock(self.state_dir / f"{self.model.key}.lock", "server start", wait=True)


def _pid_alive(pid: int) -> bool:
    if not process_exists(pid):
        return False
    # A zombie child still "exists"; reap it if it is ours.
    with contextlib.suppress(ChildProcessError):
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    return _pid_is_our_vllm(pid)
