"""Knowledge Graphs (issue 12): retrieval quality, ingestion throughput, query latency.

    .venv/bin/python bench/kg.py            # 300 documents, >= 100,000 chunks, 1,000 questions
    .venv/bin/python bench/kg.py --quick    # 200 documents, >= 10,000 chunks, 500 questions

Needs `bm25s` and `PyStemmer` in .venv, for the bench only (not dependencies of Inkstand):
`.venv/bin/pip install bm25s PyStemmer`.

The corpus is generated (bench/kg_corpus.py, seeded): documents about invented subjects,
each holding 2-4 known answer passages among paragraphs of shared filler, and for every
passage a question that paraphrases it. Everything goes into a throwaway store
(`open_store(None)`) through the real `read_chunks` (extraction + chunking), its rows
inserted as the ingestion worker does (files `completed`, all in one graph).

Stages:

1. `quality`: `--documents` documents, two in ten as real PDFs (a page per ~46 lines) and
   one in ten as a DOCX (tests/support/documents.py), the rest as .txt. Each
   question is asked of `search()` (knowledge/search.py: FTS5, porter stemming, BM25, its
   defaults) and of bm25s over the same chunks (its own tokenizer: English stop words,
   Snowball stemmer). A hit is the chunk holding the answer passage; reported: recall@1,
   recall@5, MRR (over the 30 returned), and whether the answer's document is in the top 5
   (so a miss can be told apart: wrong document, or the right one's other chunk), and
   recall@5 by how many chunks the answer's file has, beside what a random order of that
   file's chunks would give (a retriever that finds the document and nothing more). How
   many question words the passage also holds is reported (`overlap`), so the questions'
   difficulty can be judged. Every keyword miss is listed in the JSON file. bm25s searches
   all chunks (it has no graph filter; the run has one graph).
2. `scale`: more documents until the store holds `--chunks` chunks: `--pdf-pages` pages of
   multi-page PDFs and as much text again as DOCX files (each bundling several documents),
   then .txt documents, all through `read_chunks` and the store's writer; throughput is
   MB of extracted text (UTF-8) per second and PDF pages per second, reading (extraction +
   chunking, one process, as the worker's one worker process) and storing (the inserts,
   FTS5 indexing included, on the writer thread) timed apart. Then `--questions` questions
   drawn from the whole corpus are asked, in rounds that alternate the order of the
   systems: `search()` on the store's read connection, `search()` on a new connection per
   question (as the graph tool does: `runtime.knowledge` connects for each request), and
   bm25s (whose index is built over the same chunks, timed). Latency is per question,
   tokenizing included; the rounds are repeated `--repeats` times (3), each after a wait
   for quiet CPUs, and the figures pool the repeats, with each repeat's p50 and p99 shown
   for the spread. Recall at this size is reported too, and how many chunks a question's
   queries match: the strict one, which FTS5 scores (the query's cost grows with it), and
   the OR of its words, which the strict one replaced (knowledge/search.py).
3. The graph tool's added latency before the first token of a chat answer needs the real
   server and its engine: `bench/kg_ttft.py` measures it.

The run waits (up to `--quiet-budget` s) for idle CPUs before the timed stages and meters
other processes' CPU during each; on this 2-core machine the bench itself uses about one
core, so a stage where others used more than `DISTURBED` CPUs on average is flagged.
Figures go to stdout (Markdown) and bench/results/kg-<UTC time>.json.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import host
import kg_corpus
import report
from kg_corpus import Corpus, Document, Question

from inkstand.knowledge.chunking import Chunk
from inkstand.knowledge.ingest import read_chunks
from inkstand.knowledge.search import CANDIDATES, match_expression, plan_query, search
from inkstand.store import Store, open_store
from inkstand.store.db import connect

GRAPH = "graph-kg-bench"
NOW = "2026-12-01T00:00:00Z"
TOP = 30  # snippets asked for: search()'s default cap
DISTURBED = 0.5  # CPUs of other processes' work, on average, that flags a stage
ROUND = 50  # questions per timing round (each round metered, the order of systems alternating)
TTFT_ELSEWHERE = "the graph tool's added latency before the first token: bench/kg_ttft.py"
RECALL_FLOOR = 0.9  # issue 12: recall@5 of the keyword index
P50_CEILING_MS = 20.0  # issue 12: retrieval p50 over >= 100,000 chunks
FULL = {"documents": 300, "chunks": 100_000, "questions": 1_000, "pdf_pages": 400}
QUICK = {"documents": 200, "chunks": 10_000, "questions": 500, "pdf_pages": 60}


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: " + str(QUICK))
    parser.add_argument("--documents", type=int, help="quality corpus size (300)")
    parser.add_argument("--chunks", type=int, help="chunks in the store at scale (100,000)")
    parser.add_argument("--questions", type=int, help="questions asked at scale (1,000)")
    parser.add_argument("--pdf-pages", type=int, help="PDF pages ingested at scale (400)")
    parser.add_argument("--repeats", type=int, default=3, help="timing rounds at scale (3)")
    parser.add_argument("--seed", type=int, default=12)
    parser.add_argument("--quiet-budget", type=float, default=120.0)
    args = parser.parse_args()
    for key, value in (QUICK if args.quick else FULL).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    return args


# -- ingestion --------------------------------------------------------------------------------


@dataclass
class Throughput:
    """One format's ingestion: extracted characters, pages and the time spent per side."""

    files: int = 0
    pages: int = 0
    chars: int = 0
    chunks: int = 0
    read_s: float = 0.0
    store_s: float = 0.0

    def record(self) -> dict:
        total = self.read_s + self.store_s
        mb = self.chars / 1e6
        return vars(self) | {
            "mb": mb,
            "mb_per_s": mb / total if total else None,
            "read_mb_per_s": mb / self.read_s if self.read_s else None,
            "store_mb_per_s": mb / self.store_s if self.store_s else None,
            "pages_per_s": self.pages / total if total and self.pages else None,
        }


