"""What the engine reports as it works; the server plugs in Prometheus metrics here.

The engine thread calls these; implementations must be thread-safe and cheap (they run
once per token).
"""

from __future__ import annotations

from typing import Protocol


class EngineObserver(Protocol):
    def admitted(self, waited: float, prompt_tokens: int, cached_tokens: int) -> None: ...

    def first_token(self, seconds: float) -> None: ...

    def token_gap(self, seconds: float) -> None: ...

    def generated(self, tokens: int) -> None: ...

    def cancelled(self) -> None: ...

    def rejected(self) -> None: ...

    def decoded_ahead(self, tokens: int) -> None: ...

    def speculated(self, drafted: int, accepted: int) -> None:
        """A draft was verified: `accepted` of its `drafted` tokens were kept."""


class NullObserver:
    """Reports nowhere."""

    def admitted(self, waited: float, prompt_tokens: int, cached_tokens: int) -> None:
        pass

    def first_token(self, seconds: float) -> None:
        pass

    def token_gap(self, seconds: float) -> None:
        pass

    def generated(self, tokens: int) -> None:
        pass

    def cancelled(self) -> None:
        pass

    def rejected(self) -> None:
        pass

    def decoded_ahead(self, tokens: int) -> None:
        pass

    def speculated(self, drafted: int, accepted: int) -> None:
        pass
