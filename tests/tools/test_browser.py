"""The ``browser`` family (tools/browser.py) driving Debian's real Chromium against pages on 127.0.0.0/8.

Two recording ``http.server`` instances run in threads: the site on
127.0.0.1 (allowed explicitly in the settings) and an "outside" server on
127.0.0.2 that is never on the allowlist, so "refused" is checked on the far
side: the outside server saw no connection at all. One browser is shared by
most tests (a module-scoped ``ToolResources``); closing and crash recovery
use browsers of their own.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest
import pytest_asyncio

from kasloop.tools.base import Tool, ToolContext, ToolResources, ToolResult, openai_schema, run_tool
from kasloop.tools.browser import BROWSER_ARGS, BROWSER_TOOLS, BrowserSession, BrowserSettings, browser_gate
from kasloop.tools.http import HTTP_TOOLS, HttpPolicy
from kasloop.tools.network import HostRule

pytestmark = pytest.mark.asyncio(loop_scope="module")

TOOLS: dict[str, Tool] = {tool.name: tool for tool in BROWSER_TOOLS}
SETTINGS: dict[str, Any] = {"allow_domains": ["127.0.0.1"], "navigation_timeout": 3, "action_timeout": 1}


# --------------------------------------------------------------------------- recording servers


@dataclass
class Server:
    host: str
    routes: dict[str, Callable[[Handler], None]] = field(default_factory=dict)
    requests: list[tuple[str, str, bytes]] = field(default_factory=list)
    connections: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    httpd: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.httpd is not None
        return self.httpd.server_address[1]

    def url(self, path: str = "/", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    def posts(self, path: str) -> list[dict[str, list[str]]]:
        return [parse_qs(body.decode()) for method, p, body in self.requests if method == "POST" and p == path]


class Handler(BaseHTTPRequestHandler):
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        state: Server = self.server.state  # type: ignore[attr-defined]
        state.requests.append((self.command, self.path.split("?")[0], body))
        route = state.routes.get(self.path.split("?")[0])
        if route is None:
            self.reply(404, "<title>Not found</title>not here")
        else:
            route(self)

    do_GET = do_POST = _handle


class _RecordingServer(ThreadingHTTPServer):
    daemon_threads = True

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.state.connections += 1  # type: ignore[attr-defined]
        return True


def _start(state: Server) -> Server:
    httpd = _RecordingServer((state.host, 0), Handler)
    httpd.state = state  # type: ignore[attr-defined]
    state.httpd = httpd
    threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
    return state


def _stop(state: Server) -> None:
    state.release.set()
    assert state.httpd is not None
    state.httpd.shutdown()
    state.httpd.server_close()


def page(title: str, body: str) -> Callable[[Handler], None]:
    return lambda h: h.reply(200, f"<!doctype html><html><head><title>{title}</title></head><body>{body}</body></html>")


def _slow(h: Handler) -> None:
    h.server.state.release.wait(30)  # type: ignore[attr-defined]
    h.reply(200, "<title>Slow</title>finally")


@pytest.fixture(scope="module")
def outside() -> Iterator[Server]:
    """A server on 127.0.0.2, never on the allowlist: it must never see a request."""
    state = _start(Server(host="127.0.0.2"))
    state.routes["/stolen"] = page("Stolen", "you should not be here")
    yield state
    _stop(state)


@pytest.fixture(scope="module")
def site(outside: Server) -> Iterator[Server]:
    state = _start(Server(host="127.0.0.1"))
    out = outside.url("/stolen")
    state.routes.update({
        "/form": page("Form page", """<h1>Order</h1><form method="post" action="/submit">
            <input id="name" name="name"> <input type="password" name="pin" id="pin">
            <select id="color" name="color"><option value="red">Red</option><option value="green">Green</option></select>
            <button id="send" type="submit">Send</button></form><p class="x">one</p><p class="x">two</p>"""),
        "/submit": page("Thanks", "received"),
        "/link": page("Links", '<a id="next" href="/target?x=1">Next page</a> <a id="tab" href="/target" target="_blank">tab</a>'),
        "/target": page("Target", "<p>arrived</p>"),
        "/slow": _slow,
        "/escape": page("Escape", f"""<button id="js" onclick="location = '{out}'">go</button>
            <a id="out" href="{out}">out</a>"""),
        "/redirect": lambda h: h.reply(302, "", {"Location": out}),
        "/img-out": page("Image", f'<img src="{outside.url("/pixel")}"><p>text stays</p>'),
        "/ws": page("Socket", f"""<script>window.wsDone = false;
            const ws = new WebSocket("ws://127.0.0.2:{outside.port}/socket");
            ws.onerror = ws.onclose = () => {{ window.wsDone = true; }};</script>"""),
    })  # fmt: skip
    yield state
    _stop(state)


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def shared() -> AsyncIterator[ToolResources]:
    """One agent's resources, so one browser, for the tests whose pages do not disturb each other."""
    resources = ToolResources()
    yield resources
    await resources.aclose()


