"""Writer's Files API in process: upload (names, types, limits, the blob store), list (cursor
pages and filters), retrieve, download, delete, retry; every answer valid against Writer's
OpenAPI document, every refusal in Writer's envelope. Ingestion is not under test here: the
app's worker, if it has one, is stopped, so statuses change only as the tests say."""

from __future__ import annotations

import os
import stat
import uuid
from dataclasses import replace

import pytest

from inkstand.app import create_app
from inkstand.errors import InsufficientStorageError
from inkstand.store import open_store
from inkstand.store.files import FileStore

from .conftest import MAX_FILE, MAX_STORAGE, api_client, quiet_ingestion, settings
from .test_errors import envelope_ok

pytestmark = pytest.mark.knowledge

TEXT = b"The lighthouse keeper lit the lamp at dusk.\n"


def valid(schemas, name: str, body: dict) -> dict:
    errors = [e.message for e in schemas[name].iter_errors(body)]
    assert not errors, f"{name}: {errors} in {body}"
    return body


def refused(response, status: int, *words: str) -> dict:
    """The response is a `status` refusal in Writer's envelope whose description holds
    `words`; its one error."""
    assert response.status_code == status, response.text
    body = response.json()
    assert envelope_ok(body), body
    assert response.headers["x-should-retry"] == "false"
    error = body["errors"][0]
    for word in words:
        assert word in error["description"], error["description"]
    return error


def disposition(name: str) -> dict[str, str]:
    return {"Content-Disposition": f"attachment; filename={name}", "Content-Type": "text/plain"}


async def upload(client, data: bytes = TEXT, name: str = "notes.txt", **params) -> dict:
    response = await client.post(
        "/v1/files", content=data, headers=disposition(name), params=params
    )
    assert response.status_code == 200, response.text
    return response.json()


async def set_status(app, file_id: str, status: str, error: str | None = None) -> None:
    await app.state.store.writer.run(
        lambda conn: conn.execute(
            "UPDATE files SET status = ?, error = ? WHERE id = ?", (status, error, file_id)
        )
    )


def blob_dir(app):
    return app.state.files.blobs.folder


def leftovers(app) -> list[str]:
    return [n for n in os.listdir(blob_dir(app)) if n.startswith(".")]


# -- upload -------------------------------------------------------------------------------------


async def test_an_upload_is_a_file_in_progress(client, schemas):
    file = valid(schemas, "file_response", await upload(client))
    assert file["name"] == "notes.txt"
    assert file["status"] == "in_progress"
    assert file["graph_ids"] == []
    assert uuid.UUID(file["id"]).version == 7
    got = (await client.get(f"/v1/files/{file['id']}")).json()
    assert valid(schemas, "file_response", got) == file


async def test_an_upload_wakes_ingestion(app, client):
    await upload(client)
    assert app.state.ingestion.wakes == 1


async def test_an_upload_into_a_graph_shows_it_on_retrieval_only(client, schemas):
    graph = (await client.post("/v1/graphs", json={"name": "Coast"})).json()
    file = valid(schemas, "file_response", await upload(client, graphId=graph["id"]))
    assert file["graph_ids"] == []  # as Writer's upload answers
    got = (await client.get(f"/v1/files/{file['id']}")).json()
    assert got["graph_ids"] == [graph["id"]]


async def test_bytes_are_stored_once_by_content_and_privately(app, client):
    first = await upload(client)
    second = await upload(client, name="copy.txt")
    third = await upload(client, data=b"other bytes")
    blobs = sorted(os.listdir(blob_dir(app)))
    assert len(blobs) == 2 and all(len(b) == 64 for b in blobs)
    assert stat.S_IMODE(os.stat(blob_dir(app)).st_mode) == 0o700
    assert all(stat.S_IMODE(os.stat(blob_dir(app) / b).st_mode) == 0o600 for b in blobs)
    await client.delete(f"/v1/files/{first['id']}")
    assert len(os.listdir(blob_dir(app))) == 2  # `copy.txt` still has those bytes
    await client.delete(f"/v1/files/{second['id']}")
    await client.delete(f"/v1/files/{third['id']}")
    assert os.listdir(blob_dir(app)) == []


async def test_the_blob_dir_is_beside_the_database(tmp_path):
    no_models = replace(settings(), models=())
    app = create_app(no_models, engines={}, store=open_store(str(tmp_path / "data")))
    async with api_client(app, lifespan=True) as client:
        quiet_ingestion(app)
        await upload(client)
    assert len(os.listdir(tmp_path / "data" / "files")) == 1


