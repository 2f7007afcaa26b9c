"""The `graph` tool's sub-questions (`subqueries: true`).

The model first splits the question into at most `max_subquestions` sub-questions, as JSON
held to a schema by the same grammar (or upstream `json_schema`) path as any
`response_format`, so the reply always parses unless `DECOMPOSE_TOKENS` cut it (then the
question itself is the only sub-question). Each sub-question then gets its own retrieval and
a short grounded answer, all asked at once (the engine batches them). The final answer is
generated from the question's sources plus the sub-questions' answers; `graph_data.subqueries`
lists each `{query, answer, sources}`.

Every generation here is the model's normal one, through the service's own planning and
engine path (`Ask`); the tokens they process are added to the answer's `usage`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from inkstand.schemas.chat import ChatMessage, ChatRequest

SUBQUESTION_CHARS = 300
DECOMPOSE_TOKENS_EACH = 80  # generation room per sub-question of the JSON reply
SUBANSWER_TOKENS = 160
SUBANSWER_SNIPPETS = 5


@dataclass(frozen=True)
class Asked:
    """One internal generation's text and the tokens it took."""

    text: str
    prompt_tokens: int
    completion_tokens: int


Ask = Callable[[ChatRequest], Coroutine[Any, Any, Asked]]


@dataclass
class Spent:
    """Tokens the internal generations took, for the answer's `usage`."""

    prompt: int = 0
    completion: int = 0

    def add(self, asked: Asked) -> None:
        self.prompt += asked.prompt_tokens
        self.completion += asked.completion_tokens


def decomposition_schema(limit: int) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {
            "subqueries": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": SUBQUESTION_CHARS},
                "minItems": 1,
                "maxItems": limit,
            }
        },
        "required": ["subqueries"],
        "additionalProperties": False,
    }


def decomposition_request(model: str, question: str, limit: int) -> ChatRequest:
    """The request asking the model to split `question` into at most `limit` parts."""
    instruction = (
        f"Split the user's question into at most {limit} short, self-contained "
        "sub-questions that together answer it; a simple question needs only one. Reply "
        'with JSON: {"subqueries": ["...", ...]}.'
    )
    return ChatRequest.model_validate(
        {
            "model": model,
            "messages": [
                {"role": "system", "content": instruction},
                {"role": "user", "content": question},
            ],
            "temperature": 0,
            "max_tokens": DECOMPOSE_TOKENS_EACH * limit + 20,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "subqueries", "schema": decomposition_schema(limit)},
            },
        }
    )


def read_subquestions(text: str, question: str, limit: int) -> list[str]:
    """The sub-questions of the model's JSON reply: stripped, unique, at most `limit`; the
    question itself when the reply is cut short or empty."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return [question]
    raw = parsed.get("subqueries") if isinstance(parsed, dict) else None
    if not isinstance(raw, list):
        return [question]
    kept = [q.strip() for q in raw if isinstance(q, str) and q.strip()]
    unique = list(dict.fromkeys(kept))[:limit]
    return unique or [question]


def subanswer_request(model: str, sources: ChatMessage, subquestion: str) -> ChatRequest:
    """A short grounded answer to one sub-question."""
    return ChatRequest.model_validate(
        {
            "model": model,
            "messages": [
                sources.model_dump(exclude_none=True),
                {"role": "user", "content": subquestion},
            ],
            "temperature": 0,
            "max_tokens": SUBANSWER_TOKENS,
        }
    )


def work_estimate(limit: int, budget_chars: int) -> int:
    """An upper guess of the tokens the sub-questions take, checked against the caller's
    rate limit before any of it runs."""
    share = max(1000, budget_chars // 2) // 4
    split = DECOMPOSE_TOKENS_EACH * limit + 200
    return split + limit * (share + SUBANSWER_TOKENS + 100)