@pytest.fixture
def workspace(tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    root.mkdir()
    return root


def ctx(resources: ToolResources, workspace: Path = Path("."), settings: dict[str, Any] | None = SETTINGS) -> ToolContext:
    return ToolContext(workspace=workspace, extra={} if settings is None else {"browser": settings}, resources=resources)


async def call(resources: ToolResources, name: str, *, workspace: Path = Path("."), settings: dict[str, Any] | None = SETTINGS, **args: Any) -> ToolResult:
    return await run_tool(TOOLS[name], args, ctx(resources, workspace, settings))


async def session_of(resources: ToolResources) -> BrowserSession:
    async def never() -> BrowserSession:
        raise AssertionError("no browser was started")

    return await resources.shared("browser", never)


def running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state != "Z"


# --------------------------------------------------------------------------- schema and arguments


async def test_tools_names_risks_and_schemas_match_their_models() -> None:
    expected = {
        "browser_open": ("read", True, ["url"]),
        "browser_click": ("low", False, ["selector"]),
        "browser_fill": ("low", False, ["selector", "value"]),
        "browser_select": ("low", False, ["selector", "value"]),
        "browser_text": ("read", True, []),
        "browser_screenshot": ("low", True, ["path"]),
        "browser_eval": ("read", True, ["expression"]),
    }
    assert {name: (t.risk, t.idempotent, t.args_model.model_json_schema().get("required", [])) for name, t in TOOLS.items()} == expected
    for tool in BROWSER_TOOLS:
        schema = openai_schema(tool)["function"]
        model = tool.args_model.model_json_schema()
        assert schema["name"] == tool.name and tool.family == "browser" and schema["description"].endswith(".")
        assert set(schema["parameters"]["properties"]) == set(model["properties"])
        for name, prop in schema["parameters"]["properties"].items():
            assert "title" not in prop and prop["description"] == model["properties"][name]["description"]


@pytest.mark.parametrize(
    ("name", "args"),
    [
        ("browser_open", {"url": 5}),
        ("browser_open", {}),
        ("browser_click", {"selector": None}),
        ("browser_click", {"selector": ""}),
        ("browser_fill", {"selector": "#a", "value": 3}),
        ("browser_select", {"selector": "#a"}),
        ("browser_text", {"selector": 1}),
        ("browser_screenshot", {"path": ["a.png"]}),
        ("browser_screenshot", {"path": "a.png", "full_page": "sometimes"}),
        ("browser_eval", {"expression": {"js": "1"}}),
    ],
)
async def test_wrong_argument_types_are_bad_args_without_a_browser(name: str, args: dict[str, Any]) -> None:
    resources = ToolResources()
    result = await run_tool(TOOLS[name], args, ctx(resources))
    assert not result.ok and result.error_kind == "bad_args", result
    assert f"`{name}`" in result.output
    assert "browser" not in resources._objects  # nothing was started


@pytest.mark.parametrize(
    ("settings", "key"),
    [({"allow_domains": "example.com"}, "allow_domains"), ({"allow_domains": ["a.com:99999"]}, "allow_domains"),
     ({"navigation_timeout": -1}, "navigation_timeout"), ({"proxy": "x"}, "proxy"), ({"allow_private": ["not-a-net"]}, "allow_private")],
)  # fmt: skip
async def test_bad_settings_are_permanent_and_name_the_key(settings: dict[str, Any], key: str) -> None:
    resources = ToolResources()
    result = await call(resources, "browser_open", settings=settings, url="http://127.0.0.1:1/")
    assert not result.ok and result.error_kind == "permanent", result
    assert f"browser.{key}" in result.output and "\n" not in result.output
    with pytest.raises(ValueError):
        BrowserSettings.model_validate(settings)


async def test_site_rules_are_the_shared_host_rules_with_optional_ports() -> None:
    gate = browser_gate(BrowserSettings(allow_domains=["*.Example.com", "127.0.0.1:8080", "[::1]:80", "api-?.example.org"]))
    assert gate.section == "browser"
    assert gate.rules == tuple(HostRule.parse(e) for e in ("*.example.com", "127.0.0.1:8080", "[::1]:80", "api-?.example.org"))
    assert HostRule.parse("*.Example.com").matches("docs.example.com", 443)
    assert not HostRule.parse("*.example.com").matches("example.com", 443)
    assert HostRule.parse("127.0.0.1:8080").matches("127.0.0.1", 8080)
    assert not HostRule.parse("127.0.0.1:8080").matches("127.0.0.1", 8081)
    assert HostRule.parse("[::1]:80").matches("::1", 80) and HostRule.parse("::1").address is not None
    assert HostRule.parse("*.example.com").address is None
    for bad in ("", "a.com:x", "http://a.com", "a.com:0"):
        with pytest.raises(ValueError):
            HostRule.parse(bad)
    assert BROWSER_ARGS == ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                            "--disable-background-networking", "--disable-component-update", "--disable-sync")  # fmt: skip


