"""The ``http`` family: GET, POST, PUT and DELETE through httpx, behind the network gate.

Every hop of a request (the first URL and each redirect) goes through
:class:`kasloop.tools.network.NetworkGate` before any connection is made:

1. the URL must be ``http`` or ``https`` with a plain host name or address;
2. the host (and port) must match ``http.allow_domains`` when that list is set
   (the grammar every family shares: ``host``, ``*.domain``, globs, IP
   addresses, each optionally with ``:port``; see :mod:`kasloop.tools.network`);
3. the host is resolved once and **every** address it resolves to must be
   public (loopback, private, link-local, IPv4-mapped IPv6 and the other
   non-public forms are refused with ``denied`` unless allowed);
4. kasloop's own receivers (the approvals receiver and any address in
   ``approval_channels.receivers``, see :mod:`kasloop.safety.receivers`) are
   refused at every hop **even when** ``allow_private`` or ``allow_domains``
   would let the address through: approvals come only from humans;
5. the request is sent **to the checked address itself**
   (:class:`~kasloop.tools.network.GatedTransport`: the ``Host`` header and TLS
   SNI keep the name), so a DNS answer that changes between the check and the
   connection (DNS rebinding) cannot send the request anywhere unchecked. No
   proxy is used and connections are not kept alive.

Redirects are followed by hand (at most ``http.max_redirects``, default 5),
each target gated as above; ``Authorization`` and ``Cookie`` headers are
dropped when a redirect leaves the origin; 303 (and 301/302 after a POST)
turn into a GET without a body, as browsers do.

The response is streamed and reading stops at ``http.max_bytes`` (default
2 MiB): a 50 MB answer costs 2 MiB. Bodies are asked for uncompressed; gzip
or deflate sent anyway are inflated with the same bound. HTML is reduced to
readable text (scripts and styles dropped, links kept as ``[text](url)``);
text, JSON and XML are shown as text; anything else is described, not dumped.

Writes (``http_post``, ``http_put``, ``http_delete``) send an
``Idempotency-Key`` header equal to ``ToolContext.idempotency_key`` so a far
side that supports it can recognise a retry. ``http_put`` and ``http_delete``
are idempotent by HTTP's definition (RFC 9110 §9.2.2) and flagged so;
``http_post`` is not.

Errors: a refused host or address → ``denied``; a malformed URL or header →
``bad_args``; connection failures, timeouts, 5xx, 408 and 429 → ``transient``;
other 4xx, a failed certificate check and too many redirects → ``permanent``.
httpx exceptions are translated in one place, :func:`map_httpx_error`.

Config (``ToolContext.extra["http"]``, all optional; :class:`HttpSettings`):

``allow_domains``  list of host rules (see :mod:`kasloop.tools.network`): ``example.com``,
                   ``*.example.com`` (subdomains, not the apex), ``api-*.example.com``,
                   ``10.0.0.5``, each optionally with ``:port`` (``[v6]:port``); empty = any
                   public host. An IP address named here may be private (naming it is
                   explicit); a host *name* or glob never unlocks a private address.
``allow_private``  ``true`` (any non-public address) or a list of networks
                   (``["10.0.0.0/8"]``); default false.
``max_bytes``      response size cap in bytes (2 MiB).
``timeout``        seconds for each connect / read / write (20).
``max_redirects``  redirects followed (5).
``ca_file``        PEM bundle of extra CAs to trust instead of the system's (internal CAs).
"""

from __future__ import annotations

import dataclasses
import ssl
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Annotated, Any, ClassVar

import httpx
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from kasloop.tools.base import Tool, ToolContext, ToolFailure, ToolResult, ToolSettings
from kasloop.tools.base import ToolErrorKind as ErrorKind
from kasloop.tools.body_text import html_to_text, render_body
from kasloop.tools.network import PINNED_ADDRESS, AllowDomains, AllowPrivate, NetworkGate, tls_context

# Rendering a body as text (HTML reduced to readable text) is kasloop.tools.body_text, shared with the webhook
# and email families; html_to_text and render_body are re-exported here for the modules that import them from here.
__all__ = [
    "HTTPX_ERROR_KINDS",
    "HTTP_TOOLS",
    "USER_AGENT",
    "BoundedBody",
    "HttpPolicy",
    "HttpSettings",
    "html_to_text",
    "map_httpx_error",
    "render_body",
    "status_kind",
]


