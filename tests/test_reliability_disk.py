"""A full disk and a read-only data directory, for real: small tmpfs mounts under tmp_path.

Every fault is a real ENOSPC or EROFS from a real filesystem (see ``tests/tmpfs.py``): a filler
file takes every free page, or the tmpfs is remounted read-only. The contract under test: the CLI
exits 5 with one line on stderr naming the path (no traceback), nothing half-written is left
(no torn report, no ``.NAME.*.tmp`` file, no torn results line), and once there is room again a
resume or rerun finishes with no finished work lost or repeated.

The report runs judge with the deterministic fake model (``tests/report_harness.py``); the eval
run calls the real embedded SmolLM2 server.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from eval_specs import write_tiny_quartz_spec
from report_harness import FAKE_CLI, cli_env, report_args, stable_md, stable_report
from tally import counter
from tmpfs import PAGE, Tmpfs, mounted_tmpfs

from agent.judgement_cache import JudgementCache
from core.errors import EXIT_STORAGE
from core.fsutil import WriteError, atomic_write_files, atomic_write_text, storage_errors
from evals.runner import ResultWriter, read_results

REPO = Path(__file__).resolve().parents[1]
TALLY = counter("disk faults")  # printed at the end of the run (tests/tally.py)


@pytest.fixture()
def small_fs(tmp_path: Path) -> Iterator[Tmpfs]:
    """A 1 MiB tmpfs at ``tmp_path/fs``, unmounted after the test."""
    with mounted_tmpfs(tmp_path / "fs", "1m") as fs:
        yield fs


@pytest.fixture()
def data_fs(tmp_path: Path) -> Iterator[Tmpfs]:
    """An 8 MiB tmpfs at ``tmp_path/fs``: room for one report's data directory (~1 MiB)."""
    with mounted_tmpfs(tmp_path / "fs", "8m") as fs:
        yield fs


def _report(data_dir: Path, out: Path, *extra: str) -> tuple[int, str]:
    """Run ``retest report`` (fake judge) to the end; return (exit code, stderr)."""
    done = subprocess.run([sys.executable, "-c", FAKE_CLI, *report_args(out), *extra],
                          cwd=REPO, env=cli_env(data_dir), capture_output=True, text=True,
                          timeout=600, check=False)
    return done.returncode, done.stderr


def _error_lines(stderr: str) -> list[str]:
    """Return stderr without progress lines, progress bars and warnings logged on the way."""
    return [ln for ln in stderr.splitlines() if ln.strip()
            and not ln.startswith(("[", "run id"))
            and " WARNING " not in ln and "\r" not in ln
            and not ln.startswith(("scan corpus", "embedding papers", "Loading weights"))]


def _run_id(stderr: str) -> str:
    line = next(ln for ln in stderr.splitlines() if ln.startswith("run id: "))
    return line.split()[2]


def _assert_clean_error(code: int, stderr: str, path: Path | str, *reasons: str) -> str:
    """Assert exit 5 and exactly one error line naming ``path``; return that line."""
    TALLY["faults injected"] += 1
    assert "Traceback" not in stderr, stderr
    lines = _error_lines(stderr)
    assert code == EXIT_STORAGE == 5, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("retest: error: ") and str(path) in lines[0], lines[0]
    assert any(r in lines[0] for r in reasons), lines[0]
    TALLY["clean errors"] += 1
    return lines[0]


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, list[str]]:
    """An uninterrupted report on a roomy disk: (stable report.json, stable report.md)."""
    root = tmp_path_factory.mktemp("baseline")
    code, err = _report(root / "data", root / "out")
    assert code == 0, err
    return (stable_report(json.loads((root / "out" / "report.json").read_text())),
            stable_md((root / "out" / "report.md").read_text()))


# ---------------------------------------------------------------- the report's --out folder

