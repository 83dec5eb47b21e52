"""``retest schedule``: durations, the loop (tiny interval, a failing run survived), resume,
notification on verdict changes, the lock's exit code 4, and a clean stop on SIGTERM."""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from agent.history import ReportHistory
from agent.nodes.context import CancelledError
from agent.scheduler import ScheduleConfig, Scheduler, parse_duration, prompt_sha256
from core.errors import BadInputError
from core.fsutil import atomic_write_json, atomic_write_text
from core.lock import RunLock
from core.settings import load_settings

REPO = Path(__file__).resolve().parents[1]
PROMPT = "Research prompt.\nClaim: contamination inflates benchmark scores (2024).\n"

# Runs the CLI whether or not the lead has listed the schedule command yet.
_CLI = textwrap.dedent("""
    import sys
    from agent import cli
    if "agent.commands.schedule" not in cli.COMMAND_MODULES:
        cli.COMMAND_MODULES.append("agent.commands.schedule")
    sys.exit(cli.main(sys.argv[1:]))
""")


def _retest(*args: str, data_dir: Path, **kw: Any) -> subprocess.Popen[str]:
    env = {"PATH": "/usr/bin:/bin", "RETEST_DATA_DIR": str(data_dir), "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen([sys.executable, "-c", _CLI, *args], cwd=REPO, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)


@pytest.mark.parametrize(("text", "seconds"), [("30m", 1800), ("12h", 43200), ("7d", 604800),
                                               ("2w", 1209600), ("90s", 90), ("1h30m", 5400),
                                               ("0.5s", 0.5), (" 7D ", 604800)])
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "7", "7x", "d", "-1d", "0s", "7d junk", "1e9999d", "7 days"])
def test_bad_duration_is_bad_input(text: str) -> None:
    with pytest.raises(BadInputError, match="duration"):
        parse_duration(text)


@dataclass
class Outcome:
    """The shape of agent.run.ReportOutcome that the scheduler reads."""

    report: dict[str, Any]
    out_dir: Path
    exit_code: int
    degraded: bool


class RecordingRun:
    """A run_report stand-in for the loop logic: writes and records a report per call.

    Verdicts come from ``verdicts`` (one per call); a verdict of "raise" makes the call fail.
    """

    def __init__(self, data_dir: Path, verdicts: list[str]) -> None:
        self.data_dir, self.verdicts, self.calls = data_dir, verdicts, []

    def __call__(self, prompt_text: str, settings: Any, out_dir: Path, *, run_id: str | None = None,
                 on_event: Any = None, cancel: Any = None, options: Any = None) -> Outcome:
        self.calls.append({"run_id": run_id, "out_dir": out_dir, "cancel": cancel})
        verdict = self.verdicts[len(self.calls) - 1]
        on_event({"event": "judging", "claim": "C1"})
        if verdict == "raise":
            raise RuntimeError("arXiv fell over")
        if verdict == "cancel":  # what SIGTERM does mid-run: the flag, then run_report stops
            cancel.set()
            raise CancelledError(f"run {run_id} cancelled")
        report = {"prompt_sha256": prompt_sha256(prompt_text),
                  "generated_at": datetime.now(UTC).isoformat(), "model": "m",
                  "corpus": "c.jsonl", "degraded": [],
                  "claims": [{"id": "C1", "text": "t", "verdict": verdict, "evidence": []}],
                  "anchors": [], "tensions": [], "research_questions": [], "citations": []}
        atomic_write_json(out_dir / "report.json", report)
        atomic_write_text(out_dir / "report.md", f"# {verdict}\n")
        time.sleep(0.01)  # distinct generated_at per run
        return Outcome(report, out_dir, 0, False)


def _scheduler(tmp_path: Path, run: RecordingRun, **config: Any) -> Scheduler:
    prompt = tmp_path / "prompt.txt"
    prompt.write_text(PROMPT)
    settings = load_settings(data_dir=tmp_path / "data")
    return Scheduler(ScheduleConfig(prompt_file=prompt, **config), settings, run_fn=run)


def _events(caplog: pytest.LogCaptureFixture) -> list[dict[str, Any]]:
    return [r.fields for r in caplog.records if hasattr(r, "fields")]