@pytest.mark.parametrize(
    "entries",
    [["example.com"], ["*.example.com"], ["api-*.example.com"], ["127.0.0.1:8080"], ["[::1]:8080"], ["::1"], ["bücher.de"], ["*"], ["*:8443"], ["Example.COM."]],
)
async def test_browser_and_http_accept_the_same_allow_domains_forms(entries: list[str]) -> None:
    """One grammar: every form the browser takes, http (and webhook) take too, and they build the same rules."""
    browser = browser_gate(BrowserSettings(allow_domains=entries))
    http = HttpPolicy.from_context(ToolContext(workspace=Path("."), extra={"http": {"allow_domains": entries}})).gate
    assert browser.rules == http.rules and browser.private_networks == http.private_networks


@pytest.mark.parametrize("entry", ["a:b:c", "http://a.com", "a.com:99999", "[::1]x", "a..b"])
async def test_browser_and_http_refuse_the_same_bad_entries_with_one_line(entry: str) -> None:
    resources = ToolResources()
    browser = await call(resources, "browser_open", settings={"allow_domains": [entry]}, url="http://127.0.0.1:1/")
    http_get = {t.name: t for t in HTTP_TOOLS}["http_get"]
    http = await run_tool(http_get, {"url": "http://127.0.0.1:1/"}, ToolContext(workspace=Path("."), extra={"http": {"allow_domains": [entry]}}))
    for result in (browser, http):
        assert result.error_kind == "permanent" and f"`{entry}`" in result.output and "\n" not in result.output, result
        assert "allow_domains" in result.output and ("write a host" in result.output or "host:port" in result.output), result
    assert "browser" not in resources._objects


@pytest.mark.parametrize("url", ["file:///etc/passwd", "data:text/html,<b>x</b>", "javascript:alert(1)", "chrome://version", "ftp://127.0.0.1/"])
async def test_non_http_schemes_are_refused_before_the_browser_starts(url: str) -> None:
    resources = ToolResources()
    result = await call(resources, "browser_open", url=url)
    assert not result.ok and result.error_kind == "bad_args" and "http" in result.output, result
    assert "browser" not in resources._objects


# --------------------------------------------------------------------------- using pages


