"""The `POST /v1/graphs/question` request body (spec 4.4)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from inkstand.schemas.chat import Lenient


class QuestionRequest(Lenient):
    graph_ids: Annotated[list[str], Field(min_length=1)]
    question: Annotated[str, Field(min_length=1)]
    subqueries: bool = False
    stream: bool = False
    query_config: dict[str, Any] | None = None
