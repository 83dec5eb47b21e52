"""Dedup math: normalization, shingles, Jaccard, datasketch-identical signatures, labels, CLI."""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
from datasketch import LeanMinHash, MinHash, MinHashLSH
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.cli import main
from evals.dedup import (
    build_lsh,
    char_shingles,
    jaccard,
    label_test_items,
    lean_minhashes,
    minhash_signatures,
    normalize,
    shingle_texts,
    text_signatures,
    word_shingles,
)

# ---------------------------------------------------------------------------- text


@pytest.mark.parametrize(("text", "mask", "expected"), [
    ("Hello, World!", False, "hello world"),
    ("  many   spaces\n\tand tabs ", False, "many spaces and tabs"),
    ("Ｆｕｌｌwidth ＡＢＣ", False, "fullwidth abc"),  # NFKC folds compatibility forms
    ("snake_case-and-dashes", False, "snake case and dashes"),
    ("I paid $1,200.50 for 3 items", False, "i paid 1 200 50 for 3 items"),
    ("I paid $1,200.50 for 3 items", True, "i paid 0 for 0 items"),
    ("Café déjà vu", False, "café déjà vu"),
    ("", False, ""),
])
def test_normalize(text: str, mask: bool, expected: str) -> None:
    assert normalize(text, mask_numbers=mask) == expected


@given(st.text(alphabet=st.characters(max_codepoint=127), max_size=60), st.booleans())
def test_ascii_fast_path_equals_regex_path(text: str, mask: bool) -> None:
    # A trailing non-ASCII space forces the general (NFKC + regex) path on the same text.
    assert normalize(text, mask_numbers=mask) == normalize(text + "\u3000", mask_numbers=mask)


def test_number_masking_makes_number_variants_equal() -> None:
    a = normalize("Tom has 12 apples and buys 30 more.", mask_numbers=True)
    b = normalize("Tom has 7 apples and buys 4.5 more.", mask_numbers=True)
    assert a == b
    assert normalize("Tom has 12 apples") != normalize("Tom has 7 apples")


@pytest.mark.parametrize(("text", "n", "expected"), [
    ("a b c d", 2, {"a b", "b c", "c d"}),
    ("a b c d", 3, {"a b c", "b c d"}),
    ("a b", 3, {"a b"}),
    ("a b a b a", 2, {"a b", "b a"}),
    ("", 3, set()),
    ("one", 1, {"one"}),
])
def test_word_shingles(text: str, n: int, expected: set[str]) -> None:
    assert word_shingles(text, n) == expected


@pytest.mark.parametrize(("text", "n", "expected"), [
    ("abcd", 2, {"ab", "bc", "cd"}),
    ("abc", 5, {"abc"}),
    ("aaaa", 2, {"aa"}),
    ("", 2, set()),
])
def test_char_shingles(text: str, n: int, expected: set[str]) -> None:
    assert char_shingles(text, n) == expected


@pytest.mark.parametrize("bad", [0, -1])
def test_shingle_size_must_be_positive(bad: int) -> None:
    with pytest.raises(ValueError, match="shingle size"):
        word_shingles("a b", bad)
    with pytest.raises(ValueError, match="shingle size"):
        char_shingles("ab", bad)


@pytest.mark.parametrize(("a", "b", "expected"), [
    ({"x", "y"}, {"x", "y"}, 1.0),
    ({"x", "y"}, {"z"}, 0.0),
    ({"a", "b", "c"}, {"b", "c", "d"}, 0.5),
    ({"a"}, set(), 0.0),
    (set(), set(), 0.0),
    (set("abcdefghij"), set("abcdefg"), 0.7),
])
def test_jaccard(a: set[str], b: set[str], expected: float) -> None:
    assert jaccard(a, b) == pytest.approx(expected)


