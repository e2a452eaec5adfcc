"""The ``http`` family: GET, POST, PUT and DELETE through httpx, behind an address jail.

Every hop of a request (the first URL and each redirect) goes through the same
gate before any connection is made:

1. the URL must be ``http`` or ``https`` with a plain host name or address;
2. the host (and port) must match ``http.allow_domains`` when that list is set;
3. the host is resolved (``getaddrinfo``) and **every** address it resolves
   to must be public: loopback, private, link-local, multicast, reserved,
   unspecified, shared (100.64/10) addresses, and IPv6 forms that embed a
   blocked IPv4 one (``::ffff:127.0.0.1``, 6to4, NAT64, Teredo), are refused
   with ``denied`` unless allowed (see :func:`address_blocked`);
4. kasloop's own receivers (the approvals receiver and any address in
   ``approval_channels.receivers``, see :mod:`kasloop.channels.receivers`) are
   refused at every hop **even when** ``allow_private`` or ``allow_domains``
   would let the address through: approvals come only from humans;
5. the request is sent **to the checked address itself**: the URL's host is
   replaced by the IP, the ``Host`` header keeps the name, and for HTTPS the
   name is given to TLS as ``sni_hostname`` (httpcore uses it for SNI and for
   certificate verification). A DNS answer that changes between the check and
   the connection (DNS rebinding) therefore cannot send the request anywhere
   unchecked. No proxy is used (``trust_env=False``: a proxy would resolve the
   name again) and connections are not kept alive, so nothing is reused across
   hops.

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

Config (``ToolContext.extra["http"]``, all optional):

``allow_domains``  list of ``host``, ``*.domain`` (any subdomain) or an IP address, each
                   optionally with ``:port`` (``[v6]:port``); empty = any public host. An IP
                   address named here may be private (naming it is explicit); a host *name*
                   never unlocks a private address.
``allow_private``  ``true`` (any non-public address) or a list of networks
                   (``["10.0.0.0/8"]``); default false.
``max_bytes``      response size cap in bytes (2 MiB).
``timeout``        seconds for each connect / read / write (20).
``max_redirects``  redirects followed (5).
``ca_file``        PEM bundle of extra CAs to trust instead of the system's (internal CAs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import ipaddress
import re
import socket
import ssl
import zlib
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Annotated, Any, Literal
from urllib.parse import urljoin

import httpx
from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from kasloop.channels.receivers import Receiver, known_receivers
from kasloop.channels.receivers import refusal as receiver_refusal
from kasloop.tools.base import Tool, ToolContext, ToolFailure, ToolResult

__all__ = [
    "HTTPX_ERROR_KINDS",
    "HTTP_TOOLS",
    "AllowPrivate",
    "BoundedBody",
    "HostRule",
    "HttpPolicy",
    "address_blocked",
    "host_and_port",
    "html_to_text",
    "map_httpx_error",
    "private_networks",
    "resolve",
    "split_url",
    "stream_checked",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
ErrorKind = Literal["transient", "bad_args", "denied", "permanent", "timeout"]

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
_HOST_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")


# --------------------------------------------------------------------------- the address check


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def address_blocked(address: str | IPAddress, *, allow: Iterable[IPNetwork] = ()) -> str | None:
    """Why a connection to ``address`` is refused, or ``None`` if it is allowed.

    Refused: loopback, private, link-local, multicast, reserved, unspecified,
    shared and other non-global addresses, Teredo, and IPv6 addresses that
    embed a refused IPv4 one (IPv4-mapped, 6to4, NAT64). ``allow`` lists
    networks accepted anyway.
    """
    ip = ipaddress.ip_address(address) if isinstance(address, str) else address
    if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id:
        ip = ipaddress.IPv6Address(str(ip).split("%", 1)[0])
    allow = tuple(allow)
    if any(ip.version == net.version and ip in net for net in allow):
        return None
    if isinstance(ip, ipaddress.IPv6Address):
        embedded = _embedded_ipv4(ip)
        if embedded is not None:
            inner = address_blocked(embedded, allow=allow)
            return None if inner is None else f"{ip} embeds {inner}"
        if ip.teredo is not None:
            return f"{ip} is a Teredo tunnel address"
    checks = (
        ("is_unspecified", "unspecified"),
        ("is_loopback", "loopback"),
        ("is_link_local", "link-local"),
        ("is_multicast", "multicast"),
        ("is_private", "private"),
        ("is_reserved", "reserved"),
    )
    for attr, label in checks:
        if getattr(ip, attr):
            return f"{ip} is a {label} address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.is_site_local:
        return f"{ip} is a site-local address"
    if not ip.is_global:
        return f"{ip} is not a public address"
    return None


# --------------------------------------------------------------------------- policy


def _normal_host(host: str) -> str:
    """Lower-case ASCII (IDNA) form without a trailing dot, as httpx spells it."""
    host = host.strip().rstrip(".").lower()
    try:
        return ipaddress.ip_address(host.strip("[]")).compressed
    except ValueError:
        pass
    try:
        return httpx.URL(f"http://{host}/").raw_host.decode("ascii").rstrip(".")
    except (httpx.InvalidURL, UnicodeError):
        raise ValueError(f"`{host}` is not a host name") from None


def private_networks(allow_private: bool | Iterable[str]) -> tuple[IPNetwork, ...]:
    """The networks of an ``allow_private`` list (none for ``true`` / ``false``); ValueError names a bad one.

    Public so that every family reusing this jail (webhook, browser) reads its own
    ``allow_private`` exactly as ``http.allow_private`` is read, in one place.
    """
    if isinstance(allow_private, bool):
        return ()
    return tuple(ipaddress.ip_network(net, strict=False) for net in allow_private)


def _checked_private(value: bool | list[str]) -> bool | list[str]:
    private_networks(value)  # raises ValueError naming a bad network
    return value


AllowPrivate = Annotated[bool | list[str], AfterValidator(_checked_private)]
"""Type of an ``allow_private`` field in the pydantic settings of a family reusing this jail: checked when the config loads."""


@dataclass(frozen=True)
class HostRule:
    """One ``allow_domains`` entry: a host, ``*.domain`` or an IP address, optionally a port."""

    host: str
    port: int | None = None
    wildcard: bool = False

    @classmethod
    def parse(cls, entry: str) -> HostRule:
        text = entry.strip()
        port: int | None = None
        if text.startswith("["):
            host, _, rest = text[1:].partition("]")
            if rest:
                if not rest.startswith(":") or not rest[1:].isdigit():
                    raise ValueError(f"`{entry}` is not host[:port]")
                port = int(rest[1:])
        else:
            try:
                ipaddress.IPv6Address(text)
                host = text
            except ValueError:
                host, colon, port_text = text.rpartition(":")
                if not colon:
                    host = text
                elif port_text.isdigit():
                    port = int(port_text)
                else:
                    raise ValueError(f"`{entry}` is not host[:port]") from None
        wildcard = host.startswith("*.")
        if wildcard:
            host = host[2:]
        if not host or "*" in host or (port is not None and not 0 < port < 65536):
            raise ValueError(f"`{entry}` is not host[:port] or *.domain[:port]")
        return cls(host=_normal_host(host), port=port, wildcard=wildcard)

    @property
    def address(self) -> IPAddress | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    def matches(self, host: str, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        return host.endswith("." + self.host) if self.wildcard else host == self.host


@dataclass(frozen=True, kw_only=True)
class HttpPolicy:
    """The http jail of one call, read from ``ToolContext.extra["http"]`` (see the module docstring)."""

    allow_domains: tuple[HostRule, ...] = ()
    """Empty: any public host."""
    allow_private: bool = False
    """Any non-public address is allowed."""
    private_networks: tuple[IPNetwork, ...] = ()
    """Non-public networks allowed anyway (``allow_private`` list and IP entries of ``allow_domains``)."""
    max_bytes: int = DEFAULT_MAX_BYTES
    """Bytes of response body read at most."""
    timeout: float = DEFAULT_TIMEOUT
    """Seconds per connect, read and write."""
    max_redirects: int = DEFAULT_MAX_REDIRECTS
    ca_file: str | None = None
    receivers: tuple[Receiver, ...] = ()
    """kasloop's receivers from the database (this process's are always checked): refused whatever else allows."""

    @classmethod
    def from_context(cls, ctx: ToolContext) -> HttpPolicy:
        raw = ctx.extra.get("http") or {}
        if not isinstance(raw, dict):
            raise ToolFailure("permanent", f"http config must be a table of settings, got `{raw!r}`")
        unknown = set(raw) - {"allow_domains", "allow_private", "max_bytes", "timeout", "max_redirects", "ca_file"}
        if unknown:
            raise ToolFailure("permanent", f"unknown http config key(s) `{', '.join(sorted(unknown))}`; see kasloop.tools.http")
        try:
            entries = raw.get("allow_domains", [])
            if not isinstance(entries, (list, tuple)) or not all(isinstance(e, str) for e in entries):
                raise ValueError(f"`allow_domains` must be a list of strings, got `{entries!r}`")
            rules = tuple(HostRule.parse(e) for e in entries)
            private = raw.get("allow_private", False)
            networks: list[IPNetwork] = [ipaddress.ip_network(r.address) for r in rules if r.address is not None]
            if isinstance(private, (list, tuple)):
                networks += private_networks(private)
                private = False
            elif not isinstance(private, bool):
                raise ValueError(f"`allow_private` must be true, false or a list of networks, got `{private!r}`")
            numbers = {k: raw.get(k, d) for k, d in (("max_bytes", DEFAULT_MAX_BYTES), ("timeout", DEFAULT_TIMEOUT), ("max_redirects", DEFAULT_MAX_REDIRECTS))}
            for key, value in numbers.items():
                if isinstance(value, bool) or not isinstance(value, (int, float)) or value < (0 if key == "max_redirects" else 1e-9):
                    raise ValueError(f"`{key}` must be a positive number, got `{value!r}`")
            ca_file = raw.get("ca_file")
            if ca_file is not None and not isinstance(ca_file, str):
                raise ValueError(f"`ca_file` must be a path, got `{ca_file!r}`")
        except ValueError as exc:
            raise ToolFailure("permanent", f"bad http config: {exc}") from None
        return cls(
            allow_domains=rules,
            allow_private=private,
            private_networks=tuple(networks),
            max_bytes=int(numbers["max_bytes"]),
            timeout=float(numbers["timeout"]),
            max_redirects=int(numbers["max_redirects"]),
            ca_file=ca_file,
        )

    def check_host(self, host: str, port: int) -> None:
        if self.allow_domains and not any(rule.matches(host, port) for rule in self.allow_domains):
            raise ToolFailure("denied", f"host `{host}:{port}` is not on the http allowlist (http.allow_domains)")

    def check_receiver(self, ip: IPAddress, port: int) -> None:
        """Refuse kasloop's own receivers (``kasloop.channels.receivers``), even when private addresses are allowed."""
        reason = receiver_refusal(ip, port, self.receivers)
        if reason is not None:
            raise ToolFailure("denied", reason)

    async def with_receivers(self, ctx: ToolContext) -> HttpPolicy:
        """This policy knowing the receivers recorded in the call's database too."""
        found = await known_receivers(ctx)
        return dataclasses.replace(self, receivers=found) if found else self

    def check_address(self, ip: IPAddress) -> None:
        if self.allow_private:
            return
        reason = address_blocked(ip, allow=self.private_networks)
        if reason is not None:
            raise ToolFailure("denied", f"{reason}; it is refused unless allowed with http.allow_private")

    def ssl_context(self) -> ssl.SSLContext:
        try:
            return _ssl_context(self.ca_file)
        except (OSError, ssl.SSLError) as exc:
            raise ToolFailure("permanent", f"cannot load http.ca_file `{self.ca_file}`: {exc}") from None


