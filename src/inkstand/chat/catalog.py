"""Which Writer model ids this server answers to, and what serves each: a local engine
(`ServedModel`) or an upstream one (`ServedUpstream`)."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING

from inkstand.chat.prompt import turn_tail
from inkstand.config import TRANSLATOR_ID, ModelSpec
from inkstand.engine import Engine
from inkstand.errors import ModelNotFoundError

if TYPE_CHECKING:
    from inkstand.upstream import UpstreamModel

REMOVED_MODELS = {
    "palmyra-x-003-instruct": "Palmyra X 003 Instruct",
    "palmyra-med": "Palmyra Med",
    "palmyra-fin": "Palmyra Financial",
    "palmyra-creative": "Palmyra Creative",
    "palmyra-vision": "Palmyra Vision",
}
TRANSLATOR_NAME = "Palmyra Translate"
REMOVAL_DATE = "2026-07-13"
REPLACEMENT = "palmyra-x5"


@dataclass(frozen=True)
class ServedModel:
    id: str
    spec: ModelSpec
    engine: Engine

    @cached_property
    def turn_tail(self) -> tuple[int, ...]:
        """The tokens of the chat template's turn tail (`chat.prompt.turn_tail`)."""
        info = self.engine.info
        text = turn_tail(info.chat_template, bos=info.bos_text, eos=info.eos_text)
        if not text:
            return ()
        return tuple(self.engine.tokenize(text, add_special=False, parse_special=True))


@dataclass(frozen=True)
class ServedUpstream:
    id: str
    spec: ModelSpec
    upstream: UpstreamModel


Served = ServedModel | ServedUpstream


class Catalog:
    """Resolves a requested model id (or a configured alias) to a served model."""

    def __init__(self, served: dict[str, Served], aliases: dict[str, str]) -> None:
        self._served = served
        self._aliases = aliases

    def listing(self) -> list[dict[str, str]]:
        """The served models, and `palmyra-translate` when a model answers it."""
        listed = [{"id": m.id, "name": m.spec.name} for m in self._served.values()]
        if TRANSLATOR_ID in self._aliases:
            listed.append({"id": TRANSLATOR_ID, "name": TRANSLATOR_NAME})
        return listed

    def resolve(self, model_id: str) -> Served:
        target = self._aliases.get(model_id, model_id)
        served = self._served.get(target)
        if served is not None:
            return served
        if model_id in REMOVED_MODELS:
            raise ModelNotFoundError(
                f"The model `{model_id}` was removed on {REMOVAL_DATE}. "
                f"Use `{REPLACEMENT}` instead."
            )
        raise ModelNotFoundError(
            f"Unknown model `{model_id}`. This server serves: {', '.join(self._served)}."
        )
