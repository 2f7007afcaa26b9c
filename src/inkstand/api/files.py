"""Writer's Files API: upload, list, retrieve, download, delete, retry.

    POST   /v1/files                 the raw body is the file; its name from Content-Disposition
    GET    /v1/files                 cursor pages; `graph_id`, `status`, `file_types` filters
    GET    /v1/files/{id}            -> File
    DELETE /v1/files/{id}            -> {id, deleted}
    GET    /v1/files/{id}/download   the bytes as uploaded
    POST   /v1/files/retry           {file_ids} -> {success}: failed files go back in the queue

An upload is streamed to a temp file in the blob dir (written and hashed on a worker
thread), within `max_file_bytes` (413) and the room `max_storage_bytes` leaves (507, never
retried); only then is its row written, and the ingestion worker woken. Its type comes from
the file name (Writer's Python SDK sends every upload as `text/plain`). Files belong to the
server, not to a key: every key sees every file, as every user of a Writer organisation does.

An id that names nothing gets 404 in the path, and 400 naming the parameter in the query or
body (`graphId`, `graph_id`, `file_ids`), as the spec advises for ids inside a request.
"""

from __future__ import annotations

import asyncio
import logging
import re
import unicodedata
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import unquote_to_bytes

from pydantic import BaseModel
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from inkstand.api.body import read_model
from inkstand.api.pagination import render_page, window_from
from inkstand.errors import (
    BadRequestError,
    BlobMissingError,
    InsufficientStorageError,
    PayloadTooLargeError,
)
from inkstand.knowledge.filetypes import ALIASES, SUPPORTED_TYPES, type_from_name
from inkstand.knowledge.ingest import wake_ingestion
from inkstand.store.files import (
    STATUSES,
    BlobSink,
    FileRecord,
    FileStore,
    NoSuchFileError,
    NoSuchGraphError,
    storage_full,
)

log = logging.getLogger("inkstand.api")

