"""What the server serves: engines loaded from the configured models, and the services on them.

Upstream models (`backend = "openai"`) need no loading: their `UpstreamModel`s are made at
once and probe their replicas from the server's event loop (`start_upstreams`).

Models load on a worker thread after the server starts listening, so `/health` can say 503
while they load; API calls made before then get a 503 with `Retry-After`. A model that failed
to load answers 503 with `x-should-retry: false` and the reason (authenticated callers only;
`/health` says just "failed").

With an embedding model configured (`embedding_model` or `embedding_url`), the runtime also
owns the `Embedder` and the `SemanticSearch` over its vectors: opened by `start_semantic()`
before the ingestion worker starts (which is handed the embedder), closed last.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from typing import cast

from inkstand.backends.base import Backend
from inkstand.backends.faults import Faults, FaultyBackend
from inkstand.chat.catalog import Catalog, Served, ServedModel, ServedUpstream
from inkstand.chat.checks import RequestLimits
from inkstand.chat.completions import CompletionService
from inkstand.chat.grammar import GrammarLimits
from inkstand.chat.planner import OutputPlanner
from inkstand.chat.service import ChatService
from inkstand.config import ModelSpec, Settings
from inkstand.engine import Engine, EngineConfig
from inkstand.engine.drafter import same_vocabulary
from inkstand.engine.observer import EngineObserver
from inkstand.engine.speculation import SpeculateMode
from inkstand.errors import EngineError, ModelFailedError, OverloadedError
from inkstand.knowledge.embedding import Embedder, open_embedder
from inkstand.knowledge.semantic import SemanticSearch
from inkstand.tools.graph import Knowledge
from inkstand.upstream import UpstreamModel
from inkstand.upstream.replicas import Fleet

log = logging.getLogger("inkstand")

EngineKey = tuple[str, int, str, int, str]  # what makes two model entries share one engine


def engine_key(spec: ModelSpec) -> EngineKey:
    """Entries with the same GGUF, context and speculation settings share an engine."""
    return (spec.path, spec.ctx_size, spec.speculate, spec.spec_max_tokens, spec.draft)


class Runtime:
    def __init__(self, settings: Settings, observer: EngineObserver | None = None) -> None:
        self.settings = settings
        self.observer = observer
        self.engines: dict[EngineKey, Engine] = {}
        self.ready = False
        self.failure: str | None = None
        self._catalog: Catalog | None = None
        # Opens a read connection to the store, for the `graph` tool (set by the app).
        self.knowledge: Callable[[], sqlite3.Connection] | None = None
        # Semantic search, when an embedding model is configured (`start_semantic`): the
        # ingestion worker's embedder, and what `knowledge.hybrid.retrieve` takes.
        self.embedder: Embedder | None = None
        self.semantic: SemanticSearch | None = None
        self._service: ChatService | None = None
        self._completions: CompletionService | None = None
        fleet = Fleet()  # model ids on one engine share its replicas
        self.upstreams = {
            spec.id: UpstreamModel(spec, queue_timeout=settings.queue_timeout, fleet=fleet)
            for spec in settings.models
            if spec.upstream is not None
        }
        self.planner = OutputPlanner(
            GrammarLimits(settings.max_grammar_bytes, settings.max_grammar_rules),
            processes=settings.planner_processes,
        )

    def catalog(self) -> Catalog:
        if self._catalog is None:
            raise self._not_ready()
        return self._catalog

    def chat_service(self) -> ChatService:
        if self._service is None:
            raise self._not_ready()
        return self._service

    def completion_service(self) -> CompletionService:
        if self._completions is None:
            raise self._not_ready()
        return self._completions

    def _not_ready(self) -> OverloadedError:
        if self.failure:
            return ModelFailedError(f"The model failed to load: {self.failure}")
        return OverloadedError("The model is still loading; retry shortly.", retry_after=2)

    def model_states(self) -> dict[str, str]:
        """Each served model id: "ready", "loading" or "failed" (no paths, no error text)."""
        state = "failed" if self.failure else "ready" if self.ready else "loading"
        return {spec.id: self._state(spec, state) for spec in self.settings.models}

    def _state(self, spec: ModelSpec, state: str) -> str:
        upstream = self.upstreams.get(spec.id)
        if upstream is not None:
            return "ready" if upstream.ready else "unavailable"
        engine = self.engines.get(engine_key(spec))
        return "failed" if engine is not None and not engine.healthy else state

    def install(self, engines: dict[EngineKey, Engine]) -> None:
        """Serve the given started engines (keyed by `engine_key`)."""
        self.engines = engines
        served: dict[str, Served] = {}
        for spec in self.settings.models:
            upstream = self.upstreams.get(spec.id)
            if upstream is not None:
                served[spec.id] = ServedUpstream(spec.id, spec, upstream)
            else:
                served[spec.id] = ServedModel(spec.id, spec, engines[engine_key(spec)])
        self._catalog = Catalog(served, dict(self.settings.aliases))
        settings = self.settings
        limits = RequestLimits(
            settings.max_messages,
            settings.max_n,
            settings.max_tools,
            settings.max_stops,
            settings.max_stop_chars,
            settings.max_images,
            settings.max_image_bytes,
        )
        knowledge = None
        if self.knowledge is not None:
            knowledge = Knowledge(self.knowledge, self.semantic)
        self._service = ChatService(self._catalog, limits, self.planner, knowledge)
        self._completions = CompletionService(self._catalog, limits)
        self.ready = True

    def load_in_background(self) -> threading.Thread:
        thread = threading.Thread(target=self._load, name="inkstand-loader", daemon=True)
        thread.start()
        return thread

    def _load(self) -> None:
        engines: dict[EngineKey, Engine] = {}
        try:
            for spec in self.settings.models:
                key = engine_key(spec)
                if spec.upstream is None and key not in engines:
                    log.info("loading %s (context %d tokens)", spec.path, spec.ctx_size)
                    engines[key] = self._engine(spec)
                    engines[key].start()
            self.planner.start()
            self.install(engines)
            log.info("ready: serving %s", ", ".join(m.id for m in self.settings.models))
        except Exception as exc:
            self.failure = str(exc)
            log.error("model loading failed: %s", exc)

    def _engine(self, spec: ModelSpec) -> Engine:
        from inkstand.backends.llama_cpp import LlamaCppBackend

        settings = self.settings
        backend: Backend = LlamaCppBackend(
            spec.path, n_ctx=spec.ctx_size, n_threads=settings.threads, n_seq_max=settings.slots
        )
        if settings.fault_injection:
            log.warning("fault injection is on (%s): for tests only", settings.fault_injection)
            faults = Faults.parse(settings.fault_injection)
            backend = cast(Backend, FaultyBackend(backend, faults))
        config = EngineConfig(
            settings.max_waiting,
            settings.queue_timeout,
            settings.step_tokens,
            speculate=cast(SpeculateMode, spec.speculate),
            spec_max_tokens=spec.spec_max_tokens,
        )
        draft = self._draft_backend(spec, backend) if spec.draft else None
        return Engine(backend, name=spec.id, config=config, observer=self.observer, draft=draft)

    def _draft_backend(self, spec: ModelSpec, target: Backend) -> Backend:
        """The draft model's backend: one slot per slot of `target`, the same context; its
        vocabulary must be `target`'s (else loading stops with what differs)."""
        from inkstand.backends.llama_cpp import LlamaCppBackend

        settings = self.settings
        draft = LlamaCppBackend(
            spec.draft, n_ctx=spec.ctx_size, n_threads=settings.threads, n_seq_max=settings.slots
        )
        differs = same_vocabulary(target, draft)
        if differs is not None:
            draft.close()
            raise EngineError(
                f"draft model {spec.draft} cannot draft for {spec.path}: {differs}; a draft "
                "model must have the same vocabulary"
            )
        log.info(
            "draft model %s: KV cache %.1f MiB (the model's own: %.1f MiB)",
            spec.draft,
            draft.kv_bytes / 2**20,
            target.kv_bytes / 2**20,
        )
        return draft

    def start_semantic(self) -> None:
        """Open the configured embedding model, if any (blocks: loads a GGUF)."""
        embedder = open_embedder(self.settings)
        if embedder is None:
            return
        self.embedder = embedder
        self.semantic = SemanticSearch(embedder)
        log.info("semantic search: embedding with %s", embedder.name)

    def start_upstreams(self) -> None:
        """Probe every upstream's replicas (on the running event loop)."""
        for upstream in self.upstreams.values():
            upstream.start()

    async def close_upstreams(self) -> None:
        for upstream in self.upstreams.values():
            await upstream.aclose()

    def drain(self) -> None:
        """The server stops now (its grace ran out, or a second signal came): end requests
        in flight with a 503 (an error frame in a stream) so clients retry elsewhere."""
        for engine in self.engines.values():
            engine.drain()

    def close(self) -> None:
        self.planner.close()
        for engine in self.engines.values():
            engine.close()
        if self.semantic is not None:
            self.semantic.close()  # after the ingestion worker, which embeds with it