DEFAULT_MAX_BYTES = 2 * 1024 * 1024
DEFAULT_TIMEOUT = 20.0
DEFAULT_MAX_REDIRECTS = 5
USER_AGENT = "kasloop-agent (+https://github.com/kasloop)"
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_TRANSIENT_STATUS = frozenset({408, 425, 429})
_FORBIDDEN_HEADERS = frozenset(
    {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "te", "trailer", "upgrade",
     "expect", "proxy-authorization", "proxy-connection", "idempotency-key", "accept-encoding"}
)  # fmt: skip
_CROSS_ORIGIN_DROP = frozenset({"authorization", "cookie", "proxy-authorization"})


# --------------------------------------------------------------------------- settings and policy


def _plain_number(value: Any) -> Any:
    """A number as TOML writes it: ``true`` or ``"5"`` is a typo, not 1 or 5."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise PydanticCustomError("number", "must be a number, got `{value}`", {"value": repr(value)})
    return value


_Number = BeforeValidator(_plain_number)


class HttpSettings(ToolSettings):
    """``tool_settings.http`` (see the module docstring); checked when the config loads."""

    family: ClassVar[str] = "http"

    allow_domains: AllowDomains = Field(default_factory=list)
    """Hosts the tools may reach (the one grammar of :mod:`kasloop.tools.network`); empty: any public host."""
    allow_private: AllowPrivate = False
    """``true`` or a list of networks whose non-public addresses may be reached."""
    max_bytes: Annotated[int, _Number] = Field(default=DEFAULT_MAX_BYTES, gt=0)
    """Bytes of response body read at most."""
    timeout: Annotated[float, _Number] = Field(default=DEFAULT_TIMEOUT, gt=0)
    """Seconds per connect, read and write."""
    max_redirects: Annotated[int, _Number] = Field(default=DEFAULT_MAX_REDIRECTS, ge=0)
    """Redirects followed at most."""
    ca_file: str | None = None
    """PEM bundle of CAs to trust instead of the system's."""


