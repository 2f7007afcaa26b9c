"""Writer requests to OpenAI requests, and OpenAI chunks back to Inkstand's events.

Requests: `chat_job` and `completion_job` build the body an OpenAI-compatible engine takes
(always streamed, usage included: a whole answer is the stream collected, so there is one
path). Sampling the request leaves out is left to the engine, whose defaults are its
operator's (vLLM: the model's generation config; llama-server: temperature 0.8, top_k 40,
min_p 0.05), as the embedded engine has its own server-side sampling.

Answers: a `ChunkReader` turns each chunk into `TokenEvent`s (text, with log-probabilities
when asked) and `CallEvent`s (tool-call fragments, as the engine parsed them), remembers each
choice's finish reason, and emits the `Finish` events once the usage has arrived (it comes in
the last chunk, after the finish reasons).

Errors: `error_from_body` turns an engine's refusal into Writer's error, with the engine's
reason but none of its URLs or keys.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

from inkstand.chat.output import OutputPlan, read_response_schema
from inkstand.chat.prompt import message_text, wire_message
from inkstand.chat.toolformat import Function
from inkstand.engine.types import CallEvent, Event, Finish, FinishReason, TokenEvent, TokenInfo
from inkstand.errors import (
    BadRequestError,
    ContextLengthError,
    EngineError,
    InkstandError,
    OverloadedError,
    RateLimitError,
)
from inkstand.schemas.chat import ChatMessage, ChatRequest, ImageFragment, TextFragment
from inkstand.schemas.completions import CompletionsRequest
from inkstand.upstream.jsoncall import JsonCallReader

MAX_REASON_CHARS = 500
URL = re.compile(r"\b[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
CONTEXT_WORDS = re.compile(r"context|too long|exceed", re.IGNORECASE)


@dataclass(frozen=True)
class UpstreamJob:
    """One request for an upstream engine: where it goes, its body, what it may cost."""

    path: str  # "/chat/completions" or "/completions"
    body: dict[str, Any]
    max_tokens: int
    n: int
    affinity: bytes  # conversations with the same leading messages (and scope) share it
    logprobs: bool = False
    top_logprobs: int = 0  # alternatives kept per token (the engine is asked for at least 1)
    chat: bool = True
    scope: str = ""  # whose prefix cache (an API key's id; "" when all share one)
    prompt_tokens: int = 0  # counted or estimated: the usage when the engine reports none
    forced_names: tuple[str, ...] = ()  # the functions a forced call may name
    # A forced tool choice's body for an engine that does not enforce one natively: the
    # call as JSON content under a schema (`forced_call_body`). None: nothing forced.
    forced: dict[str, Any] | None = None

    def single(self) -> UpstreamJob:
        """One choice of this job (for an engine without `n`: one request per choice)."""
        body = {k: v for k, v in self.body.items() if k != "n"}
        forced = None if self.forced is None else {k: v for k, v in self.forced.items() if k != "n"}
        return replace(self, body=body, forced=forced, n=1)

    def capped(self, max_tokens: int) -> UpstreamJob:
        """This job with `max_tokens` sent to the engine (in both bodies)."""
        body = {**self.body, "max_tokens": max_tokens}
        forced = None if self.forced is None else {**self.forced, "max_tokens": max_tokens}
        return replace(self, body=body, forced=forced, max_tokens=max_tokens)

    def prompt_fields(self, tools_mode: str) -> dict[str, Any]:
        """What makes the prompt, for counting its tokens."""
        body = self.body_for(tools_mode)
        keys = ("messages", "tools", "tool_choice", "prompt")
        return {k: body[k] for k in keys if k in body}

    def body_for(self, tools_mode: str) -> dict[str, Any]:
        """The body for a replica whose engine enforces forced calls `tools_mode`-ly."""
        if self.forced is not None and tools_mode == "json_schema":
            return self.forced
        return self.body


def chat_job(
    request: ChatRequest,
    output: OutputPlan,
    *,
    model: str,
    max_tokens: int,
    n: int,
    scope: str,
    cap: bool = True,
) -> UpstreamJob:
    """`max_tokens` goes to the engine when `cap` (the request set it); otherwise the
    engine's own default applies (the rest of the context) and `max_tokens` is only what the
    gateway reserves: before the engine has counted the prompt, Inkstand cannot know what
    fits, and a guess too high is a 400 from vLLM."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [openai_message(m) for m in request.messages],
        **_sampling(request.temperature, request.top_p, request.stops, stream=True),
    }
    if cap:
        body["max_tokens"] = max_tokens
    if n > 1:
        body["n"] = n
    if request.seed is not None:
        body["seed"] = request.seed
    if request.logprobs:
        # llama-server sends 20 alternatives unless told (and none at all for 0); those
        # beyond what the caller asked for are dropped.
        body["logprobs"] = True
        body["top_logprobs"] = max(1, request.top_logprobs or 0)
    response_format = _response_format(request)
    if response_format is not None:
        body["response_format"] = response_format
    forced = None
    names: tuple[str, ...] = ()
    tools = output.tools
    if tools is not None and tools.functions:
        body["tools"] = [{"type": "function", "function": f.spec()} for f in tools.functions]
        body["tool_choice"] = _tool_choice(tools.forced)
        if tools.forced is not None:
            forced = forced_call_body(body, list(tools.functions), tools.forced)
            names = tuple(f.name for f in tools.functions if tools.forced in ("required", f.name))
    return UpstreamJob(
        "/chat/completions",
        body,
        max_tokens,
        n,
        affinity=_affinity(scope, request.messages),
        logprobs=bool(request.logprobs),
        top_logprobs=request.top_logprobs or 0,
        scope=scope,
        forced=forced,
        forced_names=names,
    )


