"""Writer's Knowledge Graph API in process (without `/v1/graphs/question`): create, list,
retrieve, update, delete, add and remove files; `file_status` from the files' statuses; every
answer valid against Writer's OpenAPI document, every refusal in Writer's envelope."""

from __future__ import annotations

import uuid

import pytest

from .test_files import page, refused, set_status, upload, valid

pytestmark = pytest.mark.knowledge


async def create(client, **body) -> dict:
    response = await client.post("/v1/graphs", json=body)
    assert response.status_code == 200, response.text
    return response.json()


# -- create, retrieve, update, delete -----------------------------------------------------------


async def test_create_answers_a_graph_response(client, schemas):
    graph = valid(schemas, "graph_response", await create(client, name="Coast", description="Sea"))
    assert graph["name"] == "Coast" and graph["description"] == "Sea"
    assert uuid.UUID(graph["id"]).version == 7
    assert "urls" not in graph


async def test_create_without_fields_makes_an_unnamed_graph(client, schemas):
    graph = valid(schemas, "graph_response", await create(client))
    assert graph["name"] == "" and "description" not in graph


async def test_retrieve_answers_a_manual_graph_with_file_status(client, schemas):
    made = await create(client, name="Coast")
    got = valid(schemas, "graph", (await client.get(f"/v1/graphs/{made['id']}")).json())
    assert got["type"] == "manual"
    assert got["file_status"] == {"in_progress": 0, "completed": 0, "failed": 0, "total": 0}
    assert {k: got[k] for k in made} == made


async def test_file_status_counts_the_files_by_status(app, client):
    graph = (await create(client))["id"]
    files = [await upload(client, name=f"f{i}.txt", graphId=graph) for i in range(4)]
    await upload(client, name="elsewhere.txt")  # in no graph: not counted
    await set_status(app, files[0]["id"], "completed")
    await set_status(app, files[1]["id"], "failed", "no text")
    status = (await client.get(f"/v1/graphs/{graph}")).json()["file_status"]
    assert status == {"in_progress": 2, "completed": 1, "failed": 1, "total": 4}
    listed = (await page(client, "/v1/graphs"))["data"][0]["file_status"]
    assert listed == status


async def test_update_changes_what_is_given(client, schemas):
    graph = await create(client, name="Coast", description="Sea")
    path = f"/v1/graphs/{graph['id']}"
    renamed = valid(
        schemas, "graph_response", (await client.put(path, json={"name": "Shore"})).json()
    )
    assert renamed == {**graph, "name": "Shore"}
    described = (await client.put(path, json={"description": "Waves", "urls": []})).json()
    assert described == {**graph, "name": "Shore", "description": "Waves"}
    same = (await client.put(path, json={"name": None})).json()
    assert same == described
    assert (await client.get(path)).json()["name"] == "Shore"


async def test_delete_leaves_the_graphs_files(client, schemas):
    graph = (await create(client))["id"]
    file = await upload(client, graphId=graph)
    response = await client.delete(f"/v1/graphs/{graph}")
    assert valid(schemas, "delete_graph_response", response.json()) == {
        "id": graph,
        "deleted": True,
    }
    refused(await client.get(f"/v1/graphs/{graph}"), 404, graph)
    got = (await client.get(f"/v1/files/{file['id']}")).json()
    assert got["graph_ids"] == []


@pytest.mark.parametrize("length", [255, 256])
@pytest.mark.parametrize("field", ["name", "description"])
async def test_names_and_descriptions_hold_255_characters(client, field, length):
    body = {field: "n" * length}
    graph = (await create(client))["id"]
    for response in (
        await client.post("/v1/graphs", json=body),
        await client.put(f"/v1/graphs/{graph}", json=body),
    ):
        if length == 255:
            assert response.status_code == 200 and response.json()[field] == body[field]
        else:
            refused(response, 400, field, "255")


BAD_BODIES = {
    "empty": (b"", "empty"),
    "not json": (b"{name", "JSON"),
    "not an object": (b"[]", "Invalid"),
    "number name": (b'{"name": 5}', "name"),
    "list description": (b'{"description": ["x"]}', "description"),
}


@pytest.mark.parametrize("case", list(BAD_BODIES))
async def test_bad_create_and_update_bodies_get_400(client, case):
    content, word = BAD_BODIES[case]
    graph = (await create(client))["id"]
    refused(await client.post("/v1/graphs", content=content), 400, word)
    refused(await client.put(f"/v1/graphs/{graph}", content=content), 400, word)


