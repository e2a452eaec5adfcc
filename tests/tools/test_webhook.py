"""The ``webhook`` family (tools/webhook.py): a real sender and a real receiver on 127.0.0.1.

The receiver is the Starlette app of ``make_webhook_app`` served by uvicorn on a
socket the test binds first (so it accepts as soon as the server task runs, no
waiting for start-up). Sender-only checks use a recording ``http.server`` in a
thread, as the http family's tests do, so "refused" is checked on the far side.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from conftest import query

from kasloop.checkpoints.inbox import Inbox
from kasloop.checkpoints import open_database
from kasloop.tools.base import ToolContext, ToolResult, openai_schema, run_tool
from kasloop.channels.inbox_feed import inbox_deliver
from kasloop.channels.webhook_receiver import DatabaseDeliveryLog, make_webhook_app
from kasloop.tools.webhook import (
    DELIVERY_HEADER,
    SIGNATURE_HEADER,
    THREAD_HEADER,
    TIMESTAMP_HEADER,
    WEBHOOK_TOOLS,
    WebhookSettings,
    sign,
)

SECRET = "s3cret-hmac-key-for-tests"
TOOL = WEBHOOK_TOOLS[0]
LOCAL = {"allow_private": True}


@pytest.fixture(autouse=True)
def secret(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KASLOOP_WEBHOOK_SECRET", SECRET)


def ctx(settings: dict[str, Any] | None = None, key: str = "thread-1:step-4:call-0") -> ToolContext:
    return ToolContext(workspace=Path("."), idempotency_key=key, extra={} if settings is None else {"webhook": settings})


async def post(url: str, payload: Any, settings: dict[str, Any] | None = LOCAL, key: str = "thread-1:step-4:call-0") -> ToolResult:
    return await run_tool(TOOL, {"url": url, "payload": payload}, ctx(settings, key))


# --------------------------------------------------------------------------- a recording server (sender checks)


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Recorder:
    routes: dict[str, Callable[[Any], None]]
    requests: list[Seen] = field(default_factory=list)
    connections: int = 0
    release: threading.Event = field(default_factory=threading.Event)
    httpd: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.httpd is not None
        return int(self.httpd.server_address[1])

    def url(self, path: str = "/", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"


class _Handler(BaseHTTPRequestHandler):
    timeout = 10

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def reply(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _handle(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        state: Recorder = self.server.state  # type: ignore[attr-defined]
        state.requests.append(Seen(self.command, self.path, dict(self.headers.items()), self.rfile.read(length) if length else b""))
        route = state.routes.get(self.path)
        if route is None:
            self.reply(404, "no such hook")
        else:
            route(self)

    do_GET = do_POST = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.state.connections += 1  # type: ignore[attr-defined]
        return True


@pytest.fixture
def record() -> Iterator[Callable[..., Recorder]]:
    started: list[Recorder] = []

    def start(routes: dict[str, Callable[[Any], None]] | None = None, host: str = "127.0.0.1") -> Recorder:
        state = Recorder(routes=routes or {})
        httpd = _Server((host, 0), _Handler)
        httpd.state = state  # type: ignore[attr-defined]
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


def ok(handler: Any) -> None:
    handler.reply(200, "thanks")


# --------------------------------------------------------------------------- the real receiver


@asynccontextmanager
async def receiver(tmp_path: Path, **options: Any) -> AsyncIterator[tuple[str, Inbox, list[str]]]:
    """The webhook app on uvicorn, delivering into a real Inbox; yields (base URL, inbox, delivered texts)."""
    async with open_database(tmp_path / "k.db") as db:
        put = inbox_deliver(db)
        delivered: list[str] = []

        async def deliver(thread_id: str, source: str, text: str, data: dict[str, Any]) -> None:
            await put(thread_id, source, text, data)
            delivered.append(text)

        app = make_webhook_app(SECRET, deliver, **options)
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)  # connections queue here until the server task accepts them
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}", Inbox(db), delivered
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
            sock.close()


def signed(body: bytes, *, timestamp: int | None = None, delivery: str = "d-1", secret: str = SECRET) -> dict[str, str]:
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return {"Content-Type": "application/json", TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(secret, ts, delivery, body), DELIVERY_HEADER: delivery}


# --------------------------------------------------------------------------- schema and arguments


def test_schema_matches_the_model() -> None:
    assert (TOOL.name, TOOL.risk, TOOL.idempotent, TOOL.family) == ("webhook_post", "high", False, "webhook")
    schema = openai_schema(TOOL)["function"]
    assert list(schema["parameters"]["properties"]) == ["url", "payload"]
    assert schema["parameters"]["required"] == ["url", "payload"]
    assert schema["parameters"]["properties"]["payload"]["type"] == "object"
    assert set(schema["parameters"]["properties"]) == set(TOOL.args_model.model_json_schema()["properties"])


@pytest.mark.parametrize(
    ("args", "field"),
    [
        ({"url": "http://127.0.0.1/", "payload": [1, 2]}, "payload"),
        ({"url": "http://127.0.0.1/", "payload": "text"}, "payload"),
        ({"url": 5, "payload": {}}, "url"),
        ({"payload": {}}, "url"),
        ({"url": "http://127.0.0.1/"}, "payload"),
        ({"url": "http://127.0.0.1/", "payload": {}, "headers": {}}, "headers"),
    ],
)
async def test_wrong_arguments_are_bad_args(args: dict[str, Any], field: str) -> None:
    result = await run_tool(TOOL, args, ctx(LOCAL))
    assert result.error_kind == "bad_args" and field in result.output


async def test_bad_urls_and_payloads_are_bad_args_and_nothing_is_sent(record: Callable[..., Recorder]) -> None:
    server = record({"/": ok})
    for url in ("ftp://127.0.0.1/", "not a url", "http:///nohost"):
        result = await post(url, {"a": 1})
        assert result.error_kind == "bad_args", (url, result.output)
    big = await post(server.url(), {"blob": "x" * (1024 * 1024)})
    assert big.error_kind == "bad_args" and "limit" in big.output
    nan = await post(server.url(), {"n": float("nan")})
    assert nan.error_kind == "bad_args"
    assert server.connections == 0


async def test_invalid_settings_are_permanent_and_name_the_key() -> None:
    for settings, key in (({"allow_domains": ["a b c:x"]}, "allow_domains"), ({"allow_private": ["nonsense"]}, "allow_private"), ({"secret": "x"}, "secret")):
        result = await post("http://127.0.0.1:9/", {}, settings)
        assert result.error_kind == "permanent" and key in result.output and "tool_settings.webhook" in result.output
    assert WebhookSettings().secret_env == "KASLOOP_WEBHOOK_SECRET"


# --------------------------------------------------------------------------- the wire format


async def test_the_request_is_signed_as_documented(record: Callable[..., Recorder]) -> None:
    server = record({"/hook": ok})
    before = int(time.time())
    result = await post(server.url("/hook"), {"event": "done", "text": "héllo", "n": 3}, key="t:1:c")
    assert result.ok, result.output
    assert result.output.startswith(f"Delivered: HTTP 200 OK from {server.url('/hook')} (delivery t:1:c)") and "thanks" in result.output
    (seen,) = server.requests
    assert seen.method == "POST" and seen.headers["Content-Type"] == "application/json"
    assert seen.body == '{"event":"done","text":"héllo","n":3}'.encode()
    ts = seen.headers[TIMESTAMP_HEADER]
    assert before <= int(ts) <= int(time.time())
    expected = hmac.new(SECRET.encode(), f"{ts}.t:1:c.".encode() + seen.body, hashlib.sha256).hexdigest()
    assert seen.headers[SIGNATURE_HEADER] == f"sha256={expected}"
    assert seen.headers[DELIVERY_HEADER] == "t:1:c"
    assert SECRET not in json.dumps(result.to_json()) and SECRET.encode() not in seen.body
    assert all(SECRET not in value for value in seen.headers.values())


async def test_the_delivery_id_is_stable_across_retries(record: Callable[..., Recorder]) -> None:
    server = record({"/": ok})
    await post(server.url(), {"a": 1}, key="same")
    await post(server.url(), {"a": 1}, key="same")
    await post(server.url(), {"a": 1}, key="")
    ids = [r.headers[DELIVERY_HEADER] for r in server.requests]
    assert ids[0] == ids[1] == "same" and len(ids[2]) == 32 and ids[2] != "same"


async def test_a_missing_secret_is_permanent_and_nothing_is_sent(record: Callable[..., Recorder], monkeypatch: pytest.MonkeyPatch) -> None:
    server = record({"/": ok})
    monkeypatch.delenv("KASLOOP_WEBHOOK_SECRET")
    result = await post(server.url(), {"a": 1})
    assert result.error_kind == "permanent" and "`KASLOOP_WEBHOOK_SECRET`" in result.output
    assert server.connections == 0


@pytest.mark.parametrize(("status", "kind"), [(500, "transient"), (503, "transient"), (429, "transient"), (400, "permanent"), (401, "permanent"), (404, "permanent")])
async def test_response_status_is_classified(record: Callable[..., Recorder], status: int, kind: str) -> None:
    server = record({"/": lambda h: h.reply(status, "receiver says no")})
    result = await post(server.url(), {"a": 1})
    assert not result.ok and result.error_kind == kind and f"HTTP {status}" in result.output and "receiver says no" in result.output
    assert result.metadata["status"] == status and len(server.requests) == 1


async def test_a_receiver_that_does_not_answer_is_a_transient_timeout(record: Callable[..., Recorder]) -> None:
    server = record({"/": lambda h: h.server.state.release.wait(10)})  # never answers
    result = await post(server.url(), {"a": 1}, {**LOCAL, "timeout": 0.5})
    server.release.set()
    assert result.error_kind == "transient" and "ReadTimeout" in result.output
    assert len(server.requests) == 1


# --------------------------------------------------------------------------- the address policy


async def test_localhost_is_refused_by_default_and_nothing_arrives(record: Callable[..., Recorder]) -> None:
    server = record({"/": ok})
    for settings in (None, {}, {"allow_domains": ["localhost"]}):
        result = await post(server.url("/", host="localhost"), {"a": 1}, settings)
        assert result.error_kind == "denied", result.output
        assert "resolves to a refused address" in result.output and "webhook.allow_private" in result.output
    direct = await post(server.url(), {"a": 1}, None)
    assert direct.error_kind == "denied" and "127.0.0.1 is a loopback address" in direct.output
    assert server.connections == 0 and server.requests == []


async def test_the_allowlist_is_enforced_and_an_ip_entry_unlocks_that_address(record: Callable[..., Recorder]) -> None:
    server = record({"/": ok})
    refused = await post(server.url(), {"a": 1}, {"allow_domains": ["hooks.example.com"]})
    assert refused.error_kind == "denied" and "webhook allowlist" in refused.output and "webhook.allow_domains" in refused.output
    assert server.connections == 0
    allowed = await post(server.url(), {"a": 1}, {"allow_domains": [f"127.0.0.1:{server.port}"]})
    assert allowed.ok, allowed.output
    assert len(server.requests) == 1


async def test_the_http_section_does_not_unlock_webhooks(record: Callable[..., Recorder]) -> None:
    server = record({"/": ok})
    result = await run_tool(TOOL, {"url": server.url(), "payload": {}}, ToolContext(workspace=Path("."), extra={"http": {"allow_private": True}}))
    assert result.error_kind == "denied" and server.connections == 0


# --------------------------------------------------------------------------- redirects


async def test_a_307_is_followed_with_the_same_signed_body(record: Callable[..., Recorder]) -> None:
    target = record({"/new": ok})
    first = record({"/old": lambda h: h.reply(307, "", {"Location": target.url("/new")})})
    result = await post(first.url("/old"), {"moved": True})
    assert result.ok, result.output
    assert result.metadata["redirects"] == [target.url("/new")] and result.metadata["url"] == target.url("/new")
    (a,), (b,) = first.requests, target.requests
    assert b.method == "POST" and b.body == a.body == b'{"moved":true}'
    assert all(b.headers[h] == a.headers[h] for h in (TIMESTAMP_HEADER, SIGNATURE_HEADER, DELIVERY_HEADER))


async def test_a_redirect_to_a_refused_target_is_denied_and_nothing_arrives_there(record: Callable[..., Recorder]) -> None:
    blocked = record({"/": ok})
    first = record({"/go": lambda h: h.reply(308, "", {"Location": blocked.url("/")})})
    result = await post(first.url("/go"), {"a": 1}, {"allow_domains": [f"127.0.0.1:{first.port}"]})
    assert result.error_kind == "denied" and f"redirect from {first.url('/go')}" in result.output
    via_name = record({"/go": lambda h: h.reply(307, "", {"Location": blocked.url("/", host="localhost")})}, host="127.0.0.2")
    by_name = await post(via_name.url("/go", host="127.0.0.2"), {"a": 1}, {"allow_domains": ["127.0.0.2", "localhost"]})
    assert by_name.error_kind == "denied" and "resolves to a refused address" in by_name.output
    assert blocked.connections == 0 and len(first.requests) == len(via_name.requests) == 1


@pytest.mark.parametrize("status", [301, 302, 303])
async def test_a_method_changing_redirect_is_not_resent_as_get(record: Callable[..., Recorder], status: int) -> None:
    target = record({"/new": ok})
    first = record({"/old": lambda h: h.reply(status, "", {"Location": target.url("/new")})})
    result = await post(first.url("/old"), {"a": 1})
    assert result.error_kind == "permanent" and f"answered {status}" in result.output and target.url("/new") in result.output
    assert target.connections == 0 and len(first.requests) == 1


async def test_a_redirect_loop_stops_after_max_redirects(record: Callable[..., Recorder]) -> None:
    loop = record({"/loop": lambda h: h.reply(307, "", {"Location": "/loop"})})
    result = await post(loop.url("/loop"), {"a": 1}, {**LOCAL, "max_redirects": 2})
    assert result.error_kind == "permanent" and "more than 2 redirects" in result.output and len(loop.requests) == 3


# --------------------------------------------------------------------------- sender -> receiver -> inbox


async def test_round_trip_into_the_inbox(tmp_path: Path) -> None:
    async with receiver(tmp_path) as (base, inbox, delivered):
        result = await post(f"{base}/hooks/ops", {"text": "CI failed on main", "build": 812}, key="ops:7:call-1")
        assert result.ok, result.output
        assert '"duplicate":false' in result.output
        items = await inbox.pending("ops")
    assert [(i.source, i.text) for i in items] == [("webhook", "CI failed on main")]
    assert items[0].data["delivery"] == "ops:7:call-1" and items[0].data["payload"] == {"text": "CI failed on main", "build": 812}
    assert delivered == ["CI failed on main"]


async def test_a_retried_delivery_is_delivered_once(tmp_path: Path) -> None:
    async with receiver(tmp_path) as (base, inbox, delivered):
        first = await post(f"{base}/hooks/ops", {"n": 1}, key="k-1")
        retry = await post(f"{base}/hooks/ops", {"n": 1}, key="k-1")
        other = await post(f"{base}/hooks/ops", {"n": 1}, key="k-2")
        items = await inbox.pending("ops")
    assert first.ok and retry.ok and other.ok
    assert '"duplicate":true' in retry.output and '"duplicate":false' in other.output
    assert [i.data["delivery"] for i in items] == ["k-1", "k-2"] and delivered == ['{"n": 1}', '{"n": 1}']


async def test_bad_signature_is_401_and_nothing_is_delivered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    async with receiver(tmp_path) as (base, inbox, delivered):
        monkeypatch.setenv("KASLOOP_WEBHOOK_SECRET", "the-wrong-secret")
        wrong = await post(f"{base}/hooks/ops", {"text": "forged"})
        body = b'{"text":"tampered"}'
        headers = signed(b'{"text":"original"}')
        async with httpx.AsyncClient() as client:
            tampered = await client.post(f"{base}/hooks/ops", content=body, headers=headers)
            unsigned = await client.post(f"{base}/hooks/ops", content=body, headers={DELIVERY_HEADER: "x"})
            garbage = await client.post(f"{base}/hooks/ops", content=body, headers={**signed(body), SIGNATURE_HEADER: "sha256=ünïcode".encode()})
        assert await inbox.pending("ops") == []
    assert wrong.error_kind == "permanent" and "HTTP 401" in wrong.output
    assert (tampered.status_code, unsigned.status_code, garbage.status_code) == (401, 401, 401)
    assert tampered.json()["error"] == "bad or missing signature" and delivered == []


async def test_old_and_future_timestamps_are_401(tmp_path: Path) -> None:
    body = b'{"text":"late"}'
    async with receiver(tmp_path, replay_window=60) as (base, inbox, delivered):
        async with httpx.AsyncClient() as client:
            old = await client.post(f"{base}/hooks/ops", content=body, headers=signed(body, timestamp=int(time.time()) - 3600))
            future = await client.post(f"{base}/hooks/ops", content=body, headers=signed(body, timestamp=int(time.time()) + 3600, delivery="d-2"))
            fresh = await client.post(f"{base}/hooks/ops", content=body, headers=signed(body, delivery="d-3"))
        items = await inbox.pending("ops")
    assert old.status_code == future.status_code == 401 and old.json()["error"] == "timestamp outside the replay window"
    assert fresh.status_code == 200 and [i.data["delivery"] for i in items] == ["d-3"]


async def test_a_captured_request_replayed_under_a_new_delivery_id_is_401(tmp_path: Path) -> None:
    body = b'{"text":"pay 100"}'
    captured = signed(body, delivery="d-original")
    async with receiver(tmp_path) as (base, inbox, delivered):
        async with httpx.AsyncClient() as client:
            original = await client.post(f"{base}/hooks/ops", content=body, headers=captured)
            replayed = await client.post(f"{base}/hooks/ops", content=body, headers={**captured, DELIVERY_HEADER: "d-forged"})
        items = await inbox.pending("ops")
    assert original.status_code == 200 and replayed.status_code == 401
    assert [i.data["delivery"] for i in items] == ["d-original"] and delivered == ["pay 100"]


async def test_the_same_payload_in_the_same_second_with_new_ids_is_delivered_each_time(tmp_path: Path) -> None:
    body = b'{"text":"ping"}'
    ts = int(time.time())
    async with receiver(tmp_path) as (base, inbox, delivered):
        async with httpx.AsyncClient() as client:
            answers = [await client.post(f"{base}/hooks/ops", content=body, headers=signed(body, timestamp=ts, delivery=d)) for d in ("p1", "p2", "p1")]
    assert [a.json()["duplicate"] for a in answers] == [False, False, True]
    assert delivered == ["ping", "ping"]


async def test_thread_from_header_mapping_and_refusals(tmp_path: Path) -> None:
    mapping = {"ci": "thread-ci"}
    async with receiver(tmp_path, thread_for=mapping.get, max_body=100) as (base, inbox, delivered):
        async with httpx.AsyncClient() as client:
            body = b'{"text":"via header"}'
            by_header = await client.post(f"{base}/hooks", content=body, headers={**signed(body, delivery="h1"), THREAD_HEADER: "ci"})
            unknown = await client.post(f"{base}/hooks/other", content=body, headers=signed(body, delivery="h2"))
            no_thread = await client.post(f"{base}/hooks", content=body, headers=signed(body, delivery="h3"))
            big = b'{"text":"' + b"x" * 200 + b'"}'
            too_big = await client.post(f"{base}/hooks/ci", content=big, headers=signed(big, delivery="h4"))
            array = b"[1,2]"
            not_object = await client.post(f"{base}/hooks/ci", content=array, headers=signed(array, delivery="h5"))
            no_delivery = await client.post(f"{base}/hooks/ci", content=body, headers=signed(body, delivery=""))
            get = await client.get(f"{base}/hooks/ci")
        items = await inbox.pending("thread-ci")
    assert by_header.status_code == 200 and [i.text for i in items] == ["via header"]
    assert (unknown.status_code, no_thread.status_code, too_big.status_code) == (404, 404, 413)
    assert (not_object.status_code, no_delivery.status_code, get.status_code) == (400, 400, 405)
    assert delivered == ["via header"]


async def test_a_failed_deliver_answers_500_and_the_retry_is_delivered(tmp_path: Path) -> None:
    calls: list[str] = []

    async def flaky(thread_id: str, source: str, text: str, data: dict[str, Any]) -> None:
        calls.append(text)
        if len(calls) == 1:
            raise RuntimeError("database is locked")

    app = make_webhook_app(SECRET, flaky)
    transport = httpx.ASGITransport(app=app)
    body = b'{"text":"retry me"}'
    async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
        failed = await client.post("/hooks/ops", content=body, headers=signed(body, delivery="r-1"))
        retried = await client.post("/hooks/ops", content=body, headers=signed(body, delivery="r-1", timestamp=int(time.time()) + 1))
        again = await client.post("/hooks/ops", content=body, headers=signed(body, delivery="r-1", timestamp=int(time.time()) + 2))
    assert (failed.status_code, retried.status_code, again.json()["duplicate"]) == (500, 200, True)
    assert calls == ["retry me", "retry me"]


async def test_the_database_delivery_log_survives_a_restart(db_url: str) -> None:
    body = b'{"text":"once"}'
    got: list[str] = []

    async def deliver(thread_id: str, source: str, text: str, data: dict[str, Any]) -> None:
        got.append(text)

    for round_ in range(2):
        async with open_database(db_url) as db:
            app = make_webhook_app(SECRET, deliver, seen=DatabaseDeliveryLog(db))
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as client:
                answer = await client.post("/hooks/ops", content=body, headers=signed(body, delivery="persisted", timestamp=int(time.time()) + round_))
            assert answer.json()["duplicate"] is (round_ == 1)
    assert got == ["once"]


async def test_the_database_delivery_log_claims_all_keys_or_none_and_releases_them(db_url: str) -> None:
    """On both engines: a claim records every key or (one seen before) none; a release frees them; rows older than
    the log's ``ttl`` are forgotten. Rows commit: another connection (another process) sees them."""
    async with open_database(db_url) as db:
        log = DatabaseDeliveryLog(db)
        assert await log.claim(["delivery:a", "signature:a"]) is True
        assert await log.claim(["delivery:b", "signature:a"]) is False  # one key seen: nothing of b recorded
        assert await log.claim(["delivery:b", "signature:b"]) is True
        await log.release(["delivery:a", "signature:a"])  # a failed delivery: the sender's retry must get through
        assert await log.claim(["delivery:a", "signature:a"]) is True
    assert sorted(r[0] for r in query(db_url, "SELECT key FROM kasloop_webhook_seen")) == [
        "delivery:a", "delivery:b", "signature:a", "signature:b"
    ]
    async with open_database(db_url) as db:
        assert await DatabaseDeliveryLog(db).claim(["delivery:a"]) is False  # remembered across a restart
        assert await DatabaseDeliveryLog(db, ttl=-1.0).claim(["delivery:a"]) is True  # everything older has expired
    assert [r[0] for r in query(db_url, "SELECT key FROM kasloop_webhook_seen")] == ["delivery:a"]


async def test_the_delivery_log_runs_no_ddl(tmp_path: Path) -> None:
    """Its table is created once, when the database opens, not by every claim (DDL locks tables on PostgreSQL)."""
    async with open_database(tmp_path / "k.db") as db:
        statements: list[str] = []
        await db.call(lambda conn: conn.set_trace_callback(statements.append))
        log = DatabaseDeliveryLog(db)
        assert await log.claim(["delivery:x"]) is True
        await log.release(["delivery:x"])
        await db.call(lambda conn: conn.set_trace_callback(None))
    assert statements and not [s for s in statements if "CREATE" in s.upper()]
