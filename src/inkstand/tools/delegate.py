"""The `llm` tool: the request's model hands the question to another served model.

The request's own model first writes the prompt for the delegate from the conversation, as
JSON `{"prompt": "..."}` held to a schema by the grammar (or upstream `json_schema`) path of
any `response_format`; `PROMPT_TOKENS` leaves room for `MAX_PROMPT_CHARS` whatever the
tokenizer, so the reply always closes. The delegate (any served id or alias, local or
upstream) then answers that prompt with the request's own settings (`max_tokens`,
`temperature`, `n`, `stream` ...), and its answer is the response: `content` is the
delegate's, `llm_data` is `{prompt, model}` (sent once in a stream, in the opening chunk:
the SDK's accumulation would double a repeated prompt). `usage` counts both models' tokens.

The delegate id is checked before any work: unknown ids get the catalog's 400 listing the
served ids, removed Writer ids its deprecation 400, and the caller's key must allow it
(`delegates`, checked by the route like the request's own model).
"""

from __future__ import annotations

import json
from typing import Any

from inkstand.schemas.chat import ChatMessage, ChatRequest, LLMTool

MAX_PROMPT_CHARS = 1000  # the most a grammar counts (chat/grammar.py)
PROMPT_TOKENS = MAX_PROMPT_CHARS + 64  # a token is at least one character; JSON framing


def llm_tool(request: ChatRequest) -> LLMTool | None:
    for tool in request.tools or ():
        if isinstance(tool, LLMTool):
            return tool
    return None


def delegates(request: ChatRequest) -> list[str]:
    """The model ids the request's `llm` tool would call."""
    tool = llm_tool(request)
    return [tool.function.model] if tool is not None else []


def prompt_schema() -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"prompt": {"type": "string", "minLength": 1, "maxLength": MAX_PROMPT_CHARS}},
        "required": ["prompt"],
        "additionalProperties": False,
    }


def prompt_request(request: ChatRequest, tool: LLMTool, delegate: str) -> ChatRequest:
    """The request asking the request's own model to write the delegate's prompt."""
    instruction = (
        f"You hand the user's latest request to another model, `{delegate}`: "
        f"{tool.function.description.strip()} Write the complete, self-contained prompt "
        "to send it, with every detail it needs from this conversation. Reply with JSON: "
        '{"prompt": "..."}.'
    )
    messages = [
        {"role": "system", "content": instruction},
        *(m.model_dump(exclude_none=True) for m in request.messages),
    ]
    return ChatRequest.model_validate(
        {
            "model": request.model,
            "messages": messages,
            "temperature": request.temperature,
            "max_tokens": PROMPT_TOKENS,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "delegation", "schema": prompt_schema()},
            },
        }
    )


def read_prompt(text: str) -> str | None:
    """The prompt in the model's JSON reply, or None when it does not parse."""
    try:
        parsed = json.loads(text)
    except ValueError:
        return None
    prompt = parsed.get("prompt") if isinstance(parsed, dict) else None
    if isinstance(prompt, str) and prompt.strip():
        return prompt.strip()
    return None


def delegate_request(request: ChatRequest, delegate: str, prompt: str) -> ChatRequest:
    """The request the delegate answers: the prompt, with the caller's own settings and
    function tools (the delegate may call them)."""
    functions = [t for t in request.tools or () if not isinstance(t, LLMTool)] or None
    update: dict[str, Any] = {
        "model": delegate,
        "messages": [ChatMessage(role="user", content=prompt)],
        "tools": functions,
    }
    if functions is None:
        update["tool_choice"] = None
    return request.model_copy(update=update)