async def test_urls_belong_to_web_graphs(client):
    graph = (await create(client))["id"]
    urls = [{"url": "https://example.com", "type": "single_page"}]
    response = await client.put(f"/v1/graphs/{graph}", json={"urls": urls})
    refused(response, 400, "urls", "web")


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/v1/graphs/{id}", None),
        ("PUT", "/v1/graphs/{id}", {"name": "x"}),
        ("PUT", "/v1/graphs/{id}", {"urls": [{"url": "u"}]}),
        ("DELETE", "/v1/graphs/{id}", None),
        ("POST", "/v1/graphs/{id}/file", {"file_id": "f"}),
        ("DELETE", "/v1/graphs/{id}/file/f", None),
    ],
)
async def test_an_unknown_graph_is_a_404(client, method, path, body):
    graph_id = str(uuid.uuid4())
    response = await client.request(method, path.format(id=graph_id), json=body)
    error = refused(response, 404, graph_id)
    assert error["key"] == "fail.notFound.resource"


# -- files in graphs ----------------------------------------------------------------------------


async def test_add_a_file_answers_the_file_in_the_graph(client, schemas):
    graphs = [(await create(client, name=n))["id"] for n in ("a", "b")]
    file = await upload(client)
    for graph in graphs:
        response = await client.post(f"/v1/graphs/{graph}/file", json={"file_id": file["id"]})
        assert response.status_code == 200, response.text
        added = valid(schemas, "file_response", response.json())
    assert added["graph_ids"] == graphs
    again = await client.post(f"/v1/graphs/{graphs[0]}/file", json={"file_id": file["id"]})
    assert again.json()["graph_ids"] == graphs  # adding twice is adding once
    status = (await client.get(f"/v1/graphs/{graphs[0]}")).json()["file_status"]
    assert status["total"] == 1


async def test_remove_a_file_from_a_graph(client, schemas):
    graph = (await create(client))["id"]
    file = await upload(client, graphId=graph)
    path = f"/v1/graphs/{graph}/file/{file['id']}"
    response = await client.delete(path)
    assert valid(schemas, "delete_file_response", response.json()) == {
        "id": file["id"],
        "deleted": True,
    }
    assert (await client.get(f"/v1/files/{file['id']}")).json()["graph_ids"] == []
    assert (await client.get(f"/v1/files/{file['id']}")).status_code == 200  # the file stays
    refused(await client.delete(path), 404, file["id"])


async def test_an_unknown_file_added_to_a_graph_is_a_400(client):
    graph = (await create(client))["id"]
    unknown = str(uuid.uuid4())
    response = await client.post(f"/v1/graphs/{graph}/file", json={"file_id": unknown})
    refused(response, 400, "file_id", unknown)
    assert (await client.get(f"/v1/graphs/{graph}")).json()["file_status"]["total"] == 0


@pytest.mark.parametrize("content", [b"", b"{}", b'{"file_id": 5}', b'{"file_id": null}'])
async def test_a_bad_add_file_body_is_a_400(client, content):
    graph = (await create(client))["id"]
    refused(await client.post(f"/v1/graphs/{graph}/file", content=content), 400)


# -- list ---------------------------------------------------------------------------------------


async def test_graph_pages_walk_every_graph(client, schemas):
    ids = [(await create(client, name=f"g{i}"))["id"] for i in range(5)]
    seen, cursor, pages = [], {}, 0
    while True:
        body = valid(
            schemas, "graphs_response", await page(client, "/v1/graphs", limit=2, **cursor)
        )
        pages += 1
        seen += [g["id"] for g in body["data"]]
        if not body["has_more"]:
            break
        cursor = {"after": body["last_id"]}
    assert seen == ids[::-1] and pages == 3
    ascending = await page(client, "/v1/graphs", order="asc", limit=5)
    assert [g["id"] for g in ascending["data"]] == ids
    back = await page(client, "/v1/graphs", limit=2, before=ids[2])
    assert [g["id"] for g in back["data"]] == [ids[4], ids[3]] and not back["has_more"]


async def test_an_empty_graph_list(client, schemas):
    body = valid(schemas, "graphs_response", await page(client, "/v1/graphs"))
    assert body == {"data": [], "has_more": False}


@pytest.mark.parametrize(
    ("params", "word"),
    [
        ({"limit": "0"}, "limit"),
        ({"limit": "101"}, "limit"),
        ({"limit": "x"}, "limit"),
        ({"order": "up"}, "order"),
        ({"after": "g1"}, "after"),
        ({"before": "g1"}, "before"),
        ({"after": str(uuid.uuid4()), "before": str(uuid.uuid4())}, "not both"),
    ],
)
async def test_bad_graph_list_parameters_get_400_naming_them(client, params, word):
    refused(await client.get("/v1/graphs", params=params), 400, word)


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/graphs"),
        ("GET", "/v1/graphs"),
        ("GET", "/v1/graphs/x"),
        ("PUT", "/v1/graphs/x"),
        ("DELETE", "/v1/graphs/x"),
        ("POST", "/v1/graphs/x/file"),
        ("DELETE", "/v1/graphs/x/file/y"),
    ],
)
async def test_every_graph_route_needs_a_key(client, method, path):
    refused(await client.request(method, path, headers={"Authorization": ""}), 401)
