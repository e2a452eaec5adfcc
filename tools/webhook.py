"""The ``webhook`` family: signed JSON POSTs out, and a receiver that verifies them in.

``webhook_post`` (url, payload) sends ``payload`` as a JSON object with three
headers (the format receivers rely on; it is stable):

``X-Kasloop-Timestamp``  ``<unix seconds>`` when the request was signed.
``X-Kasloop-Signature``  ``sha256=<hex>``: HMAC-SHA256 with the shared secret over
                         ``f"{timestamp}.{delivery}.{raw_body}"`` (the timestamp's ASCII
                         digits, a dot, the delivery id, a dot, then the exact body bytes).
``X-Kasloop-Delivery``   ``ctx.idempotency_key``: the same for every retry of one call, so
                         the receiver drops a repeat (a fresh random id when there is no key).

The body is ``json.dumps(payload, separators=(",", ":"), ensure_ascii=False)`` in
UTF-8 with ``Content-Type: application/json``. A retry is signed again with a
new timestamp; the delivery id stays. The secret is read at call time from the
environment variable ``webhook.secret_env`` and never appears in output.

**Where it may post**: the URL goes through the one network gate
(:class:`kasloop.tools.network.NetworkGate`, the http family's jail): http(s)
only, the host must match ``webhook.allow_domains`` when set, every address
the host resolves to must be public (``localhost``, 10/8, 169.254/16... are
refused) unless allowed by ``webhook.allow_private`` or named as an IP in
``allow_domains``, and the request goes to the checked address (no DNS
rebinding). kasloop's own receivers (the approvals receiver,
``approval_channels.receivers``) are refused whatever ``allow_private`` says
(:mod:`kasloop.channels.receivers`). The webhook family has its **own**
settings section: being allowed to browse a site does not make it a webhook
target. Redirects: 307 and 308 keep the method and body and are followed like
the http family follows them (each hop gated, at most ``max_redirects``); 301,
302 and 303 would turn the POST into a GET, so they are reported as a
permanent error naming the new location instead.

Errors: refused host/address → ``denied``; bad URL or payload → ``bad_args``;
connection failures, timeouts, 5xx, 408, 425, 429 → ``transient`` (safe to retry:
the delivery id lets the receiver drop a repeat); other 4xx → ``permanent``;
no secret → ``permanent``.

**Receiving**: :func:`make_webhook_app` builds a small ASGI app (Starlette; serve
it with uvicorn) that accepts ``POST /hooks/{thread_id}`` (or ``POST /hooks``
with the thread in the ``X-Kasloop-Thread`` header). It checks, in order: body
size (413), the signature (constant-time compare, 401), the timestamp within
``replay_window`` seconds of now (401), the delivery id and a JSON object body
(400), the thread (``thread_for`` may map or refuse it: 404), then whether
the delivery id was seen before (200 ``{"duplicate": true}``, nothing
delivered). The signature covers the delivery id, so a captured request
cannot be replayed under a new id: inside the window it is a duplicate, after
it the timestamp is too old. Otherwise it calls
``deliver(thread_id, "webhook", text, data)`` (``text`` = the payload's
``"text"`` string, else the JSON; ``data`` = ``{"delivery", "payload",
"timestamp"}``) and answers 200 ``{"ok": true}``; a failing ``deliver`` answers
500 and forgets the id, so the sender's retry is delivered.

Config (``ToolContext.extra["webhook"]``, all optional):

``secret_env``     environment variable holding the HMAC secret (``KASLOOP_WEBHOOK_SECRET``); never a
                   ``KASLOOP_APPROVAL_*`` variable, and a value an approval channel's secret also has
                   is refused at call time (``denied``): what a tool signs is never an approval.
``allow_domains``  host rules in the grammar every family shares (:mod:`kasloop.tools.network`):
                   ``host``, ``*.domain``, globs, IP addresses, optionally ``:port``; empty = any
                   public host.
``allow_private``  ``true`` or a list of networks, as ``http.allow_private`` (default false).
``timeout``        seconds per connect / read / write (20).
``max_redirects``  307/308 redirects followed (5).
``max_bytes``      bytes of the receiver's answer read (65536).
``ca_file``        PEM bundle of extra CAs to trust.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import sqlite3
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kasloop.approval_secrets import refuse_approval_env, tool_secret_problem
from kasloop.tools.base import Tool, ToolContext, ToolFailure, ToolResult
from kasloop.tools.http import USER_AGENT, BoundedBody, HttpPolicy, map_httpx_error, render_body, status_kind
from kasloop.tools.network import AllowDomains, AllowPrivate, NetworkGate

if TYPE_CHECKING:
    from starlette.applications import Starlette

__all__ = [
    "DELIVERY_HEADER",
    "SIGNATURE_HEADER",
    "THREAD_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_TOOLS",
    "DatabaseDeliveryLog",
    "DeliveryLog",
    "WebhookSettings",
    "inbox_deliver",
    "make_webhook_app",
    "post_signed",
    "sign",
    "verify",
]

TIMESTAMP_HEADER = "X-Kasloop-Timestamp"
SIGNATURE_HEADER = "X-Kasloop-Signature"
DELIVERY_HEADER = "X-Kasloop-Delivery"
THREAD_HEADER = "X-Kasloop-Thread"
DEFAULT_SECRET_ENV = "KASLOOP_WEBHOOK_SECRET"
MAX_PAYLOAD = 1024 * 1024
_DELIVERY_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
_THREAD_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
_FOLLOWED = frozenset({307, 308})
_METHOD_CHANGING = frozenset({301, 302, 303})

Deliver = Callable[[str, str, str, dict[str, Any]], Awaitable[Any]]


# --------------------------------------------------------------------------- signing


def sign(secret: str | bytes, timestamp: int | str, delivery: str, body: bytes) -> str:
    """The ``X-Kasloop-Signature`` value: ``sha256=`` + hex HMAC-SHA256 of ``b"{timestamp}.{delivery}." + body``.

    The delivery id is signed too, so a captured request cannot be replayed
    under a new id to slip past the receiver's duplicate check.
    """
    key = secret.encode() if isinstance(secret, str) else secret
    signed = str(timestamp).encode("ascii") + b"." + delivery.encode("utf-8") + b"." + body
    return "sha256=" + hmac.new(key, signed, hashlib.sha256).hexdigest()


def verify(secret: str | bytes, timestamp: str, delivery: str, body: bytes, signature: str) -> bool:
    """Whether ``signature`` is the right one (constant-time compare)."""
    expected = sign(secret, timestamp, delivery, body).encode("ascii")
    return hmac.compare_digest(expected, signature.strip().encode("utf-8", errors="replace"))


# --------------------------------------------------------------------------- settings


class WebhookSettings(BaseModel):
    """``tool_settings.webhook`` (see the module docstring)."""

    model_config = ConfigDict(extra="forbid")

    secret_env: str = Field(default=DEFAULT_SECRET_ENV, min_length=1)
    allow_domains: AllowDomains = Field(default_factory=list)
    allow_private: AllowPrivate = False
    timeout: float = Field(default=20.0, gt=0, le=300)
    max_redirects: int = Field(default=5, ge=0, le=20)
    max_bytes: int = Field(default=65536, ge=1, le=16 * 1024 * 1024)
    ca_file: str | None = None

    @field_validator("secret_env")
    @classmethod
    def _not_approvals(cls, value: str) -> str:
        return refuse_approval_env(value, "sign with")

    def policy(self) -> HttpPolicy:
        """The http jail with this section's gate (messages name ``webhook.*`` settings) and limits."""
        gate = NetworkGate.from_settings("webhook", allow_domains=self.allow_domains, allow_private=self.allow_private)
        return HttpPolicy(gate=gate, max_bytes=self.max_bytes, timeout=self.timeout, max_redirects=self.max_redirects, ca_file=self.ca_file)


