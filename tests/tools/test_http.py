"""The ``http`` family (tools/http.py) against real HTTP servers on 127.0.0.0/8.

Each server is ``http.server`` in a thread and records every connection and
request, so "refused" can be checked on the far side: no connection at all.
Private and link-local literals outside 127.0.0.0/8 are only ever given to the
address check itself; no test connects anywhere but 127.0.0.1 / 127.0.0.2.
"""

from __future__ import annotations

import gzip
import ipaddress
import json
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from kasloop.tools.base import Tool, ToolContext, ToolResult, openai_schema, run_tool
from kasloop.tools.http import DEFAULT_MAX_BYTES, HTTP_TOOLS, HTTPX_ERROR_KINDS, HttpPolicy, html_to_text, map_httpx_error
from kasloop.tools.network import HostRule
from kasloop.tools.registry import select_tools

TOOLS: dict[str, Tool] = {tool.name: tool for tool in HTTP_TOOLS}
LOCAL = {"allow_private": True}
KEY = "ksl-test-idempotency-key"


# --------------------------------------------------------------------------- a recording server


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Server:
    host: str
    routes: dict[str, Callable[[Handler], None]]
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    sni: list[str | None] = field(default_factory=list)
    streamed: int = 0
    stream_error: str = ""
    stream_done: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)
    httpd: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.httpd is not None
        return self.httpd.server_address[1]

    def url(self, path: str = "/", host: str | None = None, scheme: str = "http") -> str:
        return f"{scheme}://{host or self.host}:{self.port}{path}"


class Handler(BaseHTTPRequestHandler):
    server_state: Server
    timeout = 10  # a stuck socket fails instead of hanging the test

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: bytes | str = b"", content_type: str = "text/plain; charset=utf-8", headers: dict[str, str] | None = None) -> None:
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        state = self.server.state  # type: ignore[attr-defined]
        state.requests.append(Seen(self.command, self.path, dict(self.headers.items()), body))
        route = state.routes.get(self.path.split("?")[0])
        if route is None:
            self.reply(404, "Not here")
        else:
            route(self)

    do_GET = do_POST = do_PUT = do_DELETE = _handle


class _RecordingHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.state.connections += 1  # type: ignore[attr-defined]
        return True


