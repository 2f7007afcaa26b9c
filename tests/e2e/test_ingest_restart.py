"""A server stopped in the middle of ingestion loses nothing and duplicates nothing.

Files go into a graph, and the worker takes them in upload order: a small text file, a PDF
of many pages with one fact on a known page, then multi-MB ledgers whose chunks the worker
writes in several transactions. The test reads the data dir's database (read-only) until a
ledger is `in_progress` with part of its chunks written, and stops the server right there:
with SIGKILL (the file stays half-written), or with SIGTERM (a graceful stop, which today
finishes the file at hand and leaves the rest waiting). A second server on the same data
dir must finish every file. Then, through the official SDK and the database:

- every file is listed in the graph and `completed`, its bytes as uploaded, and the
  graph's `file_status` counts them so;
- each file's chunks are exactly those of the same file read without interruption
  (`read_chunks`, what the worker runs): no chunk of the interrupted run is left
  beside the new ones, a file completed before the stop kept its own, and the full-text
  index holds nothing of deleted chunks (per-file term counts, FTS5 integrity-check);
- a question about the fact on the PDF's known page has that file among its sources.

If ingestion outruns the polling and ends before a file is caught half-written, more and
larger ledgers are uploaded (`ROUNDS`); should every round be missed, the server is stopped
all the same and everything above is still checked (the report's "the stop" section shows
where each file stood). A SIGKILLed server's worker processes outlive it (nothing tells
them their parent is gone); the test ends them itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import signal
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import writerai

from inkstand.knowledge.ingest import WRITE_BATCH, read_chunks

from ..support import documents
from .support import KEY, Server, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

FLAGS = ("--ctx-size", "1024", "--threads", "1")
# ~4,000 chunks: nine write transactions, half a second of writing on a quiet machine.
LEDGER_BYTES = 6 * 2**20
ROUNDS = 3  # uploads of ledgers (twice as large each time) to catch a file half-written
PDF_PAGES = 150
FACT_PAGE = 97
FACT = "The Varnel lighthouse lamp is lit each evening at 19:40 by keeper Ansel Ruk."
CATCH_TIMEOUT = 20.0
INGEST_TIMEOUT = 60.0
# A 5xx other than 503, or a traceback: the server failed (as the suite's conftest checks).
FAILURE = re.compile(r"inkstand\.access: \S+ \S+ 5(?!03)\d\d |Traceback \(most recent call last\)")


@dataclass(frozen=True)
class Upload:
    id: str
    name: str
    data: bytes
    chunks: list[tuple]  # the rows of its chunks, read without interruption
    term: str | None = None  # a word in every chunk of this file and in no other file


def ledger(number: int, size: int) -> bytes:
    """Lines of a made-up harbour ledger, about `size` bytes, each naming `ledger<number>`;
    a blank line every eight, so chunks hold whole paragraphs."""
    lines, total, entry = [], 0, 0
    while total < size:
        line = (
            f"Entry {entry} of ledger{number}: cargo {entry * 7919 % 100003} left on ship "
            f"{entry % 97} for port {entry % 31}.\n"
        )
        if entry % 8 == 7:
            line += "\n"
        lines.append(line)
        total += len(line)
        entry += 1
    return "".join(lines).encode()


def archive_pdf() -> bytes:
    """A PDF of `PDF_PAGES` pages of shelf notes; page `FACT_PAGE` also states `FACT`."""
    pages = [
        "\n".join(f"Shelf {page} row {row}: logbook {page * 13 + row} of the harbour office."
                  for row in range(12))
        + (f"\n{FACT}" if page == FACT_PAGE else "")
        for page in range(1, PDF_PAGES + 1)
    ]  # fmt: skip
    return documents.pdf(pages)


# -- the database, read as it is (read-only: a reader must not checkpoint a crashed WAL) ----


@contextlib.contextmanager
def reading(data_dir: Path):
    uri = f"file:{data_dir / 'inkstand.sqlite3'}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        yield db


def progress(db: sqlite3.Connection) -> dict[str, tuple[str, int]]:
    """file id -> (status, chunks written so far)."""
    rows = db.execute(
        "SELECT id, status, (SELECT COUNT(*) FROM chunks WHERE file_id = files.id) FROM files"
    ).fetchall()
    return {file_id: (status, count) for file_id, status, count in rows}


def half_written(state: dict[str, tuple[str, int]], uploads: list[Upload]) -> list[str]:
    """The files `in_progress` with some of their chunks written, and two more write
    transactions to go at least: a stop right now lands in the middle of the file."""
    expected = {each.id: len(each.chunks) for each in uploads}
    return [
        file_id
        for file_id, (status, count) in state.items()
        if status == "in_progress" and 0 < count <= expected[file_id] - 2 * WRITE_BATCH
    ]


def stored_chunks(db: sqlite3.Connection, file_id: str) -> list[tuple]:
    return db.execute(
        'SELECT ord, text, page, start, "end" FROM chunks WHERE file_id = ? ORDER BY ord, id',
        (file_id,),
    ).fetchall()


def expected_rows(data: bytes, name: str) -> list[tuple]:
    """The rows of the file's chunks, as the worker makes them (`read_chunks`)."""
    return [(i, c.text, c.page, c.start, c.end) for i, c in enumerate(read_chunks(data, name))]


# -- the server ---------------------------------------------------------------------------


def worker_processes(pid: int) -> list[int]:
    """The processes `pid` started (ingestion and planner workers, their resource tracker)."""
    found: list[int] = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        with contextlib.suppress(OSError):
            found += [int(child) for child in children.read_text().split()]
    return found