@given(st.sets(st.text(max_size=3), max_size=12), st.sets(st.text(max_size=3), max_size=12))
def test_jaccard_properties(a: set[str], b: set[str]) -> None:
    value = jaccard(a, b)
    assert 0.0 <= value <= 1.0
    assert value == jaccard(b, a)
    if a:
        assert jaccard(a, a) == 1.0
    if a and b and not (a & b):
        assert value == 0.0


# ---------------------------------------------------------------------------- signatures


def _reference(sets: list[set[str]], num_perm: int, seed: int, scheme: str) -> np.ndarray:
    rows = []
    for shingles in sets:
        m = MinHash(num_perm=num_perm, seed=seed, scheme=scheme)
        for s in shingles:
            m.update(s.encode("utf8"))
        rows.append(m.hashvalues)
    return np.array(rows)


def _docs(count: int, seed: int = 0) -> list[set[str]]:
    rng = random.Random(seed)
    vocab = [f"w{i}" for i in range(300)] + ["naïve", "日本語", "emoji😀", ""]
    docs = [word_shingles(" ".join(rng.choices(vocab, k=rng.randint(0, 40))), 3)
            for _ in range(count)]
    return [*docs, set(), {"only one"}, {"dup", "dup "}]


@pytest.mark.parametrize("use_jit", [False, True], ids=["numpy", "jit"])
@pytest.mark.parametrize("scheme", ["affine32", "affine64", "legacy"])
@pytest.mark.parametrize(("num_perm", "seed"), [(128, 1), (64, 7), (256, 42), (1, 3), (17, 0)])
def test_signatures_bit_identical_to_datasketch(scheme: str, num_perm: int, seed: int,
                                                use_jit: bool) -> None:
    if use_jit:
        pytest.importorskip("numba", reason="the compiled kernel needs numba")
    docs = _docs(60, seed) + [{"x" * 130, "y" * 55, "z" * 56, "é" * 40}]  # multi-block SHA-1
    ours = minhash_signatures(docs, num_perm=num_perm, seed=seed,
                              scheme=scheme, use_jit=use_jit)  # type: ignore[arg-type]
    ref = _reference(docs, num_perm, seed, scheme)
    assert ours.dtype == ref.dtype
    assert ours.shape == (len(docs), num_perm)
    assert np.array_equal(ours, ref)


def test_signatures_match_bulk_and_default_minhash() -> None:
    """The default scheme is datasketch's default: plain ``MinHash()`` agrees with no arguments."""
    docs = _docs(30)
    bulk = MinHash.bulk([[s.encode() for s in d] for d in docs])
    assert np.array_equal(minhash_signatures(docs), np.array([m.hashvalues for m in bulk]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sets(st.text(max_size=6), max_size=8), min_size=1, max_size=6),
       st.integers(min_value=0, max_value=2**32 - 1))
def test_signatures_property(docs: list[set[str]], seed: int) -> None:
    assert np.array_equal(minhash_signatures(docs, num_perm=16, seed=seed),
                          _reference(docs, 16, seed, "affine32"))


@pytest.mark.parametrize("use_jit", [False, True], ids=["numpy", "jit"])
@pytest.mark.parametrize("scheme", ["affine32", "affine64", "legacy"])
@pytest.mark.parametrize("n", [1, 3, 5])
def test_text_signatures_equal_shingle_path(use_jit: bool, scheme: str, n: int) -> None:
    if use_jit:
        pytest.importorskip("numba", reason="the compiled kernel needs numba")
    rng = random.Random(n)
    vocab = ["alpha", "beta", "Gamma,", "δέλτα", "x" * 60, "12.5", "--", "  "]
    texts = [" ".join(rng.choices(vocab, k=rng.randint(0, 30))) for _ in range(80)]
    texts += ["", "one", "one two", "a a a a a a", "  Spaced   OUT\ttext!  "]
    expected = minhash_signatures(shingle_texts(texts, n=n), scheme=scheme, use_jit=False)  # type: ignore[arg-type]
    got = text_signatures(texts, n=n, scheme=scheme, use_jit=use_jit)  # type: ignore[arg-type]
    assert np.array_equal(got, expected)
    masked = text_signatures(texts, n=n, mask_numbers=True, use_jit=use_jit)
    assert np.array_equal(masked, minhash_signatures(shingle_texts(texts, n=n, mask_numbers=True)))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet=st.characters(max_codepoint=0x24F), max_size=40), max_size=8),
       st.integers(min_value=1, max_value=4))
