"""The `graph` tool's added latency before the first token, on the real server.

    .venv/bin/python bench/kg_ttft.py [--documents 200] [--questions 40]

One `inkstand serve` on the embedded model (one busy engine: nothing else runs), a graph of
generated documents (`kg_corpus.py`, uploaded as txt through `/v1/files`), then for each
question three streamed chats with `max_tokens` 1, sent in turn so drift hits all alike:
`plain` (the question alone), `graph-5` (the `graph` tool, `max_snippets` 5) and `graph`
(the tool at Writer's defaults: up to 30 snippets, as many as the context leaves room for).
Each question is asked once per variant, and each variant has its own API key (the prefix
cache is per key), so no prompt is served from another's cache: `graph-5` and `graph` begin
with the same best snippets.

Reported: time to the first token p50/p90 per variant, the added p50 against `plain`, the
prompt tokens each variant had (most of the added time is the engine reading the snippets),
and retrieval alone (the keyword search on the server's store, in this process) p50.
Results: `bench/results/kg-ttft-<time>.json`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402
from kg_corpus import Corpus, render  # noqa: E402
from servers import free_port, serving  # noqa: E402

from inkstand.knowledge.search import search  # noqa: E402

INKSTAND = str(Path(sys.executable).with_name("inkstand"))
RESULTS = Path(__file__).resolve().parent / "results"
MODEL = "palmyra-x5"
VARIANTS = ("plain", "graph-5", "graph")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--documents", type=int, default=200)
    parser.add_argument("--questions", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    return parser.parse_args()


def main() -> int:
    args = parse_args()
    corpus = Corpus(args.seed)
    documents = corpus.documents(args.documents)
    questions = [q.text for d in documents for q in d.questions][: args.questions]
    with tempfile.TemporaryDirectory(prefix="kg-ttft-") as tmp:
        data_dir, port = Path(tmp) / "data", free_port()
        keys = {variant: secrets.token_urlsafe(24) for variant in VARIANTS}
        cmd = [INKSTAND, "serve", "--port", str(port), "--data-dir", str(data_dir)]
        for key in keys.values():
            cmd += [f"--api-key={key}"]
        log = Path(tmp) / "inkstand.log"
        with serving("inkstand", cmd, port, ready_path="/health", log=log) as server:
            headers = {v: {"Authorization": f"Bearer {key}"} for v, key in keys.items()}
            graph_id = upload(server.base_url, headers["plain"], documents)
            traces = asyncio.run(ask_all(server.base_url, headers, graph_id, questions))
            retrieval = retrieval_ms(data_dir / "inkstand.sqlite3", graph_id, questions)
    result = summarize(traces, retrieval, args)
    print(json.dumps(result["summary"], indent=2))
    RESULTS.mkdir(exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    path = RESULTS / f"kg-ttft-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"written {path}")
    return 0


def upload(base_url: str, headers: dict, documents) -> str:
    """Every document into one new graph; returns the graph's id once all are ingested."""
    with httpx.Client(base_url=base_url, headers=headers, timeout=120, trust_env=False) as http:
        graph_id = http.post("/v1/graphs", json={"name": "bench"}).json()["id"]
        ids = []
        for document in documents:
            response = http.post(
                "/v1/files",
                params={"graphId": graph_id},
                content=render(document, "txt"),
                headers={"Content-Disposition": f"attachment; filename={document.name}.txt"},
            )
            response.raise_for_status()
            ids.append(response.json()["id"])
        deadline = time.monotonic() + 600
        while http.get(f"/v1/graphs/{graph_id}").json()["file_status"]["in_progress"]:
            if time.monotonic() > deadline:
                raise RuntimeError("ingestion did not finish in 10 minutes")
            time.sleep(0.5)
        status = http.get(f"/v1/graphs/{graph_id}").json()["file_status"]
        if status["completed"] != len(ids):
            raise RuntimeError(f"not every file was ingested: {status}")
    return graph_id


def body(variant: str, graph_id: str, question: str) -> dict:
    chat = {
        "model": MODEL,
        "messages": [{"role": "user", "content": question}],
        "max_tokens": 1,
        "temperature": 0,
    }
    if variant != "plain":
        function: dict = {"graph_ids": [graph_id], "subqueries": False}
        if variant == "graph-5":
            function["query_config"] = {"max_snippets": 5}
        chat["tools"] = [{"type": "graph", "function": function}]
    return chat


async def ask_all(base_url: str, headers: dict, graph_id: str, questions: list[str]) -> dict:
    """Every question in every variant, one request at a time, variants in turn."""
    traces: dict[str, list[load.Trace]] = {v: [] for v in VARIANTS}
    async with load.open_client(4) as client:
        for variant in VARIANTS:
            warm = body(variant, graph_id, "warm up the server")
            await load.send(client, "writer", base_url, warm, headers[variant])
        for i, question in enumerate(questions):
            order = VARIANTS[i % 3 :] + VARIANTS[: i % 3]  # rotate who goes first
            for variant in order:
                request = body(variant, graph_id, question)
                trace = await load.send(client, "writer", base_url, request, headers[variant])
                if trace.error:
                    raise RuntimeError(f"{variant}: {trace.error}")
                traces[variant].append(trace)
    return traces


def retrieval_ms(db: Path, graph_id: str, questions: list[str]) -> list[float]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        times = []
        for question in questions * 3:
            start = time.perf_counter()
            search(conn, [graph_id], question)
            times.append((time.perf_counter() - start) * 1000)
        return times
    finally:
        conn.close()


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(traces: dict, retrieval: list[float], args) -> dict:
    summary: dict = {"documents": args.documents, "questions": args.questions}
    plain: dict = {}
    for variant in VARIANTS:
        ttfts = [t.ttft * 1000 for t in traces[variant] if t.ttft is not None]
        prompts = [t.usage["prompt_tokens"] for t in traces[variant] if t.usage]
        p50, tokens = statistics.median(ttfts), statistics.median(prompts)
        plain = plain or {"p50": p50, "tokens": tokens}
        added_ms, added_tokens = p50 - plain["p50"], tokens - plain["tokens"]
        summary[variant] = {
            "ttft_p50_ms": round(p50, 1),
            "ttft_p90_ms": round(quantile(ttfts, 0.9), 1),
            "added_p50_ms": round(added_ms, 1),
            "prompt_tokens_p50": tokens,
            # the engine's pace reading the added prompt (what the added time is made of)
            "added_tokens_per_s": round(added_tokens / added_ms * 1000) if added_ms > 0 else None,
        }
    summary["retrieval_p50_ms"] = round(statistics.median(retrieval), 2)
    summary["retrieval_p90_ms"] = round(quantile(retrieval, 0.9), 2)
    records = {v: [t.record() for t in traces[v]] for v in VARIANTS}
    return {"summary": summary, "traces": records}


if __name__ == "__main__":
    sys.exit(main())
