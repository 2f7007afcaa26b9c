"""Output plans (`plan_output`) made off the event loop, and remembered.

Checking a request's JSON Schemas and turning them into a grammar is Python work that holds
the GIL: 20 tools of 20 properties take about 0.2 s, during which no other request would
get a byte. So a plan that is not remembered is made in a worker process (a thread would
still hold the GIL), and the last `CACHE_SIZE` plans are kept by their tools, tool choice,
response format and tool format: an agent that sends the same tools every turn has them
planned once. A request without tools or a response format needs no grammar and is planned
in place.

`processes = 0` plans in place (for tests above the engine seam, and for debugging).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import pickle
from collections import OrderedDict

from inkstand.chat.grammar import GrammarLimits
from inkstand.chat.output import OutputPlan, plan_output
from inkstand.chat.toolformat import HermesFormat
from inkstand.errors import EngineError
from inkstand.schemas.chat import ChatRequest
from inkstand.workers import worker_pool

CACHE_SIZE = 64
# Plans of larger tools and formats (pickled) are not remembered: a plan holds its request's
# schemas, and 64 of 10 MiB bodies' schemas would take gigabytes.
MAX_REMEMBERED_BYTES = 256 * 1024


class OutputPlanner:
    def __init__(self, limits: GrammarLimits, *, processes: int = 1) -> None:
        self.limits = limits
        self.processes = processes
        self._pool: concurrent.futures.ProcessPoolExecutor | None = None
        self._plans: OrderedDict[bytes, OutputPlan] = OrderedDict()
        self.made = 0  # plans made rather than remembered (the tests count them)

    async def plan(self, request: ChatRequest, fmt: HermesFormat) -> OutputPlan:
        if not request.tools and request.response_format is None:
            return plan_output(request, fmt, self.limits)
        shape = _shape(request)
        key = hashlib.sha256(type(fmt).__name__.encode() + shape).digest()
        plan = self._plans.get(key)
        if plan is None:
            plan = await self._make(shape, fmt)
            if len(shape) <= MAX_REMEMBERED_BYTES:
                self._remember(key, plan)
        else:
            self._plans.move_to_end(key)
        return plan

    async def _make(self, shape: bytes, fmt: HermesFormat) -> OutputPlan:
        self.made += 1
        if self.processes == 0:
            return plan_shape(shape, fmt, self.limits)
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._workers(), plan_shape, shape, fmt, self.limits)
        except concurrent.futures.BrokenExecutor as exc:
            self.close()  # a fresh pool for the next request
            raise EngineError("The worker that plans tools and response formats failed.") from exc

    def _remember(self, key: bytes, plan: OutputPlan) -> None:
        self._plans[key] = plan
        while len(self._plans) > CACHE_SIZE:
            self._plans.popitem(last=False)

    def _workers(self) -> concurrent.futures.ProcessPoolExecutor:
        if self._pool is None:
            self._pool = worker_pool(self.processes)  # spawned; they die with the server
        return self._pool

    def start(self) -> None:
        """Start the workers now, so the first request with tools does not wait for them."""
        if self.processes:
            self._workers().submit(int)

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None


def _shape(request: ChatRequest) -> bytes:
    """What `plan_output` reads, pickled: the plan's cache key (hashed) and what the worker
    gets. Pickling is the cheapest walk of a large schema (a third of a JSON dump's time,
    and it is needed for the worker anyway); equal requests pickle alike in one process."""
    return pickle.dumps((request.tools, request.tool_choice, request.response_format))


def plan_shape(shape: bytes, fmt: HermesFormat, limits: GrammarLimits) -> OutputPlan:
    tools, tool_choice, response_format = pickle.loads(shape)
    request = ChatRequest.model_construct(
        messages=[], tools=tools, tool_choice=tool_choice, response_format=response_format
    )
    return plan_output(request, fmt, limits)
