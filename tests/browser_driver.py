"""Drive headless Chromium against ``streamlit run app.py``: a small W3C WebDriver client.

Chromium is driven through chromedriver's W3C WebDriver HTTP API with ``requests`` (a dozen
endpoints; no extra Python dependency). Every process started here (chromedriver and the
Chromium it launches, the Streamlit server) leads its own process group and is stopped by that
group, so nothing outlives a test or a benchmark even when it fails. Used by
``tests/test_app_browser.py`` and ``bench/app_load_http.py``.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ELEMENT = "element-6066-11e4-a07e-4f1ec25e0b84"  # the W3C WebDriver element key
ENTER = "\ue007"
# Generous: on a loaded 2-core machine one screenshot alone took over two minutes.
CALL_TIMEOUT_S = 400.0


def _free_port() -> int:
    from tools.vllm_server import free_port

    return free_port()


class WebDriver:
    """The few W3C WebDriver calls a test needs, over HTTP to a local chromedriver."""

    def __init__(self, port: int, *, call_timeout_s: float = CALL_TIMEOUT_S) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.call_timeout_s = call_timeout_s
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--window-size=1400,1000"]}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        response = requests.request(method, self.base + path, json=body,
                                    timeout=self.call_timeout_s)
        payload = response.json()
        if response.status_code != 200:
            raise AssertionError(f"WebDriver {path}: {payload.get('value')}")
        return payload.get("value", payload)

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def get(self, url: str) -> None:
        """Open ``url`` and wait for the page load (not for Streamlit's first render)."""
        self._call("POST", self._s("/url"), {"url": url})

    def script(self, source: str) -> Any:
        """Run ``source`` (a function body) in the page and return its value."""
        return self._call("POST", self._s("/execute/sync"), {"script": source, "args": []})

    def find(self, css: str) -> str:
        """Return the element id of the first match of ``css``."""
        found = self._call("POST", self._s("/element"), {"using": "css selector", "value": css})
        return found.get(ELEMENT) or next(iter(found.values()))  # W3C key, or a legacy one

    def type_into(self, css: str, text: str) -> None:
        """Type ``text`` into the first match of ``css`` (``ENTER`` presses Enter)."""
        self._call("POST", self._s(f"/element/{self.find(css)}/value"), {"text": text})

    def click_text(self, css: str, text: str) -> None:
        """Click the first match of ``css`` whose visible text is exactly ``text``."""
        found = self.script(
            f"const els=[...document.querySelectorAll({json.dumps(css)})]"
            f".filter(e=>e.innerText.trim()==={json.dumps(text)}); "
            "if(els.length){els[0].click(); return true;} return false;")
        assert found, f"no {css} with text {text!r}"

    def wait_for(self, source: str, timeout_s: float, poll_s: float = 1.0) -> Any:
        """Poll ``source`` until it returns a truthy value; raise after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            value = self.script(source)
            if value:
                return value
            time.sleep(poll_s)
        raise AssertionError(f"timed out after {timeout_s} s waiting for: {source}")

    def screenshot(self, path: Path) -> None:
        """Write a PNG of the viewport to ``path``."""
        path.write_bytes(base64.b64decode(self._call("GET", self._s("/screenshot"))))

    def quit(self) -> None:
        """End the session (closes Chromium); never raises."""
        with contextlib.suppress(requests.RequestException):
            requests.delete(self.base + self._s(""), timeout=60)


def wait_http(url: str, timeout_s: float, process: subprocess.Popen | None = None) -> None:
    """Wait until ``url`` answers 2xx; raise after ``timeout_s`` or when ``process`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"{process.args[0]} exited with {process.returncode} "
                                 f"before {url} answered")
        with contextlib.suppress(requests.RequestException):
            if requests.get(url, timeout=3).ok:
                return
        time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def stop_group(process: subprocess.Popen, grace_s: float = 20.0) -> None:
    """Stop ``process`` and everything in its process group: SIGTERM, then SIGKILL.

    The group is killed even when its leader has already exited, so a Chromium left behind by
    a dead chromedriver goes too. Safe to call twice.
    """
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        pass
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=5)


def start_chromedriver() -> tuple[subprocess.Popen, int]:
    """Start chromedriver on a free 127.0.0.1 port in its own process group."""
    port = _free_port()
    process = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    return process, port


@contextlib.contextmanager
def browser(*, call_timeout_s: float = CALL_TIMEOUT_S,
            start_timeout_s: float = 60) -> Iterator[WebDriver]:
    """Yield a headless Chromium session; stop its chromedriver process group afterwards."""
    process, port = start_chromedriver()
    try:
        wait_http(f"http://127.0.0.1:{port}/status", start_timeout_s, process)
        web = WebDriver(port, call_timeout_s=call_timeout_s)
        try:
            yield web
        finally:
            web.quit()
    finally:
        stop_group(process)


def start_streamlit(env: Mapping[str, str], log_path: Path) -> tuple[subprocess.Popen, str]:
    """Start ``streamlit run app.py`` on a free 127.0.0.1 port in its own process group."""
    port = _free_port()
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port",
             str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
             "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
            cwd=REPO, env=dict(env), stdout=log, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    return process, f"http://127.0.0.1:{port}"


@contextlib.contextmanager
def streamlit_app(env: Mapping[str, str], log_path: Path,
                  start_timeout_s: float = 120) -> Iterator[str]:
    """Yield the URL of a running ``streamlit run app.py``; stop its process group afterwards."""
    process, url = start_streamlit(env, log_path)
    try:
        wait_http(f"{url}/_stcore/health", start_timeout_s, process)
        yield url
    finally:
        stop_group(process)
