"""`inkstand serve | chat | keys | usage`: a thin command line over the Python API."""

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
        "--step-tokens", type=int, help="prompt tokens per step while others generate (default 512)"
    )
    serve.add_argument(
        "--speculate",
        choices=("auto", "off", "ngram", "draft"),
        help="speculative decoding: by prompt lookup and the draft model as far as it pays "
        "(auto, the default), lookup only (ngram), always the draft model (draft), or off",
    )
    serve.add_argument(
        "--draft", help="a draft model's GGUF for speculative decoding (same vocabulary)"
    )
    serve.add_argument(
        "--spec-max-tokens", type=int, help="most drafted tokens per sequence and step (default 64)"
    )
    serve.add_argument("--max-body-bytes", type=int, help="request body limit (default 10 MiB)")
    serve.add_argument(
        "--max-file-bytes", type=int, help="one uploaded file; larger gets 413 (default 100 MiB)"
    )
    serve.add_argument(
        "--max-storage-bytes",
        type=int,
        help="all uploaded files together; past it uploads get 507 (default 10 GiB; 0: none)",
    )
    serve.add_argument(
        "--max-request-line-bytes",
        type=int,
        help="request line (path and query) limit; longer gets 414 (default 8 KiB)",
    )
    serve.add_argument(
        "--max-header-bytes",
        type=int,
        help="header names and values of a request together; more gets 431 (default 64 KiB)",
    )
    serve.add_argument(
        "--max-headers", type=int, help="header fields in a request; more gets 431 (default 100)"
    )
    serve.add_argument(
        "--max-connections",
        type=int,
        help="open connections; new ones beyond get 503 (default 1024)",
    )
    serve.add_argument(
        "--request-head-timeout",
        type=float,
        help="seconds a connection has to send a request's line and headers; 408 (default 10)",
    )
    serve.add_argument(
        "--stream-stall-timeout",
        type=float,
        help="seconds a client may read nothing of its answer before it is cancelled (default 30)",
    )
    serve.add_argument(
        "--shutdown-grace",
        type=float,
        help="seconds answers in flight may take to finish after SIGTERM (default 30)",
    )
    serve.add_argument(
        "--max-messages", type=int, help="messages in one chat request (default 1000)"
    )
    serve.add_argument("--max-n", type=int, help="largest `n` / `best_of` (default 16)")
    serve.add_argument("--max-tools", type=int, help="function tools per request (default 128)")
    serve.add_argument("--max-stops", type=int, help="`stop` sequences per request (default 16)")
    serve.add_argument(
        "--max-stop-chars", type=int, help="characters in one `stop` sequence (default 256)"
    )
    serve.add_argument("--max-images", type=int, help="images per chat request (default 16)")
    serve.add_argument(
        "--max-image-bytes", type=int, help="one `data:` URI image, decoded (default 8 MiB)"
    )
    serve.add_argument(
        "--max-json-values",
        type=int,
        help="JSON values and keys in one request body (default 50,000)",
    )
    serve.add_argument(
        "--max-grammar-bytes",
        type=int,
        help="grammar made from a request's JSON Schemas, in bytes (default 512 KiB)",
    )
    serve.add_argument("--max-grammar-rules", type=int, help="rules in that grammar (default 4096)")
    serve.add_argument(
        "--planner-processes",
        type=int,
        help="worker processes planning tools and response formats (default 1; 0: in place)",
    )
    serve.add_argument(
        "--ingest-processes",
        type=int,
        help="worker processes reading uploaded files (default 1; 0: in the ingest thread)",
    )
    serve.add_argument(
        "--embedding-model",
        metavar="GGUF",
        help="semantic search for Knowledge Graphs: a GGUF embedded by llama.cpp, or "
        "`embedded` for the shipped model (default: none, keyword search only)",
    )
    serve.add_argument(
        "--embedding-url",
        metavar="URL",
        help="or an OpenAI-compatible engine's base URL, `/v1` included (its /embeddings)",
    )
    serve.add_argument(
        "--embedding-upstream-model", help="the model name the embedding engine expects"
    )
    serve.add_argument(
        "--embedding-api-key-env",
        metavar="VARIABLE",
        help="an environment variable holding the embedding engine's key",
    )
    serve.add_argument(
        "--translation-model",
        metavar="MODEL",
        help="the served model answering `palmyra-translate` (default: the first; `off`: none)",
    )
    serve.add_argument(
        "--cache-scope",
        choices=("key", "shared"),
        help="prefix cache per API key (default) or shared by all keys (one tenant)",
    )
    serve.add_argument("--rpm", type=int, help="default requests per minute per key (0: none)")
    serve.add_argument("--tpm", type=int, help="default tokens per minute per key (0: none)")
    serve.add_argument(
        "--gateway",
        choices=("on", "off"),
        help="off: no rate limits and no usage records (keys are still checked)",
    )
    serve.add_argument(
        "--playground",
        choices=("on", "off"),
        help="the web playground at / (default on; off: / is a 404)",
    )
    serve.add_argument(
        "--usage-retention-days",
        type=int,
        help="days usage records are kept (default 90; 0: forever)",
    )
    serve.add_argument("--log-level", help="debug, info, warning or error")
    serve.add_argument(
        "--fault-injection",
        metavar="POINT@CALL,...",
        help="testing only: make these engine calls fail, e.g. sample@3 (default: none)",
    )
    serve.set_defaults(run=_serve)

    chat = commands.add_parser("chat", help="chat with a server from the terminal")
    chat.add_argument("--system", default="You are a helpful assistant.", help="system prompt")
    chat.add_argument("--model", default="palmyra-x5")
    chat.add_argument("--url", help="server base URL (default $WRITER_BASE_URL or local)")
    chat.add_argument("--api-key", help="API key (default $WRITER_API_KEY)")
    chat.set_defaults(run=_chat)
    status = commands.add_parser(
        "status", help="a running server's models and upstream replicas, up or down"
    )
    status.add_argument("--url", help="server base URL (default $WRITER_BASE_URL or local)")
    status.add_argument("--api-key", help="API key (default $WRITER_API_KEY)")
    status.add_argument("--config", help="the server's TOML config, to show replicas' URLs")
    status.set_defaults(run=_status)
    _admin_parsers(commands)
    return parser


