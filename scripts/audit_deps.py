"""Audit the pinned dependencies (requirements.lock) against a known-vulnerability database.

`pip-audit` asks an online advisory service (PyPI's JSON API or OSV) and the build machines
reach neither, so this is the offline equivalent: it reads the newest advisory database that can
be installed from the package index, the `safety-db` package (PyUp's free database, a JSON file of
affected-version specifiers per package), and matches every pin in the lock against it. Where an
advisory service is reachable, run ``pip-audit -r requirements.lock --no-deps --disable-pip`` as
well: the offline database is only as new as its timestamp, which this script prints.

Usage: ``.venv/bin/python scripts/audit_deps.py [--lock requirements.lock] [--db FILE]
[--markdown] [--json]``. Exit 0 when the audit ran (findings or not: they are listed, and the
README's table is checked against them by ``tests/test_dependency_audit.py``), 2 when the lock or
the database cannot be read.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import json
import re
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from packaging.specifiers import InvalidSpecifier, SpecifierSet
from packaging.version import InvalidVersion, Version

REPO = Path(__file__).resolve().parents[1]
_PIN = re.compile(r"^\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*==\s*([^\s;#]+)")


@dataclass(frozen=True)
class Finding:
    """One pinned package version that an advisory says is affected."""

    package: str
    version: str
    advisory_id: str
    affected: str
    cve: str | None
    summary: str


@dataclass(frozen=True)
class Audit:
    """The result of one audit: what was checked, against what, and what was found."""

    pins: int
    database: str
    database_date: str
    skipped_specifiers: int
    findings: list[Finding]


def normalize(name: str) -> str:
    """PEP 503 name normalization (``Foo_Bar`` and ``foo-bar`` are the same project)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def parse_pins(text: str) -> dict[str, str]:
    """Return {normalized name: version} for every ``name==version`` line of a lock file.

    Comments, blank lines, options (``-e``, ``--index-url``) and environment markers are ignored.
    """
    pins: dict[str, str] = {}
    for line in text.splitlines():
        match = _PIN.match(line)
        if match:
            pins[normalize(match.group(1))] = match.group(2)
    return pins


def audit(pins: dict[str, str], database: dict[str, Any]) -> tuple[list[Finding], int]:
    """Match pins against a safety-db style database; return (findings, unparseable specifiers).

    ``database`` maps a package name to a list of advisories, each with ``specs`` (affected
    version ranges such as ``"<2.20.0"`` or ``">=1.0,<1.2"``), ``id``, ``cve`` and ``advisory``.
    A pin is affected when its version lies in any of an advisory's ranges. Pure: no I/O.
    """
    by_name = {normalize(name): entries for name, entries in database.items()
               if not name.startswith("$")}
    findings: list[Finding] = []
    skipped = 0
    for name, pinned in sorted(pins.items()):
        try:
            version = Version(pinned)
        except InvalidVersion:
            skipped += 1
            continue
        for entry in by_name.get(name, []):
            hit = None
            for spec in entry.get("specs") or []:
                try:
                    if version in SpecifierSet(spec, prereleases=True):
                        hit = spec
                        break
                except InvalidSpecifier:
                    skipped += 1
            if hit is not None:
                findings.append(Finding(
                    package=name, version=pinned, advisory_id=str(entry.get("id", "?")),
                    affected=hit, cve=entry.get("cve"),
                    summary=" ".join(str(entry.get("advisory", "")).split())[:160]))
    return findings, skipped


def default_database() -> Path:
    """Return the installed safety-db's full database file (ImportError when not installed)."""
    # Located, not imported: the package's __init__ opens its data by a cwd-relative path.
    spec = importlib.util.find_spec("safety_db")
    if spec is None or spec.origin is None:
        raise ImportError("safety_db")
    return Path(spec.origin).with_name("insecure_full.json")


def run_audit(lock: Path, db: Path) -> Audit:
    """Read the lock and the database, audit, and return the result (raises OSError/ValueError)."""
    pins = parse_pins(lock.read_text(encoding="utf-8"))
    database = json.loads(db.read_text(encoding="utf-8"))
    stamp = (database.get("$meta") or {}).get("timestamp")
    date = dt.datetime.fromtimestamp(stamp, dt.UTC).date().isoformat() if stamp else "unknown"
    findings, skipped = audit(pins, database)
    return Audit(pins=len(pins), database=db.name, database_date=date,
                 skipped_specifiers=skipped, findings=findings)


def render_markdown(result: Audit) -> str:
    """Render the README's table of findings (or one line saying there are none)."""
    head = (f"{result.pins} pins audited against safety-db ({result.database}, "
            f"dated {result.database_date}): {len(result.findings)} known-vulnerability findings.")
    if not result.findings:
        return head + "\n"
    rows = ["| package | pinned | advisory | affected | CVE |", "|---|---|---|---|---|"]
    rows += [f"| {f.package} | {f.version} | {f.advisory_id} | `{f.affected}` | {f.cve or '-'} |"
             for f in result.findings]
    return head + "\n\n" + "\n".join(rows) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; see the module docstring."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lock", type=Path, default=REPO / "requirements.lock")
    parser.add_argument("--db", type=Path, default=None, help="safety-db insecure_full.json")
    parser.add_argument("--json", action="store_true", help="print the findings as JSON")
    args = parser.parse_args(argv)
    try:
        db = args.db or default_database()
        result = run_audit(args.lock, db)
    except ImportError:
        print("audit_deps: the safety-db package is not installed (pip install -e '.[dev]')",
              file=sys.stderr)
        return 2
    except (OSError, ValueError) as exc:
        print(f"audit_deps: cannot read the lock or the database: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(asdict(result), indent=2))
    else:
        print(render_markdown(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
