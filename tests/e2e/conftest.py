"""Fixtures for the end-to-end suite: one real `inkstand serve` per session, and its clients.

The session server runs the embedded model with a 1024-token context: small enough that a
rambling answer (Writer's examples send no `max_tokens`) ends quickly, large enough for every
request here. It uses one thread: with two, llama.cpp's busy-waiting workers slow down
several-fold whenever anything else (the client, another test run) wants a core.

Every test on the session server runs twice: on the embedded engine, and with the same
model ids served by an upstream engine (two real llama-server replicas of the embedded
model, `backend = "openai"`). Modules about the embedded engine itself (its metrics,
its prefix cache, fault injection) or about what no engine changes (keys, the HTTP
protocol, the CLI) are marked `embedded_only` and run once.

A failing test gets the log of every server it used attached to its report, and a test fails
if such a server logged a 500 or a traceback while it ran.
"""

from __future__ import annotations

import re

import httpx
import pytest
import writerai

from ..contract.openapi import writer_validators
from ..support.llama_servers import replicas
from .support import CTX_SIZE, KEY, Server, running_server

ENGINES = ("embedded", "upstream")

# A 5xx other than 503 (loading, shutting down), a traceback, or an unfinished response.
SERVER_FAILURE = re.compile(
    r"inkstand\.access: \S+ \S+ 5(?!03)\d\d |Traceback \(most recent call last\)"
    r"|Exception in ASGI|returned without completing response"
)


@pytest.fixture(scope="session", params=ENGINES)
def server(request, tmp_path_factory) -> Server:
    folder = tmp_path_factory.mktemp(request.param)
    if request.param == "embedded":
        flags = ("--ctx-size", str(CTX_SIZE), "--threads", "1")
        with running_server(folder, *flags, key=KEY) as running:
            yield running
        return
    # The embedded engine's server-side sampling defaults, set on the engine as an operator
    # would (docs/scaling.md): without a repeat penalty the 135M model at llama-server's
    # default temperature sometimes rambles until the context is full.
    defaults = ("--repeat-penalty", "1.1")
    with replicas(2, ctx_size=CTX_SIZE, slots=4, log_dir=folder, extra_args=defaults) as engines:
        config = folder / "upstream.toml"
        config.write_text(upstream_config([engine.url for engine in engines]))
        with running_server(folder, "--config", str(config), key=KEY) as running:
            running.upstreams = engines
            yield running


def upstream_config(urls: list[str]) -> str:
    """The default model ids, served by the llama-server replicas at `urls`."""
    entries = []
    for model_id, max_output in (("palmyra-x5", 8192), ("palmyra-x4", 4096)):
        entries.append(
            f'[models.{model_id}]\nbackend = "openai"\nurls = {urls!r}\n'
            f'upstream_model = "smollm2"\nctx_size = {CTX_SIZE}\n'
            f"max_output_tokens = {max_output}\n"
        )
    return "\n".join(entries).replace("'", '"')


def pytest_collection_modifyitems(config, items):
    """`embedded_only` tests run on the embedded engine only (deselected for the other)."""
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        engine = callspec.params.get("server") if callspec else None
        once = engine == "upstream" and item.get_closest_marker("embedded_only")
        (dropped if once else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(scope="session")
def engine(server) -> str:
    """Which kind of engine serves the session server's models: "embedded" or "upstream"."""
    return "upstream" if server.upstreams else "embedded"


@pytest.fixture(scope="session")
def client(server) -> writerai.Writer:
    with writerai.Writer(api_key=KEY, base_url=server.url, max_retries=0) as sdk:
        yield sdk


@pytest.fixture(scope="session")
def http(server) -> httpx.Client:
    headers = {"Authorization": f"Bearer {KEY}"}
    with httpx.Client(base_url=server.url, headers=headers, timeout=120) as raw:
        yield raw


@pytest.fixture(scope="session")
def tiny_server(tmp_path_factory) -> Server:
    """A second server that accepts request bodies of at most 1 KiB."""
    folder = tmp_path_factory.mktemp("tiny")
    with running_server(folder, "--max-body-bytes", "1024", "--ctx-size", "512", key=KEY) as tiny:
        yield tiny


@pytest.fixture(scope="session")
def narrow_server(tmp_path_factory) -> Server:
    """One sequence slot and room for one request in the wait line: contention on demand.

    Tests that use it begin with `wait_until_idle`, so work one of them left behind (a
    cancelled request still draining) cannot disturb the next.
    """
    folder = tmp_path_factory.mktemp("narrow")
    flags = ("--slots", "1", "--max-waiting", "1", "--ctx-size", "4096", "--threads", "1")
    with running_server(folder, *flags, key=KEY) as narrow:
        yield narrow


@pytest.fixture(scope="session")
def writer_schema():
    """Validators for Writer's OpenAPI component schemas (tests/contract), by name."""
    return writer_validators()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
    """Fail a test during which any server it used logged a 500 or a traceback.

    A test that makes its server fail on purpose says so with `server_failures(pattern)`:
    failure lines matching `pattern` are then allowed (the test checks them itself).
    """
    servers = [value for value in item.funcargs.values() if isinstance(value, Server)]
    starts = [running.log_size() for running in servers]
    marker = item.get_closest_marker("server_failures")
    expected = re.compile(marker.args[0]) if marker else None
    result = yield
    failures = [
        line
        for running, start in zip(servers, starts, strict=True)
        for line in running.log(start).splitlines()
        if SERVER_FAILURE.search(line) and not (expected and expected.search(line))
    ]
    assert not failures, "the server logged failures:\n" + "\n".join(failures)
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    if report.failed:
        for name, value in getattr(item, "funcargs", {}).items():
            if isinstance(value, Server):
                report.sections.append((f"inkstand log ({name})", value.dump()))
    return report
