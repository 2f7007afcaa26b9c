"""Files and Knowledge Graphs on the real server, through the official `writerai` SDK.

Upload as Writer's Python SDK sends it (the raw body, `text/plain` whatever the file),
auto-pagination over several pages, retrieve, download, delete; graphs created, listed,
updated, deleted, with files added and removed. What ingestion makes of the files is another
module's business: only the status an upload sets is checked. The session server is shared,
so listings are scoped to a graph of the test's own, or checked to include its files.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import socket
import sqlite3
import stat
import time

import httpx
import pytest
import writerai

from .support import KEY, Server, running_server

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

TEXT = b"The lighthouse keeper lit the lamp every evening at dusk.\n"


def upload(client: writerai.Writer, data: bytes = TEXT, name: str = "notes.txt", **options):
    return client.files.upload(
        content=data,
        content_type="text/plain",
        content_disposition=f"attachment; filename={name}",
        **options,
    )


def test_upload_retrieve_download_and_delete(client, server):
    file = upload(client)
    assert file.name == "notes.txt" and file.status == "in_progress" and file.graph_ids == []
    got = client.files.retrieve(file.id)  # its status is ingestion's from now on
    assert got.model_dump(exclude={"status"}) == file.model_dump(exclude={"status"})
    assert client.files.download(file.id).read() == TEXT
    blob = server.data_dir / "files" / hashlib.sha256(TEXT).hexdigest()
    assert stat.S_IMODE(os.stat(blob).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(blob.parent).st_mode) == 0o700
    deleted = client.files.delete(file.id)
    assert deleted.id == file.id and deleted.deleted is True
    with pytest.raises(writerai.NotFoundError):
        client.files.retrieve(file.id)


def test_auto_pagination_walks_every_page(client):
    graph = client.graphs.create(name="pages")
    mine = [upload(client, data=b"%d\n" % i, name=f"p{i}.txt", graph_id=graph.id) for i in range(5)]
    newest_first = [f.id for f in reversed(mine)]
    first = client.files.list(limit=2, graph_id=graph.id)
    assert len(list(first.iter_pages())) == 3
    assert [f.id for f in client.files.list(limit=2, graph_id=graph.id)] == newest_first
    every = [f.id for f in client.files.list(limit=2)]
    assert set(newest_first) <= set(every)
    assert len(every) == len(set(every))
    oldest_first = [f.id for f in client.files.list(limit=2, order="asc", graph_id=graph.id)]
    assert oldest_first == newest_first[::-1]
    for file in mine:
        client.files.delete(file.id)
    client.graphs.delete(graph.id)


def test_graphs_are_created_listed_updated_and_deleted(client):
    made = [client.graphs.create(name=f"g{i}", description="shelf") for i in range(3)]
    assert made[0].name == "g0" and made[0].description == "shelf"
    got = client.graphs.retrieve(made[0].id)
    assert got.type == "manual" and got.file_status.total == 0
    listed = [g.id for g in client.graphs.list(limit=2)]
    assert {g.id for g in made} <= set(listed)
    updated = client.graphs.update(made[0].id, name="renamed", description="new")
    assert (updated.name, updated.description) == ("renamed", "new")
    assert client.graphs.retrieve(made[0].id).name == "renamed"
    for graph in made:
        assert client.graphs.delete(graph.id).deleted is True
    with pytest.raises(writerai.NotFoundError):
        client.graphs.retrieve(made[0].id)


def test_files_are_added_to_graphs_and_removed(client):
    graph = client.graphs.create(name="shelf")
    file = upload(client)
    added = client.graphs.add_file_to_graph(graph.id, file_id=file.id)
    assert added.id == file.id and added.graph_ids == [graph.id]
    assert client.graphs.retrieve(graph.id).file_status.total == 1
    both = client.graphs.upload_and_add_file_to_graph(
        graph.id,
        content=b"second",
        content_type="text/plain",
        content_disposition="attachment; filename=second.md",
    )
    assert both.graph_ids == [graph.id]
    assert {f.id for f in client.files.list(graph_id=graph.id)} == {file.id, both.id}
    removed = client.graphs.remove_file_from_graph(file.id, graph_id=graph.id)
    assert removed.id == file.id and removed.deleted is True
    assert client.files.retrieve(file.id).graph_ids == []
    client.graphs.delete(graph.id)
    assert client.files.retrieve(both.id).graph_ids == []  # the file outlives its graph
    for each in (file, both):
        client.files.delete(each.id)


def test_an_upload_into_a_graph(client):
    graph = client.graphs.create(name="upload")
    file = upload(client, graph_id=graph.id)
    assert file.graph_ids == []  # as Writer's upload answers
    assert client.files.retrieve(file.id).graph_ids == [graph.id]
    client.files.delete(file.id)
    client.graphs.delete(graph.id)


def test_retry_answers_success(client):
    file = upload(client)
    assert client.files.retry(file_ids=[file.id]).success is True
    with pytest.raises(writerai.BadRequestError):
        client.files.retry(file_ids=["00000000-0000-7000-8000-000000000000"])
    client.files.delete(file.id)


def test_bad_uploads_are_refused_with_400(client):
    with pytest.raises(writerai.BadRequestError) as caught:
        upload(client, name="photo.jpg")
    assert "supported file types" in str(caught.value)
    with pytest.raises(writerai.BadRequestError):
        upload(client, name="../notes.txt")
    with pytest.raises(writerai.BadRequestError):
        upload(client, data=b"")


def test_an_upload_cut_short_leaves_nothing_behind(client, server):
    kept = upload(client)  # the blob dir exists
    start = server.log_size()
    head = (
        f"POST /v1/files HTTP/1.1\r\nHost: inkstand\r\nAuthorization: Bearer {KEY}\r\n"
        "Content-Disposition: attachment; filename=cut.txt\r\nContent-Length: 100000\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", server.port)) as sock:
        sock.sendall(head.encode() + b"x" * 5000)
        time.sleep(0.2)  # the server is now writing the first bytes
    server.wait_for_log(r"POST /v1/files 499", since=start)
    assert not list((server.data_dir / "files").glob(".upload-*"))
    assert "cut.txt" not in {f.name for f in client.files.list()}
    client.files.delete(kept.id)


@pytest.fixture(scope="module")
def small_server(tmp_path_factory) -> Server:
    """A server storing files of at most 1 KiB and 2.5 KiB in all."""
    folder = tmp_path_factory.mktemp("small-files")
    flags = ("--max-file-bytes", "1024", "--max-storage-bytes", "2560", "--ctx-size", "512")
    with running_server(folder, *flags, key=KEY) as small:
        yield small


@pytest.mark.server_failures(r"/v1/files 507 ")
def test_file_and_storage_limits_come_from_the_command_line(small_server):
    headers = {
        "Authorization": f"Bearer {KEY}",
        "Content-Disposition": "attachment; filename=a.txt",
    }
    with httpx.Client(base_url=small_server.url, headers=headers, timeout=30) as http:
        assert http.post("/v1/files", content=b"x" * 1025).status_code == 413
        assert http.post("/v1/files", content=b"x" * 1024).status_code == 200
        assert http.post("/v1/files", content=b"y" * 1024).status_code == 200
        full = http.post("/v1/files", content=b"z" * 1024)
    assert full.status_code == 507 and full.headers["x-should-retry"] == "false"
    sdk = writerai.Writer(api_key=KEY, base_url=small_server.url, max_retries=2)
    with sdk, pytest.raises(writerai.InternalServerError) as caught:
        upload(sdk, data=b"w" * 1024)
    assert caught.value.status_code == 507
    # Usage records are committed before a response's last byte: they count every attempt.
    with contextlib.closing(sqlite3.connect(small_server.data_dir / "inkstand.sqlite3")) as db:
        refusals = db.execute("SELECT COUNT(*) FROM usage WHERE status = 507").fetchone()[0]
    assert refusals == 2  # the SDK did not retry