@dataclass(frozen=True, kw_only=True)
class HttpPolicy:
    """The http jail of one call: the network gate plus the limits of a request (from :class:`HttpSettings`)."""

    gate: NetworkGate = field(default_factory=lambda: NetworkGate(section="http"))
    """Where requests may go (host rules, address check, receivers, pinning)."""
    max_bytes: int = DEFAULT_MAX_BYTES
    """Bytes of response body read at most."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds per connect, read and write."""
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    ca_file: str | None = None

    @classmethod
    def from_settings(cls, settings: HttpSettings, section: str = "http") -> HttpPolicy:
        gate = NetworkGate.from_settings(section, allow_domains=settings.allow_domains, allow_private=settings.allow_private)
        return cls(gate=gate, max_bytes=settings.max_bytes, timeout=settings.timeout, max_redirects=settings.max_redirects, ca_file=settings.ca_file)

    @classmethod
    def from_context(cls, ctx: ToolContext) -> HttpPolicy:
        """The policy of ``ctx.extra["http"]``; bad settings are one ``permanent`` line naming the key."""
        return cls.from_settings(HttpSettings.from_context(ctx))

    async def with_receivers(self, ctx: ToolContext) -> HttpPolicy:
        """This policy knowing the receivers recorded in the call's database too."""
        gate = await self.gate.with_receivers(ctx)
        return self if gate is self.gate else dataclasses.replace(self, gate=gate)

    def ssl_context(self) -> ssl.SSLContext:
        try:
            return tls_context(self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ToolFailure("permanent", f"cannot load {self.gate.section}.ca_file `{self.ca_file}`: {exc}") from None

    def client(self) -> httpx.AsyncClient:
        """An httpx client behind the gate (every request checked and pinned), with this policy's timeout and CAs."""
        return self.gate.client(timeout=self.timeout, ssl_context=self.ssl_context())


# --------------------------------------------------------------------------- errors

HTTPX_ERROR_KINDS: tuple[tuple[type[Exception], ErrorKind], ...] = (
    # most specific first: the first matching class wins
    (httpx.ConnectTimeout, "transient"),
    (httpx.ReadTimeout, "transient"),
    (httpx.WriteTimeout, "transient"),
    (httpx.PoolTimeout, "transient"),
    (httpx.TimeoutException, "transient"),
    (httpx.ConnectError, "transient"),
    (httpx.ReadError, "transient"),
    (httpx.WriteError, "transient"),
    (httpx.CloseError, "transient"),
    (httpx.NetworkError, "transient"),
    (httpx.ProxyError, "transient"),
    (httpx.UnsupportedProtocol, "bad_args"),
    (httpx.LocalProtocolError, "bad_args"),  # e.g. a header value with a newline
    (httpx.RemoteProtocolError, "transient"),  # e.g. the server hung up mid-response
    (httpx.ProtocolError, "permanent"),
    (httpx.TransportError, "transient"),
    (httpx.DecodingError, "permanent"),
    (httpx.TooManyRedirects, "permanent"),
    (httpx.RequestError, "transient"),
    (httpx.HTTPStatusError, "permanent"),  # refined by status code in map_httpx_error
    (httpx.HTTPError, "permanent"),
    (httpx.InvalidURL, "bad_args"),
    (httpx.CookieConflict, "permanent"),
    (httpx.StreamConsumed, "permanent"),
    (httpx.StreamClosed, "permanent"),
    (httpx.ResponseNotRead, "permanent"),
    (httpx.RequestNotRead, "permanent"),
    (httpx.StreamError, "permanent"),
)
"""httpx exception → error kind; :func:`map_httpx_error` uses the first class that matches."""


def status_kind(status: int) -> ErrorKind:
    """5xx, 408, 425 and 429 may pass if retried; other 4xx will not."""
    return "transient" if status >= 500 or status in _TRANSIENT_STATUS else "permanent"


def _cause_chain(exc: BaseException) -> Iterable[BaseException]:
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def map_httpx_error(exc: Exception, url: str = "") -> ToolFailure:
    """Translate an httpx exception into a classified ``ToolFailure`` (the one place that does)."""
    where = f" ({url})" if url else ""
    if isinstance(exc, httpx.ConnectError) and any(isinstance(e, ssl.SSLCertVerificationError) for e in _cause_chain(exc)):
        return ToolFailure("permanent", f"TLS certificate verification failed{where}: {exc}; the server's certificate is not valid for this host")
    if isinstance(exc, httpx.HTTPStatusError):
        status = exc.response.status_code
        return ToolFailure(status_kind(status), f"HTTP {status}{where}")
    for cls, kind in HTTPX_ERROR_KINDS:
        if isinstance(exc, cls):
            return ToolFailure(kind, f"{type(exc).__name__}{where}: {str(exc) or 'no details'}")
    return ToolFailure("permanent", f"{type(exc).__name__}{where}: {exc}")


# --------------------------------------------------------------------------- the request


@dataclass
class _Fetched:
    status: int
    reason: str
    url: str
    address: str
    content_type: str
    body: bytes
    cut: bool
    encoding_note: str = ""


class BoundedBody:
    """Reads a raw body up to ``limit`` decoded bytes, inflating gzip/deflate with the same bound."""

    def __init__(self, encoding: str, limit: int) -> None:
        self.limit = limit
        self.body = bytearray()
        self.cut = False
        encoding = encoding.strip().lower()
        self.inflater = zlib.decompressobj(47) if encoding in ("gzip", "x-gzip", "deflate") else None
        self.opaque = encoding not in ("", "identity", "gzip", "x-gzip", "deflate")

    def feed(self, chunk: bytes) -> bool:
        """Add a raw chunk; False once the limit is reached (stop reading)."""
        room = self.limit - len(self.body)
        if self.inflater is not None:
            try:
                data = self.inflater.decompress(chunk, room)
            except zlib.error as exc:
                raise ToolFailure("permanent", f"the response body is not valid compressed data: {exc}") from None
            self.body += data
            if self.inflater.unconsumed_tail:
                self.cut = True
        else:
            self.body += chunk[:room]
            if len(chunk) > room:
                self.cut = True
        return not self.cut


async def _fetch(method: str, raw_url: str, policy: HttpPolicy, *, headers: dict[str, str], content: bytes | None) -> tuple[_Fetched, list[str]]:
    redirects: list[str] = []
    url = policy.gate.check_url(raw_url).url  # a bad URL is bad_args, a host off the allowlist denied
    sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers}
    async with policy.client() as client:
        for _hop in range(policy.max_redirects + 1):
            try:
                async with client.stream(method, url, headers=sent, content=content) as response:
                    location = response.headers.get("location")
                    if not (response.status_code in _REDIRECTS and location):
                        reader = BoundedBody(response.headers.get("content-encoding", ""), policy.max_bytes)
                        async for chunk in response.aiter_raw():
                            if not reader.feed(chunk):
                                break  # leaving the block closes the connection: the rest is never read
                        note = f"compressed with {response.headers['content-encoding']}" if reader.opaque else ""
                        fetched = _Fetched(
                            status=response.status_code, reason=response.reason_phrase, url=str(url), address=response.extensions[PINNED_ADDRESS],
                            content_type=response.headers.get("content-type", ""), body=bytes(reader.body), cut=reader.cut, encoding_note=note,
                        )  # fmt: skip
                        return fetched, redirects
            except httpx.HTTPError as exc:
                raise map_httpx_error(exc, str(url)) from None
            # A redirect: gate the next hop like the first one.
            status = response.status_code
            try:
                next_url = url.join(location)
            except httpx.InvalidURL as exc:
                raise ToolFailure("permanent", f"redirect from {url} to an invalid location `{location}`: {exc}") from None
            try:
                next_url = policy.gate.check_url(next_url, redirect=True).url
            except ToolFailure as exc:
                raise ToolFailure(exc.kind, f"redirect from {url} to {next_url} refused: {exc.message}") from None
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method, content = "GET", None
                sent = {k: v for k, v in sent.items() if k.lower() not in ("content-type",)}
            if (next_url.scheme, next_url.raw_host, next_url.port) != (url.scheme, url.raw_host, url.port):
                sent = {k: v for k, v in sent.items() if k.lower() not in _CROSS_ORIGIN_DROP}
            redirects.append(str(next_url))
            url = next_url
    raise ToolFailure("permanent", f"more than {policy.max_redirects} redirects (last: {url}); the server may be redirecting in a loop")


