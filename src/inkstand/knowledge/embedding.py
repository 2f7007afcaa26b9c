"""Text -> vectors for semantic search: the `Embedder` seam and its two kinds.

    embedder = open_embedder(settings)           # None: no embedding model, keyword search only
    vectors = embedder.embed(["a chunk", ...])   # float32 (len(texts), dimensions), rows of norm 1
    embedder.close()

`LlamaEmbedder` runs a GGUF in llama.cpp's embedding mode inside this process, on ONE thread:
ggml's worker threads spin while they wait, and on a small machine a second spinning pool
beside the engine's slows both several-fold. A model that declares its pooling (embedding
models do: CLS, mean, last token) keeps it; a generative model declares none and gives
per-token vectors, so llama.cpp is asked to mean-pool them. Its context holds
`CONTEXT_TOKENS` (or the model's trained context, if smaller), enough for a whole chunk
(2,000 characters are 450-650 tokens of English); a longer text is cut there. A llama.cpp
context is not thread-safe: each text is embedded under a lock that is handed over in
arrival order, so a question waits for the one chunk being embedded, never for a file.

`UpstreamEmbedder` posts to an OpenAI-compatible `/embeddings` (vLLM, llama-server with
`--embeddings`, Ollama, OpenAI), `UPSTREAM_BATCH` texts a request.

`name` identifies the vector space: vectors are stored under it (`chunk_vectors.model`) and
only vectors of the configured name are compared with a question, so a change of model
re-embeds the chunks rather than mixing spaces. Every vector is L2-normalised here, so a dot
product is the cosine. Any failure surfaces as `EmbeddingError`, chained to the native one;
callers keep keyword search working on it (knowledge/ingest.py, knowledge/hybrid.py).
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any, Protocol

import httpx
import numpy as np

from inkstand.config import Settings, embedding_gguf

logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)

import llama_cpp as L  # noqa: E402  (after quieting its logger, which it reads at load)

CONTEXT_TOKENS = 1024  # one chunk (knowledge/ingest.py MAX_CHUNK_CHARS) and then some
UPSTREAM_BATCH = 64  # texts per /embeddings request
CONNECT_TIMEOUT = 5.0
READ_TIMEOUT = 120.0  # an engine embedding a batch of long chunks on a CPU takes its time

log = logging.getLogger("inkstand.embedding")


class EmbeddingError(Exception):
    """The embedding model could not embed; the message says which and why."""


class Embedder(Protocol):
    name: str  # the vector space: the model, as stored beside each vector

    @property
    def dimensions(self) -> int:
        """The vectors' length (0 for an upstream engine that has not answered yet)."""
        ...

    def embed(self, texts: list[str]) -> np.ndarray:
        """One float32 row of norm 1 per text, in order; EmbeddingError on any failure."""
        ...

    def close(self) -> None: ...


def open_embedder(settings: Settings) -> Embedder | None:
    """The configured embedding model (`embedding_model` or `embedding_url`), or None."""
    path = embedding_gguf(settings)
    if path is not None:
        return LlamaEmbedder(path)
    if settings.embedding_url:
        key = (
            os.environ.get(settings.embedding_api_key_env, "")
            if settings.embedding_api_key_env
            else ""
        )
        return UpstreamEmbedder(settings.embedding_url, settings.embedding_upstream_model, key)
    return None


