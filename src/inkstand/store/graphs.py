"""Knowledge Graphs: named sets of uploaded files (`graphs`, `graph_files`).

A graph is Writer's `manual` kind: it holds files added to it (at upload with `graphId`, or
later). Deleting a graph leaves its files; deleting a file takes it out of every graph
(`store/files.py`). `file_status` counts a graph's files by their ingestion status.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, replace

from inkstand.errors import NotFoundError
from inkstand.store.db import Store
from inkstand.store.files import (
    STATUSES,
    FileRecord,
    FileStore,
    NoSuchFileError,
    NoSuchGraphError,
    Page,
    TimeOrderedIds,
    Window,
    link_graph,
    select_page,
    wire_time,
)

__all__ = ["FileStatus", "GraphRecord", "GraphStore", "NoSuchGraphError"]


@dataclass(frozen=True)
class FileStatus:
    completed: int = 0
    failed: int = 0
    in_progress: int = 0
    total: int = 0


@dataclass(frozen=True)
class GraphRecord:
    id: str
    name: str
    description: str | None
    created_at: str
    file_status: FileStatus = FileStatus()


_COLUMNS = "id, name, description, created_at"


class GraphStore:
    def __init__(self, store: Store, files: FileStore) -> None:
        self._store = store
        self._conn = store.conn
        self._files = files
        self._ids = TimeOrderedIds(store.conn, "graphs")

    def get(self, graph_id: str) -> GraphRecord:
        found = _graph_row(self._conn, graph_id)
        return _with_status(self._conn, [found])[0]

    def page(self, window: Window) -> Page[GraphRecord]:
        rows, has_more = select_page(
            self._conn, f"SELECT {_COLUMNS} FROM graphs WHERE 1", (), window
        )
        return Page(_with_status(self._conn, [GraphRecord(*row) for row in rows]), has_more)

    async def create(self, name: str, description: str | None) -> GraphRecord:
        record = GraphRecord(self._ids.new(), name, description, wire_time())

        def insert(conn: sqlite3.Connection) -> None:
            conn.execute(
                f"INSERT INTO graphs ({_COLUMNS}) VALUES (?, ?, ?, ?)",
                (record.id, name, description, record.created_at),
            )

        await self._store.writer.run(insert)
        return record

    async def update(
        self, graph_id: str, *, name: str | None = None, description: str | None = None
    ) -> GraphRecord:
        """Change what is given (None: leave it); the graph as it now is."""

        def update(conn: sqlite3.Connection) -> GraphRecord:
            found = _graph_row(conn, graph_id)
            changed = replace(
                found,
                name=found.name if name is None else name,
                description=found.description if description is None else description,
            )
            conn.execute(
                "UPDATE graphs SET name = ?, description = ? WHERE id = ?",
                (changed.name, changed.description, graph_id),
            )
            return changed

        return await self._store.writer.run(update)

    async def delete(self, graph_id: str) -> None:
        """Delete a graph and its memberships; its files stay."""

        def delete(conn: sqlite3.Connection) -> None:
            if conn.execute("DELETE FROM graphs WHERE id = ?", (graph_id,)).rowcount == 0:
                raise NoSuchGraphError(graph_id)
            conn.execute("DELETE FROM graph_files WHERE graph_id = ?", (graph_id,))

        await self._store.writer.run(delete)

    async def add_file(self, graph_id: str, file_id: str) -> FileRecord:
        """Put a file in a graph (again is fine); the file as it now is."""

        def add(conn: sqlite3.Connection) -> None:
            _graph_row(conn, graph_id)
            if conn.execute("SELECT 1 FROM files WHERE id = ?", (file_id,)).fetchone() is None:
                raise NoSuchFileError([file_id])
            link_graph(conn, graph_id, file_id)

        await self._store.writer.run(add)
        return self._files.get(file_id)

    async def remove_file(self, graph_id: str, file_id: str) -> None:
        """Take a file out of a graph; NotFoundError if it is not in it."""

        def remove(conn: sqlite3.Connection) -> None:
            _graph_row(conn, graph_id)
            removed = conn.execute(
                "DELETE FROM graph_files WHERE graph_id = ? AND file_id = ?", (graph_id, file_id)
            ).rowcount
            if not removed:
                raise NotFoundError(f"The graph {graph_id} holds no file with the id {file_id}.")

        await self._store.writer.run(remove)


def _graph_row(conn: sqlite3.Connection, graph_id: str) -> GraphRecord:
    row = conn.execute(f"SELECT {_COLUMNS} FROM graphs WHERE id = ?", (graph_id,)).fetchone()
    if row is None:
        raise NoSuchGraphError(graph_id)
    return GraphRecord(*row)


def _with_status(conn: sqlite3.Connection, graphs: list[GraphRecord]) -> list[GraphRecord]:
    """`graphs` with their files counted by status, in one query."""
    if not graphs:
        return graphs
    ids = [g.id for g in graphs]
    rows = conn.execute(
        "SELECT gf.graph_id, f.status, COUNT(*) FROM graph_files AS gf "
        f"JOIN files AS f ON f.id = gf.file_id WHERE gf.graph_id IN ({','.join('?' * len(ids))}) "
        "GROUP BY gf.graph_id, f.status",
        ids,
    ).fetchall()
    counts: dict[str, dict[str, int]] = {}
    for graph_id, status, count in rows:
        counts.setdefault(graph_id, {})[status] = count
    out = []
    for graph in graphs:
        mine = counts.get(graph.id, {})
        known = {status: mine.get(status, 0) for status in STATUSES}
        status = FileStatus(**known, total=sum(mine.values()))
        out.append(replace(graph, file_status=status))
    return out