@pytest.fixture
def serve() -> Iterator[Callable[..., Server]]:
    started: list[Server] = []

    def start(routes: dict[str, Callable[[Handler], None]] | None = None, *, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> Server:
        state = Server(host=host, routes=routes or {})
        httpd = _RecordingHTTPServer((host, 0), Handler)
        httpd.state = state  # type: ignore[attr-defined]
        if tls is not None:
            tls.sni_callback = lambda sock, name, ctx: state.sni.append(name)  # type: ignore[assignment]
            httpd.socket = tls.wrap_socket(httpd.socket, server_side=True)
        state.httpd = httpd
        threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
        started.append(state)
        return state

    yield start
    for state in started:
        state.release.set()
        assert state.httpd is not None
        state.httpd.shutdown()
        state.httpd.server_close()


def ctx(http: dict[str, Any] | None = None, key: str = KEY) -> ToolContext:
    return ToolContext(workspace=Path("."), idempotency_key=key, extra={"http": http} if http is not None else {})


async def call(name: str, http: dict[str, Any] | None = None, **args: Any) -> ToolResult:
    return await run_tool(TOOLS[name], args, ctx(http))


PAGE = """<!doctype html><html><head><title>Kas  Page</title><style>body { color: red }</style>
<script>document.write("evil()")</script></head>
<body><h1>Hello &amp; welcome</h1><p>First   paragraph with a <a href="/next?a=1">relative link</a>.</p>
<ul><li>one</li><li>two</li></ul><noscript>enable js</noscript>
<p>Go <a href="https://example.org/x">elsewhere</a> or <a href="javascript:void(0)">nowhere</a>.</p></body></html>"""


def html(page: str = PAGE) -> Callable[[Handler], None]:
    return lambda h: h.reply(200, page, "text/html; charset=utf-8")


# --------------------------------------------------------------------------- fetching


async def test_get_of_an_allowed_local_page_returns_readable_text(serve: Callable[..., Server]) -> None:
    server = serve({"/": html()})
    result = await call("http_get", LOCAL, url=server.url("/"))
    assert result.ok and result.error_kind is None, result
    head, _, body = result.output.partition("\n\n")
    assert head.startswith("HTTP 200 OK · text/html; charset=utf-8 · ") and server.url("/") in head
    assert body.startswith("# Kas Page\n")
    assert "Hello & welcome" in body and "First paragraph with a" in body
    assert f"[relative link]({server.url('/next?a=1')})" in body
    assert "[elsewhere](https://example.org/x)" in body and "nowhere" in body and "javascript:" not in body
    assert "- one\n- two" in body
    assert "evil()" not in body and "color: red" not in body and "enable js" not in body
    assert result.metadata == {
        "status": 200, "url": server.url("/"), "address": "127.0.0.1", "content_type": "text/html; charset=utf-8",
        "bytes": len(PAGE.encode()), "truncated": False, "redirects": [],
    }  # fmt: skip
    [seen] = server.requests
    assert seen.method == "GET" and seen.headers["Host"] == f"127.0.0.1:{server.port}"
    assert seen.headers["Accept-Encoding"] == "identity" and "kasloop" in seen.headers["User-Agent"]
    assert "Idempotency-Key" not in seen.headers  # reads need none


async def test_a_host_name_is_resolved_once_and_sent_as_the_host_header(serve: Callable[..., Server]) -> None:
    server = serve({"/": html("<p>hi</p>")})
    result = await call("http_get", LOCAL, url=server.url("/", host="localhost"))
    assert result.ok, result
    assert result.metadata["address"] == "127.0.0.1"  # connected to the address that was checked
    assert server.requests[0].headers["Host"] == f"localhost:{server.port}"


async def test_json_is_shown_as_text_and_binary_is_described(serve: Callable[..., Server]) -> None:
    png = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4
    server = serve({
        "/data": lambda h: h.reply(200, json.dumps({"answer": 42}), "application/json"),
        "/img": lambda h: h.reply(200, png, "image/png"),
        "/raw": lambda h: h.reply(200, b"\x00\x01\x02binary", ""),
    })  # fmt: skip
    data = await call("http_get", LOCAL, url=server.url("/data"))
    assert data.ok and data.output.endswith('\n\n{"answer": 42}')
    img = await call("http_get", LOCAL, url=server.url("/img"))
    assert img.ok and img.output.endswith(f"\n\n[binary content (image/png), {len(png)} bytes; not shown]")
    assert "PNG" not in img.output.split("\n\n", 1)[1]
    raw = await call("http_get", LOCAL, url=server.url("/raw"))
    assert raw.ok and "[binary content, 9 bytes; not shown]" in raw.output


# --------------------------------------------------------------------------- the address jail (no connection may happen)


@pytest.mark.parametrize(
    "host",
    ["localhost", "127.0.0.1", "127.1", "2130706433", "0x7f000001", "localhost.", "[::ffff:127.0.0.1]", "0.0.0.0", "LOCALHOST"],
)
async def test_default_config_refuses_hosts_that_resolve_to_loopback_and_nothing_arrives(serve: Callable[..., Server], host: str) -> None:
    server = serve({"/": html()})
    for name, args in (("http_get", {}), ("http_post", {"json": {"a": 1}}), ("http_put", {"data": "x"}), ("http_delete", {})):
        result = await call(name, None, url=f"http://{host}:{server.port}/", **args)
        assert not result.ok and result.error_kind == "denied", (name, host, result)
        assert "http.allow_private" in result.output
    assert server.connections == 0 and server.requests == []


async def test_allowlist_entry_with_port_allows_one_local_server_and_blocks_another(serve: Callable[..., Server]) -> None:
    allowed, other = serve({"/": html("<p>allowed</p>")}), serve({"/": html("<p>other</p>")})
    cfg = {"allow_domains": [f"127.0.0.1:{allowed.port}"]}
    ok = await call("http_get", cfg, url=allowed.url("/"))
    assert ok.ok and "allowed" in ok.output
    refused = await call("http_get", cfg, url=other.url("/"))
    assert not refused.ok and refused.error_kind == "denied"
    assert f"`127.0.0.1:{other.port}` is not on the http allowlist" in refused.output
    by_name = await call("http_get", cfg, url=allowed.url("/", host="localhost"))  # a name is not the address entry
    assert not by_name.ok and by_name.error_kind == "denied"
    assert other.connections == 0 and len(allowed.requests) == 1


async def test_a_host_name_on_the_allowlist_does_not_unlock_a_private_address(serve: Callable[..., Server]) -> None:
    server = serve({"/": html()})
    result = await call("http_get", {"allow_domains": [f"localhost:{server.port}"]}, url=server.url("/", host="localhost"))
    assert not result.ok and result.error_kind == "denied" and "loopback" in result.output
    assert server.connections == 0


async def test_redirect_from_an_allowed_server_to_a_blocked_port_is_refused(serve: Callable[..., Server]) -> None:
    blocked = serve({"/": html("<p>secret</p>")})
    first = serve({"/go": lambda h: h.reply(302, "", headers={"Location": blocked.url("/")})})
    result = await call("http_get", {"allow_domains": [f"127.0.0.1:{first.port}"]}, url=first.url("/go"))
    assert not result.ok and result.error_kind == "denied", result
    assert f"redirect from {first.url('/go')} to {blocked.url('/')} refused" in result.output
    assert "secret" not in result.output
    assert len(first.requests) == 1 and blocked.connections == 0


async def test_redirect_to_a_blocked_address_is_refused_after_resolution(serve: Callable[..., Server]) -> None:
    blocked = serve({"/": html("<p>secret</p>")}, host="127.0.0.1")
    first = serve({"/go": lambda h: h.reply(307, "", headers={"Location": blocked.url("/", host="localhost")})}, host="127.0.0.2")
    result = await call("http_get", {"allow_private": ["127.0.0.2/32"]}, url=first.url("/go"))
    assert not result.ok and result.error_kind == "denied", result
    assert f"host `localhost:{blocked.port}` resolves to a refused address: 127.0.0.1 is a loopback address" in result.output
    assert len(first.requests) == 1 and blocked.connections == 0


async def test_redirects_within_the_jail_are_followed_and_listed(serve: Callable[..., Server]) -> None:
    server = serve({
        "/a": lambda h: h.reply(301, "", headers={"Location": "/b"}),
        "/b": lambda h: h.reply(302, "", headers={"Location": server.url("/c", host="localhost")}),
        "/c": html("<p>landed</p>"),
    })  # fmt: skip
    result = await call("http_get", LOCAL, url=server.url("/a"))
    assert result.ok and "landed" in result.output
    assert result.metadata["redirects"] == [server.url("/b"), server.url("/c", host="localhost")]
    assert [r.path for r in server.requests] == ["/a", "/b", "/c"]


async def test_a_redirect_loop_stops_after_max_redirects(serve: Callable[..., Server]) -> None:
    server = serve({"/loop": lambda h: h.reply(302, "", headers={"Location": "/loop"})})
    result = await call("http_get", {**LOCAL, "max_redirects": 3}, url=server.url("/loop"))
    assert not result.ok and result.error_kind == "permanent" and "more than 3 redirects" in result.output
    assert len(server.requests) == 4


async def test_see_other_turns_a_post_into_a_get_and_credentials_stay_on_their_origin(serve: Callable[..., Server]) -> None:
    other = serve({"/landing": html("<p>elsewhere</p>")})
    server = serve({
        "/post": lambda h: h.reply(303, "", headers={"Location": "/same"}),
        "/same": lambda h: h.reply(307, "", headers={"Location": other.url("/landing")}),
    })  # fmt: skip
    result = await call("http_post", LOCAL, url=server.url("/post"), json={"a": 1}, headers={"Authorization": "Bearer t0k"})
    assert result.ok, result
    post, same = server.requests
    assert post.method == "POST" and post.body == b'{"a":1}'
    assert same.method == "GET" and same.body == b"" and same.headers["Authorization"] == "Bearer t0k"
    [landing] = other.requests
    assert landing.method == "GET" and "Authorization" not in landing.headers


# --------------------------------------------------------------------------- size cap


async def test_a_50_mb_response_is_cut_at_the_cap_without_reading_it_all(serve: Callable[..., Server]) -> None:
    total = 50 * 1024 * 1024

    def stream(h: Handler) -> None:
        state = h.server.state  # type: ignore[attr-defined]
        h.send_response(200)
        h.send_header("Content-Type", "text/plain")
        h.send_header("Content-Length", str(total))
        h.end_headers()
        chunk = b"0123456789abcdef" * 4096
        try:
            while state.streamed < total:
                h.wfile.write(chunk)
                state.streamed += len(chunk)
        except OSError as exc:
            state.stream_error = type(exc).__name__
        finally:
            state.stream_done.set()

    server = serve({"/big": stream})
    result = await call("http_get", LOCAL, url=server.url("/big"))
    assert result.ok, result
    assert result.metadata["bytes"] == DEFAULT_MAX_BYTES and result.metadata["truncated"] is True
    assert f"cut at {DEFAULT_MAX_BYTES} bytes (the rest was not downloaded)" in result.output
    assert len(result.output) <= TOOLS["http_get"].output_limit + 100
    assert server.stream_done.wait(10)
    assert server.stream_error  # the client hung up mid-body
    assert server.streamed < 20 * 1024 * 1024  # far from 50 MB: what was sent fit in socket buffers


async def test_a_compressed_body_is_inflated_only_up_to_the_cap(serve: Callable[..., Server]) -> None:
    bomb = gzip.compress(b"a" * (30 * 1024 * 1024))
    server = serve({"/bomb": lambda h: h.reply(200, bomb, "text/plain", headers={"Content-Encoding": "gzip"})})
    result = await call("http_get", {**LOCAL, "max_bytes": 100_000}, url=server.url("/bomb"))
    assert result.ok, result
    assert result.metadata["bytes"] == 100_000 and result.metadata["truncated"] is True
    assert result.output.split("\n\n", 1)[1].startswith("a" * 1000)


# --------------------------------------------------------------------------- writes


async def test_post_sends_json_and_the_idempotency_key(serve: Callable[..., Server]) -> None:
    server = serve({"/api": lambda h: h.reply(201, json.dumps({"id": 7}), "application/json")})
    result = await call("http_post", LOCAL, url=server.url("/api"), json={"name": "kas", "n": [1, 2]})
    assert result.ok and result.metadata["status"] == 201 and '{"id": 7}' in result.output
    [seen] = server.requests
    assert seen.method == "POST" and json.loads(seen.body) == {"name": "kas", "n": [1, 2]}
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.headers["Idempotency-Key"] == KEY


async def test_put_delete_and_form_or_text_bodies(serve: Callable[..., Server]) -> None:
    server = serve({"/r": lambda h: h.reply(200, "done")})
    put = await call("http_put", LOCAL, url=server.url("/r"), data="plain text")
    form = await call("http_post", LOCAL, url=server.url("/r"), data={"a": "1", "b": "x y"})
    delete = await call("http_delete", LOCAL, url=server.url("/r"))
    assert put.ok and form.ok and delete.ok
    put_seen, form_seen, delete_seen = server.requests
    assert (put_seen.method, put_seen.body, put_seen.headers["Content-Type"]) == ("PUT", b"plain text", "text/plain; charset=utf-8")
    assert (form_seen.body, form_seen.headers["Content-Type"]) == (b"a=1&b=x+y", "application/x-www-form-urlencoded")
    assert delete_seen.method == "DELETE" and delete_seen.body == b""
    assert {s.headers["Idempotency-Key"] for s in server.requests} == {KEY}


# --------------------------------------------------------------------------- error classes


@pytest.mark.parametrize(("status", "kind"), [(500, "transient"), (503, "transient"), (429, "transient"), (404, "permanent"), (403, "permanent"), (400, "permanent")])
async def test_status_codes_are_classified_and_the_body_is_shown(serve: Callable[..., Server], status: int, kind: str) -> None:
    server = serve({"/e": lambda h: h.reply(status, f"details for {status}")})
    result = await call("http_get", LOCAL, url=server.url("/e"))
    assert not result.ok and result.error_kind == kind, result
    assert result.output.startswith(f"Error: HTTP {status} ") and f"details for {status}" in result.output
    assert result.metadata["status"] == status


async def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = await call("http_get", LOCAL, url=f"http://127.0.0.1:{port}/")  # nothing listens there now
    assert not result.ok and result.error_kind == "transient" and "ConnectError" in result.output


async def test_a_server_that_never_answers_times_out_as_transient(serve: Callable[..., Server]) -> None:
    server = serve({"/hang": lambda h: h.server.state.release.wait(10)})  # type: ignore[attr-defined]
    result = await call("http_get", {**LOCAL, "timeout": 0.3}, url=server.url("/hang"))
    assert not result.ok and result.error_kind == "transient" and "ReadTimeout" in result.output


@pytest.mark.parametrize("url", ["not a url", "ftp://example.com/", "file:///etc/passwd", "http://", "http:///path", "http://exa mple.com/", "//example.com/x"])
async def test_bad_urls_are_bad_args(url: str) -> None:
    result = await call("http_get", None, url=url)
    assert not result.ok and result.error_kind == "bad_args", (url, result)


@pytest.mark.parametrize("header", ["Host", "idempotency-key", "Content-Length", "Transfer-Encoding"])
async def test_headers_kasloop_controls_cannot_be_set(header: str) -> None:
    result = await call("http_post", LOCAL, url="http://127.0.0.1:9/", json={}, headers={header: "x"})
    assert not result.ok and result.error_kind == "bad_args" and header in result.output


@pytest.mark.parametrize(
    ("name", "args", "field"),
    [
        ("http_get", {"url": 5}, "url"),
        ("http_get", {}, "url"),
        ("http_get", {"url": "http://x/", "headers": "a: b"}, "headers"),
        ("http_get", {"url": "http://x/", "headers": ["a: b"]}, "headers"),
        ("http_post", {"url": ["http://x/"]}, "url"),
        ("http_post", {"url": "http://x/", "data": 5}, "data"),
        ("http_put", {"url": "http://x/", "json": {"a": 1}, "data": "b"}, "either json or data"),
        ("http_delete", {"url": None}, "url"),
    ],
)
async def test_wrong_argument_types_are_bad_args_naming_the_field(name: str, args: dict[str, Any], field: str) -> None:
    result = await run_tool(TOOLS[name], args, ctx(LOCAL))
    assert not result.ok and result.error_kind == "bad_args", result
    assert f"`{name}`" in result.output and field in result.output


@pytest.mark.parametrize(
    "http",
    [{"allow_domains": "example.com"}, {"allow_domains": ["a:b:c"]}, {"allow_private": "yes"}, {"max_bytes": 0}, {"nope": 1}, {"allow_private": ["not-a-net"]}],
)
async def test_a_broken_http_config_is_a_permanent_error(http: dict[str, Any]) -> None:
    result = await call("http_get", http, url="http://127.0.0.1:9/")
    assert not result.ok and result.error_kind == "permanent", result


# --------------------------------------------------------------------------- TLS: SNI and certificate checks use the host name


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a test certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
         "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    return cert, key


def tls_context(certificate: tuple[Path, Path]) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*certificate)
    return context


