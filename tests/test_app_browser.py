"""End to end in a real browser: ``streamlit run app.py`` on 127.0.0.1, driven by headless Chromium.

Chromium is driven through chromedriver's W3C WebDriver HTTP API with ``requests`` (a dozen
endpoints; no extra Python dependency). Debian's ``chromium`` and ``chromium-driver`` are
installed by ``scripts/ci_deps.sh``; without them the test skips and says so.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from tools.vllm_server import free_port

REPO = Path(__file__).resolve().parents[1]
CORPUS = "arxiv/arxiv_cs_CL_LG_AI_2025-03_2026-07.jsonl.gz"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
ELEMENT = "element-6066-11e4-a07e-4f1ec25e0b84"  # the W3C WebDriver element key
ENTER = "\ue007"

pytestmark = [
    pytest.mark.slow, pytest.mark.browser, pytest.mark.shared,
    pytest.mark.skipif(CHROMIUM is None or CHROMEDRIVER is None,
                       reason="needs Debian's chromium and chromium-driver "
                              "(run scripts/ci_deps.sh)"),
]


class WebDriver:
    """The few W3C WebDriver calls this test needs, over HTTP to a local chromedriver."""

    def __init__(self, port: int) -> None:
        self.base = f"http://127.0.0.1:{port}"
        caps = {"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--window-size=1400,1000"]}}}}
        self.session = self._call("POST", "/session", caps)["sessionId"]

    def _call(self, method: str, path: str, body: dict | None = None) -> Any:
        # Generous: on a loaded 2-core machine one screenshot alone took over two minutes.
        response = requests.request(method, self.base + path, json=body, timeout=400)
        payload = response.json()
        if response.status_code != 200:
            raise AssertionError(f"WebDriver {path}: {payload.get('value')}")
        return payload.get("value", payload)

    def _s(self, path: str) -> str:
        return f"/session/{self.session}{path}"

    def get(self, url: str) -> None:
        self._call("POST", self._s("/url"), {"url": url})

    def script(self, source: str) -> Any:
        return self._call("POST", self._s("/execute/sync"), {"script": source, "args": []})

    def find(self, css: str) -> str:
        found = self._call("POST", self._s("/element"), {"using": "css selector", "value": css})
        return found.get(ELEMENT) or next(iter(found.values()))  # W3C key, or a legacy one

    def type_into(self, css: str, text: str) -> None:
        self._call("POST", self._s(f"/element/{self.find(css)}/value"), {"text": text})

    def click_text(self, css: str, text: str) -> None:
        found = self.script(
            f"const els=[...document.querySelectorAll({json.dumps(css)})]"
            f".filter(e=>e.innerText.trim()==={json.dumps(text)}); "
            "if(els.length){els[0].click(); return true;} return false;")
        assert found, f"no {css} with text {text!r}"

    def wait_for(self, source: str, timeout_s: float) -> Any:
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            value = self.script(source)
            if value:
                return value
            time.sleep(1)
        raise AssertionError(f"timed out after {timeout_s} s waiting for: {source}")

    def screenshot(self, path: Path) -> None:
        path.write_bytes(base64.b64decode(self._call("GET", self._s("/screenshot"))))

    def quit(self) -> None:
        try:
            requests.delete(self.base + self._s(""), timeout=60)
        except requests.RequestException:
            pass  # chromedriver is stopped right after anyway


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        try:
            if requests.get(url, timeout=3).ok:
                return
        except requests.RequestException:
            pass
        time.sleep(1)
    raise AssertionError(f"{url} did not answer within {timeout_s} s")


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=20)
    except subprocess.TimeoutExpired:
        process.kill()


@pytest.fixture()
def app_url(llm_env: Path, shared_data: Path, tmp_path: Path) -> Iterator[str]:
    """A real ``streamlit run app.py`` over a small real store and one finished report."""
    from agent.settings import load_settings
    from tools.corpus import iter_corpus
    from tools.paper_store import PaperStore

    corpus = tmp_path / "small.jsonl"
    with gzip.open(shared_data / CORPUS, "rt") as src:
        corpus.write_text("".join(itertools.islice(src, 80)))
    PaperStore(load_settings()).upsert(iter_corpus(corpus), progress=False)
    report_dir = llm_env / "app_runs" / ("c" * 16)
    report_dir.mkdir(parents=True)
    first = next(iter_corpus(corpus))
    report_dir.joinpath("report.json").write_text(json.dumps({
        "prompt_sha256": "d" * 64, "generated_at": "2026-02-01T00:00:00+00:00",
        "model": "SmolLM2-135M-Instruct", "corpus": str(corpus), "degraded": [],
        "claims": [{"id": "C1", "text": "Deduplicated benchmarks lower scores", "dated": "2024",
                    "verdict": "relaxed", "retest": None,
                    "evidence": [{"arxiv_id": first.arxiv_id, "title": first.title,
                                  "published": str(first.published), "stance": "relaxes",
                                  "summary": "Copied summary."}]}],
        "anchors": [], "tensions": [], "research_questions": ["Q1?", "Q2?"],
        "citations": [first.arxiv_id]}))
    report_dir.joinpath("report.md").write_text("# Report\n")
    port = free_port()
    env = {**os.environ, "RETEST_CORPUS": str(corpus)}
    log = (tmp_path / "streamlit.log").open("w")
    app = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app.py"), "--server.port",
         str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=log,
        stderr=subprocess.STDOUT)
    try:
        _wait_http(f"http://127.0.0.1:{port}/_stcore/health", 120)
        yield f"http://127.0.0.1:{port}"
    finally:
        _stop(app)
        log.close()


@pytest.fixture()
def browser() -> Iterator[WebDriver]:
    port = free_port()
    driver = subprocess.Popen([CHROMEDRIVER, f"--port={port}"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        _wait_http(f"http://127.0.0.1:{port}/status", 60)
        web = WebDriver(port)
        try:
            yield web
        finally:
            web.quit()
    finally:
        _stop(driver)


def test_browser_chat_answer_is_cited_and_a_report_opens(app_url: str, browser: WebDriver,
                                                         tmp_path: Path):
    browser.get(app_url)
    browser.wait_for("return !!document.querySelector('textarea')", 120)
    from tools.corpus import iter_corpus

    # Ask about a stored paper by its title: the small model then restates its abstract, which
    # grounding cites (by the model, or attributed by word overlap).
    first = next(iter_corpus(tmp_path / "small.jsonl"))
    title = " ".join(first.title.split())
    browser.type_into("textarea", f"What does the paper '{title}' propose?" + ENTER)
    # The answer is finished when its caption ("… papers retrieved") is drawn.
    browser.wait_for("return document.body.innerText.includes('papers retrieved')", 400)
    links = browser.script(
        "return [...document.querySelectorAll('[data-testid=\"stChatMessage\"] a')]"
        ".map(a => a.href).filter(h => h.startsWith('https://arxiv.org/abs/'))")
    assert links, "the chat answer carries no arXiv citation link"
    browser.screenshot(tmp_path / "chat.png")

    browser.click_text("[data-testid='stSidebar'] label", "Reports")
    text = browser.wait_for("const t=document.body.innerText; "
                            "return t.includes('Summary') && t.includes('relaxed') ? t : ''", 120)
    assert "Deduplicated benchmarks lower scores" in text
    browser.screenshot(tmp_path / "report.png")
    assert (tmp_path / "report.png").stat().st_size > 10_000