FLUSH_BYTES = 1024 * 1024  # received bytes handed to the writing thread at a time
MAX_NAME_CHARS = 255
MEDIA_TYPES = {
    "txt": "text/plain",
    "md": "text/markdown",
    "html": "text/html",
    "pdf": "application/pdf",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv",
    "eml": "message/rfc822",
    "srt": "application/x-subrip",
    "json": "application/json",
}
# One `; name=value` parameter: a quoted string, or anything up to the next `;`.
_PARAMETER = re.compile(r'\s*;\s*([^\s=;]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;]*)')
Endpoint = Callable[[Request], Awaitable[Response]]
_BIDI_CONTROLS = set("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def file_json(record: FileRecord, *, graph_ids: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Writer's `File`."""
    return {
        "id": record.id,
        "created_at": record.created_at,
        "name": record.name,
        "graph_ids": list(record.graph_ids if graph_ids is None else graph_ids),
        "status": record.status,
    }


def files_of(request: Request) -> FileStore:
    return request.app.state.files


# -- routes -------------------------------------------------------------------------------------


async def upload_file(request: Request) -> Response:
    settings = request.app.state.settings
    files = files_of(request)
    name = file_name(request.headers.get("content-disposition"))
    kind = file_type(name)
    graph_id = request.query_params.get("graphId")
    if graph_id is not None:
        _known_graph(request, graph_id, "graphId")
    room = _room(files, settings.max_storage_bytes)
    _check_declared(request, settings.max_file_bytes, room)
    sink = files.new_sink()
    try:
        await receive(request, sink, settings.max_file_bytes, room)
    except ClientDisconnect:  # nobody to answer; not a server failure either
        sink.discard()
        return Response(status_code=499)
    except BaseException:
        sink.discard()
        raise
    try:
        record = await files.add(
            sink, name=name, kind=kind, graph_id=graph_id, max_storage=settings.max_storage_bytes
        )
    except NoSuchGraphError as exc:  # deleted while the file arrived
        raise BadRequestError(f"`graphId`: {exc.description}") from exc
    wake_ingestion(request.app)
    return JSONResponse(file_json(record, graph_ids=()))  # Writer: [] even with `graphId`


async def list_files(request: Request) -> JSONResponse:
    query = request.query_params
    window = window_from(query)
    graph_id = query.get("graph_id")
    if graph_id is not None:
        _known_graph(request, graph_id, "graph_id")
    status = query.get("status")
    if status is not None and status not in STATUSES:
        raise BadRequestError(f"`status` must be one of {', '.join(STATUSES)}, got {status!r}.")
    types = _types(query.get("file_types"))
    page = files_of(request).page(window, graph_id=graph_id, status=status, types=types)
    return JSONResponse(render_page(page, file_json))


async def get_file(request: Request) -> JSONResponse:
    return JSONResponse(file_json(files_of(request).get(request.path_params["file_id"])))


async def delete_file(request: Request) -> JSONResponse:
    file_id = request.path_params["file_id"]
    await files_of(request).delete(file_id)
    return JSONResponse({"id": file_id, "deleted": True})


async def download_file(request: Request) -> FileResponse:
    files = files_of(request)
    record = files.get(request.path_params["file_id"])
    path = files.blobs.path(record.sha256)
    if not await asyncio.to_thread(path.is_file):
        log.error("file %s: its blob %s is missing from the data dir", record.id, path)
        raise BlobMissingError(f"The stored content of file {record.id} is missing.")
    media_type = MEDIA_TYPES.get(record.type, "application/octet-stream")
    return FileResponse(path, media_type=media_type, filename=record.name)


class RetryRequest(BaseModel):
    file_ids: list[str]


async def retry_files(request: Request) -> JSONResponse:
    body = await read_model(request, RetryRequest, request.app.state.settings)
    try:
        await files_of(request).retry(body.file_ids)
    except NoSuchFileError as exc:
        raise BadRequestError(f"`file_ids`: {exc.description}", extras=exc.extras) from exc
    wake_ingestion(request.app)
    return JSONResponse({"success": True})


# -- upload -------------------------------------------------------------------------------------


async def receive(request: Request, sink: BlobSink, max_bytes: int, room: int | None) -> None:
    """Stream the body into `sink` (its IO on a worker thread): 413 past `max_bytes`, 507
    past `room`, 400 if empty."""
    pending: list[bytes] = []
    held = size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise _too_large(max_bytes)
        if room is not None and size > room:
            raise _full(request, size)
        pending.append(chunk)
        held += len(chunk)
        if held >= FLUSH_BYTES:
            await asyncio.to_thread(sink.write, b"".join(pending))
            pending, held = [], 0
    if size == 0:
        raise BadRequestError("The file is empty: send its bytes as the request body.")
    if pending:
        await asyncio.to_thread(sink.write, b"".join(pending))
    await asyncio.to_thread(sink.finish)


def _room(files: FileStore, max_storage: int) -> int | None:
    """Bytes an upload may still take (None: no limit); 507 if there are none."""
    if not max_storage:
        return None
    room = max_storage - files.stored_bytes()
    if room <= 0:
        raise storage_full(None, max_storage - room, max_storage)
    return room


def _check_declared(request: Request, max_bytes: int, room: int | None) -> None:
    declared = request.headers.get("content-length", "")
    if not declared.isdigit():
        return
    size = int(declared)
    if size > max_bytes:
        raise _too_large(max_bytes)
    if room is not None and size > room:
        raise _full(request, size)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"The file is larger than the server's limit of {limit} bytes (`max_file_bytes`).",
        extras={"limit": "max_file_bytes", "value": limit},
    )


def _full(request: Request, size: int) -> InsufficientStorageError:
    settings = request.app.state.settings
    stored = files_of(request).stored_bytes()
    return storage_full(size, stored, settings.max_storage_bytes)


def _known_graph(request: Request, graph_id: str, parameter: str) -> None:
    try:
        request.app.state.graphs.get(graph_id)
    except NoSuchGraphError as exc:
        raise BadRequestError(f"`{parameter}`: {exc.description}", extras=exc.extras) from exc


def _types(raw: str | None) -> list[str]:
    if raw is None:
        return []
    kinds = [part.strip().lower().lstrip(".") for part in raw.split(",") if part.strip()]
    bad = [kind for kind in kinds if not kind.isalnum()]
    if bad:
        raise BadRequestError(
            f"`file_types` is a comma-separated list of extensions (`pdf,txt`); got {raw[:80]!r}."
        )
    return [ALIASES.get(kind, kind) for kind in kinds]


