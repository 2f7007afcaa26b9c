"""Semantic search for Knowledge Graphs: recall of hybrid retrieval against the keyword
index, and what embedding costs ingestion. Reported, not held to a number.

    .venv/bin/python bench/kg_semantic.py                  # 100 documents (~285 chunks)
    .venv/bin/python bench/kg_semantic.py --documents 20   # a smoke run

The corpus is bench/kg_corpus.py's (seeded; invented subjects, each document's answer
passages among shared filler, questions that paraphrase them), every document a .txt file.
The documents go through the real ingestion worker (`Ingestion`, extraction in its thread)
twice, into two throwaway stores: without an embedding model, then with the embedded GGUF
(SmolLM2-135M, llama.cpp embedding mode, mean-pooled, one thread) embedding every chunk
before its file is completed. The wall time of each is the ingestion cost; their ratio the
slowdown.

Every question is then asked of the second store (its chunks are the first's) three ways:
`search()` (keyword only: what a server without an embedding model answers), `retrieve()`
at `search_weight` 50 (hybrid) and at 0 (semantic only), thresholds 0, 30 snippets. A hit
is the chunk holding the answer passage; reported: recall@1, recall@5, MRR and the median
query time (the question's embedding included). The embedded model is a small chat model,
not an embedding model: the figures say what this path does with it, not what a real
embedding model (nomic-embed, bge, e5) would.

Figures go to stdout (Markdown) and bench/results/kg-semantic-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kg_corpus
from kg_corpus import Corpus, Document, Question

from inkstand.config import find_embedded_model
from inkstand.knowledge.embedding import Embedder, LlamaEmbedder
from inkstand.knowledge.hybrid import retrieve
from inkstand.knowledge.ingest import Ingestion
from inkstand.knowledge.search import Snippet, search
from inkstand.knowledge.semantic import SemanticSearch
from inkstand.store import Store, open_store

GRAPH = "graph-kg-semantic"
NOW = "2026-12-01T00:00:00Z"
TOP = 30
RESULTS = Path(__file__).resolve().parent / "results"


@dataclass(frozen=True)
class Target:
    question: Question
    file_id: str


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=100, help="corpus size (100)")
    parser.add_argument("--seed", type=int, default=12)
    return parser.parse_args()


def ingest(documents: list[Document], embedder: Embedder | None) -> tuple[Store, float]:
    """A new store holding the documents as the worker leaves them; the wall time it took."""
    store = open_store(None)
    blobs: dict[str, bytes] = {}

    def write(conn) -> None:
        conn.execute("INSERT INTO graphs (id, name, created_at) VALUES (?, 'kg', ?)", (GRAPH, NOW))
        for document in documents:
            data = kg_corpus.render(document, "txt")
            blobs[document.name] = data
            conn.execute(
                "INSERT INTO files (id, name, type, bytes, sha256, status, created_at) "
                "VALUES (?, ?, 'txt', ?, ?, 'in_progress', ?)",
                (document.name, f"{document.name}.txt", len(data), document.name, NOW),
            )
            conn.execute("INSERT INTO graph_files VALUES (?, ?, ?)", (GRAPH, document.name, NOW))

    store.writer.submit(write).result()
    worker = Ingestion(store.writer.submit, blobs.__getitem__, processes=0)
    started = time.perf_counter()
    worker.start(embedder)
    while worker.done < len(documents):
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    worker.close()
    return store, elapsed


def answer_chunks(store: Store, targets: list[Target]) -> dict[Target, int]:
    """The chunk holding each question's passage (whitespace flattened), where one does."""
    found = {}
    for target in targets:
        rows = store.conn.execute(
            "SELECT id, text FROM chunks WHERE file_id = ? ORDER BY ord", (target.file_id,)
        ).fetchall()
        passage = _flat(target.question.passage)
        hit = next((cid for cid, text in rows if passage in _flat(text)), None)
        if hit is not None:
            found[target] = hit
    return found


def _flat(text: str) -> str:
    return " ".join(text.split())