@dataclass(frozen=True)
class Target:
    """A question and where its answer is: the file, and the chunk's place in it."""

    question: Question
    file_id: str
    ord: int | None  # None: no chunk holds the whole passage (cut by chunking)


@dataclass
class Ingested:
    throughput: dict[str, Throughput] = field(default_factory=dict)
    targets: list[Target] = field(default_factory=list)
    chunks: int = 0


def create_graph(store: Store) -> None:
    store.writer.submit(
        lambda conn: conn.execute(
            "INSERT INTO graphs (id, name, created_at) VALUES (?, 'kg bench', ?)", (GRAPH, NOW)
        )
    ).result()


def ingest(store: Store, into: Ingested, documents: list[Document], form: str, data: bytes) -> None:
    """One file holding `documents`: read it, store its chunks, locate its answers."""
    file_id = f"file-{documents[0].name}-{form}"
    started = time.perf_counter()
    chunks = read_chunks(data, f"{documents[0].name}.{form}")
    read = time.perf_counter()
    store.writer.submit(_storing(file_id, form, len(data), chunks)).result()
    meter = into.throughput.setdefault(form, Throughput())
    meter.read_s += read - started
    meter.store_s += time.perf_counter() - read
    meter.files += 1
    meter.pages += len({c.page for c in chunks if c.page is not None})
    meter.chars += sum(c.end - c.start for c in chunks)  # the bodies; ASCII: chars == bytes
    meter.chunks += len(chunks)
    into.chunks += len(chunks)
    bodies = [_flat(c.text) for c in chunks]
    for document in documents:
        for question in document.questions:
            passage = _flat(question.passage)
            at = next((i for i, body in enumerate(bodies) if passage in body), None)
            into.targets.append(Target(question, file_id, at))


