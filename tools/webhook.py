"""The ``webhook`` family: signed JSON POSTs out (the receiver that verifies them is ``kasloop.channels.webhook_receiver``).

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
(:mod:`kasloop.safety.receivers`). The webhook family has its **own**
settings section: being allowed to browse a site does not make it a webhook
target. Redirects: 307 and 308 keep the method and body and are followed like
the http family follows them (each hop gated, at most ``max_redirects``); 301,
302 and 303 would turn the POST into a GET, so they are reported as a
permanent error naming the new location instead.

Errors: refused host/address → ``denied``; bad URL or payload → ``bad_args``;
connection failures, timeouts, 5xx, 408, 425, 429 → ``transient`` (safe to retry:
the delivery id lets the receiver drop a repeat); other 4xx → ``permanent``;
no secret → ``permanent``.

Receiving (verifying these requests and delivering them into an inbox) is a channel's job:
:mod:`kasloop.channels.webhook_receiver`.

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
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from kasloop.safety.approval_secrets import refuse_approval_env, tool_secret_problem
from kasloop.tools.base import Tool, ToolContext, ToolFailure, ToolResult
from kasloop.tools.body_text import render_body
from kasloop.tools.http import USER_AGENT, BoundedBody, HttpPolicy, map_httpx_error, status_kind
from kasloop.tools.network import AllowDomains, AllowPrivate, NetworkGate

__all__ = [
    "DELIVERY_HEADER",
    "DELIVERY_ID_RE",
    "SIGNATURE_HEADER",
    "THREAD_HEADER",
    "TIMESTAMP_HEADER",
    "WEBHOOK_TOOLS",
    "WebhookSettings",
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
DELIVERY_ID_RE = re.compile(r"^[\x21-\x7e]{1,200}$")
"""What a delivery id may be: 1 to 200 printable ASCII characters, no spaces (checked by sender and receiver)."""
_FOLLOWED = frozenset({307, 308})
_METHOD_CHANGING = frozenset({301, 302, 303})


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
    return key if DELIVERY_ID_RE.match(key) else hashlib.sha256(key.encode()).hexdigest()


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
