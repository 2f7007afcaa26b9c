"""The playground at `/` in a real headless Chromium (Playwright), against a real server.

The browser is Debian's chromium (`scripts/browser.py` installs it; `make test` runs that
first): Playwright's own download needs a CDN the test machines may not reach. Without it
the tests fail, saying what to run.

Controls are found by their accessible names, as a screen reader finds them. Answers come from
the embedded model, so assertions are on structure (text growing, usage numbers, request
bodies), never on its prose; the error paths a small model cannot produce on demand (a 429,
an error frame in the middle of a stream) are answered by Playwright at the network seam.
Screenshots and the Send-to-first-paint timing go to `test-artifacts/playground/`.
"""

from __future__ import annotations

import ast
import json
import re
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from .support import (
    AUTH,
    CANCELLATIONS,
    CTX_SIZE,
    ESSAY,
    KEY,
    MODEL,
    REPO,
    RUNNING,
    Server,
    running_server,
    scrape,
    wait_for_metric,
)

pytestmark = [pytest.mark.e2e, pytest.mark.embedded_only]

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "test-artifacts" / "playground"
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}
CONTROLS = [
    ("textbox", "API key"),
    ("combobox", "Model"),
    ("textbox", "System prompt"),
    ("textbox", "Message"),
    ("button", "Send"),
    ("button", "Stop"),
    ("button", "New chat"),
    ("log", "Conversation"),
]
# Chromium logs every 4xx fetch as a console error; the tests that cause one on purpose allow it.
REFUSED = re.compile(r"Failed to load resource: the server responded with a status of (401|429)")
USAGE = re.compile(r"prompt (\d+) · cached (\d+) · completion (\d+) · [\d.]+ tokens/s")
# Installs a MutationObserver that records the length of the last answer's text on every
# change, so a test sees the text grow however fast the tokens come.
WATCH_GROWTH = """() => {
  window.answerLengths = [];
  const log = document.querySelector('[role=log]');
  new MutationObserver(() => {
    const answers = log.querySelectorAll('.assistant .text');
    const last = answers[answers.length - 1];
    if (last) window.answerLengths.push(last.textContent.length);
  }).observe(log, {childList: true, subtree: true, characterData: true});
}"""
# Milliseconds from the Send handler's mark to the first token's painted frame (app.js).
FIRST_PAINT = """() => {
  const sent = performance.getEntriesByName('inkstand:send')[0];
  const painted = performance.getEntriesByName('inkstand:first-token')[0];
  return sent && painted ? painted.startTime - sent.startTime : null;
}"""

expect.set_options(timeout=60_000)


@pytest.fixture(scope="module")
def playground_server(tmp_path_factory) -> Iterator[Server]:
    flags = ("--ctx-size", str(CTX_SIZE), "--threads", "1")
    with running_server(tmp_path_factory.mktemp("playground"), *flags, key=KEY) as running:
        yield running


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: run `.venv/bin/python scripts/browser.py` (as root it "
            "installs Debian's chromium package; otherwise it says what to install)"
        )
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=["--no-sandbox", "--disable-dev-shm-usage"]
        )
        yield launched
        launched.close()


@dataclass
class Visit:
    """One browser tab on the playground, with what it logged and the chat bodies it sent."""

    page: Page
    errors: list[str] = field(default_factory=list)
    chats: list[dict] = field(default_factory=list)

    def role(self, role: str, name: str):
        return self.page.get_by_role(role, name=name, exact=True)

    def sign_in(self, key: str = KEY) -> None:
        self.role("textbox", "API key").fill(key)
        if key == KEY:
            expect(self.role("combobox", "Model")).to_have_value(MODEL)

    def settle(self, *, temperature: str = "0", max_tokens: str = "") -> None:
        self.role("spinbutton", "Temperature").fill(temperature)
        self.role("spinbutton", "Max tokens").fill(max_tokens)

    def send(self, text: str) -> None:
        self.role("textbox", "Message").fill(text)
        self.role("button", "Send").click()

    def answers(self):
        return self.page.locator(".message.assistant")

    def wait_for_answer(self, count: int) -> str:
        """The stats line of answer number `count` (from 1), once it is shown."""
        stats = self.answers().nth(count - 1).locator(".usage")
        expect(stats).to_be_visible()
        return stats.inner_text()

    def fits(self) -> bool:
        return self.page.evaluate(
            "() => document.documentElement.scrollWidth <= document.documentElement.clientWidth"
        )

    def shoot(self, name: str) -> None:
        self.page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)

    def assert_clean(self, allowed: re.Pattern | None = None) -> None:
        """No JavaScript error, no CSP violation: nothing on the console but what is allowed."""
        unexpected = [e for e in self.errors if not (allowed and allowed.search(e))]
        assert unexpected == [], unexpected