def _store_flags(parser: argparse.ArgumentParser, default: object = None) -> None:
    parser.add_argument(
        "--data-dir", default=default, help="the server's data dir (default as `serve`)"
    )
    parser.add_argument("--config", default=default, help="TOML config file (for its `data_dir`)")


def _admin_parsers(commands) -> None:
    from inkstand import admin

    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    actions = keys.add_subparsers(dest="action", required=True)
    create = actions.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--models", help="comma-separated model ids it may use (default: all)")
    create.add_argument("--rpm", type=int, help="requests per minute (0: no limit)")
    create.add_argument("--tpm", type=int, help="tokens per minute (0: no limit)")
    create.add_argument("--expires", help="YYYY-MM-DD (midnight UTC) or an ISO 8601 time")
    create.add_argument("--json", action="store_true", help="print id and secret as JSON")
    create.set_defaults(run=_admin(admin.create_key))
    listing = actions.add_parser("list", help="list keys (never their secrets)")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(run=_admin(admin.list_keys))
    revoke = actions.add_parser("revoke", help="revoke a key; a running server refuses it at once")
    revoke.add_argument("id")
    revoke.set_defaults(run=_admin(admin.revoke_key))
    for sub in (create, listing, revoke):
        _store_flags(sub)

    usage = commands.add_parser("usage", help="report recorded usage")
    usage.add_argument("--key", help="only this key id")
    usage.add_argument("--since", help="YYYY-MM-DD or an ISO 8601 time (UTC)")
    usage.add_argument("--by", choices=("day", "key", "model"), help="group (default: total)")
    usage.add_argument("--json", action="store_true")
    _store_flags(usage)
    usage.set_defaults(run=_admin(admin.report_usage))
    prune = usage.add_subparsers(dest="action").add_parser(
        "prune", help="delete the usage records from before a date"
    )
    prune.add_argument(
        "--before", required=True, help="YYYY-MM-DD (midnight UTC) or an ISO 8601 time"
    )
    _store_flags(prune, default=argparse.SUPPRESS)  # `usage --data-dir D prune` keeps D
    prune.set_defaults(run=_admin(admin.prune_usage))


def _admin(command):
    def run(args: argparse.Namespace) -> int:
        from inkstand.admin import opened
        from inkstand.errors import InkstandError

        try:
            with opened(args.data_dir, args.config) as store:
                return command(store, args)
        except InkstandError as exc:
            print(f"inkstand: {exc.description}", file=sys.stderr)
            return 2

    return run


def _serve(args: argparse.Namespace) -> int:
    from inkstand.errors import InkstandError
    from inkstand.server import serve

    flags = {k: v for k, v in vars(args).items() if k not in {"command", "run"}}
    if flags.get("api_key"):
        flags["api_key"] = tuple(flags["api_key"])
    for switch in ("gateway", "playground"):
        if flags.get(switch) is not None:
            flags[switch] = flags[switch] == "on"
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


def _status(args: argparse.Namespace) -> int:
    from inkstand.status import run_status

    return run_status(base_url=args.url, api_key=args.api_key, config=args.config)


if __name__ == "__main__":
    logging.basicConfig()
    raise SystemExit(main())
