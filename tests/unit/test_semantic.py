"""Vectors beside the chunks: the ingestion worker embeds new files' chunks before marking
them completed, backfills chunks that have none, loses nothing when embedding fails, and
leaves no vector behind a deleted chunk; the real embedded GGUF finds a chunk by meaning."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

from inkstand.config import find_embedded_model
from inkstand.knowledge.embedding import EmbeddingError, LlamaEmbedder
from inkstand.knowledge.hybrid import retrieve
from inkstand.knowledge.ingest import EMBED_BATCH, Ingestion
from inkstand.knowledge.search import search
from inkstand.knowledge.semantic import SemanticSearch
from inkstand.store import Store, open_store

NOW = "2026-11-29T00:00:00Z"


class CountingEmbedder:
    """A vector from each text's letters; `before` runs ahead of each call, `failure` fails it."""

    name = "letters"
    dimensions = 26

    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.failure: str | None = None
        self.before: Callable[[list[str]], None] | None = None

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.before is not None:
            self.before(texts)
        if self.failure:
            raise EmbeddingError(self.failure)
        self.calls.append(texts)
        rows = np.ones((len(texts), 26), dtype=np.float32)
        for row, text in zip(rows, texts, strict=True):
            for letter in text.lower():
                if "a" <= letter <= "z":
                    row[ord(letter) - 97] += 1
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def close(self) -> None:
        pass


@pytest.fixture
def store() -> Iterator[Store]:
    store = open_store(None)
    store.conn.execute("INSERT INTO graphs (id, name, created_at) VALUES ('g', 'g', ?)", (NOW,))
    yield store
    store.close()


BLOBS: dict[str, bytes] = {}


def add_file(store: Store, file_id: str, text: str, status: str = "in_progress") -> None:
    BLOBS[file_id] = text.encode()
    store.conn.execute(
        "INSERT INTO files (id, name, type, bytes, sha256, status, created_at) "
        "VALUES (?, ?, 'txt', ?, ?, ?, ?)",
        (file_id, f"{file_id}.txt", len(text), file_id, status, NOW),
    )
    store.conn.execute("INSERT INTO graph_files VALUES ('g', ?, ?)", (file_id, NOW))


def add_chunks(store: Store, file_id: str, texts: list[str]) -> None:
    store.conn.executemany(
        'INSERT INTO chunks (file_id, ord, text, page, start, "end") VALUES (?, ?, ?, NULL, 0, 1)',
        [(file_id, i, text) for i, text in enumerate(texts)],
    )


@pytest.fixture
def start(store: Store) -> Iterator[Callable[..., Ingestion]]:
    workers: list[Ingestion] = []

    def started(embedder) -> Ingestion:
        worker = Ingestion(store.writer.submit, BLOBS.__getitem__, processes=0)
        worker.start(embedder)
        workers.append(worker)
        return worker

    yield started
    for worker in workers:
        worker.close()


