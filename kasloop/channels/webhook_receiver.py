"""Kasloop's receivers for signed webhooks: hooks into a thread's inbox, and decisions on approvals.

:func:`make_webhook_app` builds a small ASGI app (Starlette; serve it with
uvicorn) that accepts ``POST /hooks/{thread_id}`` (or ``POST /hooks`` with the
thread in the ``X-Kasloop-Thread`` header), signed as the ``webhook`` tools sign
(``kasloop.tools.webhook``: timestamp, HMAC signature, delivery id). It checks,
in order: body size (413), the signature (constant-time compare, 401), the
timestamp within ``replay_window`` seconds of now (401), the delivery id and a
JSON object body (400), the thread (``thread_for`` may map or refuse it: 404),
then whether the delivery id was seen before (200 ``{"duplicate": true}``,
nothing delivered). The signature covers the delivery id, so a captured request
cannot be replayed under a new id: inside the window it is a duplicate, after it
the timestamp is too old. Otherwise it calls ``deliver(thread_id, "webhook",
text, data)`` (``text`` = the payload's ``"text"`` string, else the JSON;
``data`` = ``{"delivery", "payload", "timestamp"}``) and answers 200
``{"ok": true}``; a failing ``deliver`` answers 500 and forgets the id, so the
sender's retry is delivered.

:func:`approvals_app` is the same app on a kasloop database, verified with the
**approval channel's own secret** (``approval_channels.webhook.secret_env``, see
``kasloop.channels.webhook``), with ``POST /approvals`` taking signed decisions
with a body ``{"approval_id", "decision": "approve"|"reject", "by"?, "reason"?,
"arg_hash"?}``. A bad signature, a stale timestamp or a delivery id seen before is
refused (401, 409) and logged; an expired, stale or already-decided approval is
refused by the one check of ``kasloop.guardrails.approvals`` (409) and logged too, with the
check's reason. No tool reaches the receiver: serve it with
:func:`serve_approvals` (or list its address in ``approval_channels.receivers``)
and the http, webhook and browser gates refuse its address whatever
``allow_private`` says.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
import sqlite3
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from kasloop.guardrails.approvals import Approve, Reject
from kasloop.safety import receivers
from kasloop.channels.base import Decider
from kasloop.channels.inbox_feed import Deliver, inbox_deliver
from kasloop.channels.webhook import approval_secret
from kasloop.checkpoints.approvals import ApprovalStore
from kasloop.checkpoints.database import Database
from kasloop.checkpoints.events import EventLog
from kasloop.errors import ApprovalExpired, ConfigError, KasloopError
from kasloop.tools.webhook import DELIVERY_HEADER, DELIVERY_ID_RE, MAX_PAYLOAD, SIGNATURE_HEADER, THREAD_HEADER, TIMESTAMP_HEADER, verify

if TYPE_CHECKING:
    from starlette.applications import Starlette


__all__ = ["DatabaseDeliveryLog", "DeliveryLog", "approvals_app", "make_webhook_app", "serve_approvals"]

_THREAD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


class DeliveryLog:
    """Delivery ids and signatures already handled, in memory, forgotten after ``ttl`` seconds."""

    def __init__(self, ttl: float = 86400.0, max_entries: int = 100_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._seen: OrderedDict[str, float] = OrderedDict()

    async def claim(self, keys: list[str]) -> bool:
        """Record ``keys``; False (and nothing recorded) if any of them was seen before."""
        now = time.monotonic()
        while self._seen and (next(iter(self._seen.values())) < now - self.ttl or len(self._seen) > self.max_entries):
            self._seen.popitem(last=False)
        if any(k in self._seen for k in keys):
            return False
        for key in keys:
            self._seen[key] = now
        return True

    async def release(self, keys: list[str]) -> None:
        for key in keys:
            self._seen.pop(key, None)


class DatabaseDeliveryLog(DeliveryLog):
    """The same, in the kasloop database (table ``kasloop_webhook_seen``), so a restart does not forget."""

    def __init__(self, database: Any, ttl: float = 7 * 86400.0) -> None:
        super().__init__(ttl=ttl)
        self.database = database

    async def claim(self, keys: list[str]) -> bool:
        def write(conn: sqlite3.Connection) -> bool:
            now = time.time()
            conn.execute("DELETE FROM kasloop_webhook_seen WHERE seen_at < ?", (now - self.ttl,))
            insert = "INSERT INTO kasloop_webhook_seen (key, seen_at) VALUES (?, ?) ON CONFLICT (key) DO NOTHING"
            fresh = all(conn.execute(insert, (k, now)).rowcount == 1 for k in keys)
            if fresh:
                conn.commit()
            else:
                conn.rollback()
            return fresh

        return bool(await self.database.call(write))

    async def release(self, keys: list[str]) -> None:
        def delete(conn: sqlite3.Connection) -> None:
            conn.executemany("DELETE FROM kasloop_webhook_seen WHERE key = ?", [(k,) for k in keys])
            conn.commit()

        await self.database.call(delete)


def make_webhook_app(
    secret: str | bytes,
    deliver: Deliver,
    *,
    replay_window: float = 300.0,
    thread_for: Callable[[str], str | None] | None = None,
    max_body: int = MAX_PAYLOAD,
    seen: DeliveryLog | None = None,
    approvals: Callable[[dict[str, Any], str], Awaitable[tuple[int, dict[str, Any]]]] | None = None,
    refused: Callable[..., Awaitable[None]] | None = None,
) -> Starlette:
    """An ASGI app receiving signed webhooks into ``deliver`` (see the module docstring).

    Args:
        secret: the shared HMAC secret (read it from the environment, not from config).
        deliver: ``async (thread_id, "webhook", text, data)``, e.g. :func:`inbox_deliver`.
        replay_window: seconds a timestamp may differ from now.
        thread_for: maps the requested thread to the one to deliver to, or None to refuse (404);
            default: any well-formed thread id is accepted as is.
        max_body: bytes of body accepted (413 beyond).
        seen: where handled delivery ids live; :class:`DatabaseDeliveryLog` survives restarts.
        approvals: when given, ``POST /approvals`` takes signed decisions (``{"approval_id", "decision",
            "by"?, "reason"?}``), checked like hooks (signature, window, delivery id), a delivery id at
            most once (a replay is 409); ``approvals(payload, delivery)`` returns the status and answer.
            See :func:`approvals_app` (which uses the approval channel's own secret).
        refused: ``async (status, delivery, payload=None)``, told of every refused approval callback (to log it).
    """
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    if not secret:
        raise ValueError("make_webhook_app needs a non-empty secret")
    log = seen if seen is not None else DeliveryLog()

    def refuse(status: int, error: str) -> JSONResponse:
        return JSONResponse({"ok": False, "error": error}, status_code=status)

    async def read_body(request: Request) -> bytes | None:
        declared = request.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > max_body:
            return None
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > max_body:
                return None
        return bytes(body)

    async def verified(request: Request, body: bytes | None) -> tuple[dict[str, Any], str, int] | JSONResponse:
        """Body size, signature, replay window, delivery id and a JSON object body, in that order."""
        if body is None:
            return refuse(413, f"body larger than {max_body} bytes")
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        delivery = request.headers.get(DELIVERY_HEADER, "")
        if not timestamp or not signature or not verify(secret, timestamp, delivery, body, signature):
            return refuse(401, "bad or missing signature")
        if not timestamp.isdigit() or abs(time.time() - int(timestamp)) > replay_window:
            return refuse(401, "timestamp outside the replay window")
        if not DELIVERY_ID_RE.match(delivery):
            return refuse(400, f"missing or malformed {DELIVERY_HEADER}")
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        if not isinstance(payload, dict):
            return refuse(400, "the body must be a JSON object")
        return payload, delivery, int(timestamp)

    async def receive(request: Request) -> JSONResponse:
        checked = await verified(request, await read_body(request))
        if isinstance(checked, JSONResponse):
            return checked
        payload, delivery, timestamp = checked
        wanted = request.path_params.get("thread_id") or request.headers.get(THREAD_HEADER, "")
        thread = (thread_for or (lambda t: t))(wanted) if _THREAD_RE.match(wanted) else None
        if not thread:
            return refuse(404, "unknown thread")
        keys = [f"delivery:{delivery}"]
        if not await log.claim(keys):
            return JSONResponse({"ok": True, "duplicate": True, "delivery": delivery})
        text = payload["text"] if isinstance(payload.get("text"), str) else json.dumps(payload, ensure_ascii=False)[:4000]
        try:
            await deliver(thread, "webhook", text, {"delivery": delivery, "payload": payload, "timestamp": timestamp})
        except Exception:  # noqa: BLE001 - the sender retries; the id must not count as handled
            await log.release(keys)
            return refuse(500, "delivery failed; retry later")
        return JSONResponse({"ok": True, "duplicate": False, "delivery": delivery})

    async def decide(request: Request) -> JSONResponse:
        body = await read_body(request)
        checked = await verified(request, body)
        if isinstance(checked, JSONResponse):
            if refused is not None:
                try:  # unverified, so only used to file the refusal under the approval it names
                    claimed = json.loads(body or b"")
                except ValueError:
                    claimed = None
                await refused(checked.status_code, request.headers.get(DELIVERY_HEADER, ""), claimed if isinstance(claimed, dict) else None)
            return checked
        payload, delivery, _ = checked
        keys = [f"approval:{delivery}"]
        if not await log.claim(keys):
            if refused is not None:
                await refused(409, delivery, payload)
            return refuse(409, "this callback was already handled (replay)")
        assert approvals is not None
        status, answer = await approvals(payload, delivery)
        return JSONResponse(answer, status_code=status)

    routes = [Route("/hooks/{thread_id}", receive, methods=["POST"]), Route("/hooks", receive, methods=["POST"])]
    if approvals is not None:
        routes.append(Route("/approvals", decide, methods=["POST"]))
    return Starlette(routes=routes)


async def _continue(sessions: Decider, thread: str, events: EventLog) -> None:
    try:
        await sessions.resume(thread)
    except KasloopError as exc:  # e.g. the daemon is driving it already: it continues there
        await events.append(thread, 0, "channel_error", channel="webhook", message=exc.message[:300])


def approvals_app(sessions: Decider, db: Database, *, replay_window: float = 300.0) -> Starlette:
    """The receiver for signed approval callbacks (and signed hooks into the inbox) on ``db``, deciding through
    ``sessions`` (``Agent.sessions``: the one check and the thread's stored policy, as ``kasloop approve``).

    Verified with the approval channel's own secret (``approval_channels.webhook.secret_env``, default
    ``KASLOOP_APPROVAL_WEBHOOK_SECRET``; ``ConfigError`` if it is missing, short, or shared with any
    other variable). Serve it with :func:`serve_approvals`, or with uvicorn while ``db`` is open; it
    declares the address it is served on at its first request, so this process's tools refuse it
    (list the address in ``approval_channels.receivers`` to have it refused from the start, by every
    process that loads the config).
    """
    secret = approval_secret(sessions.config.approval_channels.webhook)
    events = EventLog(db)
    running: set[asyncio.Task[None]] = set()

    async def refused(status: int, delivery: str, payload: dict[str, Any] | None = None, why: str = "") -> None:
        approval_id = str((payload or {}).get("approval_id", ""))
        record = await ApprovalStore(db).get(approval_id) if approval_id else None
        why = why or {401: "bad signature or stale timestamp", 409: "replayed callback"}.get(status, f"refused ({status})")
        await events.append(record["thread"] if record else "", 0, "approval_refused", approval_id=approval_id, channel="webhook", reason=why, delivery=delivery)

    async def approvals(payload: dict[str, Any], delivery: str) -> tuple[int, dict[str, Any]]:
        approval_id, decision = payload.get("approval_id"), payload.get("decision")
        expected = payload.get("arg_hash")
        if not isinstance(approval_id, str) or decision not in ("approve", "reject") or not isinstance(expected, str | None):
            return 400, {"ok": False, "error": "the body needs approval_id and decision (approve or reject); arg_hash, if given, is a string"}
        by = f"webhook:{payload.get('by') or delivery}"
        reason = str(payload.get("reason") or "")
        decided = Approve(reason=reason, arg_hash=expected) if decision == "approve" else Reject(reason=reason, arg_hash=expected)
        try:
            result = await sessions.decide(approval_id, decided, by=by, channel="webhook", resume=False)
        except ApprovalExpired as exc:  # the check logged this refusal itself
            return 409, {"ok": False, "error": exc.message}
        except KasloopError as exc:
            await refused(409, delivery, payload, exc.message)
            return 409, {"ok": False, "error": exc.message}
        if not result.approvals:  # the pause is fully decided: continue the thread after answering the caller
            task = asyncio.create_task(_continue(sessions, result.thread, events))
            running.add(task)
            task.add_done_callback(running.discard)
        return 200, {"ok": True, "thread": result.thread, "status": result.status}

    app = make_webhook_app(secret, inbox_deliver(db), replay_window=replay_window, seen=DatabaseDeliveryLog(db), approvals=approvals, refused=refused)
    app.add_middleware(_DeclareServer, db=db)
    return app


class _DeclareServer:
    """ASGI middleware: the address the receiver is served on becomes a receiver no tool may reach."""

    def __init__(self, app: Any, db: Database) -> None:
        self.app = app
        self.db = db
        self.seen: set[tuple[str, int]] = set()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        server = scope.get("server") if scope.get("type") == "http" else None
        if server and tuple(server) not in self.seen and server[1] is not None:
            host, port = str(server[0]), int(server[1])
            self.seen.add((host, port))
            receivers.declare(host, port)
            await receivers.record(self.db, host, port)
        await self.app(scope, receive, send)


@asynccontextmanager
async def serve_approvals(sessions: Decider, db: Database, *, host: str = "127.0.0.1", port: int = 0, replay_window: float = 300.0) -> AsyncIterator[str]:
    """Serve :func:`approvals_app` on ``host:port`` (0: a free port) while the block runs; yields its base URL.

    The address is a receiver from before the first request until the block ends: declared in this
    process and recorded in the database, so the tools of every process on it refuse it.
    """
    try:
        import uvicorn
    except ImportError:
        raise ConfigError("serving the approvals receiver needs uvicorn: pip install uvicorn") from None
    app = approvals_app(sessions, db, replay_window=replay_window)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(128)
    bound, bound_port = str(sock.getsockname()[0]), int(sock.getsockname()[1])
    receivers.declare(bound, bound_port)
    await receivers.record(db, bound, bound_port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        yield f"http://{f'[{bound}]' if family == socket.AF_INET6 else bound}:{bound_port}"
    finally:
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 10)
        finally:
            sock.close()
            receivers.withdraw(bound, bound_port)
            await receivers.forget(db, bound, bound_port)
