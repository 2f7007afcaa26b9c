"""Engine faults seen from the API: a 500 in Writer's envelope (one `event: error` frame once
streaming), the next request served; once the engine gives up, a 503 the SDK must not retry
and `/health` naming the model as failed. The faults are plain exceptions (as a bug would
raise), injected into the fake backend."""

import asyncio
import json

import pytest

from inkstand.backends.fake import FakeBackend
from inkstand.backends.faults import Faults, FaultyBackend
from inkstand.engine.scheduler import MAX_FAILURES

from .conftest import CTX, api_client, build_app, chat_body, settings
from .test_errors import envelope_ok


@pytest.fixture
def faults():
    return Faults()


@pytest.fixture
async def client(faults):
    backend = FaultyBackend(FakeBackend("Hello world", n_ctx=CTX, n_seq_max=4), faults)
    async with api_client(build_app(backend, settings()), lifespan=True) as client:
        yield client


async def chat(client, **fields):
    async with asyncio.timeout(10):  # a dead engine thread would leave the request hanging
        return await client.post("/v1/chat", json=chat_body(**fields))


async def test_a_fault_is_a_500_envelope_and_the_next_request_is_served(client, faults):
    faults.arm("sample")
    failed = await chat(client)
    assert failed.status_code == 500
    assert envelope_ok(failed.json())
    assert failed.json()["tpe"] == "InternalServerError"
    assert "x-should-retry" not in failed.headers  # a fault may pass: the SDK's retry policy
    served = await chat(client)
    assert served.status_code == 200
    assert served.json()["choices"][0]["finish_reason"] == "stop"


async def test_a_fault_mid_stream_ends_it_with_one_error_event(client, faults):
    faults.arm("sample", skip=3)
    response = await chat(client, stream=True)
    assert response.status_code == 200
    frames = response.text.removesuffix("\n\n").split("\n\n")
    assert frames[-1].startswith("event: error\ndata: ")
    assert all(frame.startswith("data: {") for frame in frames[:-1]) and len(frames) > 1
    error = json.loads(frames[-1].split("data: ", 1)[1])
    assert envelope_ok(error) and error["tpe"] == "InternalServerError"
    assert (await chat(client)).status_code == 200


async def test_an_engine_that_gave_up_answers_503_and_health_says_failed(client, faults):
    faults.arm("decode", times=MAX_FAILURES)
    for _ in range(MAX_FAILURES):
        assert (await chat(client)).status_code == 500
    refused = await chat(client)
    assert refused.status_code == 503
    assert envelope_ok(refused.json())
    assert refused.headers["x-should-retry"] == "false"
    health = await client.get("/health")
    assert health.status_code == 503
    assert health.json() == {
        "status": "failed",
        "models": {"palmyra-x5": "failed", "palmyra-x4": "failed"},
    }
