"""Bad input, tested as properties: no traceback ever reaches the user, malformed input exits 2
with one line naming the problem, and huge inputs are refused or streamed with bounded memory.

Covers the prompt parser, the eval-spec loader, the corpus loaders and ``retest paper ID``; the
counts of inputs tried and clean errors are printed (``-s``) for the README's reliability table.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tally import counter

from agent.cli import main
from agent.parse import MAX_CLAIMS, MAX_PROMPT_BYTES, parse_prompt
from core.errors import BadInputError
from evals.spec import load_spec
from tools.corpus import CorpusReport, iter_corpus
from tools.paper import Paper

REPO = Path(__file__).resolve().parents[1]
TALLY = counter("bad input")  # printed at the end of the run (tests/tally.py)

_FAST = settings(max_examples=150, deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])


def _one_clean_line(stderr: str) -> str:
    """Assert ``stderr`` is one ``retest: error:`` line (no traceback) and return it."""
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert "Traceback" not in stderr, stderr
    assert len(lines) == 1, stderr
    assert lines[0].startswith("retest: error: "), stderr
    return lines[0]


def _cli(args: list[str]) -> tuple[int, str, str]:
    """Run the CLI in process; return (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(args)
    return code, out.getvalue(), err.getvalue()


# ---------------------------------------------------------------- prompt parser

_LINE = st.one_of(
    st.text(max_size=80),
    st.builds(lambda b, t, d: f"{b} {t} ({d})",
              st.sampled_from(["-", "*", "•", "–", "1.", "(2)", "--"]),
              st.text(min_size=1, max_size=60),
              st.sampled_from(["~2024–2025", "Oct 2024", "2023-2026", "2025-03", "13/2024",
                               "", "9999", "1899", "Sept. 2021", "2024/13"])),
    st.builds(lambda p, i: f"{p}{i}",
              st.sampled_from(["arXiv:", "- arXiv: ", "https://arxiv.org/abs/", ""]),
              st.from_regex(r"\d{4}\.\d{3,6}(v\d{1,3})?|[a-z\-]{1,8}/\d{5,8}", fullmatch=True)),
)


@_FAST
@given(st.lists(_LINE, max_size=30))
def test_parse_prompt_never_crashes(lines: list[str]) -> None:
    TALLY["parser: tried"] += 1
    try:
        brief = parse_prompt("\n".join(lines))
    except BadInputError as exc:
        TALLY["parser: one-line BadInputError or a valid brief"] += 1
        assert str(exc) and "\n" not in str(exc)
        return
    TALLY["parser: one-line BadInputError or a valid brief"] += 1
    assert [c["id"] for c in brief["claims"]] == [f"C{i}" for i in
                                                  range(1, len(brief["claims"]) + 1)]
    for claim in brief["claims"]:
        if claim["date_from"]:
            assert claim["date_from"] <= claim["date_to"]


def test_too_many_claims_refused_quickly() -> None:
    text = "Q?\n" + "".join(f"- c {i} x y\n" for i in range(15_000))
    assert len(text.encode()) < MAX_PROMPT_BYTES  # refused for its claims, not its size
    with pytest.raises(BadInputError, match=f"more than {MAX_CLAIMS} claims"):
        parse_prompt(text)
    # Exactly at the limit it still parses.
    ok = "Q?\n" + "".join(f"- claim {i} about memorization\n" for i in range(MAX_CLAIMS))
    assert len(parse_prompt(ok)["claims"]) == MAX_CLAIMS


def test_cli_refuses_100k_claims_with_one_line(isolated_env: Path, tmp_path: Path) -> None:
    prompt = tmp_path / "many.txt"
    prompt.write_text("Q?\n" + "".join(f"- c {i} x y\n" for i in range(100_000)))
    code, _, err = _cli(["report", str(prompt), "--offline"])
    assert code == 2
    assert "claims" in _one_clean_line(err)


@pytest.mark.parametrize(("content", "needle"), [
    (b"", "empty"), (b"   \n\n", "empty"), (b"\xff\xfe\x00bad", "UTF-8"),
    (b"- a claim \x00 here (2024)", "NUL"),
])
def test_cli_bad_prompt_files(isolated_env: Path, tmp_path: Path, content: bytes,
                              needle: str) -> None:
    prompt = tmp_path / "bad.txt"
    prompt.write_bytes(content)
    TALLY["CLI files: tried"] += 1
    code, _, err = _cli(["report", str(prompt), "--offline"])
    assert code == 2 and needle in _one_clean_line(err)
    TALLY["CLI files: exit 2 with one line"] += 1


_RSS_SCRIPT = """
import contextlib, io, resource, sys
from agent.cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err):
    code = main(sys.argv[1:])
print(code, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, err.getvalue().strip(), sep="\\t")
"""


def _rss_run(args: list[str], env: dict[str, str]) -> tuple[int, int, str]:
    """Run the CLI in a fresh interpreter; return (exit code, peak RSS in KiB, stderr)."""
    proc = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=120, check=True)
    code, rss, err = proc.stdout.strip().split("\t", 2)
    return int(code), int(rss), err


