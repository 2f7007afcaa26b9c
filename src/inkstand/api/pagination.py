"""Writer's cursor pagination, shared by `GET /v1/files` and `GET /v1/graphs`.

    ?after=<id>    the page after this object (the SDK's next page: the last id it got)
    ?before=<id>   the page before it (paging backwards: the first id it got)
    ?limit=1..100  default 50
    ?order=desc    newest first (default), or asc
    -> {"data": [...], "has_more": bool, "first_id": id, "last_id": id}

A cursor need not name an object that still exists (ids sort by creation time, see
`store/files.py`), so deleting objects while paging through them loses nothing. `first_id`
and `last_id` are left out of an empty page: Writer's document types them as strings.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Literal, TypeVar, cast

from starlette.datastructures import QueryParams

from inkstand.errors import BadRequestError
from inkstand.store.files import Page, Window

Item = TypeVar("Item")

MAX_LIMIT = 100
ORDERS = ("asc", "desc")


def window_from(query: QueryParams) -> Window:
    """The page a request's query asks for; 400 naming the parameter for a bad value."""
    after = _cursor(query, "after")
    before = _cursor(query, "before")
    if after is not None and before is not None:
        raise BadRequestError(
            "Give `after` (the next page) or `before` (the previous page), not both."
        )
    order = query.get("order", "desc")
    if order not in ORDERS:
        raise BadRequestError(f"`order` must be `asc` or `desc`, got {order!r}.")
    ordering = cast(Literal["asc", "desc"], order)
    return Window(after=after, before=before, limit=_limit(query), order=ordering)


def _limit(query: QueryParams) -> int:
    raw = query.get("limit")
    if raw is None:
        return 50
    if not (raw.isascii() and raw.isdigit() and 1 <= int(raw) <= MAX_LIMIT):
        raise BadRequestError(f"`limit` must be a whole number from 1 to {MAX_LIMIT}, got {raw!r}.")
    return int(raw)


def _cursor(query: QueryParams, name: str) -> str | None:
    raw = query.get(name)
    if raw is None:
        return None
    try:
        return str(uuid.UUID(raw))
    except ValueError:
        raise BadRequestError(
            f"`{name}` must be the id of an object from a page, got {raw[:80]!r}."
        ) from None


def render_page(page: Page[Item], render: Callable[[Item], dict[str, Any]]) -> dict[str, Any]:
    data = [render(item) for item in page.items]
    body: dict[str, Any] = {"data": data, "has_more": page.has_more}
    if data:
        body["first_id"] = data[0]["id"]
        body["last_id"] = data[-1]["id"]
    return body