async def test_fill_select_and_submit_a_form_reach_the_server(shared: ToolResources, site: Server) -> None:
    opened = await call(shared, "browser_open", url=site.url("/form"))
    assert opened.ok, opened
    assert opened.output == f'HTTP 200. Now at {site.url("/form")} — title: "Form page"'
    assert opened.metadata == {"url": site.url("/form"), "title": "Form page", "status": 200}

    filled = await call(shared, "browser_fill", selector="#name", value="Ada Lovelace")
    assert filled.ok and "12 characters" in filled.output, filled
    assert (await call(shared, "browser_fill", selector="#pin", value="1234")).ok
    chosen = await call(shared, "browser_select", selector="#color", value="Green")  # by label
    assert chosen.ok, chosen

    # The same tab keeps its state between calls: the text shows what was typed (the password only as a length).
    text = await call(shared, "browser_text")
    assert text.ok, text
    assert text.output.startswith(f"# Form page\n{site.url('/form')}\n\n")
    assert '[input name: "Ada Lovelace"]' in text.output and "[password pin: 4 characters]" in text.output
    assert '[select color: "Green" of Red | Green]' in text.output and "1234" not in text.output
    only = await call(shared, "browser_text", selector="#name")
    assert only.ok and '[input name: "Ada Lovelace"]' in only.output, only

    clicked = await call(shared, "browser_click", selector="#send")
    assert clicked.ok, clicked
    assert clicked.output == f'Clicked `#send`. Now at {site.url("/submit")} — title: "Thanks"'
    assert site.posts("/submit") == [{"name": ["Ada Lovelace"], "pin": ["1234"], "color": ["green"]}]


async def test_clicking_a_link_reports_the_new_url_and_title(shared: ToolResources, site: Server) -> None:
    assert (await call(shared, "browser_open", url=site.url("/link"))).ok
    before = await session_of(shared)
    clicked = await call(shared, "browser_click", selector="#next")
    assert clicked.ok, clicked
    assert f'Now at {site.url("/target?x=1")} — title: "Target"' in clicked.output
    assert clicked.metadata["url"] == site.url("/target?x=1")
    assert ("GET", "/target", b"") in site.requests
    text = await call(shared, "browser_text", selector="p")
    assert text.ok and text.output.endswith("arrived"), text
    assert await session_of(shared) is before  # one browser, reused


async def test_a_link_opening_a_new_tab_is_followed(shared: ToolResources, site: Server) -> None:
    assert (await call(shared, "browser_open", url=site.url("/link"))).ok
    clicked = await call(shared, "browser_click", selector="#tab")
    assert clicked.ok and f"Now at {site.url('/target')}" in clicked.output, clicked
    title = await call(shared, "browser_eval", expression="document.title")
    assert title.output == '"Target"'


async def test_selector_problems_are_bad_args_with_a_clear_message(shared: ToolResources, site: Server) -> None:
    assert (await call(shared, "browser_open", url=site.url("/form"))).ok
    posted = len(site.posts("/submit"))
    missing = await call(shared, "browser_click", selector="#nope")
    assert not missing.ok and missing.error_kind == "bad_args", missing
    assert missing.output.startswith("Error: no element matches `#nope`")
    many = await call(shared, "browser_click", selector="p.x")
    assert many.error_kind == "bad_args" and "matches 2 elements" in many.output, many
    invalid = await call(shared, "browser_fill", selector="##", value="x")
    assert invalid.error_kind == "bad_args" and "`##`" in invalid.output, invalid
    no_option = await call(shared, "browser_select", selector="#color", value="blue")
    assert no_option.error_kind == "bad_args" and '"Red", "Green"' in no_option.output, no_option
    not_select = await call(shared, "browser_select", selector="#name", value="x")
    assert not_select.error_kind == "bad_args" and "not a <select>" in not_select.output
    not_input = await call(shared, "browser_fill", selector="#send", value="x")
    assert not_input.error_kind == "bad_args", not_input
    missing_text = await call(shared, "browser_text", selector="#nope")
    assert missing_text.error_kind == "bad_args" and "no element matches `#nope`" in missing_text.output
    assert len(site.posts("/submit")) == posted  # nothing was submitted