def test_loop_runs_repeatedly_and_survives_a_failed_run(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    flag = tmp_path / "notified.txt"
    hook = tmp_path / "hook.py"
    hook.write_text("import sys\nopen(sys.argv[1], 'a').write(sys.argv[2] + '\\n')\n")
    run = RecordingRun(tmp_path / "data", ["holds", "raise", "holds", "overturned"])
    scheduler = _scheduler(tmp_path, run, every_s=0.2, max_runs=4,
                           notify=[sys.executable, str(hook), str(flag)])
    started = time.monotonic()
    assert scheduler.serve() == 0
    # Runs start 0.2 s apart at least (a run slower than the interval is followed at once).
    assert time.monotonic() - started >= 0.6
    assert len(run.calls) == 4
    assert all(c["cancel"] is scheduler.stop for c in run.calls)
    events = [e["event"] for e in _events(caplog)]
    assert events.count("run_started") == 4 and events.count("run_finished") == 3
    assert events.count("run_failed") == 1 and 1 <= events.count("sleeping") <= 3
    assert "progress" in events and events[-1] == "scheduler_stopped"
    failed = next(e for e in _events(caplog) if e["event"] == "run_failed")
    assert "arXiv fell over" in failed["error"]
    # Each finished run is in the history (recorded by the scheduler when run_report did not).
    history = ReportHistory(tmp_path / "data")
    runs = history.runs(prompt_sha256(PROMPT))
    assert [r["verdicts"]["C1"] for r in runs] == ["holds", "holds", "overturned"]
    # The hook ran once: only the last run changed a verdict; it got the report path.
    last_out = run.calls[-1]["out_dir"]
    assert flag.read_text().splitlines() == [str(last_out / "report.md")]
    assert (last_out.parent / "latest").resolve() == last_out.resolve()
    finished = [e for e in _events(caplog) if e["event"] == "run_finished"]
    assert [e["verdicts_changed"] for e in finished] == [0, 0, 1]


def test_restart_resumes_a_killed_run_with_the_same_id(tmp_path: Path) -> None:
    run = RecordingRun(tmp_path / "data", ["holds", "holds"])
    scheduler = _scheduler(tmp_path, run, every_s=3600, once=True)
    sha = prompt_sha256(PROMPT)
    killed_dir = tmp_path / "data" / "reports" / "killed"
    atomic_write_json(scheduler.state_path(sha), {"status": "running", "run_id": "sched-x",
                                                  "out_dir": str(killed_dir)})
    assert scheduler.serve() == 0
    assert run.calls[0]["run_id"] == "sched-x" and run.calls[0]["out_dir"] == killed_dir
    assert json.loads(scheduler.state_path(sha).read_text())["status"] == "done"
    again = _scheduler(tmp_path, run, every_s=3600, once=True)
    assert again.serve() == 0
    assert run.calls[1]["run_id"] != "sched-x"


def test_cancelled_run_is_resumed_by_the_next_start(tmp_path: Path) -> None:
    run = RecordingRun(tmp_path / "data", ["cancel", "holds"])
    assert _scheduler(tmp_path, run, every_s=0.01, max_runs=5).serve() == 0
    assert len(run.calls) == 1, "a stop request ends the loop"
    run.verdicts.insert(1, "cancel")
    assert _scheduler(tmp_path, run, every_s=3600, once=True).serve() == 130
    assert _scheduler(tmp_path, run, every_s=3600, once=True).serve() == 0
    assert run.calls[2]["run_id"] == run.calls[1]["run_id"] == run.calls[0]["run_id"]
    assert run.calls[2]["out_dir"] == run.calls[0]["out_dir"]


def test_a_failed_run_is_not_resumed(tmp_path: Path) -> None:
    run = RecordingRun(tmp_path / "data", ["raise", "holds"])
    assert _scheduler(tmp_path, run, every_s=3600, once=True).serve() == 1
    assert _scheduler(tmp_path, run, every_s=3600, once=True).serve() == 0
    assert run.calls[0]["run_id"] != run.calls[1]["run_id"]


def test_restart_waits_out_the_interval_after_a_recent_run(tmp_path: Path) -> None:
    run = RecordingRun(tmp_path / "data", ["holds"])
    _scheduler(tmp_path, run, every_s=3600, once=True).serve()
    scheduler = _scheduler(tmp_path, run, every_s=3600)
    delay = scheduler._initial_delay(prompt_sha256(PROMPT))
    assert 3500 < delay <= 3600
    assert _scheduler(tmp_path, run, every_s=0.001)._initial_delay(prompt_sha256(PROMPT)) == 0


def test_once_while_another_run_holds_the_lock_exits_4(tmp_path: Path) -> None:
    run = RecordingRun(tmp_path / "data", ["holds"])
    scheduler = _scheduler(tmp_path, run, every_s=60, once=True)
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom core.lock import RunLock\n"
         "with RunLock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)",
         str(tmp_path / "data")], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert scheduler.serve() == 4
        assert run.calls == []
    finally:
        holder.kill()
        holder.wait()