def test_text_signatures_property(texts: list[str], n: int) -> None:
    """The compiled path's in-kernel ASCII normalization equals normalize() on any text."""
    pytest.importorskip("numba", reason="the compiled kernel needs numba")
    expected = minhash_signatures(shingle_texts(texts, n=n), num_perm=8, use_jit=False)
    assert np.array_equal(text_signatures(texts, n=n, num_perm=8, use_jit=True), expected)


def test_chunking_and_processes_do_not_change_signatures() -> None:
    docs = _docs(200)
    base = minhash_signatures(docs)
    assert np.array_equal(minhash_signatures(docs, chunk_docs=1), base)
    assert np.array_equal(minhash_signatures(docs, chunk_docs=7), base)
    assert np.array_equal(minhash_signatures(docs, processes=2), base)
    assert np.array_equal(minhash_signatures(docs, processes=2, use_jit=False), base)


def test_empty_input_and_bad_parameters() -> None:
    assert minhash_signatures([], num_perm=8).shape == (0, 8)
    with pytest.raises(ValueError):
        minhash_signatures([{"a"}], num_perm=0)
    with pytest.raises(ValueError):
        minhash_signatures([{"a"}], scheme="md5")  # type: ignore[arg-type]


def test_signatures_work_in_datasketch_lsh() -> None:
    docs = [word_shingles(normalize(t), 2) for t in (
        "the cat sat on the mat today", "the cat sat on the mat today again",
        "completely different words here", "the cat sat on the mat")]
    sigs = minhash_signatures(docs)
    leans = lean_minhashes(sigs)
    ref = MinHash.bulk([[s.encode() for s in d] for d in docs])
    assert leans[0].jaccard(leans[1]) == ref[0].jaccard(ref[1])
    lsh = MinHashLSH(threshold=0.5, num_perm=128)
    for i, lean in enumerate(leans[:3]):
        lsh.insert(i, lean)
    assert 0 in lsh.query(ref[3])  # a datasketch-made MinHash finds our signature's bucket
    assert 2 not in lsh.query(LeanMinHash(ref[3]))


def test_build_lsh_equals_public_inserts() -> None:
    docs = _docs(150) + [set()]
    sigs = minhash_signatures(docs)
    keep = np.array([bool(d) for d in docs])
    fast = build_lsh(sigs, threshold=0.5, keep=keep)
    ref = MinHashLSH(threshold=0.5, num_perm=128)
    for i in np.flatnonzero(keep):
        ref.insert(int(i), LeanMinHash(seed=1, hashvalues=sigs[i], scheme="affine32"))
    assert (fast.b, fast.r) == (ref.b, ref.r)
    assert fast.keys._dict == ref.keys._dict
    assert all(a._dict == b._dict for a, b in zip(fast.hashtables, ref.hashtables, strict=True))
    probe = LeanMinHash(seed=1, hashvalues=sigs[3], scheme="affine32")
    assert sorted(fast.query(probe)) == sorted(ref.query(probe)) and 3 in fast.query(probe)
    with pytest.raises(ValueError, match="scheme"):  # the index still enforces its scheme
        fast.query(LeanMinHash(seed=1, hashvalues=sigs[3].astype(np.uint64), scheme="legacy"))


# ---------------------------------------------------------------------------- labels


@pytest.mark.parametrize(("threshold", "label"), [(0.69, "repeated"), (0.7, "repeated"),
                                                  (0.71, "novel")])
