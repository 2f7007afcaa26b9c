"""The `POST /v1/translation` request body (Writer's `translation_request`)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from inkstand.schemas.chat import Lenient


class TranslationRequest(Lenient):
    model: str
    source_language_code: str
    target_language_code: str
    text: Annotated[str, Field(min_length=1)]
    formality: bool
    length_control: bool
    mask_profanity: bool