@functools.lru_cache(maxsize=8)
def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Loading the system's CAs takes milliseconds: one context per CA file, shared by calls."""
    return ssl.create_default_context(cafile=ca_file)


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


# --------------------------------------------------------------------------- HTML and content


class _TextExtractor(HTMLParser):
    # Not "head": pages often leave it unclosed; what it holds is title (kept), script/style (skipped) and no text.
    _SKIP = frozenset({"script", "style", "noscript", "template", "svg", "iframe", "object", "canvas"})
    _BLOCK = frozenset(
        {"p", "div", "section", "article", "header", "footer", "nav", "main", "aside", "h1", "h2", "h3", "h4", "h5",
         "h6", "ul", "ol", "table", "tr", "form", "blockquote", "pre", "hr", "dl", "dt", "dd", "figure", "br", "title"}
    )  # fmt: skip

    def __init__(self, base_url: str) -> None:
        super().__init__(convert_charrefs=True)
        self.base_url = base_url
        self.parts: list[str] = []
        self.title: list[str] = []
        self.skip = 0
        self.in_title = False
        self.links: list[tuple[str, int]] = []  # href, index of the first text part of the link

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self.in_title = True
        elif tag in self._SKIP:
            self.skip += 1
        elif self.skip:
            return
        elif tag == "a":
            href = dict(attrs).get("href") or ""
            self.links.append((href, len(self.parts)))
        elif tag == "li":
            self.parts.append("\n- ")
        elif tag in ("td", "th"):
            self.parts.append(" | ")
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("br", "hr") and not self.skip:
            self.parts.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self.in_title = False
        elif tag in self._SKIP:
            self.skip = max(0, self.skip - 1)
        elif self.skip:
            return
        elif tag == "a" and self.links:
            href, start = self.links.pop()
            text = "".join(self.parts[start:]).strip()
            if href and not href.startswith(("javascript:", "#")) and text:
                del self.parts[start:]
                self.parts.append(f"[{' '.join(text.split())}]({urljoin(self.base_url, href)})")
        elif tag in self._BLOCK:
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if self.in_title:
            self.title.append(data)
        elif not self.skip:
            self.parts.append(data)