async def test_https_connects_to_the_checked_address_with_the_name_for_sni_and_verification(serve: Callable[..., Server], certificate: tuple[Path, Path]) -> None:
    server = serve({"/": html("<p>secure</p>")}, tls=tls_context(certificate))
    cfg = {**LOCAL, "ca_file": str(certificate[0])}
    result = await call("http_get", cfg, url=server.url("/", host="localhost", scheme="https"))
    assert result.ok and "secure" in result.output, result
    assert result.metadata["address"] == "127.0.0.1"
    assert server.sni == ["localhost"] and server.requests[0].headers["Host"] == f"localhost:{server.port}"


async def test_https_to_a_name_the_certificate_does_not_cover_is_a_permanent_error(serve: Callable[..., Server], certificate: tuple[Path, Path]) -> None:
    server = serve({"/": html("<p>secure</p>")}, tls=tls_context(certificate))
    by_address = await call("http_get", {**LOCAL, "ca_file": str(certificate[0])}, url=server.url("/", scheme="https"))
    assert not by_address.ok and by_address.error_kind == "permanent" and "certificate" in by_address.output, by_address
    untrusted = await call("http_get", LOCAL, url=server.url("/", host="localhost", scheme="https"))  # system CAs only
    assert not untrusted.ok and untrusted.error_kind == "permanent" and "certificate" in untrusted.output
    assert server.requests == []


