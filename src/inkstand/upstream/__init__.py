"""Upstream engines: models served by an OpenAI-compatible engine (vLLM, SGLang, llama.cpp's
server, Ollama) behind Inkstand's Writer API.

The chat service plans a request as for any model (validation, limits, tools, the output
plan) and hands an `UpstreamJob` to the model's `UpstreamModel`, which picks a replica
(`replicas.py`), sends the OpenAI request (`translate.py`), reads the engine's SSE
(`sse.py`) and yields the same events as the local engine, so chunks, tool calls, usage and
the gateway are written once.
"""

from inkstand.upstream.model import UpstreamModel
from inkstand.upstream.translate import UpstreamJob

__all__ = ["UpstreamJob", "UpstreamModel"]