def html_to_text(html: str, base_url: str = "") -> str:
    """Readable text of an HTML page: title, text in reading order, links as ``[text](url)``."""
    parser = _TextExtractor(base_url)
    parser.feed(html)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parser.parts).splitlines()]
    text = re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()
    title = " ".join("".join(parser.title).split())
    return f"# {title}\n\n{text}" if title else text


_TEXT_TYPES = frozenset(
    {"application/json", "application/xml", "application/javascript", "application/ecmascript", "application/x-ndjson",
     "application/yaml", "application/x-yaml", "application/toml", "application/x-www-form-urlencoded", "application/graphql"}
)  # fmt: skip


def _decode(body: bytes, charset: str | None) -> str:
    try:
        return body.decode(charset or "utf-8", errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def render_body(body: bytes, content_type: str, url: str) -> str:
    """The body as the model should see it: text, HTML reduced to text, or a description."""
    mime, _, params = content_type.partition(";")
    mime = mime.strip().lower()
    match = re.search(r"charset=\"?([\w.:-]+)", params, re.IGNORECASE)
    charset = match.group(1) if match else None
    if not mime:
        head = body[:1024].lstrip().lower()
        if b"\x00" in head:
            return f"[binary content, {len(body)} bytes; not shown]"
        mime = "text/html" if head.startswith((b"<!doctype html", b"<html")) else "text/plain"
    if mime in ("text/html", "application/xhtml+xml"):
        return html_to_text(_decode(body, charset), url)
    if mime.startswith("text/") or mime in _TEXT_TYPES or mime.endswith(("+json", "+xml")):
        return _decode(body, charset)
    return f"[binary content ({mime}), {len(body)} bytes; not shown]"


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


def split_url(raw: str, *, hop: int) -> httpx.URL:
    """``raw`` as an http(s) URL with a plain host; refused as ``bad_args`` (the caller's URL, ``hop`` 0) or ``denied`` (a redirect's)."""
    kind: ErrorKind = "bad_args" if hop == 0 else "denied"
    try:
        url = httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise ToolFailure(kind, f"`{raw}` is not a valid URL: {exc}") from None
    if url.scheme not in ("http", "https"):
        raise ToolFailure(kind, f"`{raw}` is not an http(s) URL; only http:// and https:// are supported")
    host = url.raw_host.decode("ascii", errors="replace").rstrip(".").lower()
    if not host:
        raise ToolFailure(kind, f"`{raw}` has no host")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if not _HOST_RE.match(host):
            raise ToolFailure(kind, f"`{raw}` does not have a valid host name") from None
    return url


def host_and_port(url: httpx.URL) -> tuple[str, int]:
    """Host (normalised as ``allow_domains`` rules are) and port of ``url``, the pair :meth:`HttpPolicy.check_host` takes."""
    host = _normal_host(url.raw_host.decode("ascii"))
    return host, url.port or (443 if url.scheme == "https" else 80)


async def resolve(host: str, port: int, policy: HttpPolicy) -> list[IPAddress]:
    """Every address ``host`` resolves to, each checked; refuses the host if any is blocked."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        kind: ErrorKind = "transient" if exc.errno == socket.EAI_AGAIN else "permanent"
        raise ToolFailure(kind, f"cannot resolve `{host}`: {exc.strerror}") from None
    addresses: list[IPAddress] = []
    for info in infos:
        ip = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if ip not in addresses:
            addresses.append(ip)
    if not addresses:
        raise ToolFailure("permanent", f"`{host}` resolves to no address")
    for ip in addresses:
        try:
            policy.check_receiver(ip, port)
            policy.check_address(ip)
        except ToolFailure as exc:
            raise ToolFailure("denied", f"host `{host}` resolves to a refused address: {exc.message}") from None
    return addresses


@asynccontextmanager
async def stream_checked(
    client: httpx.AsyncClient, method: str, url: httpx.URL, host: str, addresses: Iterable[IPAddress], *, headers: dict[str, str], content: bytes | None
) -> AsyncIterator[httpx.Response]:
    """The response of ``method url`` sent to the first of the checked ``addresses`` that accepts a connection.

    The request goes to the address itself (``Host`` header and TLS SNI keep the name), so
    a DNS answer that changed since :func:`resolve` cannot redirect it. An address that
    refuses the connection costs nothing (nothing was sent) and the next is tried; any
    other httpx error, also while the caller reads the body, is a classified
    ``ToolFailure`` (:func:`map_httpx_error`). Shared by every family that sends through
    this jail (http, webhook).
    """
    last_error: Exception | None = None
    for ip in addresses:
        sent = {"User-Agent": USER_AGENT, "Accept-Encoding": "identity", **headers, "Host": url.netloc.decode("ascii")}
        extensions: dict[str, Any] = {"sni_hostname": host} if url.scheme == "https" and host != ip.compressed else {}
        try:
            async with client.stream(method, url.copy_with(host=ip.compressed), headers=sent, content=content, extensions=extensions) as response:
                yield response
                return
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            last_error = exc  # nothing was sent: try the host's next checked address
        except httpx.HTTPError as exc:
            raise map_httpx_error(exc, str(url)) from None
    assert last_error is not None
    raise map_httpx_error(last_error, str(url)) from None


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
    url = split_url(raw_url, hop=0)
    async with httpx.AsyncClient(
        trust_env=False,
        follow_redirects=False,
        timeout=httpx.Timeout(policy.timeout),
        verify=policy.ssl_context(),
        limits=httpx.Limits(max_keepalive_connections=0),
    ) as client:
        for hop in range(policy.max_redirects + 1):
            host, port = host_and_port(url)
            policy.check_host(host, port)
            addresses = await resolve(host, port, policy)
            async with stream_checked(client, method, url, host, addresses, headers=headers, content=content) as response:
                location = response.headers.get("location")
                if not (response.status_code in _REDIRECTS and location):
                    reader = BoundedBody(response.headers.get("content-encoding", ""), policy.max_bytes)
                    async for chunk in response.aiter_raw():
                        if not reader.feed(chunk):
                            break  # leaving the block closes the connection: the rest is never read
                    note = f"compressed with {response.headers['content-encoding']}" if reader.opaque else ""
                    fetched = _Fetched(
                        status=response.status_code, reason=response.reason_phrase, url=str(url), address=response.request.url.host,  # the checked address it went to
                        content_type=response.headers.get("content-type", ""), body=bytes(reader.body), cut=reader.cut, encoding_note=note,
                    )  # fmt: skip
                    return fetched, redirects
            # A redirect: gate the next hop like the first one.
            status = response.status_code
            try:
                next_url = url.join(location)
            except httpx.InvalidURL as exc:
                raise ToolFailure("permanent", f"redirect from {url} to an invalid location `{location}`: {exc}") from None
            try:
                next_url = split_url(str(next_url), hop=hop + 1)
                next_host, next_port = host_and_port(next_url)
                policy.check_host(next_host, next_port)
            except ToolFailure as exc:
                raise ToolFailure(exc.kind, f"redirect from {url} to {next_url} refused: {exc.message}") from None
            if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
                method, content = "GET", None
                headers = {k: v for k, v in headers.items() if k.lower() not in ("content-type",)}
            if (next_url.scheme, next_url.raw_host, next_url.port) != (url.scheme, url.raw_host, url.port):
                headers = {k: v for k, v in headers.items() if k.lower() not in _CROSS_ORIGIN_DROP}
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
