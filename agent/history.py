"""Report history in the data directory, keyed by the research prompt's sha256.

Layout: ``<data_dir>/history/<prompt_sha256>/<UTC stamp>/`` holds ``report.json``, ``report.md``
and ``meta.json`` (timestamp, corpus, model, verdicts, where the run wrote its output). A run
directory is assembled under a temporary name and renamed into place, so a kill never leaves a
half-recorded run that a later diff would read.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import BadInputError
from core.fsutil import WriteError, atomic_write_json, atomic_write_text

log = logging.getLogger(__name__)

_SHA256 = re.compile(r"^[0-9a-f]{64}$")
_STAMP_FORMAT = "%Y%m%dT%H%M%S%fZ"


def parse_time(value: str | datetime) -> datetime:
    """Parse an ISO-8601 time (``Z`` allowed); naive times are taken as UTC."""
    when = value if isinstance(value, datetime) else datetime.fromisoformat(
        value.replace("Z", "+00:00"))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


class ReportHistory:
    """Every recorded run of every prompt under ``<data_dir>/history``."""

    def __init__(self, data_dir: Path | str) -> None:
        self.root = Path(data_dir) / "history"

    def prompt_dir(self, prompt_sha256: str) -> Path:
        """Return the folder of one prompt's runs; raise BadInputError on a malformed hash."""
        if not isinstance(prompt_sha256, str) or not _SHA256.match(prompt_sha256):
            raise BadInputError(f"not a prompt sha256: {prompt_sha256!r}")
        return self.root / prompt_sha256

    def record(self, report_json: dict[str, Any], report_md: str,
               out_dir: Path | None = None) -> Path:
        """Store one run's report.json and report.md; return the run's history folder.

        ``report_json`` must carry ``prompt_sha256`` and ``generated_at`` (report.json schema);
        ``corpus`` and ``model`` go into ``meta.json`` with the verdict of each claim.
        """
        prompt_dir = self.prompt_dir(report_json.get("prompt_sha256", ""))
        generated = report_json.get("generated_at")
        try:
            when = parse_time(generated) if generated else datetime.now(UTC)
        except (TypeError, ValueError):
            raise BadInputError(f"report generated_at is not ISO-8601: {generated!r}") from None
        meta = {
            "prompt_sha256": report_json["prompt_sha256"],
            "generated_at": when.isoformat(),
            "recorded_at": datetime.now(UTC).isoformat(),
            "corpus": report_json.get("corpus"),
            "model": report_json.get("model"),
            "degraded": list(report_json.get("degraded") or []),
            "verdicts": {c.get("id"): c.get("verdict") for c in report_json.get("claims", [])},
            "out_dir": str(out_dir) if out_dir is not None else None,
        }
        try:
            prompt_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".recording.", dir=prompt_dir))
        except OSError as exc:
            raise WriteError(f"cannot write report history in {prompt_dir}: "
                             f"{exc.strerror}") from exc
        try:
            atomic_write_json(staging / "report.json", report_json)
            atomic_write_text(staging / "report.md", report_md)
            atomic_write_json(staging / "meta.json", meta)
            final = self._free_run_dir(prompt_dir, when)
            os.rename(staging, final)
        except OSError as exc:
            raise WriteError(f"cannot record run in {prompt_dir}: {exc.strerror}") from exc
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        log.info("recorded run %s", final)
        return final

    def runs(self, prompt_sha256: str) -> list[dict[str, Any]]:
        """Return the metadata of each recorded run of the prompt, oldest first.

        Each entry is ``meta.json`` plus ``path`` (the run folder). Unreadable runs are skipped
        with a warning rather than breaking every later diff.
        """
        prompt_dir = self.prompt_dir(prompt_sha256)
        if not prompt_dir.is_dir():
            return []
        found: list[dict[str, Any]] = []
        for run_dir in prompt_dir.iterdir():
            if run_dir.name.startswith(".") or not run_dir.is_dir():
                continue
            try:
                meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
                meta["generated_at"] = parse_time(meta["generated_at"]).isoformat()
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("skipping unreadable history entry %s: %s", run_dir, exc)
                continue
            meta["path"] = str(run_dir)
            found.append(meta)
        found.sort(key=lambda m: (parse_time(m["generated_at"]), m["path"]))
        return found

    def previous(self, prompt_sha256: str, before: str | None = None) -> dict[str, Any] | None:
        """Return the report.json of the latest run (strictly before ``before``, if given)."""
        cutoff = parse_time(before) if before else None
        for meta in reversed(self.runs(prompt_sha256)):
            if cutoff is not None and parse_time(meta["generated_at"]) >= cutoff:
                continue
            try:
                return json.loads((Path(meta["path"]) / "report.json").read_text("utf-8"))
            except (OSError, ValueError) as exc:
                log.warning("skipping unreadable report in %s: %s", meta["path"], exc)
        return None

    def last_run_time(self, prompt_sha256: str) -> datetime | None:
        """Return when the latest recorded run of the prompt was generated (UTC), or None."""
        runs = self.runs(prompt_sha256)
        return parse_time(runs[-1]["generated_at"]) if runs else None

    @staticmethod
    def _free_run_dir(prompt_dir: Path, when: datetime) -> Path:
        stamp = when.astimezone(UTC).strftime(_STAMP_FORMAT)
        candidate = prompt_dir / stamp
        n = 1
        while candidate.exists():
            n += 1
            candidate = prompt_dir / f"{stamp}-{n}"
        return candidate
