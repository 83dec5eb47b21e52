"""``retest dedup TRAIN TEST --lsh-store redis://...`` against a real ``redis-server``.

The server (Debian's ``redis-server``) is started on 127.0.0.1 by the test and skipped with a
reason where it is not installed. The streamed, Redis-indexed path must give the in-memory
path's labels item for item; the signature pass fanned out over processes must give the
single-process signatures bit for bit; a finished index is reused, a partial one rebuilt.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from scale_servers import free_port, or_skip, redis_server

from agent.cli import main
from agent.commands.dedup import index_name
from evals.dedup import label_test_items, text_signatures
from evals.dedup.lsh_store import (
    RedisLSHStore,
    label_streaming,
    sign_batch,
    stream_signatures,
)

WORDS = [f"w{k}" for k in range(400)]


def _docs(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(40, 60))) for _ in range(count)]


def _near(text: str, rng: random.Random, edits: int) -> str:
    words = text.split()
    for _ in range(edits):
        words[rng.randrange(len(words))] = rng.choice(WORDS)
    return " ".join(words)


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with or_skip(redis_server()) as url:
        yield url


@pytest.fixture
def corpus(tmp_path: Path) -> tuple[Path, Path, list[str], list[str]]:
    """A training file and a test file with planted near-duplicates (and one empty item)."""
    rng = random.Random(7)
    train = _docs(600, 1) + [""]
    test = ([_near(train[i], rng, 1) for i in range(0, 300, 15)]  # 20 near copies
            + [train[3]] + _docs(25, 2) + [""])
    for name, texts in (("train", train), ("test", test)):
        (tmp_path / f"{name}.jsonl").write_text(
            "".join(json.dumps({"text": t}) + "\n" for t in texts), encoding="utf-8")
    return tmp_path / "train.jsonl", tmp_path / "test.jsonl", train, test


@pytest.mark.parametrize("shingle", ["word", "char"])
def test_signature_fan_out_equals_single_process(shingle: str) -> None:
    texts = _docs(230, 3) + ["", "a"]
    params = {"shingle": shingle, "n": 3, "num_perm": 64, "seed": 5, "mask_numbers": False}
    single = sign_batch(texts, params)
    fanned = np.concatenate(list(stream_signatures(iter(texts), params, batch_size=17,
                                                   processes=2)))
    assert fanned.dtype == single.dtype and np.array_equal(fanned, single)
    if shingle == "word":
        assert np.array_equal(single, text_signatures(texts, num_perm=64, seed=5))
    other_seed = sign_batch(texts, params | {"seed": 6})
    assert not np.array_equal(other_seed, single)  # the seed is what the workers must share


def test_cli_redis_labels_equal_in_memory(redis_url: str, corpus: tuple, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    train, test, _, _ = corpus
    assert main(["dedup", str(train), str(test), "--json"]) == 0
    memory = json.loads(capsys.readouterr().out)
    args = ["dedup", str(train), str(test), "--json", "--lsh-store", redis_url,
            "--processes", "2", "--batch-size", "64"]
    assert main(args) == 0
    streamed = json.loads(capsys.readouterr().out)
    assert streamed["items"] == memory["items"]
    assert streamed["summary"]["repeated"] == memory["summary"]["repeated"] >= 21
    assert streamed["summary"]["novel"] >= 25
    assert streamed["summary"]["index_reused"] is False
    assert streamed["summary"]["n_train"] == 601
    assert (streamed["summary"]["lsh_bands"], streamed["summary"]["lsh_rows"]) == (
        memory["summary"]["lsh_bands"], memory["summary"]["lsh_rows"])
    client = redis.Redis.from_url(redis_url)
    name = streamed["summary"]["lsh_index"]
    buckets = list(client.scan_iter(match=f"retest-lsh-{name}_bucket_*".encode(), count=1000))
    assert len(buckets) > 600  # the index lives in Redis, not in the process
    # A second run (another test set would do the same) reuses the finished index.
    assert main(args) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["summary"]["index_reused"] is True and again["items"] == memory["items"]


def test_partial_index_is_dropped_and_rebuilt(redis_url: str, corpus: tuple) -> None:
    train, _, train_texts, test_texts = corpus
    store = RedisLSHStore.from_url(redis_url)
    params = {"shingle": "word", "n": 3, "mask_numbers": False, "num_perm": 128,
              "threshold": 0.7}
    name = index_name(train, None, params) + "-partial"
    client = store.client()
    junk = f"retest-lsh-{name}_bucket_junk".encode()
    client.sadd(junk, b"left by a killed build")  # no completion marker: a partial index
    result = label_streaming(lambda: iter(train_texts), test_texts, store=store,
                             index_name=name, batch_size=100)
    assert not client.exists(junk)
    expected = label_test_items(train_texts, test_texts)
    assert [(x.label, x.matches) for x in result.items] == [
        (x.label, x.matches) for x in expected.items]


def test_bad_and_unreachable_store_are_one_line(corpus: tuple,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    train, test, _, _ = corpus
    assert main(["dedup", str(train), str(test), "--lsh-store", "http://x:1/0"]) == 2
    err = capsys.readouterr().err.strip()
    assert "redis://HOST:PORT/DB" in err and "\n" not in err
    url = f"redis://127.0.0.1:{free_port()}/0"
    assert main(["dedup", str(train), str(test), "--lsh-store", url]) == 1
    err = capsys.readouterr().err.strip()
    assert f"LSH store {url}" in err and "\n" not in err