def _settings(ctx: ToolContext) -> WebhookSettings:
    try:
        return WebhookSettings.model_validate(ctx.extra.get("webhook") or {})
    except ValidationError as exc:
        err = exc.errors()[0]
        key = ".".join(str(p) for p in err["loc"]) or "webhook"
        raise ToolFailure("permanent", f"bad webhook config `{key}`: {err['msg']}; fix tool_settings.webhook in kasloop.toml") from None


def _secret(settings: WebhookSettings) -> bytes:
    """The tools' signing secret; never an approval channel's (``KASLOOP_APPROVAL_*``, by name or by value)."""
    secret = os.environ.get(settings.secret_env, "")
    if not secret:
        raise ToolFailure("permanent", f"no webhook secret: set the environment variable `{settings.secret_env}` (webhook.secret_env)")
    problem = tool_secret_problem("webhook.secret_env", settings.secret_env)
    if problem is not None:
        raise ToolFailure("denied", problem)
    return secret.encode()


# --------------------------------------------------------------------------- sending


async def _post(raw_url: str, body: bytes, headers: dict[str, str], policy: HttpPolicy) -> tuple[int, str, str, bytes, str, list[str]]:
    """POST through the network gate; returns (status, reason, final url, body, content type, redirects)."""
    redirects: list[str] = []
    url = policy.gate.check_url(raw_url).url
    sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
    async with policy.client() as client:
        for _hop in range(policy.max_redirects + 1):
            try:
                async with client.stream("POST", url, headers=sent, content=body) as response:
                    location = response.headers.get("location")
                    status = response.status_code
                    if not (status in _FOLLOWED and location):
                        if status in _METHOD_CHANGING and location:
                            raise ToolFailure("permanent", f"the receiver at {url} answered {status} (moved to `{location}`); a webhook is not re-sent as GET: use the new URL")
                        reader = BoundedBody(response.headers.get("content-encoding", ""), policy.max_bytes)
                        async for chunk in response.aiter_raw():
                            if not reader.feed(chunk):
                                break
                        return status, response.reason_phrase, str(url), bytes(reader.body), response.headers.get("content-type", ""), redirects
            except httpx.HTTPError as exc:
                raise map_httpx_error(exc, str(url)) from None
            try:
                next_url = policy.gate.check_url(url.join(location or ""), redirect=True).url
            except (ToolFailure, httpx.InvalidURL) as exc:
                message = exc.message if isinstance(exc, ToolFailure) else str(exc)
                kind = exc.kind if isinstance(exc, ToolFailure) else "permanent"
                raise ToolFailure(kind, f"redirect from {url} to {location} refused: {message}") from None
            redirects.append(str(next_url))
            url = next_url
    raise ToolFailure("permanent", f"more than {policy.max_redirects} redirects (last: {url}); fix the webhook URL")