def _check_headers(headers: dict[str, str] | None) -> dict[str, str]:
    headers = dict(headers or {})
    refused = sorted(k for k in headers if k.lower() in _FORBIDDEN_HEADERS)
    if refused:
        raise ToolFailure("bad_args", f"header(s) `{', '.join(refused)}` are set by kasloop and may not be given")
    return headers


async def _request(method: str, url: str, ctx: ToolContext, *, headers: dict[str, str] | None = None, content: bytes | None = None) -> ToolResult:
    policy = await HttpPolicy.from_context(ctx).with_receivers(ctx)
    sent = _check_headers(headers)
    if method != "GET" and ctx.idempotency_key:
        sent["Idempotency-Key"] = ctx.idempotency_key
    try:
        fetched, redirects = await _fetch(method, url, policy, headers=sent, content=content)
    except httpx.HTTPError as exc:  # raised outside a request (e.g. while building it)
        raise map_httpx_error(exc, url) from None
    body = f"[content {fetched.encoding_note}, {len(fetched.body)} bytes; not shown]" if fetched.encoding_note else render_body(fetched.body, fetched.content_type, fetched.url)
    size = f"{len(fetched.body)} bytes" + (f", cut at {policy.max_bytes} bytes (the rest was not downloaded)" if fetched.cut else "")
    status_line = f"HTTP {fetched.status} {fetched.reason} · {fetched.content_type or 'no content type'} · {size} · {fetched.url}"
    metadata = {
        "status": fetched.status,
        "url": fetched.url,
        "address": fetched.address,
        "content_type": fetched.content_type,
        "bytes": len(fetched.body),
        "truncated": fetched.cut,
        "redirects": redirects,
    }
    if fetched.status >= 400:
        kind = status_kind(fetched.status)
        return ToolResult(ok=False, output=f"Error: {status_line}\n\n{body}", error_kind=kind, metadata=metadata)
    return ToolResult(ok=True, output=f"{status_line}\n\n{body}", metadata=metadata)


