"""``retest dedup TRAIN TEST``: label each test item repeated or novel against a training file."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any

import redis
import typer

from agent.commands.common import print_json
from core.errors import BadInputError, ServiceError
from evals.datasets import read_jsonl
from evals.dedup import DedupResult, label_test_items
from evals.dedup.lsh_store import DEFAULT_BATCH, RedisLSHStore, label_streaming

# Tried in order when --field is not given: GSM8K, OpenAI-evals/BIG-bench, generic.
TEXT_FIELDS = ("question", "input", "prompt", "text")


def _as_text(value: Any) -> str | None:
    """Return a field's text: a string, or the user turns of an OpenAI-evals chat ``input``."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(m, dict) for m in value):
        turns = [m.get("content") for m in value if m.get("role") == "user"]
        turns = turns or [m.get("content") for m in value]
        if all(isinstance(t, str) for t in turns):
            return "\n".join(turns)
    return None


def read_texts(path: Path, field: str | None) -> list[str]:
    """Return the text of ``field`` (or the first of :data:`TEXT_FIELDS` present) on every line.

    Raises BadInputError naming the file and line when a line lacks the field or is not JSON.
    """
    texts = list(iter_texts(path, field))
    if not texts:
        raise BadInputError(f"{path}: no items")
    return texts


def iter_texts(path: Path, field: str | None) -> Iterator[str]:
    """Stream the texts :func:`read_texts` returns, one line at a time (same errors)."""
    chosen = field
    for line_no, obj in read_jsonl(path):
        if chosen is None:
            chosen = next((f for f in TEXT_FIELDS if f in obj), None)
            if chosen is None:
                raise BadInputError(f"{path}:{line_no}: no text field (tried "
                                    f"{', '.join(TEXT_FIELDS)}); name one with --field")
        text = _as_text(obj.get(chosen))
        if text is None:
            raise BadInputError(f"{path}:{line_no}: field {chosen!r} is missing or not text")
        yield text


def index_name(train: Path, field: str | None, params: dict[str, Any]) -> str:
    """Name a Redis LSH index by the training file's bytes and every parameter that shapes it."""
    digest = hashlib.sha256(repr((field, sorted(params.items()))).encode())
    try:
        with train.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise BadInputError(f"{train}: cannot read: {exc.strerror}") from None
    return digest.hexdigest()[:24]


def _label_with_redis(train: Path, test_texts: list[str], field: str | None, url: str,
                      processes: int, batch_size: int, **params: Any) -> DedupResult:
    """Run the streaming, Redis-indexed path; bad URL is exit 2, an unreachable server one line."""
    try:
        store = RedisLSHStore.from_url(url)
    except ValueError as exc:
        raise BadInputError(str(exc)) from None
    if next(iter_texts(train, field), None) is None:  # fail before touching Redis
        raise BadInputError(f"{train}: no items")
    name = index_name(train, field, {k: params[k] for k in
                                     ("shingle", "n", "mask_numbers", "num_perm", "threshold")})
    try:
        return label_streaming(lambda: iter_texts(train, field), test_texts, store=store,
                               index_name=name, processes=processes, batch_size=batch_size,
                               **params)
    except redis.RedisError as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ServiceError(f"LSH store {store.describe()}: {reason}") from None


def dedup(
    train: Annotated[Path, typer.Argument(help="Training-side JSONL file.")],
    test: Annotated[Path, typer.Argument(help="Test-side JSONL file; each line is labelled.")],
    threshold: float = typer.Option(0.7, "--threshold", help="Jaccard at or above: repeated."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
    field: str = typer.Option(None, "--field",
                              help=f"Text field (default: first of {', '.join(TEXT_FIELDS)})."),
    shingle: str = typer.Option("word", "--shingle", help="word or char n-grams."),
    n: int = typer.Option(3, "--ngram", help="Shingle size (words or characters)."),
    mask_numbers: bool = typer.Option(False, "--mask-numbers",
                                      help="Treat all numbers as equal."),
    num_perm: int = typer.Option(128, "--num-perm", help="MinHash permutations."),
    lsh_store: str = typer.Option(None, "--lsh-store", help=(
        "redis://HOST:PORT/DB: keep the LSH index in Redis and stream TRAIN (bounded memory; "
        "a finished index of the same TRAIN and settings is reused).")),
    processes: int = typer.Option(1, "--processes", min=1,
                                  help="Worker processes for TRAIN's signatures (--lsh-store)."),
    batch_size: int = typer.Option(DEFAULT_BATCH, "--batch-size", min=1,
                                   help="TRAIN items read and signed at a time (--lsh-store)."),
) -> None:
    """Label each TEST item repeated (a TRAIN item within the Jaccard threshold) or novel."""
    if not 0.0 < threshold <= 1.0:
        raise BadInputError(f"--threshold must be in (0, 1], got {threshold}")
    if shingle not in ("word", "char"):
        raise BadInputError(f"--shingle must be 'word' or 'char', got {shingle!r}")
    if n < 1 or num_perm < 2:
        raise BadInputError("--ngram must be >= 1 and --num-perm >= 2")
    if lsh_store is not None:
        test_texts = read_texts(test, field)
        result = _label_with_redis(train, test_texts, field, lsh_store, processes, batch_size,
                                   threshold=threshold, num_perm=num_perm, shingle=shingle, n=n,
                                   mask_numbers=mask_numbers)
    else:
        train_texts = read_texts(train, field)
        test_texts = read_texts(test, field)
        result = label_test_items(train_texts, test_texts, threshold=threshold,
                                  num_perm=num_perm, shingle=shingle,  # type: ignore[arg-type]
                                  n=n, mask_numbers=mask_numbers)
    summary = result.summary | {"train": str(train), "test": str(test)}
    if as_json:
        print_json({
            "items": [{"index": lab.index, "label": lab.label,
                       # index None (jaccard 0.0) when LSH proposed no candidate at all
                       "best_match": {"index": lab.best_match_index, "jaccard": lab.best_jaccard},
                       "matches": [{"index": i, "jaccard": s} for i, s in lab.matches]}
                      for lab in result.items],
            "summary": summary,
        })
        return
    for lab in result.items:
        best = (f"train {lab.best_match_index} jaccard {lab.best_jaccard:.3f}"
                if lab.best_match_index is not None else "no candidate")
        typer.echo(f"{lab.index}\t{lab.label}\t{best}")
    typer.echo(f"summary: {summary['repeated']} of {summary['n_test']} test items repeated, "
               f"{summary['novel']} novel (threshold {threshold}, {shingle} {n}-grams, "
               f"{summary['timings_s']['total']:.2f}s)")


def register(app: typer.Typer) -> None:
    """Add ``retest dedup`` to ``app``."""
    app.command("dedup")(dedup)
