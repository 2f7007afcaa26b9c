"""The web playground: one page at `/`, its assets at `/playground/<name>`, no key needed.

The files are package data (`inkstand/playground/`: index.html, the ES modules, the style
sheet), read once when the app is built and served from a fixed allow-list; nothing comes from
another origin, so the page works on a machine without internet. The page asks for an API key,
keeps it in the browser's localStorage and sends it with its own API calls, which go through
the gateway like any other; the page and its assets are public (`api/gateway.py`) and never
recorded as usage.

Because a key sits in the page's storage, every response carries a strict
Content-Security-Policy: scripts and style sheets from this origin only, no inline code or
style attributes, requests to this origin only, no framing. Asset URLs are not versioned, so
responses say `no-cache` and carry an ETag: a browser revalidates (304) instead of keeping a
stale script after an upgrade.

`playground = false` builds no routes: `/` is then a 404 like any unknown path.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib.resources import files

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inkstand.config import Settings
from inkstand.errors import NotFoundError

PAGE = "index.html"
ASSET_PREFIX = "/playground/"  # public in api/gateway.py: no other route may live under it
MEDIA_TYPES = {
    PAGE: "text/html; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "api.js": "text/javascript; charset=utf-8",
    "code.js": "text/javascript; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
}
CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


@dataclass(frozen=True)
class Asset:
    body: bytes
    media_type: str
    etag: str


def load_assets() -> dict[str, Asset]:
    """Every file of the allow-list, read from the package."""
    folder = files("inkstand") / "playground"  # package data, not a package
    assets = {}
    for name, media_type in MEDIA_TYPES.items():
        body = folder.joinpath(name).read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        assets[name] = Asset(body, media_type, etag)
    return assets


class Playground:
    """The page and its assets, held in memory."""

    def __init__(self, assets: dict[str, Asset]) -> None:
        self.assets = assets

    async def page(self, request: Request) -> Response:
        return serve(request, self.assets[PAGE])

    async def asset(self, request: Request) -> Response:
        name = request.path_params["name"]
        found = self.assets.get(name) if name != PAGE else None
        if found is None:
            raise NotFoundError(f"The playground has no file named `{name[:64]}`.")
        return serve(request, found)


def serve(request: Request, asset: Asset) -> Response:
    headers = {**SECURITY_HEADERS, "ETag": asset.etag}
    if asset.etag in request.headers.get("if-none-match", ""):
        return Response(status_code=304, headers=headers)
    return Response(asset.body, headers=headers, media_type=asset.media_type)


def routes(settings: Settings) -> list[Route]:
    """The playground's routes, or none when the `playground` setting is off."""
    if not settings.playground:
        return []
    playground = Playground(load_assets())
    return [
        Route("/", playground.page, methods=["GET"]),
        Route(ASSET_PREFIX + "{name}", playground.asset, methods=["GET"]),
    ]