@pytest.mark.parametrize("leave", [0, 2 * PAGE], ids=["full", "room-for-report.json-only"])
def test_report_into_full_out_dir_fails_cleanly_then_resumes(
        tmp_path: Path, small_fs: Tmpfs, baseline: tuple[dict, list[str]], leave: int) -> None:
    """No report file (and no temp file) on a full disk; ``--resume`` then equals a clean run.

    With two pages left report.json (6 KiB) fits but report.md does not: the files are staged
    together, so not even report.json may appear.
    """
    out = small_fs.path / "out"
    small_fs.fill(leave=leave)
    started = time.monotonic()
    code, err = _report(tmp_path / "data", out)
    line = _assert_clean_error(code, err, out, "No space left on device")
    assert "report." in line, line
    left = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert left == [], "a half-written report was left"
    assert small_fs.free_bytes() == leave, "temporary files still hold space"

    small_fs.free()
    code, err = _report(tmp_path / "data", out, "--resume", _run_id(err))
    assert code == 0, err
    report = json.loads((out / "report.json").read_text())
    assert stable_report(report) == baseline[0], "the resumed report differs"
    assert stable_md((out / "report.md").read_text()) == baseline[1]
    assert report["usage"]["calls"] == 0, "the resume asked the model again for finished work"
    print(f"\nout dir {'full' if not leave else f'{leave} bytes free'}: clean error, "
          f"resume identical ({time.monotonic() - started:.1f} s)")


# ---------------------------------------------------------------- the data directory

def test_full_data_dir_is_one_line_naming_it_and_recovers(tmp_path: Path,
                                                          data_fs: Tmpfs) -> None:
    """Empty and nearly full (SQLite's own "disk full") data directories; a rerun recovers."""
    data = data_fs.path / "data"
    code, err = _report(data, tmp_path / "first")
    assert code == 0, err

    # Not a page left: the run lock is the first write and names its file.
    data_fs.fill(leave=0)
    code, err = _report(data, tmp_path / "out-full")
    _assert_clean_error(code, err, data / "locks" / "run.lock", "No space left on device")
    assert not (data / "locks" / "run.lock").exists(), "the failed lock left its file"
    # One page left: the lock fits, the checkpoint / cache databases do not (SQLite reports
    # "disk I/O error" or "database or disk is full", never a path: the edge names the folder).
    data_fs.free()
    data_fs.fill(leave=PAGE)
    code, err = _report(data, tmp_path / "out-nearly")
    _assert_clean_error(code, err, data, "no space left on device")
    for out in (tmp_path / "out-full", tmp_path / "out-nearly"):
        assert not (out / "report.json").exists() and not (out / "report.md").exists()
    assert data_fs.leftovers(data) == []

    data_fs.free()
    code, err = _report(data, tmp_path / "after")
    assert code == 0, err
    assert json.loads((tmp_path / "after" / "report.json").read_text())["claims"]


def test_read_only_data_dir_is_one_line_naming_it_and_recovers(tmp_path: Path,
                                                               data_fs: Tmpfs) -> None:
    data = data_fs.path / "data"
    code, err = _report(data, tmp_path / "first")
    assert code == 0, err
    first_run = _run_id(err)
    data_fs.read_only()
    try:
        code, err = _report(data, tmp_path / "out")
        _assert_clean_error(code, err, data, "Read-only file system", "read-only file system")
        assert not (tmp_path / "out" / "report.json").exists()
        # --resume reads the checkpoints first; SQLite cannot open them read-only either.
        code, err = _report(data, tmp_path / "out", "--resume", first_run)
        _assert_clean_error(code, err, data / "checkpoints.sqlite", "read-only file system")
    finally:
        data_fs.read_write()
    code, err = _report(data, tmp_path / "after")
    assert code == 0, err


def test_sqlite_full_and_read_only_become_write_errors_naming_the_path(small_fs: Tmpfs) -> None:
    """SQLite never names its file: the judgement cache and ``storage_errors`` do."""
    db_path = small_fs.path / "x.sqlite"
    db = sqlite3.connect(db_path)
    db.execute("CREATE TABLE t (v BLOB)")
    db.close()
    small_fs.fill(leave=0)
    with pytest.raises(WriteError, match=f"cannot write {small_fs.path}: no space left on "
                                         r"device \(0 bytes free\); sqlite: "):
        with storage_errors(small_fs.path):
            db = sqlite3.connect(db_path)
            try:
                db.execute("INSERT INTO t VALUES (?)", (b"x" * 100_000,))
                db.commit()
            finally:
                db.close()
    with pytest.raises(WriteError, match="judgements.sqlite"):
        JudgementCache(small_fs.path / "data")
    small_fs.free()
    small_fs.read_only()
    try:
        db = sqlite3.connect(db_path)
        with pytest.raises(WriteError, match=f"{small_fs.path}: read-only file system; sqlite: "
                                             "attempt to write a readonly database"):
            with storage_errors(small_fs.path), db:
                db.execute("INSERT INTO t VALUES (1)")
        db.close()
    finally:
        small_fs.read_write()


# ---------------------------------------------------------------- atomic writes and results

