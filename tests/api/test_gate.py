"""The gate: once the server stops, new requests get 503 and answers in flight still finish."""

from __future__ import annotations

import asyncio
import time

from .conftest import chat_body
from .test_gateway import usage_rows


async def test_a_stopping_server_refuses_new_requests_with_503_and_retry_after(app, client):
    app.state.gate.close()
    response = await client.post("/v1/chat", json=chat_body())
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("application/json")
    assert int(response.headers["retry-after"]) >= 1
    assert response.headers["connection"] == "close"
    (error,) = response.json()["errors"]
    assert error["key"] == "fail.serviceUnavailable.temporary"
    assert "shutting down" in error["description"]
    assert usage_rows(app) == []  # refused before the gateway: nothing to record


async def test_health_says_stopping_and_metrics_still_answer(app, client):
    app.state.gate.close()
    health = await client.get("/health")
    assert health.status_code == 503 and health.json()["status"] == "stopping"
    assert int(health.headers["retry-after"]) >= 1
    assert (await client.get("/metrics")).status_code == 200


async def test_a_stream_taken_before_the_gate_closed_finishes(app, client, backend):
    decode = backend.decode

    def slow_decode(batch):
        time.sleep(0.02)
        return decode(batch)

    backend.decode = slow_decode
    gate = app.state.gate
    answer = asyncio.create_task(client.post("/v1/chat", json=chat_body(stream=True)))
    while gate.answering == 0:
        await asyncio.sleep(0.005)
    gate.close()
    response = await answer
    assert response.status_code == 200
    assert response.text.endswith("data: [DONE]\n\n")
    assert gate.answering == 0
    assert [row["status"] for row in usage_rows(app)] == [200]
