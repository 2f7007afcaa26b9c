"""OpenAI's request bodies (`/openai/v1/chat/completions`, `/openai/v1/completions`) read as
the Writer bodies the services already plan.

OpenAI's chat body is Writer's with other names for a few things: `developer` messages are
system messages, `max_completion_tokens` is `max_tokens`, `seed` and `top_logprobs` are
carried by `ChatRequest` as extensions. What Inkstand cannot honour gets a 400 that says so
(`frequency_penalty`, `logit_bias`, audio, legacy `functions`, Writer's own built-in tools,
which OpenAI's API does not have) rather than being dropped silently; what only steers
OpenAI's own service (`user`, `store`, `metadata`, `service_tier`, `parallel_tool_calls`
...) is ignored, as unknown keys are on Writer's routes.

The conversion works on the parsed JSON, before validation, so a wrong type is reported by
the same validation as on Writer's routes, at the same field path.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import Field

from inkstand.errors import BadRequestError, UnsupportedFeatureError
from inkstand.schemas.chat import Lenient, StreamOptions
from inkstand.schemas.completions import CompletionsRequest

CONTENT_PARTS = ("text", "image_url")  # what Writer's messages may hold
OPENAI_COMPLETIONS_MAX_TOKENS = 16  # OpenAI's default for `/completions`
UNSUPPORTED = {
    "functions": "use `tools` instead of the legacy `functions`",
    "function_call": "use `tool_choice` instead of the legacy `function_call`",
    "audio": "this server answers with text only",
    "prediction": "predicted outputs are not supported",
}


def writer_chat(body: dict[str, Any]) -> dict[str, Any]:
    """OpenAI's chat completion body as Writer's `/v1/chat` body (400 for what cannot be)."""
    _refuse_unsupported(body)
    out = dict(body)
    if "max_completion_tokens" in out:
        out["max_tokens"] = out.pop("max_completion_tokens")
    messages = out.get("messages")
    if isinstance(messages, list):
        out["messages"] = [_message(m, i) for i, m in enumerate(messages)]
    tools = out.get("tools")
    if isinstance(tools, list):
        for i, tool in enumerate(tools):
            kind = tool.get("type") if isinstance(tool, dict) else None
            if kind != "function":
                raise BadRequestError(
                    f"`tools[{i}]` has type `{kind}`; the OpenAI routes take `function` tools "
                    "only (Writer's built-in tools are on `/v1/chat`)."
                )
    return out


def _refuse_unsupported(body: dict[str, Any]) -> None:
    for name, why in UNSUPPORTED.items():
        if body.get(name) is not None:
            raise UnsupportedFeatureError(f"`{name}` cannot be used here: {why}.")
    modalities = body.get("modalities")
    if modalities is not None and modalities != ["text"]:
        raise UnsupportedFeatureError('`modalities` must be ["text"]: this server writes text.')
    for name in ("frequency_penalty", "presence_penalty"):
        if body.get(name) not in (None, 0, 0.0):
            raise UnsupportedFeatureError(
                f"`{name}` is not supported by this server; leave it out or send 0."
            )
    if body.get("logit_bias"):
        raise UnsupportedFeatureError("`logit_bias` is not supported by this server.")


def _message(message: Any, index: int) -> Any:
    if not isinstance(message, dict):
        return message  # validation names it
    out = dict(message)
    if out.get("role") == "developer":
        out["role"] = "system"
    content = out.get("content")
    if isinstance(content, list):
        for j, part in enumerate(content):
            kind = part.get("type") if isinstance(part, dict) else None
            if kind not in CONTENT_PARTS:
                raise UnsupportedFeatureError(
                    f"`messages[{index}].content[{j}]` is of type `{kind}`; this server reads "
                    "`text` parts only."
                )
    return out


class OpenAICompletionsRequest(Lenient):
    """OpenAI's `/completions` body; `prompt` is one string (or a list holding one)."""

    model: str
    prompt: str | Annotated[list[str], Field(min_length=1, max_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    stop: str | list[str] | None = None
    seed: Annotated[int, Field(ge=0, lt=2**63)] | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    echo: bool | None = None
    suffix: str | None = None
    best_of: Annotated[int, Field(ge=1, le=128)] | None = None
    logprobs: Annotated[int, Field(ge=0, le=5)] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None

    @property
    def choices(self) -> int:
        return self.n or 1

    def refuse_unsupported(self) -> None:
        if self.echo:
            raise UnsupportedFeatureError("`echo` is not supported by this server.")
        if self.suffix:
            raise UnsupportedFeatureError("`suffix` (insertion) is not supported by this server.")
        if self.best_of is not None and self.best_of != self.choices:
            raise UnsupportedFeatureError(
                "`best_of` other than `n` is not supported on this route; send `n` alone."
            )
        if self.logprobs:
            raise UnsupportedFeatureError(
                "`logprobs` is not supported on `/completions` here; use chat completions."
            )
        _refuse_unsupported(self.model_dump(exclude_none=True))

    def writer(self) -> CompletionsRequest:
        """As Writer's completions body: one prompt, OpenAI's default of 16 tokens."""
        prompt = self.prompt if isinstance(self.prompt, str) else self.prompt[0]
        return CompletionsRequest(
            model=self.model,
            prompt=prompt,
            max_tokens=self.max_tokens or OPENAI_COMPLETIONS_MAX_TOKENS,
            temperature=self.temperature,
            top_p=self.top_p,
            stop=self.stop,
            random_seed=None if self.seed is None else self.seed % 2**32,
            stream=self.stream,
        )