async def test_eval_reads_but_never_changes_the_page(shared: ToolResources, site: Server) -> None:
    assert (await call(shared, "browser_open", url=site.url("/form"))).ok
    posted = len(site.posts("/submit"))
    title = await call(shared, "browser_eval", expression="document.title")
    assert title.ok and title.output == '"Form page"', title
    count = await call(shared, "browser_eval", expression="document.querySelectorAll('option').length")
    assert count.output == "2"
    assert (await call(shared, "browser_eval", expression="undefined")).output == "undefined"

    wipe = await call(shared, "browser_eval", expression="document.body.innerHTML = ''")
    assert not wipe.ok and wipe.error_kind == "denied" and "read-only" in wipe.output, wipe
    for mutation in ("document.title = 'x'", "window.secret = 1", "fetch('/submit', {method: 'POST'})"):
        assert (await call(shared, "browser_eval", expression=mutation)).error_kind == "denied"
    text = await call(shared, "browser_text")
    assert "Order" in text.output and "[button: Send]" in text.output  # the page is unchanged
    after = await call(shared, "browser_eval", expression="[document.title, typeof window.secret]")
    assert after.output == '["Form page", "undefined"]'
    assert len(site.posts("/submit")) == posted  # the fetch never ran

    broken = await call(shared, "browser_eval", expression="foo bar")
    assert broken.error_kind == "bad_args" and "SyntaxError" in broken.output


async def test_eval_that_never_ends_is_stopped(shared: ToolResources, site: Server) -> None:
    result = await call(shared, "browser_eval", expression="(() => { let i = 0; while (true) { i++; } })()")
    assert not result.ok and result.error_kind == "timeout", result
    assert (await call(shared, "browser_eval", expression="1 + 1")).output == "2"  # the tab still works


async def test_screenshot_writes_a_png_in_the_workspace(shared: ToolResources, site: Server, workspace: Path) -> None:
    assert (await call(shared, "browser_open", url=site.url("/form"))).ok
    result = await call(shared, "browser_screenshot", workspace=workspace, path="shots/form.png")
    assert result.ok, result
    data = (workspace / "shots" / "form.png").read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) == result.metadata["bytes"] > 1000
    assert sorted(p.name for p in (workspace / "shots").iterdir()) == ["form.png"]  # no temp file left


@pytest.mark.parametrize(("path", "kind"), [("../x.png", "denied"), ("/etc/x.png", "denied"), ("shot.txt", "bad_args")])
async def test_screenshot_outside_the_workspace_or_not_png_is_refused(shared: ToolResources, workspace: Path, path: str, kind: str) -> None:
    result = await call(shared, "browser_screenshot", workspace=workspace, path=path)
    assert not result.ok and result.error_kind == kind, result
    assert not (workspace.parent / "x.png").exists() and not Path("/etc/x.png").exists()
    assert list(workspace.iterdir()) == []


async def test_a_slow_page_times_out(shared: ToolResources, site: Server) -> None:
    result = await call(shared, "browser_open", url=site.url("/slow"))
    assert not result.ok and result.error_kind == "timeout", result
    assert "3 s" in result.output and "browser.navigation_timeout" in result.output
    site.release.set()  # the server thread answers now; the fixture also releases it on teardown
    assert (await call(shared, "browser_open", url=site.url("/form"))).ok  # the tab is usable again


# --------------------------------------------------------------------------- the network jail


async def test_js_navigation_off_the_allowlist_is_denied_and_never_sent(shared: ToolResources, site: Server, outside: Server) -> None:
    assert (await call(shared, "browser_open", url=site.url("/escape"))).ok
    result = await call(shared, "browser_click", selector="#js")
    assert not result.ok and result.error_kind == "denied", result
    assert f"127.0.0.2:{outside.port}" in result.output and "browser.allow_domains" in result.output
    assert f"The tab stays at {site.url('/escape')}" in result.output
    link = await call(shared, "browser_click", selector="#out")
    assert link.error_kind == "denied" and "127.0.0.2" in link.output, link
    assert outside.connections == 0 and outside.requests == []
    still = await call(shared, "browser_eval", expression="location.href")
    assert still.output == f'"{site.url("/escape")}"'


