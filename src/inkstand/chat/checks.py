"""Checks every chat request passes before generation, each a 400 naming what is wrong:
counts and sizes against the server's limits (`RequestLimits`), stop sequences, images,
`n`, the prompt against the context, `max_tokens` against the model's caps; and the
sampling parameters a plan hands the engine. Shared by `/v1/chat` and `/v1/completions`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from inkstand.chat.catalog import ServedModel, ServedUpstream
from inkstand.chat.prompt import Prompt
from inkstand.engine import SamplingParams
from inkstand.errors import BadRequestError, ContextLengthError, UnsupportedFeatureError
from inkstand.schemas.chat import BUILT_IN_TOOL_TYPES, ChatRequest, ImageFragment


@dataclass(frozen=True)
class RequestLimits:
    """Per-request caps from the settings; each refusal names its limit."""

    max_messages: int = 1000
    max_n: int = 16
    max_tools: int = 128
    max_stops: int = 16
    max_stop_chars: int = 256
    max_images: int = 16
    max_image_bytes: int = 8 * 1024 * 1024


def over_limit(what: str, limit: str, value: int) -> BadRequestError:
    """The 400 for a request over one of the server's limits, naming it."""
    return BadRequestError(
        f"{what}; this server takes at most {value} (`{limit}`).",
        extras={"limit": limit, "value": value},
    )


def check_built_in_tools(request: ChatRequest) -> None:
    built_in = [t.type for t in request.tools or () if t.type in BUILT_IN_TOOL_TYPES]
    if len(built_in) > 1:
        raise BadRequestError(
            f"A request may use at most one built-in tool; got {', '.join(built_in)}."
        )


def check_stops(stops: tuple[str, ...], limits: RequestLimits) -> None:
    """Stop sequences are matched against every generated token: their count and length
    are capped."""
    if len(stops) > limits.max_stops:
        raise over_limit(f"`stop` has {len(stops)} sequences", "max_stops", limits.max_stops)
    longest = max(map(len, stops), default=0)
    if longest > limits.max_stop_chars:
        raise over_limit(
            f"A `stop` sequence is {longest} characters long",
            "max_stop_chars",
            limits.max_stop_chars,
        )


def check_prompt_size(served: ServedModel, size: int) -> None:
    """400 for a prompt of `size` characters or bytes that cannot fit the context, known
    before it is tokenized: no token stands for more than `max_token_bytes` bytes."""
    info = served.engine.info
    most = info.n_ctx * info.max_token_bytes
    if size > most:
        raise ContextLengthError(
            f"The prompt is {size} bytes long: more than the model's context window of "
            f"{info.n_ctx} tokens can hold (at most {info.max_token_bytes} bytes a token, "
            f"{most} in all). Shorten the conversation."
        )


def tokenize_prompt(served: ServedModel, prompt: Prompt) -> list[int]:
    """The prompt's tokens: control tokens from the template's text only."""
    tokens: list[int] = []
    for i, (text, template_text) in enumerate(prompt.parts):
        tokens += served.engine.tokenize(text, add_special=i == 0, parse_special=template_text)
    return tokens


def check_choices(field: str, n: int, max_n: int, served: ServedModel) -> int:
    """`n` (or `best_of`) within the configured cap and the engine's sequences."""
    if n > max_n:
        raise BadRequestError(
            f"`{field}` is {n}; this server allows at most {max_n} (`max_n`).",
            extras={"limit": "max_n", "value": max_n},
        )
    if n > served.engine.slots:
        raise BadRequestError(
            f"`{field}` is {n}, but this server runs at most {served.engine.slots} sequences "
            "at once (`slots`).",
            extras={"limit": "slots", "value": served.engine.slots},
        )
    return n


def sampling_params(
    served: ServedModel, temperature: float | None, top_p: float | None, **fields
) -> SamplingParams:
    """Writer's defaults for what the request leaves out, and the model's own sampler settings."""
    return SamplingParams(
        temperature=1.0 if temperature is None else temperature,
        top_p=1.0 if top_p is None else top_p,
        top_k=served.spec.top_k,
        min_p=served.spec.min_p,
        repeat_penalty=served.spec.repeat_penalty,
        **fields,
    )