def forced_call_body(body: dict[str, Any], functions: list[Function], forced: str) -> dict:
    """`body` asking for the forced call as JSON content: `{"name": ..., "arguments": ...}`
    under a schema the engine enforces (every engine here enforces `json_schema`), the
    functions described in a system message, and no `tools` (the engine would not force
    them). The name comes first, so the call streams: name, then its arguments."""
    chosen = functions if forced == "required" else [f for f in functions if f.name == forced]
    options = [
        {
            "type": "object",
            "properties": {"name": {"const": f.name}, "arguments": f.spec()["parameters"]},
            "required": ["name", "arguments"],
            "additionalProperties": False,
        }
        for f in chosen
    ]
    schema = options[0] if len(options) == 1 else {"anyOf": options}
    listing = "\n".join(json.dumps(f.spec(), ensure_ascii=False) for f in chosen)
    instructions = (
        "You can call these functions:\n" + listing + "\n\nCall one of them now: answer "
        'with only a JSON object {"name": <the function\'s name>, "arguments": <its '
        "arguments>}."
    )
    messages = [{"role": "system", "content": instructions}, *body["messages"]]
    out = {k: v for k, v in body.items() if k not in ("tools", "tool_choice", "messages")}
    out["messages"] = messages
    out["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "tool_call", "schema": schema},
    }
    return out


def completion_job(
    request: CompletionsRequest, *, model: str, max_tokens: int, scope: str
) -> UpstreamJob:
    body = {
        "model": model,
        "prompt": request.prompt,
        "max_tokens": max_tokens,
        **_sampling(request.temperature, request.top_p, request.stops, stream=True),
    }
    if request.random_seed is not None:
        body["seed"] = request.random_seed
    affinity = f"{scope}\0{request.prompt[:256]}".encode()
    return UpstreamJob(
        "/completions", body, max_tokens, 1, affinity=affinity, chat=False, scope=scope
    )


def _sampling(
    temperature: float | None, top_p: float | None, stops: tuple[str, ...], *, stream: bool
) -> dict[str, Any]:
    out: dict[str, Any] = {"stream": stream, "stream_options": {"include_usage": True}}
    if temperature is not None:
        out["temperature"] = temperature
    if top_p is not None:
        out["top_p"] = top_p
    if stops:
        out["stop"] = list(stops)
    return out


def _tool_choice(forced: str | None) -> Any:
    if forced is None:
        return "auto"
    if forced == "required":
        return "required"
    return {"type": "function", "function": {"name": forced}}


def _response_format(request: ChatRequest) -> dict[str, Any] | None:
    found = read_response_schema(request.response_format)
    if found is None:
        return None
    assert request.response_format is not None
    if request.response_format.type == "json_object":
        return {"type": "json_object"}
    schema, _ = found
    payload = request.response_format.json_schema or {}
    return {
        "type": "json_schema",
        "json_schema": {"name": str(payload.get("name") or "response"), "schema": schema},
    }