@contextmanager
def visiting(browser: Browser, server: Server, viewport: dict = DESKTOP) -> Iterator[Visit]:
    context = browser.new_context(viewport=viewport)
    page = context.new_page()
    visit = Visit(page)

    def on_console(message) -> None:
        if message.type == "error":
            visit.errors.append(f"console: {message.text}")

    def on_request(request) -> None:
        if request.method == "POST" and request.url.endswith("/v1/chat"):
            visit.chats.append(request.post_data_json)

    page.on("console", on_console)
    page.on("pageerror", lambda error: visit.errors.append(f"page error: {error}"))
    page.on("request", on_request)
    try:
        page.goto(f"{server.url}/")
        yield visit
    finally:
        context.close()


def fake_stream(*frames: str) -> str:
    """An SSE body in Writer's framing: `frames` are whole events (without the blank line)."""
    return "".join(f"{frame}\n\n" for frame in frames)


def content_frame(text: str, usage: dict | None = None) -> str:
    chunk = {"choices": [{"index": 0, "delta": {"content": text}}], "usage": usage}
    return "data: " + json.dumps(chunk)


def envelope(description: str, key: str = "fail.test") -> dict:
    return {
        "tpe": "Test",
        "errors": [{"description": description, "key": key, "extras": {}}],
        "extras": {},
    }


# -- the page -------------------------------------------------------------------------------


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["desktop", "phone"])
def test_every_control_is_visible_and_nothing_overflows(browser, playground_server, viewport):
    with visiting(browser, playground_server, viewport) as visit:
        visit.sign_in()
        for role, name in CONTROLS:
            expect(visit.role(role, name)).to_be_visible()
        assert visit.fits()
        visit.shoot(f"page-{viewport['width']}")
        visit.assert_clean()


def test_a_wrong_key_shows_the_servers_error(browser, playground_server):
    refused = httpx.get(
        f"{playground_server.url}/v1/models", headers={"Authorization": "Bearer nope"}
    )
    description = refused.json()["errors"][0]["description"]
    with visiting(browser, playground_server) as visit:
        visit.sign_in("nope")
        expect(visit.page.get_by_role("alert")).to_have_text(description)
        visit.send("Hello?")
        expect(visit.page.get_by_role("alert")).to_have_text(description)
        expect(visit.role("textbox", "Message")).to_have_value("Hello?")  # given back
        visit.shoot("wrong-key")
        visit.assert_clean(allowed=REFUSED)


# -- answers --------------------------------------------------------------------------------


