"""A model served by an upstream engine: its replicas, one pooled HTTP client, the prober.

`open(job)` is the upstream twin of `Engine.stream`: an async context whose iterator yields
`TokenEvent`, `CallEvent` and `Finish` events. Until the first event has been yielded, a
refused connection, a timeout or a 5xx moves the request to another replica; after it, a
failure ends the stream with an error (the SSE writer sends one `event: error` frame).
Leaving the context early (the client went away) closes the upstream response, which
cancels the engine's work.

The prober runs at start and whenever a replica fails: it asks the replicas that are out or
failed for `/models` (every `PROBE_INTERVAL` seconds until all answer), takes out those that
do not and puts back those that do.

Cache isolation: a job carries its key's scope; vLLM replicas get it as `cache_salt` (one
prefix cache per key) and report `cached_tokens`; other engines share one cache among all
keys, so their `cached_tokens` are reported as 0 unless `cache_scope = "shared"` (one
tenant), and prefix affinity hashes the scope with the conversation.

Forced tool choices (`required`, a named function): engines differ in enforcing them (vLLM
does by guided decoding; llama-server answers with plain text). The entry's `tools` says
how a replica is asked; unset, the first forced call a replica gets is preceded by a probe
(a forced call to a function the prompt gives no reason to call): a call back means
"native", anything else "json_schema" (the call asked for as JSON content under a schema,
which every engine here enforces). A replica that comes back is probed again.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import os
import ssl
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import asynccontextmanager, suppress
from typing import Any

import httpx

from inkstand.config import ModelSpec, UpstreamSpec
from inkstand.engine.types import Event
from inkstand.errors import EngineError, InkstandError
from inkstand.upstream.replicas import Fleet, Replica, ReplicaSet, choose
from inkstand.upstream.sse import data_payloads
from inkstand.upstream.translate import ChunkReader, UpstreamJob, error_from_body

log = logging.getLogger("inkstand.upstream")

PROBE_INTERVAL = 2.0
PROBE_TIMEOUT = 2.0
TOOLS_PROBE_TIMEOUT = 60.0
PROBE_FUNCTION = "inkstand_probe"
NATIVE_N = {"vllm", "sglang"}  # `/models` owners that answer `n` choices in one request
# Events of a fanned-out job read ahead of its reader, per choice: beyond, its requests are
# not read, so a slow reader slows its upstream streams instead of growing this queue.
FANNED_AHEAD = 64


class UpstreamModel:
    def __init__(
        self,
        spec: ModelSpec,
        *,
        queue_timeout: float,
        fleet: Fleet | None = None,
    ) -> None:
        """`fleet`: the replicas by URL, shared with the other upstream models."""
        assert spec.upstream is not None
        self.spec = spec
        self.upstream: UpstreamSpec = spec.upstream
        self.replicas = ReplicaSet.of(
            self.upstream.urls, self.upstream.max_in_flight, queue_timeout, fleet
        )
        self._key = (
            os.environ.get(self.upstream.api_key_env, "") if self.upstream.api_key_env else ""
        )
        self._client: httpx.AsyncClient | None = None
        self._prober: asyncio.Task | None = None
        self._tools_probes: dict[int, asyncio.Lock] = {}

    # -- state ------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        return bool(self.replicas.live)

    def states(self) -> list[dict]:
        """Each replica up or down, by its number (no URLs)."""
        return [r.state() for r in self.replicas.replicas]

    # -- answers ----------------------------------------------------------------------------

    @asynccontextmanager
    async def open(self, job: UpstreamJob) -> AsyncIterator[AsyncIterator[Event]]:
        events = self._events(job) if self._native_n(job) else self._fanned(job)
        try:
            yield events
        finally:
            await events.aclose()

    def _native_n(self, job: UpstreamJob) -> bool:
        """Whether the engine takes `n` itself: vLLM and SGLang do; llama-server caps it at
        its slot count (a 400 beyond) and Ollama ignores it, so for them (and unknown
        engines) a job's choices are one request each."""
        engines = {r.engine for r in self.replicas.live}
        return job.n == 1 or (bool(engines) and engines <= NATIVE_N)

    async def _fanned(self, job: UpstreamJob) -> AsyncGenerator[Event, None]:
        """The events of `job.n` one-choice requests, run together, as choices 0..n-1."""
        single = job.single()
        queue: asyncio.Queue[tuple[int, Event | BaseException | None]] = asyncio.Queue(
            FANNED_AHEAD * job.n
        )

        async def pump(index: int) -> None:
            try:
                async for event in self._events(single):
                    await queue.put((index, event))
                await queue.put((index, None))
            except Exception as exc:  # handed to the reader, which raises it
                await queue.put((index, exc))

        tasks = [asyncio.create_task(pump(i)) for i in range(job.n)]
        try:
            finished = 0
            while finished < job.n:
                index, item = await queue.get()
                if item is None:
                    finished += 1
                elif isinstance(item, BaseException):
                    raise item
                else:
                    yield dataclasses.replace(item, index=index)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _events(self, job: UpstreamJob) -> AsyncGenerator[Event, None]:
        tried: set[Replica] = set()
        dropped: set[Replica] = set()  # a reused connection closed under a request
        while True:
            replica = await self.replicas.acquire(job.affinity, tried)
            started = False
            try:
                async for event in self._from(replica, job):
                    started = True
                    yield event
                self.replicas.succeeded(replica)
                return
            except _Retryable as exc:
                if started:
                    self._failed(replica, exc.reason)
                    raise EngineError(
                        "The model's engine failed while answering; the answer is incomplete."
                    ) from exc
                if exc.dropped and replica not in dropped:
                    dropped.add(replica)  # once more on the same replica, a new connection
                    continue
                self._failed(replica, exc.reason)
                tried.add(replica)
            except InkstandError as exc:
                raise self._scrubbed(exc) from None
            finally:
                await self.replicas.release(replica)

    async def _from(self, replica: Replica, job: UpstreamJob) -> AsyncIterator[Event]:
        client = self._http()
        try:
            mode = await self._tools_mode(replica) if job.forced is not None else "native"
            body = job.body_for(mode)
            salted = bool(job.scope) and replica.engine == "vllm"
            if salted:  # vLLM keeps one prefix cache per salt
                body = {**body, "cache_salt": _salt(job.scope)}
            async with client.stream(
                "POST", replica.url + job.path, json=body, headers=self._headers()
            ) as response:
                if response.status_code >= 400:
                    await self._refused(response)
                reader = ChunkReader(
                    job, calls_as_json=job.forced is not None and mode == "json_schema"
                )
                reader.report_cache = salted or not job.scope
                async for payload in data_payloads(response.aiter_lines()):
                    for event in reader.feed(_chunk(payload)):
                        yield event
                for finish in reader.finish():
                    yield finish
        except httpx.TransportError as exc:  # refused, reset, timed out
            dropped = isinstance(exc, httpx.RemoteProtocolError)
            raise _Retryable(f"{type(exc).__name__}: {exc}", dropped=dropped) from exc

    async def _refused(self, response: httpx.Response) -> None:
        body_bytes = await response.aread()
        try:
            body: Any = json.loads(body_bytes)
        except ValueError:
            body = body_bytes.decode("utf-8", "replace")
        status = response.status_code
        if status >= 500:
            raise _Retryable(f"status {status}: {str(body)[:300]}")
        log.info("upstream %s refused a request: %d %s", self.spec.id, status, str(body)[:300])
        error = error_from_body(status, body, retry_after=response.headers.get("retry-after"))
        raise self._scrubbed(error)

    def _scrubbed(self, error: InkstandError) -> InkstandError:
        if self._key and self._key in error.description:
            error.description = error.description.replace(self._key, "<key>")
        return error

    def _failed(self, replica: Replica, reason: str) -> None:
        ejected = self.replicas.failed(replica)
        log.warning(
            "upstream %s replica %d (%s) failed: %s%s",
            self.spec.id,
            replica.number,
            replica.url,
            reason,
            "; taken out until it answers" if ejected else "",
        )
        self._ensure_prober()  # a replica that failed once is asked at once whether it lives

    # -- counting prompt tokens -------------------------------------------------------------

    async def count_prompt(self, job: UpstreamJob) -> int | None:
        """The prompt's tokens as the engine counts them (its template, its tokenizer), from
        the replica the job would go to; None when the engine offers no way to count."""
        replica = choose(self.replicas.live, job.affinity, self.upstream.max_in_flight + 1)
        if replica is None or replica.tokenizer == "none":
            return None
        fields = job.prompt_fields(replica.tools_mode or "native")
        try:
            if replica.tokenizer in (None, "llama"):
                count = await self._count_llama(replica, fields)
                if count is not None:
                    replica.tokenizer = "llama"
                    return count
                if replica.tokenizer == "llama":
                    return None  # it has counted before: this prompt failed, not the endpoint
            count = await self._count_vllm(replica, fields)
        except httpx.HTTPError:
            return None
        replica.tokenizer = "vllm" if count is not None else "none"
        return count

    async def _count_llama(self, replica: Replica, fields: dict) -> int | None:
        """llama-server: the template applied (`/apply-template`), then `/tokenize`."""
        root = _root(replica.url)
        prompt = fields.get("prompt")
        if prompt is None:
            applied = await self._post(root + "/apply-template", fields)
            if applied is None or not isinstance(applied.get("prompt"), str):
                return None
            prompt = applied["prompt"]
        tokens = await self._post(root + "/tokenize", {"content": prompt, "add_special": True})
        if tokens is None or not isinstance(tokens.get("tokens"), list):
            return None
        return len(tokens["tokens"])

    async def _count_vllm(self, replica: Replica, fields: dict) -> int | None:
        """vLLM: `/tokenize` takes the messages (or the prompt) and says `count`."""
        body = {"model": self.upstream.model, **fields}
        if "messages" in body:
            body["add_generation_prompt"] = True
        counted = await self._post(_root(replica.url) + "/tokenize", body)
        if counted is None or not isinstance(counted.get("count"), int):
            return None
        return int(counted["count"])

    async def _post(self, url: str, body: dict) -> dict | None:
        response = await self._http().post(url, json=body, headers=self._headers())
        if response.status_code != 200:
            return None
        try:
            answer = response.json()
        except ValueError:
            return None
        return answer if isinstance(answer, dict) else None

    # -- forced tool choices ------------------------------------------------------------------

    async def _tools_mode(self, replica: Replica) -> str:
        if self.upstream.tools:
            return self.upstream.tools
        lock = self._tools_probes.setdefault(replica.number, asyncio.Lock())
        async with lock:
            if replica.tools_mode is None:
                replica.tools_mode = await self._probe_tools(replica)
                log.info(
                    "upstream %s replica %d takes forced tool calls %s",
                    self.spec.id,
                    replica.number,
                    "natively" if replica.tools_mode == "native" else "as JSON content",
                )
        return replica.tools_mode

    async def _probe_tools(self, replica: Replica) -> str:
        function = {
            "name": PROBE_FUNCTION,
            "description": "Never call this function.",
            "parameters": {"type": "object", "properties": {}},
        }
        body = {
            "model": self.upstream.model,
            "messages": [{"role": "user", "content": "Do not call any tool. Say hello."}],
            "tools": [{"type": "function", "function": function}],
            "tool_choice": {"type": "function", "function": {"name": PROBE_FUNCTION}},
            "max_tokens": 32,
            "temperature": 0,
        }
        response = await self._http().post(
            replica.url + "/chat/completions",
            json=body,
            headers=self._headers(),
            timeout=TOOLS_PROBE_TIMEOUT,
        )
        if response.status_code >= 500:
            raise _Retryable(f"tools probe: status {response.status_code}")
        try:
            calls = response.json()["choices"][0]["message"].get("tool_calls") or []
        except (ValueError, KeyError, IndexError, TypeError, AttributeError):
            calls = []
        called = any((c.get("function") or {}).get("name") == PROBE_FUNCTION for c in calls)
        return "native" if called else "json_schema"

    # -- HTTP -------------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        return {"authorization": f"Bearer {self._key}"} if self._key else {}

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            up = self.upstream
            timeout = httpx.Timeout(up.read_timeout, connect=up.connect_timeout)
            limits = httpx.Limits(
                max_connections=up.max_in_flight * len(up.urls) + len(up.urls),
                max_keepalive_connections=up.max_in_flight * len(up.urls),
            )
            verify: ssl.SSLContext | bool = True
            if up.ca_file:
                verify = ssl.create_default_context(cafile=up.ca_file)
            self._client = httpx.AsyncClient(timeout=timeout, limits=limits, verify=verify)
        return self._client

    # -- probing ----------------------------------------------------------------------------

    def start(self) -> None:
        """Probe every replica once now (a config may name one that is down)."""
        for replica in self.replicas.replicas:
            replica.failures = max(replica.failures, 1)  # unknown until it answers
        self._ensure_prober()

    def _ensure_prober(self) -> None:
        if self._prober is None or self._prober.done():
            self._prober = asyncio.get_running_loop().create_task(self._probe())

    async def _probe(self) -> None:
        """Ask every replica that is out, or failed since it last answered, for `/models`:
        those that answer are in (again), the others out; until all are in and well."""
        while True:
            doubtful = [r for r in self.replicas.replicas if not r.up or r.failures]
            if not doubtful:
                return
            answers = await asyncio.gather(*(self._answers(r) for r in doubtful))
            for replica, answered in zip(doubtful, answers, strict=True):
                self._settle(replica, answered)
            if all(r.up and not r.failures for r in self.replicas.replicas):
                return
            await asyncio.sleep(PROBE_INTERVAL)

    def _settle(self, replica: Replica, answered: bool) -> None:
        if answered:
            if self.replicas.restored(replica):
                log.info("upstream %s replica %d is back", self.spec.id, replica.number)
        elif replica.up:
            self.replicas.taken_out(replica)
            log.warning(
                "upstream %s replica %d (%s) does not answer; probing it every %.0f s",
                self.spec.id,
                replica.number,
                replica.url,
                PROBE_INTERVAL,
            )

    async def _answers(self, replica: Replica) -> bool:
        try:
            response = await self._http().get(
                replica.url + "/models", headers=self._headers(), timeout=PROBE_TIMEOUT
            )
        except httpx.HTTPError:
            return False
        if response.status_code >= 500:
            return False
        replica.engine = _owner(response)
        return True

    async def aclose(self) -> None:
        if self._prober is not None:
            self._prober.cancel()
            with suppress(asyncio.CancelledError):
                await self._prober
        if self._client is not None:
            await self._client.aclose()


