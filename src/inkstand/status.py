"""`inkstand status`: a running server's health as its operator sees it.

Prints the server's `/health` asked with an API key, so upstream models show each replica up
or down (by its place in the config); with the server's config file at hand, each replica's
URL is added from it (the server never sends URLs to a client).
"""

from __future__ import annotations

import json
import os
import sys

import httpx

from inkstand.chatbot import DEFAULT_URL
from inkstand.config import ConfigError, load_settings


def run_status(*, base_url: str | None, api_key: str | None, config: str | None) -> int:
    url = (base_url or os.environ.get("WRITER_BASE_URL") or DEFAULT_URL).rstrip("/")
    key = api_key or os.environ.get("WRITER_API_KEY", "")
    headers = {"authorization": f"Bearer {key}"} if key else {}
    try:
        response = httpx.get(f"{url}/health", headers=headers, timeout=10)
        report = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        print(f"inkstand status: cannot read {url}/health: {exc}", file=sys.stderr)
        return 2
    if config:
        _add_urls(report, config)
    print(json.dumps(report, indent=2))
    return 0 if response.status_code == 200 else 1


def _add_urls(report: dict, config: str) -> None:
    try:
        settings = load_settings({"config": config}, environ={})
    except ConfigError as exc:
        print(f"inkstand status: {exc.description}", file=sys.stderr)
        return
    urls = {m.id: m.upstream.urls for m in settings.models if m.upstream is not None}
    for model_id, replicas in report.get("upstreams", {}).items():
        for replica in replicas:
            known = urls.get(model_id, ())
            if replica.get("replica", -1) < len(known):
                replica["url"] = known[replica["replica"]]