# --------------------------------------------------------------------------- pure parts


def test_the_http_settings_build_the_gate() -> None:
    """The address check and the rule grammar are tested in test_network_gate.py; here: http's settings reach its gate."""
    policy = HttpPolicy.from_context(ctx({"allow_domains": ["127.0.0.1:80", "example.com", "*.example.org"], "allow_private": ["10.0.0.0/8"], "timeout": 3}))
    assert policy.gate.section == "http" and policy.timeout == 3.0
    assert policy.gate.rules == (HostRule("127.0.0.1", 80), HostRule("example.com"), HostRule("*.example.org"))
    assert policy.gate.private_networks == (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))
    assert HttpPolicy.from_context(ctx({"allow_private": True})).gate.allow_private


def test_html_to_text_keeps_reading_order_and_drops_code() -> None:
    text = html_to_text("<table><tr><th>k</th><td>v</td></tr></table><p>a<br>b</p><template>t</template><svg><text>s</text></svg>", "http://h/")
    assert text.splitlines() == ["| k | v", "", "a", "b"]
    assert html_to_text("<a href='x'>  spaced   out </a>", "http://h/dir/") == "[spaced out](http://h/dir/x)"
    unclosed = "<html><head><title>T</title><meta charset=utf-8><style>p{}</style><body><p>body text"
    assert html_to_text(unclosed) == "# T\n\nbody text"