# --------------------------------------------------------------------------- tools


def _header_values(value: Any) -> Any:
    """Lenient headers: numbers and booleans become text; null, object and list values are dropped.

    Small models fill optional ``headers`` with ``null``, numbers, or an echo
    of the schema itself (``{"additionalProperties": {"type": "string"}}``).
    None of those can be a header value, and refusing the whole call for them
    made the 0.5B model give up on plain GETs.
    """
    if not isinstance(value, dict):
        return value
    return {
        key: (str(item).lower() if isinstance(item, bool) else str(item)) if isinstance(item, (int, float, bool)) else item
        for key, item in value.items()
        if item is not None and not isinstance(item, (dict, list))
    }


Headers = Annotated[dict[str, str] | None, BeforeValidator(_header_values)]
"""Request headers from the model, made lenient by :func:`_header_values`."""


class UrlArgs(BaseModel):
    url: str = Field(description="http:// or https:// URL.", json_schema_extra={"kasloop": "url"})
    headers: Headers = Field(default=None, description="Extra request headers.")


class BodyArgs(BaseModel):
    model_config = ConfigDict(populate_by_name=True)

    url: str = Field(description="http:// or https:// URL.", json_schema_extra={"kasloop": "url"})
    json_body: Any = Field(default=None, alias="json", description="JSON body to send.")
    data: str | dict[str, str] | None = Field(default=None, description="Raw text body, or form fields (not with json).")
    headers: Headers = Field(default=None, description="Extra request headers.")

    @model_validator(mode="after")
    def _one_body(self) -> BodyArgs:
        if self.json_body is not None and self.data is not None:
            raise ValueError("give either json or data, not both")
        return self


def _body(args: BodyArgs) -> tuple[bytes | None, dict[str, str]]:
    headers = dict(args.headers or {})
    names = {k.lower() for k in headers}
    if args.json_body is not None:
        request = httpx.Request("POST", "http://x/", json=args.json_body)
    elif isinstance(args.data, dict):
        request = httpx.Request("POST", "http://x/", data=args.data)
    elif isinstance(args.data, str):
        request = httpx.Request("POST", "http://x/", content=args.data.encode())
        if "content-type" not in names:
            headers["Content-Type"] = "text/plain; charset=utf-8"
    else:
        return None, headers
    if "content-type" not in names and "content-type" in request.headers:
        headers["Content-Type"] = request.headers["content-type"]
    return request.read(), headers


async def _get(args: UrlArgs, ctx: ToolContext) -> ToolResult:
    return await _request("GET", args.url, ctx, headers=args.headers)


async def _delete(args: UrlArgs, ctx: ToolContext) -> ToolResult:
    return await _request("DELETE", args.url, ctx, headers=args.headers)


async def _post(args: BodyArgs, ctx: ToolContext) -> ToolResult:
    content, headers = _body(args)
    return await _request("POST", args.url, ctx, headers=headers, content=content)


async def _put(args: BodyArgs, ctx: ToolContext) -> ToolResult:
    content, headers = _body(args)
    return await _request("PUT", args.url, ctx, headers=headers, content=content)


_TOOL_TIMEOUT = 120.0  # outer bound; each connect/read/write has http.timeout

HTTP_TOOLS: tuple[Tool, ...] = (
    Tool(name="http_get", description="Fetch a URL (HTML comes back as text).", args_model=UrlArgs, func=_get, risk="read", idempotent=True, timeout=_TOOL_TIMEOUT, family="http", alternates=("browser_open",)),
    Tool(name="http_post", description="Send a POST request with a JSON or text body.", args_model=BodyArgs, func=_post, risk="high", idempotent=False, timeout=_TOOL_TIMEOUT, family="http"),
    Tool(name="http_put", description="Send a PUT request with a JSON or text body.", args_model=BodyArgs, func=_put, risk="high", idempotent=True, timeout=_TOOL_TIMEOUT, family="http"),
    Tool(name="http_delete", description="Send a DELETE request.", args_model=UrlArgs, func=_delete, risk="high", idempotent=True, timeout=_TOOL_TIMEOUT, family="http"),
)