@pytest.mark.parametrize("leave", [0, PAGE], ids=["full", "one-page-free"])
def test_atomic_write_on_full_disk_keeps_old_file_and_leaves_no_temp(small_fs: Tmpfs,
                                                                     leave: int) -> None:
    target = small_fs.path / "report.md"
    atomic_write_text(target, "old\n")
    small_fs.fill(leave=leave)
    with pytest.raises(WriteError, match=f"cannot write {target}: No space left on device"):
        atomic_write_text(target, "new|" * 10_000)  # 40 KB: a temp file is started, then cut
    assert target.read_text() == "old\n"
    assert small_fs.leftovers(small_fs.path) == [], "a .report.md.*.tmp file was left behind"
    assert small_fs.free_bytes() == leave


def test_atomic_write_files_replace_all_or_none(small_fs: Tmpfs) -> None:
    a, b = small_fs.path / "report.json", small_fs.path / "report.md"
    atomic_write_files({a: "old a", b: "old b"})
    small_fs.fill(leave=2 * PAGE)
    with pytest.raises(WriteError, match=f"cannot write {b}"):
        atomic_write_files({a: "A" * PAGE, b: "B" * 3 * PAGE})  # a's new content fits, b's not
    assert (a.read_text(), b.read_text()) == ("old a", "old b")
    assert small_fs.leftovers(small_fs.path) == []
    small_fs.free()
    atomic_write_files({a: "A" * PAGE, b: "B" * 3 * PAGE})
    assert (len(a.read_text()), len(b.read_text())) == (PAGE, 3 * PAGE)


def test_results_writer_on_full_disk_never_leaves_a_torn_line(small_fs: Tmpfs) -> None:
    path = small_fs.path / "results.jsonl"
    small_fs.fill(leave=PAGE)
    writer = ResultWriter(path)
    written = 0
    with pytest.raises(WriteError, match=f"cannot write {path}: No space left on device"):
        for i in range(100):  # ~1000-byte lines: the fifth does not fit in one page
            writer.write({"item_id": f"i{i}", "model": "m", "variant": "original",
                          "prediction": "x" * 950})
            written += 1
    writer.close()
    raw = path.read_bytes()
    assert written == 4 and raw.endswith(b"\n") and raw.count(b"\n") == written, len(raw)
    assert [r["item_id"] for r in read_results(path)] == [f"i{i}" for i in range(written)]


# ---------------------------------------------------------------- retest eval

def _eval(spec: Path, out: Path, data: Path) -> tuple[int, str]:
    done = subprocess.run([sys.executable, "-m", "agent.cli", "eval", str(spec), "--out",
                           str(out), "--quiet"], cwd=REPO, env=cli_env(data),
                          capture_output=True, text=True, timeout=600, check=False)
    return done.returncode, done.stderr


@pytest.mark.slow
def test_eval_results_fill_the_disk_then_resume_loses_and_repeats_nothing(
        shared_data: Path, llm_base_url: str, tmp_path: Path, small_fs: Tmpfs) -> None:
    """results.jsonl fills the disk mid-run: whole lines kept; the resume adds exactly the rest."""
    spec = write_tiny_quartz_spec(tmp_path / "tiny.toml", llm_base_url,
                                  "tiny quartz dedup on a full disk")
    out = small_fs.path / "eval"
    # One page for the folder lock (it records its holder), one for run.json, one for
    # results.jsonl: about half of the 16 lines (~500 B) fit.
    small_fs.fill(leave=3 * PAGE)
    code, err = _eval(spec, out, tmp_path / "data")
    _assert_clean_error(code, err, out / "results.jsonl", "No space left on device")
    raw = (out / "results.jsonl").read_bytes()
    kept = raw.decode().splitlines()
    assert raw.endswith(b"\n") and 0 < len(kept) < 16, len(kept)
    assert all(json.loads(line)["item_id"] for line in kept)
    assert small_fs.leftovers(out) == [] and not (out / "summary.json").exists()

    small_fs.free()
    code, err = _eval(spec, out, tmp_path / "data")
    assert code == 0, err
    lines = (out / "results.jsonl").read_text().splitlines()
    assert lines[:len(kept)] == kept, "the resume rewrote lines it had kept"
    keys = [(r["item_id"], r["model"], r["variant"]) for r in map(json.loads, lines)]
    assert len(keys) == len(set(keys)) == 16, "a result line was lost or repeated"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["run"]["skipped_done"] == len(kept)
    print(f"\neval: disk full after {len(kept)} of 16 lines; resume wrote {16 - len(kept)}")
