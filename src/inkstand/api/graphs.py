"""Writer's Knowledge Graph API, without `POST /v1/graphs/question` (its own module).

    POST   /v1/graphs                          {name?, description?} -> graph
    GET    /v1/graphs                          cursor pages of graphs with `file_status`
    GET    /v1/graphs/{id}                     -> graph with `file_status`
    PUT    /v1/graphs/{id}                     {name?, description?, urls?} -> graph
    DELETE /v1/graphs/{id}                     -> {id, deleted}; its files stay
    POST   /v1/graphs/{id}/file                {file_id} -> File
    DELETE /v1/graphs/{id}/file/{file_id}      -> {id, deleted}

Every graph is Writer's `manual` kind (files added by API); `urls` belong to `web` graphs, so a
non-empty `urls` gets 400 (`[]`, "clear the URLs", changes nothing). Names and descriptions
hold at most 255 characters; a member left out or `null` leaves it as it is. `description`
and `urls` are left out of a graph that has none: Writer's document types them as a string
and an array, never null.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse

from inkstand.api.body import read_model
from inkstand.api.files import file_json, method_route
from inkstand.api.pagination import render_page, window_from
from inkstand.errors import BadRequestError
from inkstand.store.files import NoSuchFileError
from inkstand.store.graphs import GraphRecord, GraphStore

MAX_TEXT = 255


class GraphRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    name: str | None = Field(default=None, max_length=MAX_TEXT)
    description: str | None = Field(default=None, max_length=MAX_TEXT)


class GraphUpdate(GraphRequest):
    urls: list[Any] | None = None


class GraphFileRequest(BaseModel):
    file_id: str


def graph_json(record: GraphRecord) -> dict[str, Any]:
    """Writer's `graph_response` (create, update)."""
    body: dict[str, Any] = {"id": record.id, "created_at": record.created_at, "name": record.name}
    if record.description is not None:
        body["description"] = record.description
    return body


def graph_with_status(record: GraphRecord) -> dict[str, Any]:
    """Writer's `graph` (retrieve, list)."""
    status = record.file_status
    return {
        **graph_json(record),
        "file_status": {
            "in_progress": status.in_progress,
            "completed": status.completed,
            "failed": status.failed,
            "total": status.total,
        },
        "type": "manual",
    }


def graphs_of(request: Request) -> GraphStore:
    return request.app.state.graphs


async def create_graph(request: Request) -> JSONResponse:
    body = await read_model(request, GraphRequest, request.app.state.settings)
    record = await graphs_of(request).create(body.name or "", body.description)
    return JSONResponse(graph_json(record))


async def list_graphs(request: Request) -> JSONResponse:
    page = graphs_of(request).page(window_from(request.query_params))
    return JSONResponse(render_page(page, graph_with_status))


async def get_graph(request: Request) -> JSONResponse:
    return JSONResponse(graph_with_status(graphs_of(request).get(request.path_params["graph_id"])))


async def update_graph(request: Request) -> JSONResponse:
    graph_id = request.path_params["graph_id"]
    graphs = graphs_of(request)
    current = graphs.get(graph_id)  # 404 before any complaint about the body
    body = await read_model(request, GraphUpdate, request.app.state.settings)
    if body.urls:
        raise BadRequestError(
            "`urls`: only `web` graphs have URLs; Inkstand's graphs are `manual` (they hold "
            "uploaded files).",
        )
    if body.name is None and body.description is None:
        return JSONResponse(graph_json(current))
    record = await graphs.update(graph_id, name=body.name, description=body.description)
    return JSONResponse(graph_json(record))


async def delete_graph(request: Request) -> JSONResponse:
    graph_id = request.path_params["graph_id"]
    await graphs_of(request).delete(graph_id)
    return JSONResponse({"id": graph_id, "deleted": True})


async def add_file_to_graph(request: Request) -> JSONResponse:
    graph_id = request.path_params["graph_id"]
    body = await read_model(request, GraphFileRequest, request.app.state.settings)
    try:
        record = await graphs_of(request).add_file(graph_id, body.file_id)
    except NoSuchFileError as exc:
        raise BadRequestError(f"`file_id`: {exc.description}", extras=exc.extras) from exc
    return JSONResponse(file_json(record))


async def remove_file_from_graph(request: Request) -> JSONResponse:
    graph_id, file_id = request.path_params["graph_id"], request.path_params["file_id"]
    await graphs_of(request).remove_file(graph_id, file_id)
    return JSONResponse({"id": file_id, "deleted": True})


ROUTES = [
    method_route("/v1/graphs", {"GET": list_graphs, "POST": create_graph}),
    method_route(
        "/v1/graphs/{graph_id}", {"GET": get_graph, "PUT": update_graph, "DELETE": delete_graph}
    ),
    method_route("/v1/graphs/{graph_id}/file", {"POST": add_file_to_graph}),
    method_route("/v1/graphs/{graph_id}/file/{file_id}", {"DELETE": remove_file_from_graph}),
]