# --------------------------------------------------------------------------- httpx errors are translated in one place


def _public_httpx_exceptions() -> set[type[Exception]]:
    return {obj for name in httpx.__all__ if isinstance(obj := getattr(httpx, name), type) and issubclass(obj, Exception)}


def test_every_httpx_exception_is_mapped_most_specific_first() -> None:
    mapped = [cls for cls, _ in HTTPX_ERROR_KINDS]
    assert len(mapped) == len(set(mapped))
    assert set(mapped) == _public_httpx_exceptions()
    for i, earlier in enumerate(mapped):
        for later in mapped[i + 1 :]:
            assert not issubclass(later, earlier), f"{later.__name__} is shadowed by {earlier.__name__}"


def test_map_httpx_error_classifies_each_kind() -> None:
    request = httpx.Request("GET", "http://example.com/")

    def status(code: int) -> httpx.HTTPStatusError:
        return httpx.HTTPStatusError("x", request=request, response=httpx.Response(code, request=request))

    cases: list[tuple[Exception, str]] = [
        (httpx.ConnectError("refused"), "transient"),
        (httpx.ReadTimeout("slow"), "transient"),
        (httpx.RemoteProtocolError("hung up"), "transient"),
        (httpx.UnsupportedProtocol("gopher"), "bad_args"),
        (httpx.LocalProtocolError("bad header"), "bad_args"),
        (httpx.InvalidURL("nope"), "bad_args"),
        (httpx.DecodingError("garbled"), "permanent"),
        (httpx.TooManyRedirects("loop"), "permanent"),
        (httpx.StreamConsumed(), "permanent"),
        (status(503), "transient"),
        (status(429), "transient"),
        (status(404), "permanent"),
    ]
    for exc, kind in cases:
        failure = map_httpx_error(exc, "http://example.com/")
        assert failure.kind == kind, (exc, failure.kind)
        assert "http://example.com/" in failure.message
    try:
        try:
            raise ssl.SSLCertVerificationError("certificate verify failed")
        except ssl.SSLError as inner:
            raise httpx.ConnectError("handshake failed") from inner
    except httpx.ConnectError as exc:
        assert map_httpx_error(exc).kind == "permanent"
    for cls, kind in HTTPX_ERROR_KINDS:  # every entry is reachable with its own class
        if cls is httpx.HTTPStatusError:
            continue
        instance = cls.__new__(cls)
        Exception.__init__(instance, "x")
        assert map_httpx_error(instance).kind == kind, cls


