"""`inkstand chat`: Writer's sample streaming chatbot, as a command.

It uses the official `writerai` SDK exactly as an application would: a system prompt, the
whole history resent each turn, streamed replies; `exit` or Ctrl-D ends it.
"""

from __future__ import annotations

import os
import sys

DEFAULT_URL = "http://127.0.0.1:8000"


def run_chatbot(
    *, system: str, model: str, base_url: str | None = None, api_key: str | None = None
) -> int:
    import writerai

    url = base_url or os.environ.get("WRITER_BASE_URL") or DEFAULT_URL
    key = api_key if api_key is not None else os.environ.get("WRITER_API_KEY")
    if not key:
        print("inkstand chat: set WRITER_API_KEY or pass --api-key", file=sys.stderr)
        return 2
    client = writerai.Writer(api_key=key, base_url=url, max_retries=0)
    messages: list[dict] = [{"role": "system", "content": system}]
    while True:
        try:
            user_input = input("You: ")
        except EOFError:
            print()
            return 0
        if user_input.strip().lower() == "exit":
            return 0
        messages.append({"role": "user", "content": user_input})
        try:
            reply = _stream_reply(client, model, messages)
        except writerai.APIConnectionError:
            print(
                f"\ninkstand chat: cannot reach the server at {url}; is it running?",
                file=sys.stderr,
            )
            return 1
        except writerai.APIStatusError as exc:
            print(
                f"\ninkstand chat: the server refused the request: {_describe(exc)}",
                file=sys.stderr,
            )
            messages.pop()
            continue
        messages.append({"role": "assistant", "content": reply})


def _stream_reply(client, model: str, messages: list[dict]) -> str:
    print("Assistant: ", end="", flush=True)
    reply = ""
    for chunk in client.chat.chat(model=model, messages=messages, stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            piece = chunk.choices[0].delta.content
            print(piece, end="", flush=True)
            reply += piece
    print()
    return reply


def _describe(exc) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict) and body.get("errors"):
        return str(body["errors"][0].get("description"))
    return str(exc)