@pytest.mark.slow
def test_50mb_prompt_refused_with_bounded_memory(isolated_env: Path, tmp_path: Path) -> None:
    big = tmp_path / "big.txt"
    with big.open("w") as handle:
        line = "- models memorize repeated benchmark items far more than novel ones (2024)\n"
        for _ in range(50 * 2**20 // len(line)):
            handle.write(line)
    assert big.stat().st_size > 49 * 2**20
    env = dict(os.environ)
    code0, base_rss, _ = _rss_run(["report", str(tmp_path / "missing.txt"), "--offline"], env)
    code, rss, err = _rss_run(["report", str(big), "--offline"], env)
    print(f"\n50 MB prompt: exit {code}, peak RSS {rss / 1024:.0f} MiB "
          f"(baseline {base_rss / 1024:.0f} MiB)")
    assert code0 == 2 and code == 2
    assert "too large" in _one_clean_line(err)
    assert rss - base_rss < 10 * 1024  # never read into memory


# ---------------------------------------------------------------- eval specs

_VALID_SPEC = """description = "tiny"
claim_kinds = ["memorization"]
scoring = "exact"

[dataset]
kind = "jsonl"
path = "items.jsonl"

[[models]]
role = "base"
model = "smollm2-135m-instruct"

[[models]]
role = "fine_tuned"
model = "gemma3-270m"
"""


@_FAST
@given(st.data())
def test_spec_loader_mutations(tmp_path_factory: pytest.TempPathFactory,
                               data: st.DataObject) -> None:
    folder = tmp_path_factory.mktemp("spec")
    (folder / "items.jsonl").write_text('{"prompt": "1+1", "answer": "2"}\n')
    lines = _VALID_SPEC.splitlines()
    op = data.draw(st.sampled_from(["drop", "replace", "insert", "garbage"]))
    i = data.draw(st.integers(0, len(lines) - 1))
    if op == "drop":
        del lines[i]
    elif op == "replace":
        lines[i] = data.draw(st.one_of(
            st.text(max_size=40),
            st.builds(lambda k, v: f"{k} = {v}", st.sampled_from(
                ["scoring", "kind", "path", "role", "model", "seed", "test_fraction", "bogus",
                 "description", "claim_kinds", "per_split"]),
                st.sampled_from(['"x"', "1", "-1", "0.0", "[]", "[1,2]", "{a=1}", "true",
                                 '"${SHARED_DATA}/nope"', "1e400", '"\\u0000"']))))
    elif op == "insert":
        lines.insert(i, data.draw(st.sampled_from(
            ["[sample]", "per_split = 0", "[dedup]", "threshold = 2", "[[models]]",
             "[generation]", "concurrency = 100000", "[split]", 'mode = "nope"'])))
    else:
        lines = [data.draw(st.text(max_size=200))]
    spec = folder / "spec.toml"
    spec.write_text("\n".join(lines), encoding="utf-8", errors="surrogatepass")
    TALLY["spec loader: tried"] += 1
    try:
        load_spec(spec)
    except BadInputError as exc:
        assert "\n" not in str(exc).strip() and str(spec) in str(exc) or "not found" in str(exc)
    TALLY["spec loader: one-line BadInputError or a valid spec"] += 1


def test_cli_spec_syntax_error_names_line(isolated_env: Path, tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(_VALID_SPEC.replace('kind = "jsonl"', 'kind = "jsonl'))
    code, _, err = _cli(["eval", str(spec)])
    line = _one_clean_line(err)
    assert code == 2 and "line 6" in line, line


# ---------------------------------------------------------------- corpus loaders

_VALUE = st.one_of(st.none(), st.integers(), st.text(max_size=12),
                   st.lists(st.integers(), max_size=2), st.lists(st.text(max_size=5), max_size=2),
                   st.dictionaries(st.text(max_size=3), st.integers(), max_size=2))
_GOOD = {"id": "2501.00001", "title": "A title", "authors": ["A B"], "categories": ["cs.CL"],
         "comment": None, "abstract": "text", "listing_date": "2025-01-02"}
_SNAP = {"id": "0704.0001", "title": "T", "authors": "A B, C D", "categories": "hep-ph",
         "abstract": "x",
         "versions": [{"version": "v1", "created": "Mon, 2 Apr 2007 19:18:42 GMT"}],
         "update_date": "2008-11-13", "authors_parsed": [["B", "A", ""]]}


def _record_line(draw: st.DrawFn) -> tuple[str, bool | None]:
    """Draw one corpus line and whether it must parse (True), must not (False), or either."""
    kind = draw(st.sampled_from(["good", "snap", "mutated", "junk", "blank"]))
    if kind == "good":
        return json.dumps(_GOOD), True
    if kind == "snap":
        return json.dumps(_SNAP), True
    if kind == "blank":
        return "", None
    if kind == "junk":
        return draw(st.one_of(st.text(max_size=40).filter(lambda s: "\n" not in s and "\r" not in s
                                                          and s.strip()),
                              st.sampled_from(["[1, 2]", "null", '"str"', "{", '{"id": }'])
                              )).replace("\x0b", " ").replace("\x0c", " ").replace("\x1c", " ") \
            .replace("\x1d", " ").replace("\x1e", " ").replace("\x85", " ") \
            .replace("\u2028", " ").replace("\u2029", " "), None
    record = dict(draw(st.sampled_from([_GOOD, _SNAP])))
    key = draw(st.sampled_from(sorted(set(_GOOD) | set(_SNAP))))
    record[key] = draw(_VALUE)
    return json.dumps(record), None


@_FAST
@given(st.lists(st.composite(_record_line)(), min_size=1, max_size=15))
def test_corpus_reader_never_crashes(tmp_path_factory: pytest.TempPathFactory,
                                     lines: list[tuple[str, bool | None]]) -> None:
    path = tmp_path_factory.mktemp("corpus") / "c.jsonl"
    path.write_text("\n".join(text for text, _ in lines) + "\n", encoding="utf-8")
    report = CorpusReport()
    TALLY["corpus reader: tried"] += 1
    papers = list(iter_corpus(path, report))  # anything but a clean stream fails the test
    TALLY["corpus reader: streamed without a crash"] += 1
    assert all(isinstance(p, Paper) for p in papers)
    bad_lines = {n for n, _ in report.malformed}
    for n, (text, must_parse) in enumerate(lines, start=1):
        if must_parse:
            assert n not in bad_lines
        if not text.strip():
            assert n not in bad_lines
    assert report.papers == len(papers)
    assert report.papers + report.malformed_count + report.blank == report.lines


_CORPUS_RSS = """
import resource, sys
from tools.corpus import CorpusReport, iter_corpus
report = CorpusReport()
n = sum(1 for _ in iter_corpus(sys.argv[1], report))
print(n, report.malformed_count, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


@pytest.mark.slow
def test_10mb_corpus_lines_stream_with_bounded_memory(tmp_path: Path) -> None:
    small = tmp_path / "small.jsonl"
    small.write_text(json.dumps(_GOOD) + "\n")
    big = tmp_path / "big.jsonl"
    with big.open("w") as handle:
        for i in range(8):  # 80 MB of 10 MB lines, each a valid record
            rec = dict(_GOOD, id=f"2501.{i:05d}", abstract="word " * (2 * 2**20))
            handle.write(json.dumps(rec) + "\n")
        handle.write("{" + "x" * 10 * 2**20 + "\n")  # a 10 MB broken line
    rss = {}
    for name, path in (("small", small), ("big", big)):
        out = subprocess.run([sys.executable, "-c", _CORPUS_RSS, str(path)], capture_output=True,
                             text=True, cwd=REPO, timeout=300, check=True).stdout.split()
        rss[name] = (int(out[0]), int(out[1]), int(out[2]))
    growth_mib = (rss["big"][2] - rss["small"][2]) / 1024
    print(f"\n10 MB lines: {rss['big'][0]} papers, {rss['big'][1]} malformed, RSS growth "
          f"{growth_mib:.0f} MiB for an {big.stat().st_size / 2**20:.0f} MiB file")
    assert rss["big"][:2] == (8, 1)
    assert growth_mib < 70  # a few lines' worth, not the whole file


# ---------------------------------------------------------------- retest paper ID

@settings(max_examples=20, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.one_of(st.text(min_size=1, max_size=30),
                 st.from_regex(r"(arXiv:)?\d{4}\.\d{4,5}(v\d+)?", fullmatch=True),
                 st.from_regex(r"[a-z\-]{2,9}(\.[A-Z]{2})?/\d{7}", fullmatch=True)))
def test_paper_command_never_tracebacks(isolated_env: Path, raw: str) -> None:
    if raw.startswith("-") or not raw.strip():
        return  # click's own usage error; tested below
    TALLY["retest paper: tried"] += 1
    code, out, err = _cli(["paper", raw, "--offline", "--json"])
    assert code in (0, 2), (raw, code, err)
    if code == 2:
        assert "arXiv id" in _one_clean_line(err)
        TALLY["retest paper: exit 2 with one line"] += 1
    else:
        assert json.loads(out)["status"] == "unverifiable"
        TALLY["retest paper: well-formed id answered offline"] += 1


def test_paper_command_usage_errors(isolated_env: Path) -> None:
    code, _, err = _cli(["paper", "2501.00001", "--corpus", "nope.jsonl"])
    assert code == 2 and "nope.jsonl" in _one_clean_line(err)
    for bad in ("", " ", "2513.01234", "arXiv:abc", "../../etc/passwd"):
        code, _, err = _cli(["paper", bad, "--offline"])
        assert code == 2 and "malformed" in _one_clean_line(err), (bad, err)


@pytest.mark.parametrize("args", [["--retest-items", "2"], ["--papers-per-claim", "0"],
                                  ["--retest-limit", "-1"], ["--no-such-option"]])
def test_report_option_out_of_range_is_a_usage_error(isolated_env: Path, tmp_path: Path,
                                                      args: list[str]) -> None:
    # Typer 0.29 raises its vendored click's BadParameter for ranges: once "internal error", 1.
    prompt = tmp_path / "p.txt"
    prompt.write_text("Question: why?\nClaims:\n- Models memorize (~2024).\n", encoding="utf-8")
    code, _, err = _cli(["report", str(prompt), "--offline", *args])
    assert code == 2, err
    assert "internal error" not in err and "Traceback" not in err
    assert "Error:" in err
