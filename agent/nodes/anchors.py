"""Resolve the prompt's anchor ids: verified, not_found, malformed, or unverifiable.

An anchor is ``verified`` only when a real record backs it: the corpus scan, the paper store, or
live arXiv (through ``tools.resolve`` once it exists). Offline, an anchor no local record holds is
``unverifiable``; ``not_found`` needs arXiv itself to say so. Titles come from the record.
"""

from __future__ import annotations

import logging
from typing import Any

from langgraph.runtime import Runtime

from agent.nodes.context import RunContext
from agent.nodes.search import open_store, to_record
from agent.state import AgentState, Anchor, AnchorResult
from core.errors import RetestError
from core.settings import Settings
from tools.resolve import resolve_paper

log = logging.getLogger(__name__)

_STATUS_FROM_RESOLVE = {"found": "verified", "not_found": "not_found",
                        "malformed": "malformed", "unverifiable": "unverifiable"}


def resolve_anchors(state: AgentState, runtime: Runtime[RunContext]) -> dict[str, Any]:
    """Resolve every anchor against what the run retrieved, then the store and arXiv."""
    ctx = runtime.context
    ctx.check_cancel()
    anchors = state["brief"]["anchors"]
    # The retrieve node already scanned the corpus for the anchors: do not let the resolver scan
    # it again per anchor (seconds each); it still checks the arXiv cache, store and live API.
    settings = ctx.settings.model_copy(update={"corpus": None})
    store = open_store(ctx)
    results: list[AnchorResult] = []
    papers: dict[str, Any] = {}
    degraded: list[str] = []
    for i, anchor in enumerate(anchors):
        result, record, note = _resolve_one(settings, store, anchor, state.get("papers", {}))
        results.append(result)
        if record is not None:
            papers[record["arxiv_id"]] = record
        if note:
            degraded.append(note)
        ctx.emit("anchors", f"{anchor['raw']}: {result['status']}", i + 1, len(anchors))
    return {"anchors": results, "papers": papers, "degraded": degraded}


def _result(anchor: Anchor, status: str, record: dict[str, Any] | None) -> AnchorResult:
    return AnchorResult(arxiv_id=anchor["arxiv_id"], status=status,  # type: ignore[typeddict-item]
                        title=record["title"] if record else None,
                        published=record["published"] if record else None, note=anchor["note"])


def _resolve_one(settings: Settings, store: Any, anchor: Anchor, retrieved: dict[str, Any]
                 ) -> tuple[AnchorResult, dict[str, Any] | None, str]:
    if not anchor["valid"]:
        return _result(anchor, "malformed", None), None, ""
    if anchor["arxiv_id"] in retrieved:
        record = retrieved[anchor["arxiv_id"]]
        return _result(anchor, "verified", record), record, ""
    try:
        res = resolve_paper(anchor["raw"], settings, store=store)
    except RetestError as exc:
        log.warning("resolving %s failed: %s", anchor["raw"], exc)
        return _result(anchor, "unverifiable", None), None, f"anchor lookup failed: {exc}"
    status = _STATUS_FROM_RESOLVE.get(str(res.status), "unverifiable")
    record = to_record(res.paper) if res.paper is not None and status == "verified" else None
    if status == "verified" and record is None:
        status = "unverifiable"  # never verified without a record to back it
    return _result(anchor, status, record), record, ""