def test_answers_stream_with_usage_and_the_next_turn_carries_the_history(
    browser, playground_server
):
    with visiting(browser, playground_server) as visit:
        visit.sign_in()
        visit.settle(max_tokens="48")
        visit.role("textbox", "System prompt").fill("You are brief.")
        visit.page.evaluate(WATCH_GROWTH)
        visit.send("Write a long essay about the ocean.")
        first_stats = visit.wait_for_answer(1)
        lengths = visit.page.evaluate("() => window.answerLengths")
        grown = sorted(set(lengths))
        assert len(grown) >= 3 and grown == list(dict.fromkeys(lengths)), lengths
        assert USAGE.search(first_stats), first_stats
        first_text = visit.answers().nth(0).locator(".text").text_content()

        visit.send("Now say it shorter.")
        second_stats = visit.wait_for_answer(2)
        prompt, cached, completion = map(int, USAGE.search(second_stats).groups())
        assert cached > 0 and prompt > cached and completion > 0  # the first turn was cached
        first, second = visit.chats
        assert first["stream"] is True and first["stream_options"] == {"include_usage": True}
        assert second["messages"] == [
            {"role": "system", "content": "You are brief."},
            {"role": "user", "content": "Write a long essay about the ocean."},
            {"role": "assistant", "content": first_text},
            {"role": "user", "content": "Now say it shorter."},
        ]
        assert (second["model"], second["temperature"], second["max_tokens"]) == (MODEL, 0, 48)
        assert visit.fits()
        visit.shoot("conversation-1280")
        visit.page.set_viewport_size(PHONE)
        assert visit.fits()
        visit.shoot("conversation-390")
        visit.page.set_viewport_size(DESKTOP)
        second_text = visit.answers().nth(1).locator(".text").text_content()
        check_code_view(visit, [*second["messages"], {"role": "assistant", "content": second_text}])
        visit.role("button", "New chat").click()
        expect(visit.answers()).to_have_count(0)
        visit.assert_clean()


def check_code_view(visit: Visit, messages: list[dict]) -> None:
    """ "View code" shows the conversation as a Python snippet that parses, and as curl."""
    visit.role("button", "View code").click()
    python = visit.page.locator("#code-python")
    expect(python).to_be_visible()
    tree = ast.parse(python.inner_text())
    call = next(n for n in ast.walk(tree) if isinstance(n, ast.Call) and n.keywords)
    arguments = {k.arg: ast.literal_eval(k.value) for k in call.keywords}
    assert arguments["messages"] == messages and arguments["model"] == MODEL
    assert "stream" not in arguments
    curl = visit.page.locator("#code-curl").inner_text()
    assert curl.startswith("curl ") and "/v1/chat" in curl and KEY not in curl
    visit.shoot("code")
    visit.role("button", "Close").click()
    expect(python).to_be_hidden()


def test_stop_ends_the_answer_and_the_server_cancels_it(browser, playground_server):
    cancelled = scrape(playground_server)[CANCELLATIONS]
    with visiting(browser, playground_server) as visit:
        visit.sign_in()
        visit.settle(max_tokens="900")  # a greedy essay this model never ends by itself
        visit.send(ESSAY[0]["content"])
        text = visit.answers().nth(0).locator(".text")
        visit.page.wait_for_function(
            "() => document.querySelector('.assistant .text').textContent.length > 20"
        )
        expect(visit.role("button", "Stop")).to_be_enabled()
        visit.role("button", "Stop").click()
        stats = visit.wait_for_answer(1)
        assert "stopped" in stats
        stopped_at = text.inner_text()
        expect(visit.role("button", "Send")).to_be_enabled()
        expect(visit.role("button", "Stop")).to_be_disabled()
        wait_for_metric(playground_server, CANCELLATIONS, cancelled + 1)
        wait_for_metric(playground_server, RUNNING, 0)
        time.sleep(0.5)
        assert text.inner_text() == stopped_at
        visit.shoot("stopped")
        visit.assert_clean()


# -- errors and settings, answered at the network seam ------------------------------------


def test_a_429_shows_its_wait_and_an_error_frame_keeps_the_partial_answer(
    browser, playground_server
):
    with visiting(browser, playground_server) as visit:
        visit.sign_in()
        visit.page.route(
            "**/v1/chat",
            lambda route: route.fulfill(
                status=429,
                headers={"Retry-After": "7"},
                content_type="application/json",
                body=json.dumps(envelope("Too many requests.")),
            ),
        )
        visit.send("Hi")
        expect(visit.page.get_by_role("alert")).to_have_text("Too many requests. Try again in 7 s.")
        visit.page.unroute("**/v1/chat")
        body = fake_stream(
            content_frame("Half an answer"),
            "event: error\ndata: " + json.dumps(envelope("The engine failed.")),
        )
        visit.page.route(
            "**/v1/chat",
            lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body),
        )
        visit.send("Hi")
        expect(visit.page.get_by_role("alert")).to_have_text("The engine failed.")
        expect(visit.answers().last.locator(".text")).to_have_text("Half an answer")
        visit.assert_clean(allowed=REFUSED)