def end_orphans(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def stop(server: Server, how: signal.Signals) -> None:
    """Send `how` to the server and wait until it is gone."""
    orphans = worker_processes(server.process.pid) if how == signal.SIGKILL else []
    server.process.send_signal(how)
    code = server.process.wait(timeout=45)
    end_orphans(orphans)
    if how == signal.SIGTERM:  # uvicorn stops gracefully, then exits by the signal
        assert code in (0, -signal.SIGTERM), f"exit code {code}\n{server.dump()}"


def assert_no_failures(server: Server) -> None:
    failures = [line for line in server.log().splitlines() if FAILURE.search(line)]
    assert not failures, "the server logged failures:\n" + "\n".join(failures)


# -- the steps ----------------------------------------------------------------------------


def upload(
    client: writerai.Writer, graph_id: str, name: str, data: bytes, term: str | None = None
) -> Upload:
    file = client.files.upload(
        content=data,
        content_type="text/plain",
        content_disposition=f"attachment; filename={name}",
        graph_id=graph_id,
    )
    assert file.status == "in_progress"
    return Upload(file.id, name, data, expected_rows(data, name), term)


def catch_half_written(server: Server, client, graph_id: str, uploads: list[Upload]) -> dict:
    """Upload rounds of two ledgers until a file is seen half-written; the state then."""
    with reading(server.data_dir) as db:
        for round_number in range(ROUNDS):
            for _ in range(2):
                number = sum(each.term is not None for each in uploads)
                data = ledger(number, LEDGER_BYTES * 2**round_number)
                term = f"ledger{number}"
                uploads.append(upload(client, graph_id, f"{term}.txt", data, term))
            deadline = time.monotonic() + CATCH_TIMEOUT
            while time.monotonic() < deadline:
                state = progress(db)
                if half_written(state, uploads):
                    return state
                if all(status != "in_progress" for status, _ in state.values()):
                    break  # all done already: more, and larger
                time.sleep(0.005)
    return state


def wait_until_ingested(client: writerai.Writer, graph_id: str, expected: int) -> list:
    deadline = time.monotonic() + INGEST_TIMEOUT
    while True:
        files = list(client.files.list(graph_id=graph_id, limit=100))
        if len(files) == expected and all(f.status != "in_progress" for f in files):
            return files
        assert time.monotonic() < deadline, [(f.name, f.status) for f in files]
        time.sleep(0.2)


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_restart_mid_ingestion_finishes_every_file_once(tmp_path, request, how):
    data_dir = tmp_path / "data"
    with serving(request, "before the stop", tmp_path / "first", data_dir) as (first, client):
        graph = client.graphs.create(name="Harbour", description="restart")
        ferry = b"The Kessa ferry leaves the quay at seven every morning.\n"
        uploads = [upload(client, graph.id, "ferry.txt", ferry)]
        uploads.append(upload(client, graph.id, "archive.pdf", archive_pdf()))
        caught = catch_half_written(first, client, graph.id, uploads)
        stop(first, how)
        assert_no_failures(first)
    with reading(data_dir) as db:
        left = progress(db)  # what the second server starts from
    request.node.add_report_section("call", "the stop", describe(caught, left, uploads))

    with serving(request, "after the restart", tmp_path / "second", data_dir) as (second, client):
        check_every_file_ingested_once(client, second, graph.id, uploads)
        assert_no_failures(second)
    check_full_text_index(data_dir)


@contextlib.contextmanager
def serving(request, name: str, folder: Path, data_dir: Path):
    """A server on `data_dir` and an SDK client of it; its log goes in the test's report."""
    with running_server(folder, *FLAGS, key=KEY, data_dir=data_dir) as server:
        try:
            with writerai.Writer(api_key=KEY, base_url=server.url, max_retries=0) as client:
                yield server, client
        finally:
            request.node.add_report_section("call", f"inkstand log ({name})", server.dump())


def describe(caught: dict, left: dict, uploads: list[Upload]) -> str:
    """Each file's (status, chunks written) when the stop was sent and once it was done."""
    return "\n".join(
        f"{each.name}: {caught.get(each.id)} when stopped, {left.get(each.id)} after, "
        f"of {len(each.chunks)} chunks"
        for each in uploads
    )


def check_every_file_ingested_once(client, server: Server, graph_id: str, uploads) -> None:
    files = wait_until_ingested(client, graph_id, len(uploads))
    assert {f.id: f.status for f in files} == {each.id: "completed" for each in uploads}
    status = client.graphs.retrieve(graph_id).file_status
    counts = (status.in_progress, status.completed, status.failed, status.total)
    assert counts == (0, len(uploads), 0, len(uploads))
    with reading(server.data_dir) as db:
        for each in uploads:
            kept = client.files.download(each.id).read()
            assert hashlib.sha256(kept).digest() == hashlib.sha256(each.data).digest(), each.name
            stored = stored_chunks(db, each.id)
            assert len(stored) == len(each.chunks), f"{each.name}: {len(stored)} chunks"
            assert stored == each.chunks, each.name
            if each.term is not None:
                match = "SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH ?"
                assert db.execute(match, (each.term,)).fetchone()[0] == len(each.chunks)
    archive = next(each for each in uploads if each.name == "archive.pdf")
    question = "When is the Varnel lighthouse lamp lit each evening?"
    with client.graphs.question(graph_ids=[graph_id], question=question, stream=True) as stream:
        first = next(iter(stream))  # the sources come first; leaving cancels the answer
    sources = first.data.sources
    assert any(s.file_id == archive.id and "19:40" in s.snippet for s in sources), sources


def check_full_text_index(data_dir: Path) -> None:
    """FTS5's own check that its index matches the chunks table (the servers are gone)."""
    with contextlib.closing(sqlite3.connect(data_dir / "inkstand.sqlite3")) as db:
        db.execute("INSERT INTO chunks_fts (chunks_fts, rank) VALUES ('integrity-check', 1)")