def _affinity(scope: str, messages: list[ChatMessage]) -> bytes:
    """The conversation's identity for prefix affinity: its scope, its leading system
    messages and its first user message, which stay the same turn after turn."""
    lead: list[str] = []
    for message in messages:
        lead.append(message_text(message))
        if message.role == "user":
            break
    return "\0".join([scope, *lead]).encode()


def openai_message(message: ChatMessage) -> dict[str, Any]:
    return wire_message(message, _content(message), str)  # arguments as the client sent them


def _content(message: ChatMessage) -> Any:
    if message.content is None:
        return None if message.tool_calls else ""
    if isinstance(message.content, str):
        return message.content
    parts: list[dict[str, Any]] = []
    for fragment in message.content:
        if isinstance(fragment, TextFragment):
            parts.append({"type": "text", "text": fragment.text})
        elif isinstance(fragment, ImageFragment):
            parts.append({"type": "image_url", "image_url": {"url": fragment.image_url.url}})
    return parts


@dataclass
class ChunkReader:
    """Reads one upstream answer's chunks into events; `finish()` at the end of the stream."""

    job: UpstreamJob
    calls_as_json: bool = False  # the content is a forced call as JSON (`forced_call_body`)
    # Whether the engine's `cached_tokens` may be told: its prefix cache is the caller's
    # own (salted per key, or one tenant); else another key's prompts would show in it.
    report_cache: bool = True
    reasons: dict[int, str] = field(default_factory=dict)
    usage: dict[str, Any] | None = None
    _call_ids: dict[tuple[int, int], str] = field(default_factory=dict)
    _json_calls: dict[int, JsonCallReader] = field(default_factory=dict)
    # Chunks with generated text per choice: an engine streams one token a chunk, and some
    # (llama-server) report only one choice's tokens in the usage of an `n` > 1 answer.
    _chunks: dict[int, int] = field(default_factory=dict)

    def feed(self, chunk: dict[str, Any]) -> list[Event]:
        if "error" in chunk:
            raise error_from_body(500, chunk, after_start=True)
        if chunk.get("usage"):
            self._add_usage(chunk["usage"])
        events: list[Event] = []
        for choice in chunk.get("choices") or ():
            index = int(choice.get("index") or 0)
            if self.job.chat:
                events += self._chat_events(index, choice.get("delta") or {}, choice)
            elif choice.get("text"):
                events.append(TokenEvent(choice["text"], index=index))
            if choice.get("finish_reason"):
                self.reasons[index] = choice["finish_reason"]
        return events

    def _token_info(self, entry: dict) -> TokenInfo:
        return _token_info(entry, self.job.top_logprobs)

    def _chat_events(self, index: int, delta: dict, choice: dict) -> list[Event]:
        events: list[Event] = []
        text = delta.get("content") or ""
        if text or delta.get("tool_calls"):
            self._chunks[index] = self._chunks.get(index, 0) + 1
        entries = ((choice.get("logprobs") or {}).get("content") or ()) if self.job.logprobs else ()
        if self.calls_as_json:  # log-probabilities ride on chunks of their own, as locally
            events += [TokenEvent("", self._token_info(e), index) for e in entries]
            return events + list(self._json_call(index).feed(text))
        if entries and "".join(e.get("token", "") for e in entries) == text:
            events += [TokenEvent(e["token"], self._token_info(e), index) for e in entries]
        elif text:
            events.append(TokenEvent(text, index=index))
        for call in delta.get("tool_calls") or ():
            events.append(self._call_event(index, call))
        return events

    def _call_event(self, index: int, call: dict) -> CallEvent:
        number = int(call.get("index") or 0)
        function = call.get("function") or {}
        key = (index, number)
        first = key not in self._call_ids
        if first:
            self._call_ids[key] = call.get("id") or f"call_{uuid.uuid4().hex[:24]}"
        return CallEvent(
            number,
            function.get("arguments") or "",
            id=self._call_ids[key] if first else None,
            name=(function.get("name") or "") if first else None,
            index=index,
        )

    def _add_usage(self, usage: dict[str, Any]) -> None:
        """llama-server sends one usage chunk per choice of an `n` > 1 stream, each with
        that choice's completion tokens; others send one for all: add them up."""
        if self.usage is None:
            self.usage = dict(usage)
            return
        earlier = int(self.usage.get("completion_tokens") or 0)
        self.usage = {
            **usage,
            "completion_tokens": earlier + int(usage.get("completion_tokens") or 0),
        }

    def _json_call(self, index: int) -> JsonCallReader:
        if index not in self._json_calls:
            self._json_calls[index] = JsonCallReader(index, self.job.forced_names)
        return self._json_calls[index]

    def finish(self) -> list[Event]:
        """Forced calls not yet read, then one `Finish` per choice, each with the prompt and
        cached tokens of the usage and its own completion tokens (the gateway adds them
        up)."""
        answered = len(self.reasons)
        if self.job.n > 1 and answered < self.job.n:
            failure = EngineError(
                f"The model's engine answered {answered} of the {self.job.n} choices asked: "
                "it does not support `n`. Send one request per choice."
            )
            failure.should_retry = False
            raise failure
        events: list[Event] = []
        if self.calls_as_json:
            for i in range(self.job.n):
                if self.reasons.get(i) != "length":
                    events += self._json_call(i).finish()
        usage = self.usage or {}
        prompt = int(usage.get("prompt_tokens") or self.job.prompt_tokens)
        completion = int(usage.get("completion_tokens") or sum(self._chunks.values()))
        details = usage.get("prompt_tokens_details") or {}
        cached = int(details.get("cached_tokens") or 0) if self.report_cache else 0
        counts = self._completion_tokens(completion)
        return events + [
            Finish(_reason(self.reasons.get(i, "stop")), prompt, counts[i], cached, index=i)
            for i in range(self.job.n)
        ]

    def _completion_tokens(self, reported: int) -> list[int]:
        """Each choice's completion tokens: the reported count for one choice; for several,
        each one's chunks, the last taking what the report has beyond them."""
        n = self.job.n
        if n == 1:
            return [reported]
        counts = [self._chunks.get(i, 0) for i in range(n)]
        counts[-1] += max(0, reported - sum(counts))
        return counts