class TokenBudget(Protocol):
    """What `resolve_max_tokens` reads from a chat or a completions request."""

    model: str
    max_tokens: int | None


def upstream_max_tokens(request: TokenBudget, served: ServedUpstream, prompt: int) -> int:
    """`max_tokens` within the model's `max_output_tokens` (400 beyond it); without one, what
    is reserved against the key's limits: what may fit after the estimated prompt."""
    limit = served.spec.max_output_tokens
    if request.max_tokens is not None:
        if request.max_tokens > limit:
            raise BadRequestError(
                f"`max_tokens` is {request.max_tokens}, but `{request.model}` produces at most "
                f"{limit} tokens (`max_output_tokens`).",
                extras={"limit": "max_output_tokens", "value": limit},
            )
        return request.max_tokens
    return max(1, min(limit, served.spec.ctx_size - prompt))


def check_images(request: ChatRequest, limits: RequestLimits) -> None:
    """Images for a vision engine: how many, what kind of address, how large a `data:` URI
    is, all checked before anything is sent upstream."""
    images = [
        f.image_url.url
        for m in request.messages
        if isinstance(m.content, list)
        for f in m.content
        if isinstance(f, ImageFragment)
    ]
    if len(images) > limits.max_images:
        raise over_limit(f"The request has {len(images)} images", "max_images", limits.max_images)
    for url in images:
        if url.startswith("data:"):
            head, _, data = url.partition(",")
            if not head.startswith("data:image/") or not data:
                raise BadRequestError(
                    "An `image_url` data URI must be `data:image/<type>;base64,<data>`."
                )
            size = len(data) * 3 // 4
            if size > limits.max_image_bytes:
                raise over_limit(
                    f"An image is {size} bytes", "max_image_bytes", limits.max_image_bytes
                )
        elif not url.startswith(("https://", "http://")):
            raise BadRequestError(
                "An `image_url` must be an http(s) URL or a `data:image/...` URI."
            )


def reject_unsupported(request: ChatRequest) -> None:
    """400 for valid Writer input this server cannot honour, before any work starts.

    Tools and response formats are checked by `plan_output`."""
    for message in request.messages:
        if isinstance(message.content, list) and any(
            isinstance(f, ImageFragment) for f in message.content
        ):
            raise UnsupportedFeatureError(
                "This server's model takes no images: send `text` content fragments only "
                "(an `image_url` fragment was found)."
            )


def resolve_max_tokens(
    request: TokenBudget, served: ServedModel, prompt_len: int, default: int | None = None
) -> int:
    """`max_tokens` as asked, or as much as fits (at most `default`), within the model's caps."""
    return fit_max_tokens(
        request, served.engine.info.n_ctx, served.spec.max_output_tokens, prompt_len, default
    )


def fit_max_tokens(
    request: TokenBudget, n_ctx: int, limit: int, prompt_len: int, default: int | None = None
) -> int:
    """`max_tokens` as asked or as much as fits in `n_ctx` after the prompt (at most
    `default`), within `limit` (`max_output_tokens`); 400s naming what does not fit."""
    if request.max_tokens is None:
        room = n_ctx - prompt_len
        if room < 1:
            raise ContextLengthError(
                f"The prompt is {prompt_len} tokens, which fills the model's context window of "
                f"{n_ctx} tokens. Shorten the conversation."
            )
        return min(limit, room, default or limit)
    if request.max_tokens > limit:
        raise BadRequestError(
            f"`max_tokens` is {request.max_tokens}, but `{request.model}` produces at most "
            f"{limit} tokens (`max_output_tokens`).",
            extras={"limit": "max_output_tokens", "value": limit},
        )
    if prompt_len + request.max_tokens > n_ctx:
        raise ContextLengthError(
            f"The prompt is {prompt_len} tokens and `max_tokens` is {request.max_tokens}: "
            f"{prompt_len + request.max_tokens} tokens, over the model's context window of "
            f"{n_ctx} tokens. Shorten the conversation or lower `max_tokens`."
        )
    return request.max_tokens
