"""The `POST /v1/chat` request body (spec section 1), lenient where the spec says so.

Unknown keys are ignored everywhere (the SDK replays whole response objects); JSON types are
strict, so `"max_tokens": "5"` is a 400 rather than a guess.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

MAX_TOP_LOGPROBS = 20  # alternatives per token, as OpenAI allows


class Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)


class TextFragment(Lenient):
    type: Literal["text"]
    text: str


class ImageURL(Lenient):
    url: str


class ImageFragment(Lenient):
    type: Literal["image_url"]
    image_url: ImageURL


Fragment = Annotated[TextFragment | ImageFragment, Field(discriminator="type")]


class ToolCallFunction(Lenient):
    name: str | None = None
    arguments: str = ""


class ToolCall(Lenient):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction
    index: int | None = None


class ChatMessage(Lenient):
    role: Literal["user", "assistant", "system", "tool"]
    content: str | Annotated[list[Fragment], Field(min_length=1)] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: list[ToolCall] | None = None
    refusal: str | None = None


class FunctionDefinition(Lenient):
    # `name` and `parameters` are checked by `chat/output.py`, whose 400s say more than
    # pydantic's locations (which would spell the union tag: `tools.0.function.function`).
    name: str | None = None
    description: str | None = None
    parameters: Any = None
    strict: bool | None = None


class FunctionTool(Lenient):
    type: Literal["function"]
    function: FunctionDefinition


class GraphFunction(Lenient):
    graph_ids: Annotated[list[str], Field(min_length=1)]
    subqueries: bool
    description: str | None = None
    query_config: dict[str, Any] | None = None


class GraphTool(Lenient):
    type: Literal["graph"]
    function: GraphFunction


class LLMFunction(Lenient):
    description: str
    model: str


class LLMTool(Lenient):
    type: Literal["llm"]
    function: LLMFunction


class TranslationFunction(Lenient):
    model: str
    formality: bool
    length_control: bool
    mask_profanity: bool
    source_language_code: str | None = None
    target_language_code: str | None = None


class TranslationTool(Lenient):
    type: Literal["translation"]
    function: TranslationFunction


class VisionVariable(Lenient):
    name: str
    file_id: str


class VisionFunction(Lenient):
    model: str
    variables: list[VisionVariable]


class VisionTool(Lenient):
    type: Literal["vision"]
    function: VisionFunction


class WebSearchFunction(Lenient):
    include_domains: list[str]
    exclude_domains: list[str]


class WebSearchTool(Lenient):
    type: Literal["web_search"]
    function: WebSearchFunction


Tool = Annotated[
    FunctionTool | GraphTool | LLMTool | TranslationTool | VisionTool | WebSearchTool,
    Field(discriminator="type"),
]
BUILT_IN_TOOL_TYPES = ("graph", "llm", "translation", "vision", "web_search")


class NamedFunction(Lenient):
    name: str


class NamedToolChoice(Lenient):
    type: Literal["function"]
    function: NamedFunction


ToolChoice = Literal["none", "auto", "required"] | NamedToolChoice


class ResponseFormat(Lenient):
    type: Literal["text", "json_schema", "json_object"]
    json_schema: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _schema_present(self) -> ResponseFormat:
        if self.type == "json_schema" and not self.json_schema:
            raise ValueError("`json_schema` is required when `type` is `json_schema`")
        return self


class StreamOptions(Lenient):
    include_usage: bool


class ChatRequest(Lenient):
    model: str
    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    n: Annotated[int, Field(ge=1, le=128)] | None = None
    stop: str | list[str] | None = None
    logprobs: bool | None = None
    stream: bool | None = None
    stream_options: StreamOptions | None = None
    tools: list[Tool] | None = None
    tool_choice: ToolChoice | None = None
    response_format: ResponseFormat | None = None
    # Not in Writer's API (OpenAI's spelling; the `/openai/v1` routes fill them): honoured here.
    seed: Annotated[int, Field(ge=0, lt=2**63)] | None = None
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS)] | None = None

    @model_validator(mode="after")
    def _alternatives_need_logprobs(self) -> ChatRequest:
        if self.top_logprobs and not self.logprobs:
            raise ValueError("`top_logprobs` needs `logprobs: true`")
        return self

    @field_validator("tool_choice", mode="before")
    @classmethod
    def _unwrap_value(cls, raw: Any) -> Any:
        # The SDK's types wrap the choice as {"value": ...}; the docs send it bare.
        if isinstance(raw, dict) and set(raw) == {"value"}:
            return raw["value"]
        return raw

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