def _storing(file_id: str, form: str, size: int, chunks: list[Chunk]) -> Callable[[Any], None]:
    """The rows an upload and the ingestion worker leave for a completed file, at once."""

    def write(conn: Any) -> None:
        conn.execute(
            "INSERT INTO files (id, name, type, bytes, sha256, status, created_at) "
            "VALUES (?, ?, ?, ?, ?, 'completed', ?)",
            (file_id, f"{file_id}.{form}", form, size, file_id, NOW),
        )
        conn.execute("INSERT INTO graph_files VALUES (?, ?, ?)", (GRAPH, file_id, NOW))
        conn.executemany(
            'INSERT INTO chunks (file_id, ord, text, page, start, "end") VALUES (?, ?, ?, ?, ?, ?)',
            [(file_id, i, c.text, c.page, c.start, c.end) for i, c in enumerate(chunks)],
        )

    return write


def _flat(text: str) -> str:
    return " ".join(text.split())


def quality_form(index: int) -> str:
    return {0: "pdf", 1: "pdf", 2: "docx"}.get(index % 10, "txt")


def grow(store: Store, into: Ingested, corpus: Corpus, args: argparse.Namespace) -> None:
    """PDF and DOCX bundles, then .txt documents until the store holds `args.chunks`."""
    pages = 0
    while pages < args.pdf_pages:
        bundle = _bundle(corpus, pages=20)
        pages += kg_corpus.pdf_page_count(bundle)
        ingest(store, into, bundle, "pdf", kg_corpus.bundle(bundle, "pdf"))
    pdf_chars = into.throughput["pdf"].chars
    while into.throughput.setdefault("docx", Throughput()).chars < pdf_chars:
        bundle = _bundle(corpus, pages=20)
        ingest(store, into, bundle, "docx", kg_corpus.bundle(bundle, "docx"))
    while into.chunks < args.chunks:
        for document in corpus.documents(200):
            ingest(store, into, [document], "txt", kg_corpus.render(document, "txt"))


def _bundle(corpus: Corpus, pages: int) -> list[Document]:
    documents = [corpus.document()]
    while kg_corpus.pdf_page_count(documents) < pages:
        documents.append(corpus.document())
    return documents


# -- retrieval --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    rank: int | None  # 1-based place of the answer's chunk among the results; None: absent
    document_in_top5: bool
    ms: float


class Keyword:
    """search() over the store: on one connection, or on a new one per question."""

    def __init__(self, store: Store, fresh: bool = False) -> None:
        self.store, self.fresh = store, fresh
        self.name = "keyword index, new connection" if fresh else "keyword index (FTS5)"

    def ask(self, question: str) -> list[tuple[int, str]]:
        if not self.fresh:
            return [(s.chunk_id, s.file_id) for s in search(self.store.conn, [GRAPH], question)]
        conn = connect(self.store.path)
        try:
            return [(s.chunk_id, s.file_id) for s in search(conn, [GRAPH], question)]
        finally:
            conn.close()


class Bm25:
    """bm25s over the store's chunks: its tokenizer (English stop words, Snowball stems)."""

    name = "bm25s"

    def __init__(self, store: Store) -> None:
        import bm25s
        import Stemmer

        rows = store.conn.execute("SELECT id, file_id, text FROM chunks ORDER BY id").fetchall()
        self.ids = [(chunk_id, file_id) for chunk_id, file_id, _ in rows]
        self.stemmer = Stemmer.Stemmer("english")
        self._tokenize = bm25s.tokenize
        started = time.perf_counter()
        tokens = bm25s.tokenize(
            [text for _, _, text in rows],
            stopwords="en",
            stemmer=self.stemmer,
            show_progress=False,
        )
        self.retriever = bm25s.BM25()
        self.retriever.index(tokens, show_progress=False)
        self.build_s = time.perf_counter() - started

    def ask(self, question: str) -> list[tuple[int, str]]:
        tokens = self._tokenize(
            [question],
            stopwords="en",
            stemmer=self.stemmer,
            show_progress=False,
            return_ids=False,
        )
        k = min(TOP, len(self.ids))
        found, scores = self.retriever.retrieve(tokens, k=k, show_progress=False)
        return [self.ids[i] for i, score in zip(found[0], scores[0], strict=True) if score > 0]


System = Keyword | Bm25