def test_label_at_the_threshold_edge(threshold: float, label: str) -> None:
    train = ["a b c d e f g h i j", "k l m n o p q r s t"]
    test = ["a b c d e f g"]  # 7 of the first item's 10 unigrams: Jaccard exactly 0.7
    result = label_test_items(train, test, threshold=threshold, shingle="word", n=1)
    item = result.items[0]
    assert item.label == label
    assert item.best_match_index == 0
    assert item.best_jaccard == pytest.approx(0.7)
    assert (item.matches == [(0, 0.7)]) == (label == "repeated")


def test_labels_list_all_matches_best_first_and_summary() -> None:
    train = ["Tom buys 3 apples and 4 pears at the market on Monday",
             "Tom buys 5 apples and 9 pears at the market on Monday",
             "A train leaves the station at noon going east"]
    test = ["Tom buys 3 apples and 4 pears at the market on Monday",
            "Whales are the largest animals that ever lived on earth"]
    plain = label_test_items(train, test, threshold=0.9)
    assert [lab.label for lab in plain.items] == ["repeated", "novel"]
    assert plain.items[0].matches == [(0, 1.0)]
    masked = label_test_items(train, test, threshold=0.9, mask_numbers=True)
    assert [m[0] for m in masked.items[0].matches] == [0, 1]
    assert masked.items[1].best_match_index is None and masked.items[1].best_jaccard == 0.0
    summary = masked.summary
    assert (summary["repeated"], summary["novel"], summary["n_train"]) == (1, 1, 3)
    assert summary["lsh_threshold"] < summary["threshold"]
    assert set(summary["timings_s"]) == {"fingerprint", "index", "query_verify", "total"}