def _token_info(entry: dict, top: int = 0) -> TokenInfo:
    raw = bytes(entry.get("bytes") or entry.get("token", "").encode())
    alternatives = tuple(_token_info(a) for a in (entry.get("top_logprobs") or ())[:top])
    token = entry.get("token", "")
    return TokenInfo(-1, token, raw, float(entry.get("logprob") or 0.0), alternatives)


def _reason(reason: str) -> FinishReason:
    return "length" if reason == "length" else "stop"  # tool_calls: the renderer decides


def error_from_body(
    status: int, body: Any, *, retry_after: str | None = None, after_start: bool = False
) -> InkstandError:
    """Writer's error for an engine's answer of `status` (400-599) and its parsed body."""
    reason = redact(_reason_text(body))
    if status == 429:
        return RateLimitError(
            f"The model's engine is over its capacity: {reason}",
            retry_after=_seconds(retry_after),
        )
    if status in (400, 404, 413, 422) and not after_start:
        error: type[BadRequestError] = BadRequestError
        if CONTEXT_WORDS.search(reason):
            error = ContextLengthError
        return error(f"The model's engine refused the request: {reason}")
    if status in (401, 403):
        failure = EngineError("The model's engine refused this server's credentials.")
        failure.should_retry = False
        return failure
    if after_start:
        return EngineError(f"The model's engine failed while answering: {reason}")
    return OverloadedError(f"The model's engine failed: {reason}", retry_after=1.0)


def _reason_text(body: Any) -> str:
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict):
            for key in ("message", "detail", "msg"):
                if isinstance(error.get(key), str):
                    return error[key]
        elif isinstance(error, str):
            return error
        if isinstance(body.get("detail"), str):
            return body["detail"]
    if isinstance(body, str) and body.strip():
        return body.strip()
    return "no reason given"


def redact(text: str) -> str:
    """An engine's message without URLs (internal addresses), shortened."""
    text = URL.sub("<url>", text)
    if len(text) > MAX_REASON_CHARS:
        text = text[:MAX_REASON_CHARS] + "..."
    return text


def _seconds(value: str | None) -> float:
    try:
        return max(float(value), 0.0) if value is not None else 1.0
    except ValueError:
        return 1.0