async def test_temp_files_a_crash_left_are_swept_at_start(tmp_path):
    folder = tmp_path / "data" / "files"
    folder.mkdir(parents=True)
    stale, fresh = folder / ".upload-old", folder / ".upload-new"
    for temp in (stale, fresh):
        temp.write_bytes(b"partial")
    os.utime(stale, (0, 0))
    store = open_store(str(tmp_path / "data"))
    try:
        FileStore(store)
    finally:
        store.close()
    assert sorted(os.listdir(folder)) == [".upload-new"]


async def test_a_name_may_come_rfc_5987_encoded(client):
    headers = {"Content-Disposition": "attachment; filename*=UTF-8''na%C3%AFve%20notes.txt"}
    response = await client.post("/v1/files", content=TEXT, headers=headers)
    assert response.json()["name"] == "naïve notes.txt"


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ('attachment; filename="my notes.txt"', "my notes.txt"),
        ('attachment; filename="say \\"hi\\".txt"', 'say "hi".txt'),
        ("ATTACHMENT;filename=report.MD", "report.MD"),
        ("attachment; filename=a.txt; filename*=UTF-8''b%C3%A9.txt", "bé.txt"),
        ("attachment; filename*=utf-8'en'page.htm; size=3", "page.htm"),
    ],
)
async def test_disposition_forms_that_name_a_file(client, header, name):
    response = await client.post("/v1/files", content=TEXT, headers={"Content-Disposition": header})
    assert response.status_code == 200, response.text
    assert response.json()["name"] == name


async def test_a_raw_utf8_name_is_read_as_utf8(client):
    header = 'attachment; filename="café.txt"'.encode()
    response = await client.post("/v1/files", content=TEXT, headers={"Content-Disposition": header})
    assert response.json()["name"] == "café.txt"


