"""SSE response: a client disconnect cancels the stream and always runs the close hook."""

import asyncio

from inkstand.api.sse import DONE, SSEResponse, encode_data, encode_error, until_disconnect
from inkstand.errors import BadRequestError


async def run(response: SSEResponse, receive) -> list[bytes]:
    sent: list[bytes] = []

    async def send(message):
        if message["type"] == "http.response.body":
            sent.append(message["body"])

    await asyncio.wait_for(response({"type": "http"}, receive, send), 5)
    return sent


async def never_disconnect():
    await asyncio.Event().wait()


async def test_stream_ends_with_done():
    async def events():
        yield {"a": 1}

    closed = []

    async def on_close():
        closed.append(True)

    sent = await run(SSEResponse(events(), on_close), never_disconnect)
    assert sent == [encode_data({"a": 1}), DONE]
    assert closed == [True]


async def test_error_after_start_is_one_error_event_without_done():
    async def events():
        yield {"a": 1}
        raise BadRequestError("boom")

    async def on_close():
        pass

    sent = await run(SSEResponse(events(), on_close), never_disconnect)
    assert sent[-1] == encode_error(BadRequestError("boom"))
    assert DONE not in sent


async def test_disconnect_cancels_the_event_source():
    finalised = asyncio.Event()

    async def endless():
        try:
            while True:
                yield {"tick": 1}
                await asyncio.sleep(0.01)
        finally:
            finalised.set()

    closed = []

    async def on_close():
        await endless_gen.aclose()
        closed.append(True)

    async def receive():
        await asyncio.sleep(0.05)
        return {"type": "http.disconnect"}

    endless_gen = endless()
    sent = await run(SSEResponse(endless_gen, on_close), receive)
    assert closed == [True] and finalised.is_set()
    assert DONE not in sent


async def test_until_disconnect_cancels_the_work():
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def work():
        started.set()
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def receive():
        await started.wait()
        return {"type": "http.disconnect"}

    from inkstand.api.sse import ClientGoneError

    try:
        await until_disconnect(receive, work())
    except ClientGoneError:
        pass
    else:
        raise AssertionError("expected ClientGoneError")
    assert cancelled.is_set()


async def test_idle_stream_gets_keepalive_comments():
    from inkstand.api.sse import KEEPALIVE

    async def slow():
        await asyncio.sleep(0.2)
        yield {"a": 1}

    async def on_close():
        pass

    sent = await run(SSEResponse(slow(), on_close, keepalive_seconds=0.06), never_disconnect)
    assert KEEPALIVE in sent
    assert sent[-2:] == [encode_data({"a": 1}), DONE]


async def test_no_keepalive_is_written_while_a_write_waits_for_the_client():
    """A client that reads slowly holds a write; a keep-alive beside it could land after the
    stream's last frame."""
    from inkstand.api.sse import KEEPALIVE

    readable = asyncio.Event()
    waiting: list[bytes] = []
    sent: list[bytes] = []

    async def send(message):
        if message["type"] != "http.response.body":
            return
        waiting.append(message["body"])
        await readable.wait()  # the transport is full until the client reads
        waiting.remove(message["body"])
        sent.append(message["body"])

    async def events():
        yield {"a": 1}

    async def on_close():
        pass

    response = SSEResponse(events(), on_close, keepalive_seconds=0.03)
    task = asyncio.create_task(response({"type": "http"}, never_disconnect, send))
    await asyncio.sleep(0.2)  # several keep-alive periods
    assert waiting == [encode_data({"a": 1})]
    readable.set()
    await asyncio.wait_for(task, 5)
    assert sent[0] == encode_data({"a": 1}) and sent[-1] == DONE
    assert set(sent[1:-1]) <= {KEEPALIVE}
