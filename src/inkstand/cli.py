"""`inkstand serve | chat`: a thin command line over the Python API."""

from __future__ import annotations

import argparse
import logging
import sys

from inkstand import __version__


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return args.run(args)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="inkstand", description=__doc__)
    parser.add_argument("--version", action="version", version=f"inkstand {__version__}")
    commands = parser.add_subparsers(dest="command")

    serve = commands.add_parser("serve", help="serve the Writer API on local models")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default 8000)")
    serve.add_argument(
        "--api-key",
        action="append",
        dest="api_key",
        metavar="KEY",
        help="accept this API key (repeatable); kept in memory only",
    )
    serve.add_argument("--data-dir", help="where the SQLite store lives")
    serve.add_argument("--config", help="TOML config file (models, aliases, settings)")
    serve.add_argument("--threads", type=int, help="CPU threads for the model")
    serve.add_argument("--ctx-size", type=int, help="context window per sequence (default 4096)")
    serve.add_argument("--slots", type=int, help="sequences decoded together (default 16)")
    serve.add_argument(
        "--max-waiting",
        type=int,
        help="requests queued for a slot before new ones get 503 (default 64)",
    )
    serve.add_argument(
        "--queue-timeout", type=float, help="seconds a request may wait for a slot (default 30)"
    )
    serve.add_argument(
        "--step-tokens", type=int, help="prompt tokens per step while others generate (default 128)"
    )
    serve.add_argument("--max-body-bytes", type=int, help="request body limit (default 10 MiB)")
    serve.add_argument("--log-level", help="debug, info, warning or error")
    serve.set_defaults(run=_serve)

    chat = commands.add_parser("chat", help="chat with a server from the terminal")
    chat.add_argument("--system", default="You are a helpful assistant.", help="system prompt")
    chat.add_argument("--model", default="palmyra-x5")
    chat.add_argument("--url", help="server base URL (default $WRITER_BASE_URL or local)")
    chat.add_argument("--api-key", help="API key (default $WRITER_API_KEY)")
    chat.set_defaults(run=_chat)
    return parser


def _serve(args: argparse.Namespace) -> int:
    from inkstand.errors import InkstandError
    from inkstand.server import serve

    flags = {k: v for k, v in vars(args).items() if k not in {"command", "run"}}
    if flags.get("api_key"):
        flags["api_key"] = tuple(flags["api_key"])
    try:
        return serve(flags)
    except InkstandError as exc:
        print(f"inkstand: {exc.description}", file=sys.stderr)
        return 2


def _chat(args: argparse.Namespace) -> int:
    from inkstand.chatbot import run_chatbot

    return run_chatbot(
        system=args.system, model=args.model, base_url=args.url, api_key=args.api_key
    )


if __name__ == "__main__":
    logging.basicConfig()
    raise SystemExit(main())
