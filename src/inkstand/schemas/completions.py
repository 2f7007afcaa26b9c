"""The `POST /v1/completions` request body (spec section 7): one prompt in, one text out."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from inkstand.schemas.chat import Lenient


class CompletionsRequest(Lenient):
    model: str
    prompt: str
    max_tokens: Annotated[int, Field(ge=1)] | None = None
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    stop: str | list[str] | None = None
    best_of: Annotated[int, Field(ge=1, le=128)] | None = None
    random_seed: Annotated[int, Field(ge=0, lt=2**32)] | None = None
    stream: bool | None = None

    @property
    def stops(self) -> tuple[str, ...]:
        if self.stop is None:
            return ()
        return (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