BAD_UPLOADS = {
    "no disposition": ({}, TEXT, "Content-Disposition"),
    "inline": ({"Content-Disposition": "inline; filename=a.txt"}, TEXT, "attachment"),
    "no filename": ({"Content-Disposition": "attachment"}, TEXT, "filename"),
    "malformed": ({"Content-Disposition": 'attachment; filename="a.txt" x'}, TEXT, "malformed"),
    "parent dir": (disposition("../a.txt"), TEXT, "path parts"),
    "sub dir": (disposition("dir/a.txt"), TEXT, "path parts"),
    "windows dir": (disposition("C:\\\\a.txt"), TEXT, "path parts"),
    "encoded slash": (
        {"Content-Disposition": "attachment; filename*=UTF-8''..%2Fa.txt"},
        TEXT,
        "path parts",
    ),
    "newline": (
        {"Content-Disposition": "attachment; filename*=UTF-8''a%0Ab.txt"},
        TEXT,
        "control characters",
    ),
    "escape": (
        {"Content-Disposition": "attachment; filename*=UTF-8''a%1B[31mb.txt"},
        TEXT,
        "control characters",
    ),
    "right-to-left override": (
        {"Content-Disposition": "attachment; filename*=UTF-8''a%E2%80%AEtxt.exe"},
        TEXT,
        "control characters",
    ),
    "not utf-8": (
        {"Content-Disposition": "attachment; filename*=UTF-8''a%FF.txt"},
        TEXT,
        "UTF-8",
    ),
    "unknown charset": (
        {"Content-Disposition": "attachment; filename*=koi8-r''a.txt"},
        TEXT,
        "RFC 5987",
    ),
    "empty name": ({"Content-Disposition": 'attachment; filename=""'}, TEXT, "empty"),
    "long name": (disposition("a" * 300 + ".txt"), TEXT, "255"),
    "image": (disposition("photo.jpg"), TEXT, "txt, md, html, pdf"),
    "no extension": (disposition("README"), TEXT, "supported file types"),
    "empty body": (disposition("a.txt"), b"", "empty"),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
async def test_bad_uploads_get_400_and_store_nothing(app, client, case):
    headers, data, words = BAD_UPLOADS[case]
    response = await client.post("/v1/files", content=data, headers=headers)
    refused(response, 400, words)
    assert (await client.get("/v1/files")).json()["data"] == []
    assert not os.path.exists(blob_dir(app)) or os.listdir(blob_dir(app)) == []
    assert app.state.ingestion.wakes == 0


@pytest.mark.parametrize("graph_id", [str(uuid.uuid4()), "not-a-graph"])
async def test_an_unknown_graph_id_on_upload_is_a_400(client, graph_id):
    response = await client.post(
        "/v1/files", content=TEXT, headers=disposition("a.txt"), params={"graphId": graph_id}
    )
    refused(response, 400, "graphId", graph_id)
    assert (await client.get("/v1/files")).json()["data"] == []


async def test_a_file_over_max_file_bytes_is_a_413(app, client):
    refused(
        await client.post("/v1/files", content=b"x" * (MAX_FILE + 1), headers=disposition("a.txt")),
        413,
        "max_file_bytes",
    )
    await upload(client, data=b"x" * MAX_FILE)  # the limit itself is fine
    assert leftovers(app) == []


async def test_a_streamed_file_is_cut_off_at_max_file_bytes(app, client):
    async def chunks():  # no Content-Length: the server counts as the bytes arrive
        for _ in range(MAX_FILE // 1024 + 8):
            yield b"x" * 1024

    response = await client.post("/v1/files", content=chunks(), headers=disposition("a.txt"))
    refused(response, 413, "max_file_bytes")
    assert leftovers(app) == []
    assert (await client.get("/v1/files")).json()["data"] == []


async def test_storage_past_max_storage_bytes_is_a_507_never_retried(app, client):
    kept = [await upload(client, data=bytes([i]) * MAX_FILE) for i in range(2)]
    response = await client.post("/v1/files", content=b"y" * MAX_FILE, headers=disposition("a.txt"))
    error = refused(response, 507, "max_storage_bytes", "Delete files")
    assert error["key"] == "fail.insufficientStorage"
    assert response.json()["tpe"] == "InsufficientStorage"

    async def chunks():
        for _ in range(MAX_FILE // 1024):
            yield b"z" * 1024

    streamed = await client.post("/v1/files", content=chunks(), headers=disposition("a.txt"))
    refused(streamed, 507, "max_storage_bytes")
    assert leftovers(app) == []
    assert app.state.files.stored_bytes() == 2 * MAX_FILE
    await client.delete(f"/v1/files/{kept[0]['id']}")
    await upload(client, data=b"y" * MAX_FILE)  # room again


async def test_the_quota_is_checked_again_when_the_row_is_written(app, client):
    files = app.state.files
    sink = files.new_sink()
    sink.write(b"q" * (MAX_STORAGE + 1))
    sink.finish()
    with pytest.raises(InsufficientStorageError):
        await files.add(sink, name="q.txt", kind="txt", max_storage=MAX_STORAGE)
    assert leftovers(app) == [] and os.listdir(blob_dir(app)) == []


# -- list ---------------------------------------------------------------------------------------


async def page(client, path: str = "/v1/files", **params) -> dict:
    response = await client.get(path, params=params)
    assert response.status_code == 200, response.text
    return response.json()


async def test_pages_walk_every_file_newest_first(client, schemas):
    ids = [(await upload(client, name=f"f{i}.txt"))["id"] for i in range(5)]
    newest_first = ids[::-1]
    seen, pages, cursor = [], [], {}
    while True:
        body = valid(schemas, "files_response", await page(client, limit=2, **cursor))
        pages.append(body)
        seen += [f["id"] for f in body["data"]]
        assert body["first_id"] == body["data"][0]["id"]
        assert body["last_id"] == body["data"][-1]["id"]
        if not body["has_more"]:
            break
        cursor = {"after": body["last_id"]}
    assert seen == newest_first
    assert [len(p["data"]) for p in pages] == [2, 2, 1]


async def test_pages_in_ascending_order(client):
    ids = [(await upload(client, name=f"f{i}.txt"))["id"] for i in range(4)]
    first = await page(client, limit=3, order="asc")
    assert [f["id"] for f in first["data"]] == ids[:3] and first["has_more"]
    rest = await page(client, limit=3, order="asc", after=first["last_id"])
    assert [f["id"] for f in rest["data"]] == ids[3:] and not rest["has_more"]


@pytest.mark.parametrize("order", ["desc", "asc"])
async def test_before_pages_backwards(client, order):
    ids = [(await upload(client, name=f"f{i}.txt"))["id"] for i in range(5)]
    listing = ids[::-1] if order == "desc" else ids
    last = await page(client, limit=2, order=order, after=listing[2])
    assert [f["id"] for f in last["data"]] == listing[3:5]
    back = await page(client, limit=2, order=order, before=last["first_id"])
    assert [f["id"] for f in back["data"]] == listing[1:3] and back["has_more"]
    start = await page(client, limit=2, order=order, before=back["first_id"])
    assert [f["id"] for f in start["data"]] == listing[:1] and not start["has_more"]


async def test_a_cursor_outlives_its_file(client):
    ids = [(await upload(client, name=f"f{i}.txt"))["id"] for i in range(3)]
    first = await page(client, limit=1)
    await client.delete(f"/v1/files/{first['last_id']}")
    rest = await page(client, limit=5, after=first["last_id"])
    assert [f["id"] for f in rest["data"]] == ids[1::-1]


async def test_an_empty_list(client, schemas):
    body = valid(schemas, "files_response", await page(client))
    assert body == {"data": [], "has_more": False}


async def test_the_default_page_holds_fifty(client):
    for i in range(51):
        await upload(client, data=bytes([i]) * 8, name=f"f{i}.txt")
    body = await page(client)
    assert len(body["data"]) == 50 and body["has_more"]


async def test_filters_by_graph_status_and_type(app, client):
    graph = (await client.post("/v1/graphs", json={"name": "g"})).json()["id"]
    txt = await upload(client, name="a.txt", graphId=graph)
    md = await upload(client, name="b.md")
    html = await upload(client, name="c.HTM", graphId=graph)
    await set_status(app, md["id"], "failed", "unreadable")

    def ids(body):
        return {f["id"] for f in body["data"]}

    assert ids(await page(client, graph_id=graph)) == {txt["id"], html["id"]}
    assert ids(await page(client, status="failed")) == {md["id"]}
    assert ids(await page(client, status="in_progress")) == {txt["id"], html["id"]}
    assert ids(await page(client, status="completed")) == set()
    assert ids(await page(client, file_types="txt,.MD")) == {txt["id"], md["id"]}
    assert ids(await page(client, file_types="htm")) == {html["id"]}
    assert ids(await page(client, file_types="pdf,jpg")) == set()
    assert ids(await page(client, graph_id=graph, file_types="txt")) == {txt["id"]}


BAD_QUERIES = {
    "limit zero": ({"limit": "0"}, "limit"),
    "limit over 100": ({"limit": "101"}, "limit"),
    "limit not a number": ({"limit": "ten"}, "limit"),
    "limit negative": ({"limit": "-1"}, "limit"),
    "limit fraction": ({"limit": "1.5"}, "limit"),
    "order": ({"order": "newest"}, "order"),
    "after": ({"after": "f1"}, "after"),
    "before": ({"before": "not-an-id"}, "before"),
    "both cursors": ({"after": str(uuid.uuid4()), "before": str(uuid.uuid4())}, "not both"),
    "status": ({"status": "done"}, "status"),
    "file types": ({"file_types": "pdf;rm -rf"}, "file_types"),
    "unknown graph": ({"graph_id": str(uuid.uuid4())}, "graph_id"),
}


@pytest.mark.parametrize("case", list(BAD_QUERIES))
async def test_bad_list_parameters_get_400_naming_them(client, case):
    params, word = BAD_QUERIES[case]
    refused(await client.get("/v1/files", params=params), 400, word)


async def test_limit_100_is_allowed(client):
    assert (await page(client, limit=100))["data"] == []


# -- one file -----------------------------------------------------------------------------------


async def test_download_gives_the_bytes_and_the_name(client):
    data = bytes(range(256)) * 4
    file = await upload(client, data=data, name="notes.md")
    response = await client.get(f"/v1/files/{file['id']}/download")
    assert response.status_code == 200
    assert response.content == data
    assert response.headers["content-type"].startswith("text/markdown")
    assert response.headers["content-disposition"] == 'attachment; filename="notes.md"'


async def test_download_names_a_non_ascii_file_by_rfc_5987(client):
    headers = {"Content-Disposition": "attachment; filename*=UTF-8''%C3%A9t%C3%A9.pdf"}
    file = (await client.post("/v1/files", content=b"%PDF-1.4", headers=headers)).json()
    response = await client.get(f"/v1/files/{file['id']}/download")
    assert response.headers["content-type"] == "application/pdf"
    assert (
        response.headers["content-disposition"] == "attachment; filename*=utf-8''%C3%A9t%C3%A9.pdf"
    )


async def test_a_missing_blob_is_a_500_never_retried(app, client):
    file = await upload(client)
    for name in os.listdir(blob_dir(app)):
        os.remove(blob_dir(app) / name)
    response = await client.get(f"/v1/files/{file['id']}/download")
    assert response.status_code == 500 and envelope_ok(response.json())
    assert response.headers["x-should-retry"] == "false"


async def test_delete_takes_the_row_its_graphs_and_its_chunks(app, client, schemas):
    graph = (await client.post("/v1/graphs", json={})).json()["id"]
    file = await upload(client, graphId=graph)

    def chunk(conn):
        conn.execute(
            'INSERT INTO chunks (file_id, ord, text, start, "end") VALUES (?, 0, ?, 0, 4)',
            (file["id"], "lamp"),
        )

    await app.state.store.writer.run(chunk)
    response = await client.delete(f"/v1/files/{file['id']}")
    assert valid(schemas, "delete_file_response", response.json()) == {
        "id": file["id"],
        "deleted": True,
    }
    conn = app.state.store.conn
    assert conn.execute("SELECT COUNT(*) FROM graph_files").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM chunks").fetchone()[0] == 0
    matches = "SELECT COUNT(*) FROM chunks_fts WHERE chunks_fts MATCH 'lamp'"
    assert conn.execute(matches).fetchone()[0] == 0
    assert (await client.get(f"/v1/graphs/{graph}")).json()["file_status"]["total"] == 0


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/v1/files/{id}"),
        ("DELETE", "/v1/files/{id}"),
        ("GET", "/v1/files/{id}/download"),
    ],
)
async def test_an_unknown_file_is_a_404(client, method, path):
    file_id = str(uuid.uuid4())
    response = await client.request(method, path.format(id=file_id))
    error = refused(response, 404, file_id)
    assert error["key"] == "fail.notFound.resource"


async def test_a_deleted_file_is_gone(client):
    file = await upload(client)
    await client.delete(f"/v1/files/{file['id']}")
    refused(await client.get(f"/v1/files/{file['id']}"), 404)
    refused(await client.delete(f"/v1/files/{file['id']}"), 404)


# -- retry --------------------------------------------------------------------------------------


async def test_retry_puts_failed_files_back_in_progress(app, client, schemas):
    failed = await upload(client, name="a.txt")
    done = await upload(client, name="b.txt")
    await set_status(app, failed["id"], "failed", "only images")
    await set_status(app, done["id"], "completed")
    wakes = app.state.ingestion.wakes
    response = await client.post("/v1/files/retry", json={"file_ids": [failed["id"], done["id"]]})
    assert valid(schemas, "retry_files_response", response.json()) == {"success": True}
    rows = app.state.store.conn.execute("SELECT id, status, error FROM files").fetchall()
    assert set(rows) == {(failed["id"], "in_progress", None), (done["id"], "completed", None)}
    assert app.state.ingestion.wakes == wakes + 1


async def test_retry_of_an_unknown_file_is_a_400_and_changes_nothing(app, client):
    failed = await upload(client)
    await set_status(app, failed["id"], "failed", "why")
    unknown = str(uuid.uuid4())
    response = await client.post("/v1/files/retry", json={"file_ids": [failed["id"], unknown]})
    error = refused(response, 400, "file_ids", unknown)
    assert error["extras"]["file_ids"] == [unknown]
    status = (await client.get(f"/v1/files/{failed['id']}")).json()["status"]
    assert status == "failed"


@pytest.mark.parametrize(
    "body", [b"", b"{}", b'{"file_ids": "abc"}', b'{"file_ids": [1]}', b"[not json"]
)
async def test_a_bad_retry_body_is_a_400(client, body):
    refused(await client.post("/v1/files/retry", content=body), 400)


# -- who sees files -----------------------------------------------------------------------------


async def test_every_key_sees_every_file(app, client):
    file = await upload(client)
    other = app.state.keys.create("other")
    headers = {"Authorization": f"Bearer {other.secret}"}
    listed = (await client.get("/v1/files", headers=headers)).json()["data"]
    assert [f["id"] for f in listed] == [file["id"]]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/files"),
        ("GET", "/v1/files"),
        ("GET", "/v1/files/x"),
        ("DELETE", "/v1/files/x"),
        ("GET", "/v1/files/x/download"),
        ("POST", "/v1/files/retry"),
    ],
)
async def test_every_route_needs_a_key(client, method, path):
    response = await client.request(method, path, headers={"Authorization": ""})
    refused(response, 401)


async def test_a_wrong_method_names_the_allowed_ones(client):
    response = await client.patch("/v1/files")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) == {"GET", "HEAD", "POST"}


async def test_uploads_are_recorded_as_usage(app, client):
    await upload(client)
    app.state.store.writer.submit(lambda conn: None).result()
    rows = app.state.store.conn.execute("SELECT endpoint, status, key_id FROM usage").fetchall()
    assert ("/v1/files", 200, "configured") in rows