# -- names --------------------------------------------------------------------------------------


def file_name(header: str | None) -> str:
    """The file name a `Content-Disposition: attachment; filename=...` header gives (RFC 6266;
    `filename*=UTF-8''...` of RFC 5987 preferred), checked; 400 otherwise."""
    if header is None:
        raise BadRequestError(
            "Name the file in a `Content-Disposition: attachment; filename=<name>` header."
        )
    disposition, separator, rest = header.partition(";")
    if disposition.strip().lower() != "attachment":
        raise BadRequestError(
            f"`Content-Disposition` must be `attachment; filename=<name>`, got {header[:120]!r}."
        )
    parameters = _parameters(separator + rest, header)
    if "filename*" in parameters:
        name = _extended_value(parameters["filename*"])
    elif "filename" in parameters:
        name = _plain_value(parameters["filename"])
    else:
        raise BadRequestError("`Content-Disposition` has no `filename`; name the file.")
    check_name(name)
    return name


def _parameters(text: str, header: str) -> dict[str, str]:
    found: dict[str, str] = {}
    at = 0
    while text[at:].strip(" \t;"):  # a trailing `;` is harmless
        match = _PARAMETER.match(text, at)
        if match is None:
            raise BadRequestError(f"`Content-Disposition` is malformed: {header[:120]!r}.")
        found[match.group(1).lower()] = match.group(2).strip()
        at = match.end()
    return found


def _plain_value(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    try:  # header bytes arrive as Latin-1; many clients send the name's UTF-8 as they are
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _extended_value(value: str) -> str:
    """RFC 5987 `charset'language'percent-encoded`."""
    charset, quote, rest = value.strip('"').partition("'")
    _language, quote2, encoded = rest.partition("'")
    if not (quote and quote2) or charset.lower() not in ("utf-8", "iso-8859-1"):
        raise BadRequestError(
            f"`filename*` must be `UTF-8''<percent-encoded name>` (RFC 5987), got {value[:120]!r}."
        )
    try:
        return unquote_to_bytes(encoded).decode(charset.lower())
    except UnicodeDecodeError as exc:
        raise BadRequestError(f"`filename*` is not valid {charset}: {value[:120]!r}.") from exc


def check_name(name: str) -> None:
    """A file name is one plain name: no path parts, no control characters, 255 at most."""
    if not name.strip():
        raise BadRequestError("The file name is empty.")
    if "/" in name or "\\" in name or name in (".", ".."):
        raise BadRequestError(f"The file name {name[:120]!r} has path parts; send the name only.")
    if any(unicodedata.category(c) == "Cc" or c in _BIDI_CONTROLS for c in name):
        raise BadRequestError(f"The file name {name[:120]!r} holds control characters.")
    if len(name) > MAX_NAME_CHARS:
        raise BadRequestError(f"The file name is longer than {MAX_NAME_CHARS} characters.")


def file_type(name: str) -> str:
    kind = type_from_name(name)
    if kind is None:
        supported = ", ".join(SUPPORTED_TYPES)
        raise BadRequestError(
            f"Inkstand cannot read {name[:120]!r}: the supported file types are {supported} "
            "(by the name's extension).",
            extras={"supported": list(SUPPORTED_TYPES)},
        )
    return kind


def method_route(path: str, handlers: dict[str, Endpoint]) -> Route:
    """One route for `path` whose handler depends on the method, so a wrong method's 405
    names every allowed one (HEAD is answered as GET)."""

    async def endpoint(request: Request) -> Response:
        method = "GET" if request.method == "HEAD" else request.method
        return await handlers[method](request)

    return Route(path, endpoint, methods=list(handlers))


ROUTES = [
    method_route("/v1/files", {"GET": list_files, "POST": upload_file}),
    method_route("/v1/files/retry", {"POST": retry_files}),
    method_route("/v1/files/{file_id}", {"GET": get_file, "DELETE": delete_file}),
    method_route("/v1/files/{file_id}/download", {"GET": download_file}),
]