def test_cli_bad_input_exits_2_with_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    from agent import cli

    if "agent.commands.schedule" not in cli.COMMAND_MODULES:
        monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES,
                                                     "agent.commands.schedule"])
    monkeypatch.setenv("RETEST_DATA_DIR", str(tmp_path / "data"))
    prompt = tmp_path / "p.txt"
    prompt.write_text(PROMPT)
    for args, needle in (([str(prompt), "--every", "7x"], "bad duration"),
                         ([str(tmp_path / "missing.txt")], "prompt file not found"),
                         ([str(prompt), "--corpus", str(tmp_path / "nope.jsonl")], "corpus"),
                         ([str(prompt), "--notify", "no-such-program-xyz"], "--notify"),
                         ([str(prompt), "--notify", "'unclosed"], "--notify")):
        assert cli.main(["schedule", *args]) == 2, args
        err = capsys.readouterr().err
        assert needle in err and len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    assert not (tmp_path / "data" / "locks").exists(), "bad input fails before any lock"


def test_cli_second_scheduler_exits_4_and_sigterm_stops_cleanly(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    prompt = tmp_path / "p.txt"
    prompt.write_text(PROMPT)
    # A recent recorded run: the scheduler starts by sleeping, so no report runs here.
    ReportHistory(data_dir).record(
        {"prompt_sha256": prompt_sha256(PROMPT), "generated_at": datetime.now(UTC).isoformat(),
         "claims": []}, "# recent")
    first = _retest("schedule", str(prompt), "--every", "1h", data_dir=data_dir)
    try:
        assert first.stderr is not None
        line = json.loads(first.stderr.readline())
        assert line["event"] == "scheduler_started" and line["every_s"] == 3600
        sleeping = json.loads(first.stderr.readline())
        assert sleeping["event"] == "sleeping" and sleeping["seconds"] > 3500
        second = _retest("schedule", str(prompt), "--every", "1h", data_dir=data_dir)
        _, err = second.communicate(timeout=120)
        assert second.returncode == 4, err
        assert "in progress" in err and "Traceback" not in err
        first.send_signal(signal.SIGTERM)
        _, rest = first.communicate(timeout=60)
        assert first.returncode == 0, rest
        events = [json.loads(x)["event"] for x in rest.splitlines()]
        assert events == ["stopping", "scheduler_stopped"]
    finally:
        if first.poll() is None:
            first.kill()
            first.wait()
    with RunLock(data_dir, f"schedule-{prompt_sha256(PROMPT)[:16]}"):
        pass  # released on exit


_DEGRADED_ONCE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from types import SimpleNamespace
    import agent.run
    from agent import cli
    from core.fsutil import atomic_write_json, atomic_write_text

    def degraded_run(prompt_text, settings, out_dir, **kwargs):
        report = {"prompt_sha256": "c" * 64, "generated_at": "2026-11-29T00:00:00+00:00",
                  "degraded": ["arXiv unreachable"], "claims": []}
        atomic_write_json(Path(out_dir) / "report.json", report)
        atomic_write_text(Path(out_dir) / "report.md", "# degraded")
        return SimpleNamespace(report=report, out_dir=out_dir, exit_code=3,
                               degraded=report["degraded"])

    agent.run.run_report = degraded_run
    if "agent.commands.schedule" not in cli.COMMAND_MODULES:
        cli.COMMAND_MODULES.append("agent.commands.schedule")
    sys.exit(cli.main(sys.argv[1:]))
""")


def test_cli_once_exits_with_the_runs_code(tmp_path: Path) -> None:
    prompt = tmp_path / "p.txt"
    prompt.write_text(PROMPT)
    env = {"PATH": "/usr/bin:/bin", "RETEST_DATA_DIR": str(tmp_path / "data"),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, "-c", _DEGRADED_ONCE, "schedule", str(prompt),
                           "--once", "--out-root", str(tmp_path / "runs")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300, check=False)
    assert done.returncode == 3, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]
    finished = [e for e in events if e.get("event") == "run_finished"]
    assert finished and finished[0]["degraded"] == ["arXiv unreachable"]
    assert (tmp_path / "runs" / "latest" / "report.md").read_text() == "# degraded"