def normalised(rows: np.ndarray) -> np.ndarray:
    """`rows` as float32 with each row of norm 1 (a zero row stays zero)."""
    matrix = np.asarray(rows, dtype=np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    return matrix / np.where(norms == 0, 1, norms)


class FifoLock:
    """A lock taken in arrival order (`threading.Lock` lets the thread that just released it
    take it again at once, so a question could wait behind a whole file's chunks)."""

    def __init__(self) -> None:
        self._turns = threading.Condition()
        self._next = 0
        self._serving = 0

    def __enter__(self) -> None:
        with self._turns:
            ticket = self._next
            self._next += 1
            while ticket != self._serving:
                self._turns.wait()

    def __exit__(self, *exc: object) -> None:
        with self._turns:
            self._serving += 1
            self._turns.notify_all()


class LlamaEmbedder:
    """A GGUF in llama.cpp's embedding mode, in this process, on one thread.

    Driven through llama.cpp's C API, as the chat backend is (backends/llama_cpp.py): the
    high-level `Llama` class redirects the process's stdout and stderr while it loads, which
    a server with other threads should not have done to it. One text a decode, as one
    sequence; its pooled vector is read back.
    """

    def __init__(self, path: str, *, context: int = CONTEXT_TOKENS) -> None:
        self.path = path
        self.name = f"gguf:{Path(path).name}:{Path(path).stat().st_size}"
        self._lock = FifoLock()
        L.llama_backend_init()
        self._model = L.llama_model_load_from_file(path.encode(), L.llama_model_default_params())
        if not self._model:
            raise EmbeddingError(f"llama.cpp could not load {path}: is it a GGUF model file?")
        self._vocab = L.llama_model_get_vocab(self._model)
        trained = int(L.llama_model_n_ctx_train(self._model))
        self.context = min(context, trained) if trained > 0 else context
        self._ctx = self._new_context(L.LLAMA_POOLING_TYPE_UNSPECIFIED)
        pooling = L.llama_pooling_type(self._ctx)
        if pooling == L.LLAMA_POOLING_TYPE_NONE:  # a generative model: mean-pool its tokens
            L.llama_free(self._ctx)
            self._ctx = self._new_context(L.LLAMA_POOLING_TYPE_MEAN)
        elif pooling == L.LLAMA_POOLING_TYPE_RANK:
            self.close()
            raise EmbeddingError(f"{path} is a reranker, not an embedding model")
        self._dimensions = int(L.llama_model_n_embd(self._model))
        self._batch = L.llama_batch_init(self.context, 0, 1)

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def _new_context(self, pooling: int) -> Any:
        params = L.llama_context_default_params()
        params.embeddings = True
        params.pooling_type = pooling
        params.n_ctx = self.context
        params.n_batch = self.context  # a pooled sequence must fit one batch and one ubatch
        params.n_ubatch = self.context
        params.n_seq_max = 1
        params.n_threads = 1  # ggml's workers spin: one thread (see the module docstring)
        params.n_threads_batch = 1
        params.no_perf = True
        ctx = L.llama_init_from_model(self._model, params)
        if not ctx:
            L.llama_model_free(self._model)
            raise EmbeddingError(f"llama.cpp could not make an embedding context for {self.path}")
        return ctx

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = np.zeros((len(texts), self._dimensions), dtype=np.float32)
        for at, text in enumerate(texts):
            tokens = self._tokens(text)
            with self._lock:
                rows[at] = self._embed(tokens)
        return normalised(rows)

    def _tokens(self, text: str) -> list[int]:
        data = text.encode("utf-8")
        capacity = len(data) + 8
        buf = (L.llama_token * capacity)()
        n = L.llama_tokenize(self._vocab, data, len(data), buf, capacity, True, False)
        if n < 0:
            raise EmbeddingError(f"llama.cpp could not tokenize a text of {len(data)} bytes")
        return list(buf[: min(n, self.context)])  # longer than the context: cut

    def _embed(self, tokens: list[int]) -> np.ndarray:
        if self._ctx is None:
            raise EmbeddingError("the embedding model is closed")
        batch = self._batch
        batch.n_tokens = len(tokens)
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = i
            batch.n_seq_id[i] = 1
            batch.seq_id[i][0] = 0
            batch.logits[i] = True  # embeddings are read from every token's output
        L.llama_memory_clear(L.llama_get_memory(self._ctx), True)
        status = L.llama_decode(self._ctx, batch)
        if status != 0:
            raise EmbeddingError(f"llama.cpp failed to embed with {self.path} (decode {status})")
        pointer = L.llama_get_embeddings_seq(self._ctx, 0)
        if not pointer:
            raise EmbeddingError(f"llama.cpp gave no embedding with {self.path}")
        return np.ctypeslib.as_array(pointer, shape=(self._dimensions,)).copy()

    def close(self) -> None:
        with self._lock:
            if getattr(self, "_batch", None) is not None:
                L.llama_batch_free(self._batch)
                self._batch = None
            if getattr(self, "_ctx", None) is not None:
                L.llama_free(self._ctx)
                self._ctx = None
            if self._model is not None:
                L.llama_model_free(self._model)
                self._model = None


class UpstreamEmbedder:
    """An OpenAI-compatible engine's `POST {url}/embeddings`."""

    def __init__(self, url: str, model: str, key: str = "", *, transport: Any = None) -> None:
        self.url = url.rstrip("/")
        self.model = model
        self.name = f"openai:{model}"
        self._dimensions = 0
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        timeout = httpx.Timeout(READ_TIMEOUT, connect=CONNECT_TIMEOUT)
        self._client = httpx.Client(headers=headers, timeout=timeout, transport=transport)

    @property
    def dimensions(self) -> int:
        return self._dimensions

    def embed(self, texts: list[str]) -> np.ndarray:
        rows = [
            row
            for at in range(0, len(texts), UPSTREAM_BATCH)
            for row in self._request(texts[at : at + UPSTREAM_BATCH])
        ]
        if not rows:
            return np.zeros((0, self._dimensions), dtype=np.float32)
        return normalised(np.asarray(rows, dtype=np.float32))

    def _request(self, texts: list[str]) -> list[list[float]]:
        where = f"the embedding engine at {self.url}"
        try:
            response = self._client.post(
                f"{self.url}/embeddings", json={"model": self.model, "input": texts}
            )
        except httpx.HTTPError as exc:
            raise EmbeddingError(f"{where} could not be reached: {exc!r}") from exc
        if response.status_code != 200:
            raise EmbeddingError(
                f"{where} answered {response.status_code}: {response.text[:200]!r}"
            )
        try:
            data = sorted(response.json()["data"], key=lambda item: item["index"])
            rows = [[float(x) for x in item["embedding"]] for item in data]
        except (ValueError, KeyError, TypeError) as exc:
            raise EmbeddingError(f"{where} sent an answer that is not embeddings: {exc!r}") from exc
        self._check_shape(rows, len(texts), where)
        return rows

    def _check_shape(self, rows: list[list[float]], count: int, where: str) -> None:
        lengths = {len(row) for row in rows}
        if len(rows) != count or len(lengths) != 1:
            raise EmbeddingError(
                f"{where} sent {len(rows)} vectors of lengths {lengths} for {count} texts"
            )
        (length,) = lengths
        if self._dimensions and length != self._dimensions:
            raise EmbeddingError(
                f"{where} sent vectors of {length} numbers, earlier ones had {self._dimensions}"
            )
        self._dimensions = length

    def close(self) -> None:
        self._client.close()
