"""The engine: one thread owns the model and serves generation requests from a queue.

Callers see only `Engine.stream(request)`, an async context manager that yields typed
events (`TokenEvent`s, then one `Finish` per choice); leaving it early cancels the request
in the engine.
Nothing here knows about HTTP or Writer's wire format.
"""

from inkstand.engine.engine import Engine, EngineConfig, EngineStream
from inkstand.engine.types import Finish, GenerationRequest, SamplingParams, TokenEvent, TokenInfo

__all__ = [
    "Engine",
    "EngineConfig",
    "EngineStream",
    "Finish",
    "GenerationRequest",
    "SamplingParams",
    "TokenEvent",
    "TokenInfo",
]