@pytest.mark.parametrize("shingle", ["word", "char"])
def test_labels_same_with_compiled_kernel(shingle: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("numba", reason="the compiled kernel needs numba")
    rng = random.Random(5)
    vocab = [f"w{k}" for k in range(40)]
    train = [" ".join(rng.choices(vocab, k=12)) for _ in range(120)]
    test = [t if k % 3 else " ".join(t.split()[:-1]) for k, t in enumerate(train[:30])]
    test += [" ".join(rng.choices(vocab, k=12)) for _ in range(30)] + [""]
    plain = label_test_items(train, test, threshold=0.6, shingle=shingle)  # type: ignore[arg-type]
    monkeypatch.setattr("evals.dedup.near_dup.JIT_MIN_DOCS", 1)
    jit = label_test_items(train, test, threshold=0.6, shingle=shingle)  # type: ignore[arg-type]
    assert not plain.summary["compiled_kernel"] and jit.summary["compiled_kernel"]
    assert jit.items == plain.items
    assert sum(lab.label == "repeated" for lab in jit.items) >= 30


def test_empty_texts_are_novel() -> None:
    result = label_test_items(["", "some words here"], ["", "!!!"], threshold=0.5)
    assert [lab.label for lab in result.items] == ["novel", "novel"]


def _exact_best(train_sets: list[set[str]], test_sets: list[set[str]]) -> np.ndarray:
    """Best exact Jaccard of each test set over all training sets (sparse brute force)."""
    from scipy.sparse import csr_matrix

    vocab: dict[str, int] = {}

    def matrix(sets: list[set[str]]) -> csr_matrix:
        rows, cols = [], []
        for r, shingles in enumerate(sets):
            for s in shingles:
                rows.append(r)
                cols.append(vocab.setdefault(s, len(vocab)))
        return rows, cols

    tr, te = matrix(train_sets), matrix(test_sets)
    shape = len(vocab)
    a = csr_matrix((np.ones(len(te[0])), te), shape=(len(test_sets), shape))
    b = csr_matrix((np.ones(len(tr[0])), tr), shape=(len(train_sets), shape))
    inter = (a @ b.T).tocoo()
    sizes_a = np.array([len(s) for s in test_sets])
    sizes_b = np.array([len(s) for s in train_sets])
    best = np.zeros(len(test_sets))
    jac = inter.data / (sizes_a[inter.row] + sizes_b[inter.col] - inter.data)
    np.maximum.at(best, inter.row, jac)
    return best


@pytest.mark.shared
def test_lsh_labels_equal_brute_force_on_elementary_math_qa(shared_data: Path) -> None:
    """On real near-duplicates, verified LSH finds (almost) every pair brute force finds."""
    from evals.datasets import load_bigbench, seeded_split

    items = load_bigbench(shared_data / "benchmarks/bigbench/elementary_math_qa/question_only")
    train, test = seeded_split(items, 0.2, seed=0)
    train_texts, test_texts = [i.prompt for i in train], [i.prompt for i in test]
    result = label_test_items(train_texts, test_texts, threshold=0.7)
    exact = _exact_best(shingle_texts(train_texts), shingle_texts(test_texts))
    truth = exact >= 0.7
    ours = np.array([lab.label == "repeated" for lab in result.items])
    assert not (ours & ~truth).any(), "a verified label can never be a false positive"
    recall = (ours & truth).sum() / truth.sum()
    assert recall >= 0.99, f"LSH recall {recall:.3f}"
    # The data README: about half of a random 20% split has a >= 0.7 match in the rest.
    assert 0.3 < truth.mean() < 0.7
    for lab in result.items:
        if lab.label == "repeated":
            assert lab.best_jaccard == pytest.approx(exact[lab.index], abs=1e-6)


# ---------------------------------------------------------------------------- CLI


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_cli_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    train = _jsonl(tmp_path / "train.jsonl", [
        {"question": "Tom buys 3 apples and 4 pears at the market on Monday morning"},
        {"question": "A train leaves the station at noon going east at high speed"}])
    test = _jsonl(tmp_path / "test.jsonl", [
        {"question": "A train leaves the station at noon going east at high speed!"},
        {"question": "Whales are the largest animals that ever lived"}])
    assert main(["dedup", str(train), str(test), "--json", "--threshold", "0.8"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert [(i["index"], i["label"]) for i in out["items"]] == [(0, "repeated"), (1, "novel")]
    assert out["items"][0]["best_match"] == {"index": 1, "jaccard": 1.0}
    assert out["summary"]["repeated"] == 1 and out["summary"]["threshold"] == 0.8


def test_cli_text_and_field_detection(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    chat = [{"role": "system", "content": "Answer A or B."},
            {"role": "user", "content": "Ice melts faster when it is warmer or colder? A: warmer"}]
    train = _jsonl(tmp_path / "a.jsonl", [{"input": chat, "ideal": "A"}])
    test = _jsonl(tmp_path / "b.jsonl", [{"input": chat, "ideal": "A"}])
    assert main(["dedup", str(train), str(test)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("0\trepeated\ttrain 0 jaccard 1.000")
    assert out[-1].startswith("summary: 1 of 1 test items repeated")
    other = _jsonl(tmp_path / "c.jsonl", [{"body": "a b c"}])
    assert main(["dedup", str(other), str(other), "--field", "body", "--json"]) == 0


@pytest.mark.parametrize(("rows", "message"), [
    (None, "no such file"),
    ("not json\n", ":1: not valid JSON"),
    ('{"question": "ok"}\n{"question": 3\n', ":2: not valid JSON"),
    ('{"title": "x"}\n', ":1: no text field"),
    ('{"question": "a"}\n{"other": "b"}\n', ":2: field 'question' is missing"),
    ("", "no items"),
])
def test_cli_bad_files_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                              rows: str | None, message: str) -> None:
    good = _jsonl(tmp_path / "good.jsonl", [{"question": "fine text"}])
    bad = tmp_path / "bad.jsonl"
    if rows is not None:
        bad.write_text(rows, encoding="utf-8")
    assert main(["dedup", str(good), str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err and "bad.jsonl" in err


def test_cli_bad_threshold(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = _jsonl(tmp_path / "good.jsonl", [{"question": "fine text"}])
    assert main(["dedup", str(good), str(good), "--threshold", "1.5"]) == 2
    assert "--threshold" in capsys.readouterr().err