# --------------------------------------------------------------------------- what the model sees


EXPECTED = {
    "http_get": (["url", "headers"], {"url"}, "read", True),
    "http_post": (["url", "json", "data", "headers"], {"url"}, "high", False),
    "http_put": (["url", "json", "data", "headers"], {"url"}, "high", True),
    "http_delete": (["url", "headers"], {"url"}, "high", True),
}


@pytest.mark.parametrize("tool", HTTP_TOOLS, ids=lambda t: t.name)
def test_schema_given_to_the_model_matches_the_args_model(tool: Tool) -> None:
    function = openai_schema(tool)["function"]
    assert function["name"] == tool.name and function["description"] == tool.description
    params = function["parameters"]
    fields = tool.args_model.model_fields
    names = [f.alias or n for n, f in fields.items()]
    assert params["type"] == "object" and list(params["properties"]) == names
    assert set(params["required"]) == {f.alias or n for n, f in fields.items() if f.is_required()}
    props, required, _, _ = EXPECTED[tool.name]
    assert names == props and set(params["required"]) == required
    assert params["properties"]["url"]["type"] == "string"
    for prop in params["properties"].values():
        assert prop["description"] and "title" not in prop
    tool.args_model.model_validate({"url": "http://example.com/"})


def test_http_family_names_risks_and_idempotency_are_as_designed() -> None:
    table = {t.name: (t.risk, t.idempotent, t.family) for t in HTTP_TOOLS}
    assert table == {name: (risk, idem, "http") for name, (_, _, risk, idem) in EXPECTED.items()}
    assert set(select_tools(["http"])) == set(EXPECTED)


def test_scalar_header_values_from_a_small_model_become_text_and_nulls_are_dropped() -> None:
    """A 0.5B model sends ``{"Accept": null, "X-N": 1}``; that is a fixable call, not a failure to escalate."""
    from kasloop.tools.http import BodyArgs, UrlArgs

    assert UrlArgs.model_validate({"url": "http://x/", "headers": {"X-N": 1, "A": None, "B": True}}).headers == {"X-N": "1", "B": "true"}
    echoed_schema = {"additionalProperties": {"type": "string"}, "L": [1]}
    assert UrlArgs.model_validate({"url": "http://x/", "headers": echoed_schema}).headers == {}
    assert BodyArgs.model_validate({"url": "http://x/", "headers": {"X-F": 1.5}}).headers == {"X-F": "1.5"}