def _delivery_id(ctx: ToolContext) -> str:
    key = ctx.idempotency_key
    if not key:
        return uuid.uuid4().hex
    return key if _DELIVERY_RE.match(key) else hashlib.sha256(key.encode()).hexdigest()


class PostArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="http:// or https:// URL of the receiver.", json_schema_extra={"kasloop": "url"})
    payload: dict[str, Any] = Field(description="JSON object to send.")


async def _webhook_post(args: PostArgs, ctx: ToolContext) -> ToolResult:
    settings = _settings(ctx)
    policy = await settings.policy().with_receivers(ctx)
    return await post_signed(args.url, args.payload, policy, lambda: _secret(settings), _delivery_id(ctx))


async def post_signed(url: str, payload: dict[str, Any], policy: HttpPolicy, secret: Callable[[], bytes], delivery: str) -> ToolResult:
    """POST ``payload`` signed with ``secret()`` through the jail of ``policy`` (the webhook tool, and the
    approval channel with its own secret); the result the tool returns."""
    try:
        body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode()
    except (TypeError, ValueError) as exc:
        raise ToolFailure("bad_args", f"payload is not plain JSON: {exc}") from None
    if len(body) > MAX_PAYLOAD:
        raise ToolFailure("bad_args", f"payload is {len(body)} bytes; the limit is {MAX_PAYLOAD}: send less")
    key = secret()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        TIMESTAMP_HEADER: timestamp,
        SIGNATURE_HEADER: sign(key, timestamp, delivery, body),
        DELIVERY_HEADER: delivery,
    }
    try:
        status, reason, final, answer, content_type, redirects = await _post(url, body, headers, policy)
    except httpx.HTTPError as exc:
        raise map_httpx_error(exc, url) from None
    text = render_body(answer, content_type, final).strip()
    metadata = {"status": status, "url": final, "delivery": delivery, "redirects": redirects}
    line = f"HTTP {status} {reason} from {final} (delivery {delivery})"
    if status >= 300:
        return ToolResult(ok=False, output=f"Error: receiver answered {line}\n\n{text}".rstrip(), error_kind=status_kind(status), metadata=metadata)
    return ToolResult(ok=True, output=f"Delivered: {line}\n\n{text}".rstrip(), metadata=metadata)


WEBHOOK_TOOLS: tuple[Tool, ...] = (
    Tool(name="webhook_post", description="POST a signed JSON payload to a webhook URL.", args_model=PostArgs, func=_webhook_post, risk="high", idempotent=False, timeout=120.0, family="webhook"),
)


# --------------------------------------------------------------------------- receiving


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


def inbox_deliver(database: Any) -> Deliver:
    """A ``deliver`` callback that appends to the thread's inbox in ``database``."""
    from kasloop.checkpoints.inbox import Inbox

    inbox = Inbox(database)

    async def deliver(thread_id: str, source: str, text: str, data: dict[str, Any]) -> None:
        await inbox.put(thread_id, source, text, **data)

    return deliver


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
            See ``kasloop.channels.webhook.approvals_app`` (which uses the approval channel's own secret).
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
        if not _DELIVERY_RE.match(delivery):
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