class _Retryable(Exception):
    """A failure another replica may not have: refused, reset, timed out, or a 5xx.
    `dropped`: the server closed a kept-alive connection without answering (llama-server
    was seen to, right after a stream), worth one more try on a fresh connection."""

    def __init__(self, reason: str, *, dropped: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.dropped = dropped


def _owner(response: httpx.Response) -> str:
    """Who serves a replica, from its `/models` (`data[0].owned_by`), or ""."""
    try:
        owner = response.json()["data"][0].get("owned_by", "")
    except (ValueError, KeyError, IndexError, TypeError, AttributeError):
        return ""
    return owner if isinstance(owner, str) else ""


def _salt(scope: str) -> str:
    """vLLM's `cache_salt` for a key's id: prompts with different salts share no cache."""
    return hashlib.sha256(b"inkstand-cache-scope\0" + scope.encode()).hexdigest()


def _root(url: str) -> str:
    """The engine's root from its OpenAI base URL (`/tokenize` lives beside `/v1`)."""
    return url.removesuffix("/v1")


def _chunk(payload: str) -> dict[str, Any]:
    try:
        chunk = json.loads(payload)
    except ValueError as exc:
        raise EngineError("The model's engine sent a chunk that is not JSON.") from exc
    if not isinstance(chunk, dict):
        raise EngineError("The model's engine sent a chunk that is not a JSON object.")
    return chunk