def ask(store: Store, name: str, semantic: SemanticSearch, question: str) -> list[Snippet]:
    if name == "keyword only (search)":
        return search(store.conn, [GRAPH], question, max_snippets=TOP)
    weight = 50 if name.startswith("hybrid") else 0
    return retrieve(
        store.conn, [GRAPH], question, semantic=semantic, max_snippets=TOP, search_weight=weight
    )


SYSTEMS = ("keyword only (search)", "hybrid, search_weight 50", "semantic only, search_weight 0")


def evaluate(store: Store, semantic: SemanticSearch, targets: list[Target]) -> dict:
    where = answer_chunks(store, targets)
    out: dict[str, Any] = {}
    for name in SYSTEMS:
        ranks, ms = [], []
        for target in targets:
            started = time.perf_counter()
            found = ask(store, name, semantic, target.question.text)
            ms.append((time.perf_counter() - started) * 1000)
            chunk_id = where.get(target)
            ranks.append(next((i for i, s in enumerate(found, 1) if s.chunk_id == chunk_id), None))
        asked = len(targets)
        out[name] = {
            "recall_at_1": sum(1 for r in ranks if r == 1) / asked,
            "recall_at_5": sum(1 for r in ranks if r is not None and r <= 5) / asked,
            "mrr": sum(1 / r for r in ranks if r is not None) / asked,
            "p50_ms": statistics.median(ms),
        }
    out["unlocated"] = len(targets) - len(where)
    return out


def main() -> None:
    args = parse_args()
    documents = Corpus(seed=args.seed).documents(args.documents)
    targets = [Target(q, d.name) for d in documents for q in d.questions]
    plain, plain_s = ingest(documents, None)
    chunks = plain.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    chars = plain.conn.execute("SELECT sum(length(text)) FROM chunks").fetchone()[0]
    plain.close()
    embedder = LlamaEmbedder(find_embedded_model())
    store, embedded_s = ingest(documents, embedder)
    vectors = store.conn.execute("SELECT count(*) FROM chunk_vectors").fetchone()[0]
    retrieval = evaluate(store, SemanticSearch(embedder), targets)
    store.close()
    embedder.close()
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "documents": len(documents),
        "chunks": chunks,
        "chunk_chars_mean": chars / chunks,
        "vectors": vectors,
        "questions": len(targets),
        "embedder": embedder.name,
        "load_average": os.getloadavg(),
        "ingest_s": {"keyword only": plain_s, "with embeddings": embedded_s},
        "slowdown": embedded_s / plain_s,
        "embed_ms_per_chunk": (embedded_s - plain_s) / chunks * 1000,
        "retrieval": retrieval,
    }
    print_report(record)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"kg-semantic-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.json"
    path.write_text(json.dumps(record, indent=2) + "\n")
    print(
        f"\nwritten to {path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path}"
    )


def print_report(record: dict) -> None:
    print(
        f"{record['documents']} documents, {record['chunks']} chunks "
        f"({record['chunk_chars_mean']:.0f} characters on average), {record['questions']} "
        f"questions ({record['retrieval']['unlocated']} answers cut by chunking count as misses)"
    )
    print(f"embedder: {record['embedder']} (one thread)\n")
    print("| retrieval | recall@1 | recall@5 | MRR | p50 ms |")
    print("|---|---|---|---|---|")
    for name in SYSTEMS:
        row = record["retrieval"][name]
        print(
            f"| {name} | {row['recall_at_1']:.3f} | {row['recall_at_5']:.3f} | "
            f"{row['mrr']:.3f} | {row['p50_ms']:.1f} |"
        )
    ingest_s = record["ingest_s"]
    print(
        f"\ningestion: {ingest_s['keyword only']:.1f} s keyword only, "
        f"{ingest_s['with embeddings']:.1f} s with embeddings: x{record['slowdown']:.0f} "
        f"({record['embed_ms_per_chunk']:.0f} ms a chunk); load average {record['load_average']}"
    )


if __name__ == "__main__":
    main()
