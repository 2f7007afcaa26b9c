"""The playground's page and assets in-process: public, strict headers, nothing inline, small.

The page in a real browser is tests/e2e/test_playground.py.
"""

import tomllib
from fnmatch import fnmatch
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from inkstand.api.playground import MEDIA_TYPES, PAGE, load_assets
from inkstand.cli import _parser
from inkstand.config import load_settings
from inkstand.store import UsageLog

from .conftest import api_client, build_app, settings

MAX_PAGE_BYTES = 200 * 1024  # the page and every asset, uncompressed
ASSETS = sorted(set(MEDIA_TYPES) - {PAGE})


@pytest.fixture
async def anonymous(app):
    """A client without a key: the page must not need one."""
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://inkstand.test") as client:
        yield client


class PageParts(HTMLParser):
    """What the page pulls in and whatever it has inline."""

    def __init__(self) -> None:
        super().__init__()
        self.scripts: list[str] = []
        self.sheets: list[str] = []
        self.inline: list[str] = []  # inline code or style, of any kind
        self._in_script = False

    def handle_starttag(self, tag, attrs):
        named = dict(attrs)
        self.inline += [f"{tag} {name}" for name in named if name == "style" or name[:2] == "on"]
        self.inline += [f"{tag} {value}" for value in named.values() if _scripted(value)]
        if tag == "style":
            self.inline.append("<style>")
        if tag == "script":
            self._in_script = True
            src = named.get("src")
            self.scripts.append(src) if src else self.inline.append("<script> without src")
        if tag == "link" and named.get("rel") == "stylesheet":
            self.sheets.append(named["href"])

    def handle_endtag(self, tag):
        self._in_script = self._in_script and tag != "script"

    def handle_data(self, data):
        if self._in_script and data.strip():
            self.inline.append("script text")


def _scripted(value: str | None) -> bool:
    return bool(value) and value.strip().lower().startswith("javascript:")


def page_parts(html: str) -> PageParts:
    parts = PageParts()
    parts.feed(html)
    parts.close()
    return parts


async def test_page_is_public_html_with_a_strict_policy(anonymous):
    response = await anonymous.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(
        directive.strip().split(" ", 1)
        for directive in response.headers["content-security-policy"].split(";")
    )
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == policy["style-src"] == policy["connect-src"] == "'self'"
    assert policy["frame-ancestors"] == policy["base-uri"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["referrer-policy"] == "no-referrer"


async def test_page_has_nothing_inline_and_loads_only_its_assets(anonymous):
    parts = page_parts((await anonymous.get("/")).text)
    assert parts.inline == []
    assert parts.scripts == ["/playground/app.js"] and parts.sheets == ["/playground/style.css"]


@pytest.mark.parametrize("name", ASSETS)
async def test_assets_are_public_with_their_media_types(anonymous, name):
    response = await anonymous.get(f"/playground/{name}")
    assert response.status_code == 200
    assert response.headers["content-type"] == MEDIA_TYPES[name]
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "script-src 'self'" in response.headers["content-security-policy"]


async def test_every_module_the_scripts_import_is_served(anonymous):
    for name in ASSETS:
        if name.endswith(".js"):
            text = (await anonymous.get(f"/playground/{name}")).text
            for line in text.splitlines():
                if line.startswith("import "):
                    module = line.rsplit('"', 2)[1].removeprefix("./")
                    assert module in ASSETS, f"{name} imports {module}, which is not served"


async def test_assets_revalidate_with_their_etag(anonymous):
    first = await anonymous.get("/playground/app.js")
    assert first.headers["cache-control"] == "no-cache"
    again = await anonymous.get(
        "/playground/app.js", headers={"If-None-Match": first.headers["etag"]}
    )
    assert again.status_code == 304 and again.content == b""
    page = await anonymous.get("/")
    assert (
        await anonymous.get("/", headers={"If-None-Match": page.headers["etag"]})
    ).status_code == 304


@pytest.mark.parametrize(
    "path", ["/playground/secret.txt", "/playground/index.html", "/playground/a/app.js"]
)
async def test_unknown_assets_are_404_in_writers_envelope(anonymous, path):
    response = await anonymous.get(path)
    assert response.status_code == 404
    body = response.json()
    assert set(body) == {"tpe", "errors", "extras"}
    assert body["errors"][0]["key"] == "fail.notFound.resource"


async def test_page_and_assets_are_not_recorded_as_usage(app, anonymous):
    for path in ["/", "/playground/app.js", "/playground/missing.js"]:
        await anonymous.get(path)
    app.state.store.writer.submit(lambda conn: None).result()  # after every queued write
    assert UsageLog(app.state.store).rows() == []


async def test_other_paths_still_need_a_key(anonymous):
    assert (await anonymous.get("/v1/models")).status_code == 401
    assert (await anonymous.get("/playgroundx")).status_code == 401


async def test_playground_off_leaves_root_a_404(backend):
    app = build_app(backend, settings(playground=False))
    async with api_client(app, lifespan=True) as client:
        for path in ["/", "/playground/app.js"]:
            response = await client.get(path)
            assert response.status_code == 404
            assert response.json()["errors"][0]["key"] == "fail.notFound.resource"
            assert "content-security-policy" not in response.headers


def test_playground_setting_from_env_and_flags():
    assert load_settings({}, environ={}, models=False).playground is True
    off = load_settings({}, environ={"INKSTAND_PLAYGROUND": "off"}, models=False)
    assert off.playground is False
    assert load_settings(
        {"playground": True}, environ={"INKSTAND_PLAYGROUND": "off"}, models=False
    ).playground


def test_page_weight_is_under_200_kb():
    weight = sum(len(asset.body) for asset in load_assets().values())
    assert weight < MAX_PAGE_BYTES, f"the playground weighs {weight} bytes"


def test_playground_flag_is_on_or_off():
    assert _parser().parse_args(["serve", "--playground", "off"]).playground == "off"
    with pytest.raises(SystemExit):
        _parser().parse_args(["serve", "--playground", "maybe"])


def test_every_file_is_package_data():
    """The build ships what the allow-list serves (setuptools' package-data globs)."""
    project = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    globs = project["tool"]["setuptools"]["package-data"]["inkstand"]
    for name in MEDIA_TYPES:
        assert any(fnmatch(f"playground/{name}", glob) for glob in globs), name