def test_tools_response_format_and_graphs_are_checked_and_sent(browser, playground_server):
    created = httpx.post(
        f"{playground_server.url}/v1/graphs", headers=AUTH, json={"name": "Manuals"}
    )
    graph_id = created.json()["id"]
    with visiting(browser, playground_server) as visit:
        visit.sign_in()
        answered = fake_stream(
            content_frame("ok", {"prompt_tokens": 3, "completion_tokens": 1}), "data: [DONE]"
        )
        visit.page.route(
            "**/v1/chat",
            lambda route: route.fulfill(
                status=200, content_type="text/event-stream", body=answered
            ),
        )
        visit.page.get_by_text("Tools and JSON output").click()
        visit.role("textbox", "Tools (a JSON array)").fill("[{not json")
        visit.send("Hi")
        expect(visit.page.get_by_role("alert")).to_contain_text("Tools is not valid JSON")
        assert visit.chats == []
        tool = {
            "type": "function",
            "function": {"name": "get_weather", "parameters": {"type": "object"}},
        }
        fmt = {"type": "json_schema", "json_schema": {"schema": {"type": "object"}}}
        visit.role("textbox", "Tools (a JSON array)").fill(json.dumps([tool]))
        visit.role("textbox", "Response format (JSON)").fill(json.dumps(fmt))
        visit.role("listbox", "Knowledge graphs").select_option(graph_id)
        visit.send("Hi")
        visit.wait_for_answer(1)
        [sent] = visit.chats
        graph_tool = {"type": "graph", "function": {"graph_ids": [graph_id]}}
        assert sent["tools"] == [tool, graph_tool] and sent["response_format"] == fmt
        visit.assert_clean()


# -- timing, reported -----------------------------------------------------------------------


def api_first_token(server: Server, body: dict) -> float:
    """Milliseconds from sending `body` (streamed) to its first chunk with text."""
    with httpx.Client(base_url=server.url, headers=AUTH, timeout=60) as http:
        start = time.perf_counter()
        first = None
        with http.stream("POST", "/v1/chat", json=body) as response:
            for line in response.iter_lines():
                if first is None and line.startswith("data: {") and has_text(line[6:]):
                    first = time.perf_counter()
    assert first is not None, "the streamed answer carried no text"
    return (first - start) * 1000


def has_text(chunk: str) -> bool:
    choices = json.loads(chunk)["choices"]
    return bool(choices and choices[0]["delta"].get("content"))


def test_send_to_first_paint_is_reported_next_to_the_api_ttft(browser, playground_server):
    """Reported, never asserted: how long the page adds to the API's time to first token."""
    painted, api = [], []
    with visiting(browser, playground_server) as visit:
        visit.sign_in()
        visit.settle(max_tokens="8")
        for round_ in range(5):
            visit.role("button", "New chat").click()
            visit.send(f"Name a colour, please ({round_}).")
            visit.wait_for_answer(1)
            painted.append(visit.page.wait_for_function(FIRST_PAINT).json_value())
            body = {
                "model": MODEL,
                "messages": [
                    {"role": "user", "content": f"Name a colour, please ({round_ + 50})."}
                ],
                "temperature": 0,
                "max_tokens": 8,
                "stream": True,
                "stream_options": {"include_usage": True},
            }
            api.append(api_first_token(playground_server, body))
        visit.assert_clean()
    report = {
        "browser_send_to_first_paint_ms": [round(ms, 1) for ms in painted],
        "api_ttft_ms": [round(ms, 1) for ms in api],
        "median_browser_ms": round(statistics.median(painted), 1),
        "median_api_ms": round(statistics.median(api), 1),
        "note": "same server and request shape (new chat, greedy, max_tokens 8), alternating; "
        "the browser's figure runs from the Send handler to the frame showing the first token",
    }
    (ARTIFACTS / "timing.json").write_text(json.dumps(report, indent=2) + "\n")
    print("\nplayground timing:", json.dumps(report))