def wait_until(condition: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def vectors(store: Store) -> dict[str, tuple[str, int]]:
    """chunk text -> (model, vector bytes) of every stored vector."""
    rows = store.conn.execute(
        "SELECT c.text, v.model, length(v.vector) FROM chunk_vectors AS v "
        "JOIN chunks AS c ON c.id = v.chunk_id"
    ).fetchall()
    return {text: (model, size) for text, model, size in rows}


def statuses(store: Store) -> dict[str, str]:
    return dict(store.conn.execute("SELECT id, status FROM files").fetchall())


def test_new_chunks_get_vectors_before_their_file_is_completed(store, start):
    embedder = CountingEmbedder()
    seen: list[dict[str, str]] = []
    embedder.before = lambda texts: seen.append(statuses(store))
    paragraphs = [f"Paragraph {n} of the ferry timetable. " * 40 for n in range(EMBED_BATCH + 4)]
    add_file(store, "f1", "\n\n".join(paragraphs))
    worker = start(embedder)
    wait_until(lambda: worker.done == 1)
    assert statuses(store) == {"f1": "completed"}
    assert seen and all(s == {"f1": "in_progress"} for s in seen)
    chunks = store.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    assert chunks > EMBED_BATCH and len(embedder.calls) == -(-chunks // EMBED_BATCH)
    assert set(vectors(store).values()) == {("letters", 26 * 4)}
    assert len(vectors(store)) == chunks == worker.embedded


def test_chunks_ingested_before_semantic_search_are_backfilled(store, start):
    add_file(store, "old", "x", status="completed")
    add_chunks(store, "old", [f"Old chunk number {n}." for n in range(EMBED_BATCH * 2 + 1)])
    add_file(store, "new", "The new file.")
    worker = start(CountingEmbedder())
    wait_until(lambda: len(vectors(store)) == EMBED_BATCH * 2 + 2)
    assert worker.embedded == EMBED_BATCH * 2 + 2
    assert statuses(store) == {"old": "completed", "new": "completed"}


def test_a_failed_embedding_loses_nothing_and_is_retried(store, start, caplog):
    embedder = CountingEmbedder()
    embedder.failure = "the embedding engine is down"
    add_file(store, "f1", "The Kessa ferry leaves the quay at seven.")
    with caplog.at_level(logging.WARNING, logger="inkstand.ingest"):
        worker = start(embedder)
        wait_until(lambda: worker.done == 1)
    assert statuses(store) == {"f1": "completed"}  # keyword search has it
    assert search(store.conn, ["g"], "Kessa ferry")[0].file_id == "f1"
    assert vectors(store) == {}
    assert caplog.text.count("the embedding engine is down") == 1
    embedder.failure = None
    worker.wake()  # as the next upload would (or the next poll)
    wait_until(lambda: len(vectors(store)) == 1)


def test_a_file_deleted_while_it_is_embedded_leaves_no_vectors(store, start):
    embedder = CountingEmbedder()
    deleted = threading.Event()

    def delete_file(texts: list[str]) -> None:
        if not deleted.is_set():
            deleted.set()
            store.writer.submit(_delete("f1")).result()  # as DELETE /v1/files/f1 does

    embedder.before = delete_file
    add_file(store, "f1", "\n\n".join(f"Paragraph {n}. " * 200 for n in range(3)))
    worker = start(embedder)
    wait_until(lambda: worker.done == 1)
    assert statuses(store) == {}
    assert store.conn.execute("SELECT count(*) FROM chunk_vectors").fetchone() == (0,)


def _delete(file_id: str) -> Callable:
    def write(conn) -> None:
        conn.execute("DELETE FROM files WHERE id = ?", (file_id,))
        conn.execute("DELETE FROM graph_files WHERE file_id = ?", (file_id,))
        conn.execute("DELETE FROM chunks WHERE file_id = ?", (file_id,))

    return write


def test_vectors_go_with_their_chunks_and_every_change_is_counted(store):
    add_file(store, "f1", "x", status="completed")
    add_chunks(store, "f1", ["one", "two"])

    def generation() -> int:
        return store.conn.execute("SELECT n FROM vector_generation").fetchone()[0]

    before = generation()
    store.conn.execute("INSERT INTO chunk_vectors SELECT id, 'm', x'00000000' FROM chunks")
    store.conn.execute("UPDATE chunk_vectors SET model = 'n'")
    assert generation() == before + 4
    store.conn.execute("DELETE FROM chunks WHERE text = 'one'")  # re-ingest and delete do this
    assert store.conn.execute("SELECT count(*) FROM chunk_vectors").fetchone() == (1,)
    assert generation() == before + 5


def test_the_embedded_gguf_finds_a_chunk_by_meaning(store, start):
    """The real model end to end through the worker; reported, not held to a quality number
    beyond this: a question identical to a chunk's text finds that chunk first."""
    texts = {
        "lamp": "The Varnel lighthouse lamp is lit each evening by keeper Ansel Ruk.",
        "bees": "The Orlen hives winter in the cellar below the old mill.",
        "ferry": "The Kessa ferry leaves the quay at seven every morning.",
    }
    for file_id, text in texts.items():
        add_file(store, file_id, text)
    embedder = LlamaEmbedder(find_embedded_model())
    try:
        worker = start(embedder)
        wait_until(lambda: worker.done == 3, timeout=120)
        assert len(vectors(store)) == 3
        semantic = SemanticSearch(embedder)
        for file_id, text in texts.items():
            (best, *_) = retrieve(store.conn, ["g"], text, semantic=semantic, search_weight=0)
            assert (best.file_id, best.score) == (file_id, 1.0)
        worker.close()
    finally:
        embedder.close()