def chunk_ids(store: Store, targets: list[Target]) -> dict[Target, int]:
    """The id of each located answer chunk."""
    where = {
        (file_id, ord_): chunk_id
        for chunk_id, file_id, ord_ in store.conn.execute("SELECT id, file_id, ord FROM chunks")
    }
    return {t: where[(t.file_id, t.ord)] for t in targets if t.ord is not None}


def answer(system: System, target: Target, chunk_id: int) -> Answer:
    started = time.perf_counter()
    found = system.ask(target.question.text)
    ms = (time.perf_counter() - started) * 1000
    ranks = [i for i, (cid, _) in enumerate(found, start=1) if cid == chunk_id]
    in_top5 = any(file_id == target.file_id for _, file_id in found[:5])
    return Answer(ranks[0] if ranks else None, in_top5, ms)


def ask_all(
    systems: list[System], targets: list[Target], ids: dict[Target, int]
) -> tuple[dict[str, list[Answer]], list[float]]:
    """Every located target to every system, in rounds of ROUND questions whose system order
    rotates; each round's foreign CPU (other processes) is metered."""
    answers: dict[str, list[Answer]] = {s.name: [] for s in systems}
    foreign = []
    located = [t for t in targets if t in ids]
    for warm in located[:10]:
        for system in systems:
            answer(system, warm, ids[warm])
    for start in range(0, len(located), ROUND):
        meter = host.CpuMeter([os.getpid()])
        order = systems[start // ROUND % len(systems) :] + systems[: start // ROUND % len(systems)]
        for target in located[start : start + ROUND]:
            for system in order:
                answers[system.name].append(answer(system, target, ids[target]))
        foreign.append(meter.foreign_cpus())
    return answers, foreign


def summarise(answers: list[Answer], asked: int) -> dict:
    """recall@1, recall@5, MRR over `asked` questions (unlocated answers count as misses)."""
    ms = sorted(a.ms for a in answers)
    ranks = [a.rank for a in answers]
    return {
        "questions": asked,
        "recall_at_1": sum(1 for r in ranks if r == 1) / asked,
        "recall_at_5": sum(1 for r in ranks if r is not None and r <= 5) / asked,
        "mrr": sum(1 / r for r in ranks if r is not None) / asked,
        "document_in_top5": sum(1 for a in answers if a.document_in_top5) / asked,
        "p50_ms": statistics.median(ms),
        "p99_ms": _percentile(ms, 0.99),
        "mean_ms": statistics.fmean(ms),
        "max_ms": ms[-1],
    }


def _percentile(ordered: list[float], q: float) -> float:
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def misses(store: Store, targets: list[Target], ids: dict[Target, int]) -> list[dict]:
    """The keyword index's recall@5 misses, with where the answer was and what beat it."""
    out = []
    for target in targets:
        chunk_id = ids.get(target)
        found = search(store.conn, [GRAPH], target.question.text, max_snippets=CANDIDATES)
        rank = next((i for i, s in enumerate(found, 1) if s.chunk_id == chunk_id), None)
        if rank is not None and rank <= 5:
            continue
        top = found[:5]
        out.append(
            {
                "question": target.question.text,
                "passage": target.question.passage,
                "located": chunk_id is not None,
                "rank": rank,
                "top5_same_document": sum(1 for s in top if s.file_id == target.file_id),
                "top1_same_document": bool(top) and top[0].file_id == target.file_id,
            }
        )
    return out


# -- stages -----------------------------------------------------------------------------------


def quality(store: Store, corpus: Corpus, args: argparse.Namespace) -> tuple[dict, Ingested]:
    documents = corpus.documents(args.documents)
    ingested = Ingested()
    for index, document in enumerate(documents):
        form = quality_form(index)
        ingest(store, ingested, [document], form, kg_corpus.render(document, form))
    ids = chunk_ids(store, ingested.targets)
    bm25 = Bm25(store)
    systems: list[System] = [Keyword(store), bm25]
    answers, foreign = ask_all(systems, ingested.targets, ids)
    asked = len(ingested.targets)
    located = [t for t in ingested.targets if t in ids]
    return {
        "documents": len(documents),
        "chunks": ingested.chunks,
        "questions": asked,
        "unlocated": sum(1 for t in ingested.targets if t.ord is None),
        "forms": {form: t.files for form, t in ingested.throughput.items()},
        "overlap": kg_corpus.overlap([t.question for t in ingested.targets]),
        "systems": {name: summarise(a, asked) for name, a in answers.items()},
        "by_file_size": by_file_size(store, located, answers),
        "bm25s_build_s": bm25.build_s,
        "foreign_cpus": foreign,
        "keyword_misses": misses(store, ingested.targets, ids),
    }, ingested


SIZES = ((1, 5), (6, 8), (9, 10_000))  # chunks in the answer's file


def by_file_size(store: Store, located: list[Target], answers: dict[str, list[Answer]]) -> list:
    """recall@5 per system by the answer file's chunk count, and a random order's."""
    sql = "SELECT file_id, count(*) FROM chunks GROUP BY file_id"
    size = dict(store.conn.execute(sql).fetchall())
    rows = []
    for low, high in SIZES:
        picked = [i for i, t in enumerate(located) if low <= size[t.file_id] <= high]
        if not picked:
            continue
        row = {"chunks": f"{low}-{high}" if high < 10_000 else f"{low}+", "questions": len(picked)}
        row["document found, its chunks in random order"] = statistics.fmean(
            min(1, 5 / size[located[i].file_id]) for i in picked
        )
        for name, found in answers.items():
            row[name] = sum(1 for i in picked if (found[i].rank or 99) <= 5) / len(picked)
        rows.append(row)
    return rows


def scale(
    store: Store, corpus: Corpus, quality_targets: list[Target], args: argparse.Namespace
) -> dict:
    quiet = host.Quiet(args.quiet_budget)
    quiet.wait()
    grown = Ingested()
    meter = host.CpuMeter([os.getpid()])
    grow(store, grown, corpus, args)
    ingest_foreign = meter.foreign_cpus()
    targets = random.Random(args.seed).sample(
        quality_targets + grown.targets, min(args.questions, len(quality_targets + grown.targets))
    )
    ids = chunk_ids(store, targets)
    chunks = store.conn.execute("SELECT count(*) FROM chunks").fetchone()[0]
    bm25 = Bm25(store)
    systems: list[System] = [Keyword(store), Keyword(store, fresh=True), bm25]
    answers, repeats, foreign = repeat_all(quiet, systems, targets, ids, args.repeats)
    return {
        "chunks": chunks,
        "files": store.conn.execute("SELECT count(*) FROM files").fetchone()[0],
        "database_mb": store.size() / 1e6,
        "throughput": {form: t.record() for form, t in grown.throughput.items()},
        "ingest_foreign_cpus": ingest_foreign,
        "questions": len(targets),
        "matched_share": matched_shares(store, targets, chunks),
        "systems": {n: summarise(a, len(targets) * args.repeats) for n, a in answers.items()},
        "repeats": repeats,
        "bm25s_build_s": bm25.build_s,
        "foreign_cpus": foreign,
    }


def repeat_all(
    quiet: host.Quiet,
    systems: list[System],
    targets: list[Target],
    ids: dict[Target, int],
    repeats: int,
) -> tuple[dict[str, list[Answer]], dict[str, list[dict]], list[float]]:
    """`ask_all` `repeats` times, each after a quiet wait: the pooled answers, each repeat's
    p50 and p99 per system, and every round's foreign CPU."""
    pooled: dict[str, list[Answer]] = {s.name: [] for s in systems}
    spread: dict[str, list[dict]] = {s.name: [] for s in systems}
    foreign: list[float] = []
    for _ in range(repeats):
        quiet.wait()
        answers, rounds = ask_all(systems, targets, ids)
        foreign += rounds
        for name, found in answers.items():
            pooled[name] += found
            ms = sorted(a.ms for a in found)
            p50, p99 = statistics.median(ms), _percentile(ms, 0.99)
            spread[name].append(
                {"p50_ms": p50, "p99_ms": p99, "foreign_cpus": statistics.fmean(rounds)}
            )
    return pooled, spread, foreign


def matched_shares(store: Store, targets: list[Target], chunks: int) -> dict:
    """The share of all chunks each question's queries match: median and p90, per query."""
    strict, wide = [], []
    for target in targets:
        query = plan_query(store.conn, target.question.text)
        wide.append(_matches(store, match_expression(target.question.text)) / chunks)
        strict.append(_matches(store, query.strict if query else None) / chunks)
    return {
        name: {"p50": statistics.median(shares), "p90": _percentile(sorted(shares), 0.9)}
        for name, shares in (("strict", strict), ("or", wide))
    }


def _matches(store: Store, expression: str | None) -> int:
    """How many chunks an FTS5 query matches (before ranking and the graph); 0 for None."""
    if expression is None:
        return 0
    sql = "SELECT count(*) FROM chunks_fts WHERE chunks_fts MATCH ?"
    count: int = store.conn.execute(sql, (expression,)).fetchone()[0]
    return count


# -- report -----------------------------------------------------------------------------------


def show(result: dict) -> None:
    m, q, s = result["machine"], result["quality"], result["scale"]
    print(f"\n{m['cpu']}, {m['nproc']} CPUs, Python {m['python']}; seed {result['config']['seed']}")
    print(
        f"\n### Quality: {q['documents']} documents ({_forms(q['forms'])}), {q['chunks']} "
        f"chunks, {q['questions']} questions ({q['unlocated']} answers cut by chunking)\n"
    )
    _systems(q["systems"], q["chunks"])
    print("\n" + _overlap(q["overlap"]))
    print(f"Keyword misses at 5: {len(q['keyword_misses'])} ({_miss_kinds(q['keyword_misses'])})")
    _by_size(q["by_file_size"])
    print(f"\n### Ingestion at scale ({s['files']} files)\n")
    print(
        "| format | files | pages | MB text | chunks | read s | store s | MB/s | read MB/s "
        "| store MB/s | pages/s |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for form, t in s["throughput"].items():
        cells = [form, t["files"], t["pages"] or "-", f"{t['mb']:.1f}", t["chunks"]]
        cells += [f"{t['read_s']:.1f}", f"{t['store_s']:.1f}", _f(t["mb_per_s"], 2)]
        cells += [_f(t["read_mb_per_s"], 2), _f(t["store_mb_per_s"], 2), _f(t["pages_per_s"], 1)]
        print("| " + " | ".join(str(c) for c in cells) + " |")
    print(
        f"\n### Scale: {s['chunks']:,} chunks ({s['database_mb']:.0f} MB database), "
        f"{s['questions']} questions\n"
    )
    _systems(s["systems"], s["chunks"])
    _repeats(s["repeats"])
    strict, wide = s["matched_share"]["strict"], s["matched_share"]["or"]
    print(
        f"\nA question's strict query (what FTS5 scores) matches {strict['p50']:.2%} of the "
        f"chunks (median; {strict['p90']:.2%} at p90; 0 when the question has no rare word), "
        f"the OR of its words {wide['p50']:.0%} ({wide['p90']:.0%} at p90)."
    )
    print(f"bm25s index build over {s['chunks']:,} chunks: {s['bm25s_build_s']:.1f} s")
    print("TTFT added by the graph tool: see bench/kg_ttft.py")
    _disturbance(result)
    _verdicts(q["systems"]["keyword index (FTS5)"], s["systems"]["keyword index (FTS5)"], s)


def _verdicts(quality: dict, scale: dict, s: dict) -> None:
    recall, p50 = quality["recall_at_5"], scale["p50_ms"]
    print(f"\nkeyword recall@5 (quality corpus) {recall:.3f}, floor {RECALL_FLOOR}: "
          f"{'PASS' if recall >= RECALL_FLOOR else 'FAIL'}")  # fmt: skip
    verdict = "PASS" if p50 < P50_CEILING_MS else "FAIL"
    if s["chunks"] < FULL["chunks"]:
        verdict = f"not judged ({s['chunks']:,} chunks < {FULL['chunks']:,})"
    print(f"keyword p50 at scale {p50:.1f} ms, ceiling {P50_CEILING_MS:.0f} ms: {verdict}")


def _repeats(repeats: dict[str, list[dict]]) -> None:
    print("\nLatency per repeat (p50 / p99 ms; other processes' CPUs):\n")
    for name, runs in repeats.items():
        cells = [f"{r['p50_ms']:.2f} / {r['p99_ms']:.2f} ({r['foreign_cpus']:.2f})" for r in runs]
        p50s = [r["p50_ms"] for r in runs]
        spread = (max(p50s) - min(p50s)) / statistics.median(p50s)
        print(f"- {name}: " + ", ".join(cells) + f"; p50 spread {spread:.0%} of the median")


def _by_size(rows: list[dict]) -> None:
    names = [key for key in rows[0] if key not in ("chunks", "questions")]
    print("\nrecall@5 by the answer file's size in chunks\n")
    print("| chunks in the file | questions | " + " | ".join(names) + " |")
    print("|---|---:|" + "---:|" * len(names))
    for row in rows:
        cells = [row["chunks"], str(row["questions"])] + [f"{row[n]:.3f}" for n in names]
        print("| " + " | ".join(cells) + " |")


def _overlap(o: dict) -> str:
    return (
        f"Question words (content words, search.py's stop words out): "
        f"{o['mean_words_per_question']:.1f} a question; the passage holds "
        f"{o['share_exact']:.0%} of them ({o['share_stemmed']:.0%} after stemming), "
        f"{o['shared_stemmed_not_subject']} of {o['question_words']} besides the subject's "
        f"name; {o['questions_sharing_only_subject']:.0%} of questions share nothing "
        f"else."
    )


def _systems(systems: dict, chunks: int) -> None:
    print(
        "| system | chunks | recall@1 | recall@5 | MRR | document in top 5 | p50 ms | p99 ms "
        "| mean ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in systems.items():
        cells = [
            name,
            f"{chunks:,}",
            f"{r['recall_at_1']:.3f}",
            f"**{r['recall_at_5']:.3f}**",
            f"{r['mrr']:.3f}",
            f"{r['document_in_top5']:.3f}",
            f"{r['p50_ms']:.2f}",
            f"{r['p99_ms']:.2f}",
            f"{r['mean_ms']:.2f}",
        ]
        print("| " + " | ".join(cells) + " |")


def _disturbance(result: dict) -> None:
    stages = {
        "quality queries": result["quality"]["foreign_cpus"],
        "scale queries": result["scale"]["foreign_cpus"],
        "ingestion": [result["scale"]["ingest_foreign_cpus"]],
    }
    for stage, values in stages.items():
        mean = statistics.fmean(values)
        note = "DISTURBED" if mean > DISTURBED else "quiet enough"
        print(
            f"other processes during {stage}: {mean:.2f} CPUs on average, "
            f"{max(values):.2f} at most: {note}"
        )


def _miss_kinds(missed: list[dict]) -> str:
    same = sum(1 for m in missed if m["top5_same_document"])
    return (
        f"{same} with the right document's other chunks in the top 5, "
        f"{len(missed) - same} with other documents only; "
        f"{sum(1 for m in missed if m['rank'] is None)} not returned at all (of up to "
        f"{CANDIDATES})"
    )


def _forms(forms: dict) -> str:
    return ", ".join(f"{count} {form}" for form, count in forms.items())


def _f(value: float | None, digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def run(args: argparse.Namespace) -> dict:
    corpus = Corpus(args.seed)
    store = open_store(None)
    try:
        create_graph(store)
        quality_result, ingested = quality(store, corpus, args)
        scale_result = scale(store, corpus, ingested.targets, args)
    finally:
        store.close()
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": host.describe(),
        "config": vars(args),
        "quality": quality_result,
        "scale": scale_result,
        "ttft": {"status": "elsewhere", "note": TTFT_ELSEWHERE},
    }


def main() -> None:
    args = parse_args()
    started = time.monotonic()
    result = run(args)
    result["elapsed_s"] = time.monotonic() - started
    show(result)
    report.save(result, "kg-")


if __name__ == "__main__":
    main()
