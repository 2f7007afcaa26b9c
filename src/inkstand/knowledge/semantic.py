"""Vector search: how near each chunk of some graphs' completed files is to a question.

The question is embedded with the configured model (knowledge/embedding.py) and compared
with every vector that model made for the chunks of the asked graphs' completed files: brute
force, one matrix-vector product (vectors are of norm 1, so it is the cosine). 100,000
chunks of 576 numbers take about 10 ms; the matrix takes 4 bytes a number in memory.

Scores are normalised per query to 0..1 over the asked graphs' chunks: (cos - min) / (max -
min), so the nearest chunk scores 1 and the farthest 0 (all 1 when they tie). Raw cosines
of a small model crowd together (unrelated texts of the embedded 135M model are 0.6 to 0.7
apart, paraphrases 0.9), so neither the raw value nor (cos + 1) / 2 would give a threshold
any meaning; the spread over the graphs does. A chunk with no vector of this model yet (its
file was ingested before the model was configured, and the worker has not caught up) has no
semantic score.

The vectors of the model are kept in memory, ids ascending, and read again when
`vector_generation` changed (a trigger counts every vector written or deleted, by any
connection), so a deleted file's chunks are never found and new ones are found at once.
Which files are completed and in which graphs is read for every question.
"""

from __future__ import annotations

import sqlite3
import threading
from dataclasses import dataclass

import numpy as np

from inkstand.knowledge.embedding import Embedder


@dataclass(frozen=True)
class Similarities:
    """The asked graphs' embedded chunks and their 0..1 semantic scores for one question."""

    ids: np.ndarray  # chunk ids, ascending
    scores: np.ndarray

    def top(self, count: int) -> list[tuple[int, float]]:
        """The `count` best (chunk id, score), best first (ties: lower id first)."""
        if count <= 0 or len(self.ids) == 0:
            return []
        order = np.lexsort((self.ids, -self.scores))[:count]
        return [(int(self.ids[i]), float(self.scores[i])) for i in order]

    def score(self, chunk_id: int) -> float | None:
        at = int(np.searchsorted(self.ids, chunk_id))
        if at < len(self.ids) and self.ids[at] == chunk_id:
            return float(self.scores[at])
        return None


@dataclass(frozen=True)
class _Vectors:
    """Every vector of one model and length, as read at one generation."""

    generation: int
    model: str
    dimensions: int
    ids: np.ndarray  # int64, ascending
    files: np.ndarray  # each row's file, as an index into `file_ids`
    file_ids: dict[str, int]
    matrix: np.ndarray  # float32 (rows, dimensions)


class SemanticSearch:
    """The embedder and the in-memory copy of its vectors; one per server, thread-safe."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self._vectors: _Vectors | None = None
        self._loading = threading.Lock()

    def similarities(
        self, conn: sqlite3.Connection, graph_ids: list[str], question: str
    ) -> Similarities:
        """Semantic scores of the graphs' completed files' chunks (EmbeddingError if the
        question cannot be embedded). Blocks: call it off the event loop."""
        query = self.embedder.embed([question])[0]
        vectors = self._current(conn, len(query))
        allowed = [
            vectors.file_ids[f] for f in _completed_files(conn, graph_ids) if f in vectors.file_ids
        ]
        mask = np.isin(vectors.files, np.asarray(allowed, dtype=np.int64))
        if not mask.any():
            return Similarities(np.zeros(0, np.int64), np.zeros(0, np.float32))
        cosines = (vectors.matrix @ query)[mask]
        return Similarities(vectors.ids[mask], _spread(cosines))

    def close(self) -> None:
        self.embedder.close()

    def _current(self, conn: sqlite3.Connection, dimensions: int) -> _Vectors:
        generation = _generation(conn)
        model = self.embedder.name
        cached = self._vectors
        if _fresh(cached, generation, model, dimensions):
            return cached  # type: ignore[return-value]
        with self._loading:
            cached = self._vectors
            if not _fresh(cached, generation, model, dimensions):
                cached = _read_vectors(conn, model, dimensions)
                self._vectors = cached
        return cached  # type: ignore[return-value]


def _fresh(vectors: _Vectors | None, generation: int, model: str, dimensions: int) -> bool:
    return (
        vectors is not None
        and vectors.generation == generation
        and vectors.model == model
        and vectors.dimensions == dimensions
    )


def _generation(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT n FROM vector_generation").fetchone()[0])


def _read_vectors(conn: sqlite3.Connection, model: str, dimensions: int) -> _Vectors:
    """The model's vectors of that length and the generation they are of, in one read."""
    started = not conn.in_transaction
    if started:
        conn.execute("BEGIN")  # the generation and the rows from one snapshot
    try:
        generation = _generation(conn)
        rows = conn.execute(
            "SELECT v.chunk_id, c.file_id, v.vector FROM chunk_vectors AS v "
            "JOIN chunks AS c ON c.id = v.chunk_id "
            "WHERE v.model = ? AND length(v.vector) = ? ORDER BY v.chunk_id",
            (model, dimensions * 4),
        ).fetchall()
    finally:
        if started:
            conn.execute("COMMIT")
    file_ids: dict[str, int] = {}
    files = np.fromiter(
        (file_ids.setdefault(f, len(file_ids)) for _, f, _ in rows), np.int64, len(rows)
    )
    ids = np.fromiter((chunk_id for chunk_id, _, _ in rows), np.int64, len(rows))
    flat = np.frombuffer(b"".join(blob for _, _, blob in rows), dtype="<f4")
    matrix = flat.astype(np.float32).reshape(len(rows), dimensions)
    return _Vectors(generation, model, dimensions, ids, files, file_ids, matrix)


def _completed_files(conn: sqlite3.Connection, graph_ids: list[str]) -> list[str]:
    if not graph_ids:
        return []
    marks = ",".join("?" * len(graph_ids))
    rows = conn.execute(
        f"SELECT DISTINCT gf.file_id FROM graph_files AS gf JOIN files AS f ON f.id = gf.file_id "
        f"WHERE gf.graph_id IN ({marks}) AND f.status = 'completed'",
        graph_ids,
    ).fetchall()
    return [row[0] for row in rows]


def _spread(cosines: np.ndarray) -> np.ndarray:
    """Cosines -> 0..1 over this set: the nearest 1, the farthest 0 (all 1 when equal)."""
    low, high = float(cosines.min()), float(cosines.max())
    if high - low < 1e-9:
        return np.ones_like(cosines, dtype=np.float32)
    return ((cosines - low) / (high - low)).astype(np.float32)


def vector_blob(vector: np.ndarray) -> bytes:
    """A vector as stored in `chunk_vectors.vector`: float32, little-endian."""
    return np.asarray(vector, dtype="<f4").tobytes()