async def test_the_address_check_runs_inside_the_browser_too(shared: ToolResources, site: Server, outside: Server) -> None:
    # No allowlist; 127.0.0.1 is allowed by address only. The page's link to 127.0.0.2 is refused as loopback.
    settings = {**SETTINGS, "allow_domains": [], "allow_private": ["127.0.0.1/32"]}
    assert (await call(shared, "browser_open", settings=settings, url=site.url("/escape"))).ok
    result = await call(shared, "browser_click", settings=settings, selector="#out")
    assert result.error_kind == "denied", result
    assert "127.0.0.2 is a loopback address" in result.output and "browser.allow_private" in result.output
    assert outside.connections == 0


async def test_a_host_name_never_unlocks_loopback(shared: ToolResources, site: Server) -> None:
    settings = {**SETTINGS, "allow_domains": ["localhost"]}
    before = len(site.requests)
    result = await call(shared, "browser_open", settings=settings, url=site.url("/form", host="localhost"))
    assert result.error_kind == "denied" and "loopback" in result.output and "`localhost:" in result.output, result
    assert len(site.requests) == before


async def test_a_redirect_off_the_allowlist_is_denied(shared: ToolResources, site: Server, outside: Server) -> None:
    result = await call(shared, "browser_open", url=site.url("/redirect"))
    assert not result.ok and result.error_kind == "denied", result
    assert f"led to {outside.url('/stolen')}" in result.output and "browser.allow_domains" in result.output
    assert ("GET", "/redirect", b"") in site.requests
    assert outside.connections == 0


async def test_sub_resources_off_the_allowlist_are_blocked(shared: ToolResources, site: Server, outside: Server) -> None:
    result = await call(shared, "browser_open", url=site.url("/img-out"))
    assert result.ok and f"refused: 127.0.0.2:{outside.port}" in result.output, result
    assert outside.connections == 0


async def test_websockets_off_the_allowlist_are_closed(shared: ToolResources, site: Server, outside: Server) -> None:
    assert (await call(shared, "browser_open", url=site.url("/ws"))).ok
    session = await session_of(shared)
    await session.page.wait_for_function("window.wsDone === true", timeout=5000)
    assert outside.connections == 0


async def test_opening_a_host_off_the_allowlist_is_denied(shared: ToolResources, outside: Server) -> None:
    result = await call(shared, "browser_open", url=outside.url("/stolen"))
    assert result.error_kind == "denied" and "browser.allow_domains" in result.output, result
    assert outside.connections == 0


async def test_default_settings_refuse_loopback(site: Server) -> None:
    resources = ToolResources()
    before = len(site.requests)
    try:
        result = await call(resources, "browser_open", settings=None, url=site.url("/form"))
        assert not result.ok and result.error_kind == "denied", result
        assert "loopback" in result.output and "browser.allow_private" in result.output
        assert len(site.requests) == before
    finally:
        await resources.aclose()


# --------------------------------------------------------------------------- lifetime


async def test_aclose_ends_chromium_and_removes_its_profile(site: Server) -> None:
    resources = ToolResources()
    assert (await call(resources, "browser_open", url=site.url("/link"))).ok
    session = await session_of(resources)
    assert session.pid is not None and running(session.pid)
    cmdline = Path(f"/proc/{session.pid}/cmdline").read_bytes().decode().split("\0")
    assert all(arg in cmdline for arg in BROWSER_ARGS)
    assert Path(cmdline[0]).resolve().name == "chromium" or "chromium" in cmdline[0]
    profile = Path(next(a for a in cmdline if a.startswith("--user-data-dir=")).split("=", 1)[1])
    assert profile.is_dir()
    await resources.aclose()
    assert not running(session.pid)
    assert not profile.exists()
    assert "browser" not in resources._objects


async def test_a_crashed_browser_is_replaced_on_the_next_call(site: Server) -> None:
    resources = ToolResources()
    try:
        assert (await call(resources, "browser_open", url=site.url("/link"))).ok
        first = await session_of(resources)
        assert first.pid is not None
        os.kill(first.pid, signal.SIGKILL)  # the chromium this test started
        await asyncio.wait_for(first.disconnected.wait(), 10)
        again = await call(resources, "browser_open", url=site.url("/target"))
        assert again.ok, again
        second = await session_of(resources)
        assert second is not first and second.pid != first.pid and running(second.pid or 0)
    finally:
        await resources.aclose()
