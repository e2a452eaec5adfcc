"""The one network gate: every connection a tool makes goes through :class:`NetworkGate`.

http, webhook, the browser's request interception and email (SMTP/IMAP) used
to carry their own copies of the address check, the allowlist grammar and the
resolver; a fix to one did not reach the others. They now share this module,
and so will the MCP HTTP client (:meth:`NetworkGate.client` is an ordinary
``httpx.AsyncClient`` whose every request is gated and pinned).

A gate answers three questions, in this order:

1. **May this URL be asked for?** (:meth:`NetworkGate.check_url`) The scheme
   must be one the caller allows (``http``/``https``), the host a plain name
   or address, and the host and port must match ``allow_domains`` when that
   list is set.
2. **Where does the host lead?** (:meth:`NetworkGate.resolve`) The host is
   resolved once and **every** address it resolves to is checked: kasloop's
   own receivers (:mod:`kasloop.safety.receivers`) are refused whatever
   else allows, and loopback, private, link-local, multicast, reserved,
   unspecified, shared (100.64/10) and other non-public addresses, and IPv6
   forms that embed a refused IPv4 one (``::ffff:127.0.0.1``, 6to4, NAT64,
   Teredo), are refused unless ``allow_private`` allows them
   (:func:`address_blocked`).
3. **Connect to what was checked.** The caller connects to the returned
   addresses themselves, never to the name again, so a DNS answer that
   changes between the check and the connection (DNS rebinding) cannot send
   it anywhere unchecked: :class:`GatedTransport` for httpx (the name stays in
   the ``Host`` header and in TLS SNI and certificate checks),
   :func:`connect_pinned` for plain sockets (SMTP, IMAP). Chromium resolves
   names itself, so the browser checks every request but cannot pin.

``allow_domains`` grammar (one for every family; :meth:`HostRule.parse`)
-------------------------------------------------------------------------
Each entry is one host pattern, optionally followed by ``:port``:

``example.com``       exactly that host (any letter case; a trailing dot and
                      IDNA spelling are normalised: ``bücher.de`` = ``xn--bcher-kva.de``).
``*.example.com``     any subdomain, at any depth (``a.example.com``,
                      ``a.b.example.com``); **not** ``example.com`` itself: list both.
``api-*.example.com`` a glob: ``*`` is any run of characters (dots included),
                      ``?`` one character, ``[abc]`` one of a set (not first: a leading
                      ``[`` opens an IPv6 address); ``*`` alone is any host.
``10.0.0.5``          an IP address (``[::1]`` or ``::1`` for IPv6). Naming an address
                      is explicit, so it may be private; a host *name* or a glob never
                      unlocks a private address.
``…:8443``            only that port (``example.com:8443``, ``[::1]:8080``); without
                      a port any port matches.

An empty list means any public host. A bad entry fails when the config loads
with one line naming it and what to write instead.
"""

# Long on purpose (about 600 lines): this is the one network gate. The address check, the host rules, resolution
# and connecting to the checked address are one job, the jail every family's connections go through (issue 16:
# "one module for address checks, host rules and resolution"); split apart, a fix to the jail would again have
# several places to reach, which is what this module replaced.

from __future__ import annotations

import asyncio
import fnmatch
import functools
import ipaddress
import re
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Annotated, Any

import httpx
from pydantic import AfterValidator, BeforeValidator
from pydantic_core import PydanticCustomError

from kasloop.safety.receivers import Receiver, known_receivers
from kasloop.safety.receivers import refusal as receiver_refusal
from kasloop.tools.base import ToolFailure
from kasloop.tools.base import ToolErrorKind as ErrorKind

__all__ = [
    "HTTP_SCHEMES",
    "PINNED_ADDRESS",
    "AllowDomains",
    "AllowPrivate",
    "GatedTransport",
    "HostRule",
    "IPAddress",
    "IPNetwork",
    "NetworkGate",
    "Target",
    "address_blocked",
    "connect_pinned",
    "parse_url",
    "private_networks",
    "tls_context",
]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

HTTP_SCHEMES: tuple[str, ...] = ("http", "https")
PINNED_ADDRESS = "kasloop.address"
"""Key of ``httpx.Response.extensions`` holding the checked address a :class:`GatedTransport` request went to."""

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}
_HOST_RE = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,62})(\.[a-z0-9_]([a-z0-9_-]{0,62}))*$")
_GLOB_RE = re.compile(r"^[a-z0-9_*?\[\]!-]+(\.[a-z0-9_*?\[\]!-]+)*$")
_GLOB_CHARS = frozenset("*?[")
_V6_GLOB_RE = re.compile(r"^[0-9a-f:*?\[\]!-]*:[0-9a-f:*?\[\]!-]*$")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_GRAMMAR = (
    "write a host (`example.com`), `*.example.com` for its subdomains, a glob (`api-*.example.com`) "
    "or an IP address (`10.0.0.5`, `[::1]`), each optionally followed by `:port`"
)


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
    embed a refused IPv4 one (IPv4-mapped, 6to4, NAT64): a server reachable
    only from inside (a router page, a cloud metadata service at
    169.254.169.254, a database on localhost) must not be one tool call away.
    ``allow`` lists networks accepted anyway.
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


def private_networks(allow_private: bool | Iterable[str]) -> tuple[IPNetwork, ...]:
    """The networks of an ``allow_private`` list (none for ``true`` / ``false``); ValueError names a bad one."""
    if isinstance(allow_private, bool):
        return ()
    return tuple(ipaddress.ip_network(net, strict=False) for net in allow_private)


def _private_shape(value: Any) -> Any:
    if isinstance(value, bool) or (isinstance(value, list) and all(isinstance(v, str) for v in value)):
        return value
    raise PydanticCustomError(
        "allow_private", "must be true, false or a list of networks such as [\"10.0.0.0/8\"], got `{value}`", {"value": repr(value)}
    )


def _checked_private(value: bool | list[str]) -> bool | list[str]:
    for net in [] if isinstance(value, bool) else value:
        try:
            ipaddress.ip_network(net, strict=False)
        except ValueError:
            raise PydanticCustomError("allow_private", "`{net}` is not a network; write e.g. `10.0.0.0/8`, `192.168.1.5` or `fd00::/8`", {"net": net}) from None
    return value


AllowPrivate = Annotated[bool | list[str], BeforeValidator(_private_shape), AfterValidator(_checked_private)]
"""Type of an ``allow_private`` setting: ``true`` (any non-public address) or a list of networks
(``["10.0.0.0/8"]``), checked when the config loads. Strict: ``"yes"`` is a typo, not ``true``."""


# --------------------------------------------------------------------------- host rules


def _literal(host: str) -> IPAddress | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None


def _normal_host(host: str) -> str:
    """Lower-case ASCII (IDNA) form without a trailing dot, as httpx spells it; IPs compressed."""
    host = host.strip().rstrip(".").lower()
    ip = _literal(host)
    if ip is not None:
        return ip.compressed
    if not host or any(c in host for c in ":/@ \\[]"):
        raise ValueError(f"`{host}` is not a host name")
    try:
        return httpx.URL(f"http://{host}/").raw_host.decode("ascii").rstrip(".")
    except (httpx.InvalidURL, UnicodeError):
        raise ValueError(f"`{host}` is not a host name") from None


def _where(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


@dataclass(frozen=True)
class HostRule:
    """One ``allow_domains`` entry: a host pattern (name, ``*.domain``, glob or IP address), optionally a port.

    See the module docstring for the grammar; :meth:`parse` is the only way in.
    """

    pattern: str
    """Normalised host, IP address or glob (lower case, IDNA, no trailing dot)."""
    port: int | None = None
    """Only this port; ``None``: any."""

    @classmethod
    def parse(cls, entry: str) -> HostRule:
        """One entry as written in ``allow_domains``.

        Raises:
            ValueError: one line naming the entry and what to write instead.
        """
        text = entry.strip().lower() if isinstance(entry, str) else ""
        if not text or any(c in text for c in "/@ \\\t"):
            raise ValueError(f"`{entry}` is not an allow_domains entry; {_GRAMMAR}")
        port_text: str | None = None
        if text.startswith("["):  # [v6] or [v6]:port
            host, closed, rest = text[1:].partition("]")
            if not closed or _literal(host) is None or (rest and not rest.startswith(":")):
                raise ValueError(f"`{entry}` is not an allow_domains entry; {_GRAMMAR}")
            port_text = rest[1:] if rest else None
        elif text.count(":") > 1:
            host = text  # a bare IPv6 address (or IPv6 glob): a port needs brackets
        else:
            host, colon, rest = text.partition(":")
            port_text = rest if colon else None
        port: int | None = None
        if port_text is not None:
            if not port_text.isdigit() or not 0 < int(port_text) < 65536:
                raise ValueError(f"`{entry}` has a bad port (1-65535); write `host` or `host:port`, e.g. `example.com:8443`")
            port = int(port_text)
        host = host.rstrip(".")
        try:
            if not _GLOB_CHARS & set(host):
                pattern = _normal_host(host)
                if _literal(pattern) is not None or _HOST_RE.match(pattern):
                    return cls(pattern=pattern, port=port)
                raise ValueError(pattern)
            if _V6_GLOB_RE.match(host):
                return cls(pattern=host, port=port)
            # A glob of a name: the labels without wildcards get their IDNA spelling, as host names do.
            pattern = ".".join(label if _GLOB_CHARS & set(label) else _normal_host(label) for label in host.split("."))
            if _GLOB_RE.match(pattern):
                return cls(pattern=pattern, port=port)
        except ValueError:
            pass
        raise ValueError(f"`{entry}` is not an allow_domains entry; {_GRAMMAR}")

    @property
    def glob(self) -> bool:
        return bool(_GLOB_CHARS & set(self.pattern))

    @property
    def address(self) -> IPAddress | None:
        """The IP address this rule names exactly (it unlocks that address even if private), or None."""
        return None if self.glob else _literal(self.pattern)

    def matches(self, host: str, port: int) -> bool:
        """Whether ``host`` (normalised as :func:`parse_url` returns it) and ``port`` fall under this rule."""
        if self.port is not None and self.port != port:
            return False
        return fnmatch.fnmatchcase(host, self.pattern) if self.glob else host == self.pattern

    def __str__(self) -> str:
        return self.pattern if self.port is None else _where(self.pattern, self.port)


def _checked_rule(entry: str) -> str:
    try:
        HostRule.parse(entry)
    except ValueError as exc:
        # A custom error keeps pydantic from prefixing "Value error, ": the line stays the one above.
        raise PydanticCustomError("allow_domains", "{problem}", {"problem": str(exc)}) from None
    return entry


AllowDomains = list[Annotated[str, AfterValidator(_checked_rule)]]
"""Type of an ``allow_domains`` setting, checked entry by entry when the config loads (see the module docstring)."""


# --------------------------------------------------------------------------- URLs


@dataclass(frozen=True)
class Target:
    """A URL that passed the gate's URL check: the parsed URL and its normalised host and port."""

    url: httpx.URL
    host: str
    """Lower-case ASCII host without a trailing dot; IP addresses compressed, without brackets."""
    port: int

    @property
    def where(self) -> str:
        """``host:port`` (``[v6]:port``), as messages show it."""
        return _where(self.host, self.port)


def parse_url(raw: str | httpx.URL, *, schemes: Iterable[str] = HTTP_SCHEMES, redirect: bool = False) -> Target:
    """``raw`` as a URL of one of ``schemes`` with a plain host name or address.

    Args:
        raw: the URL.
        schemes: schemes accepted (``http``/``https`` unless told; the browser adds ``ws``/``wss``).
        redirect: the URL came from a server (a redirect's ``Location``), not from the caller: a bad
            one is then ``denied`` (the far side chose it) instead of ``bad_args`` (the model's mistake).

    Raises:
        ToolFailure: ``bad_args`` (or ``denied`` for a redirect) naming the URL.
    """
    kind: ErrorKind = "denied" if redirect else "bad_args"
    allowed = tuple(schemes)
    try:
        url = raw if isinstance(raw, httpx.URL) else httpx.URL(raw)
    except httpx.InvalidURL as exc:
        raise ToolFailure(kind, f"`{raw}` is not a valid URL: {exc}") from None
    if url.scheme not in allowed:
        names = " and ".join(f"{s}://" for s in allowed) if len(allowed) <= 2 else ", ".join(f"{s}://" for s in allowed)
        raise ToolFailure(kind, f"`{raw}` is not an http(s) URL; only {names} are supported")
    host = url.raw_host.decode("ascii", errors="replace").rstrip(".").lower()
    if not host:
        raise ToolFailure(kind, f"`{raw}` has no host")
    ip = _literal(host)
    if ip is not None:
        host = ip.compressed
    elif not _HOST_RE.match(host):
        raise ToolFailure(kind, f"`{raw}` does not have a valid host name")
    return Target(url=url, host=host, port=url.port or _DEFAULT_PORTS.get(url.scheme, 80))


# --------------------------------------------------------------------------- the gate


@dataclass(frozen=True, kw_only=True)
class NetworkGate:
    """Where one family's tools may connect (built from its settings with :meth:`from_settings`).

    Every method raises :class:`~kasloop.tools.base.ToolFailure` with kind ``denied`` for a refusal,
    and names the settings (``{section}.allow_domains``, ``{section}.allow_private``) that would allow
    it, so a person reading the error knows which line of ``kasloop.toml`` to change.
    """

    section: str
    """The settings section messages name: ``http``, ``webhook``, ``browser``, ``email.smtp``..."""
    rules: tuple[HostRule, ...] = ()
    """``allow_domains``; empty: any host (public addresses only, unless ``allow_private``)."""
    allow_private: bool = False
    """Any non-public address is allowed (``allow_private = true``; also used where a person names the
    server in config, as for email)."""
    private_networks: tuple[IPNetwork, ...] = ()
    """Non-public networks allowed anyway: an ``allow_private`` list and the IP entries of ``allow_domains``."""
    receivers: tuple[Receiver, ...] = ()
    """kasloop's receivers recorded in the call's database (this process's are always checked): refused
    whatever else allows, because approvals come only from humans."""

    @classmethod
    def from_settings(
        cls, section: str, *, allow_domains: Iterable[str] = (), allow_private: bool | Iterable[str] = False, receivers: Iterable[Receiver] = ()
    ) -> NetworkGate:
        """The gate of a family's ``allow_domains`` and ``allow_private`` settings.

        Raises:
            ValueError: a bad entry (settings models check them at config load, so a tool never sees one).
        """
        rules = tuple(HostRule.parse(entry) for entry in allow_domains)
        networks: list[IPNetwork] = [ipaddress.ip_network(r.address) for r in rules if r.address is not None]
        networks += private_networks(allow_private if isinstance(allow_private, bool) else list(allow_private))
        return cls(section=section, rules=rules, allow_private=allow_private is True, private_networks=tuple(networks), receivers=tuple(receivers))

    async def with_receivers(self, ctx: Any) -> NetworkGate:
        """This gate knowing the receivers recorded in the call's database too (``ctx`` is the ``ToolContext``)."""
        found = await known_receivers(ctx)
        return replace(self, receivers=(*self.receivers, *found)) if found else self

    # -- 1. the URL and its host

    def check_host(self, host: str, port: int) -> None:
        """Refuse ``host:port`` unless it matches ``allow_domains`` (any host when that list is empty)."""
        if self.rules and not any(rule.matches(host, port) for rule in self.rules):
            where = _where(host, port)
            raise ToolFailure(
                "denied", f"host `{where}` is not on the {self.section} allowlist; add `{host}` (or `{where}`) to {self.section}.allow_domains to allow it"
            )

    def check_url(self, raw: str | httpx.URL, *, schemes: Iterable[str] = HTTP_SCHEMES, redirect: bool = False) -> Target:
        """:func:`parse_url`, then :meth:`check_host`: whether ``raw`` may be asked for at all (no DNS yet)."""
        target = parse_url(raw, schemes=schemes, redirect=redirect)
        self.check_host(target.host, target.port)
        return target

    # -- 2. the addresses

    def address_refusal(self, ip: IPAddress, port: int) -> str | None:
        """Why ``ip:port`` may not be connected to (a receiver, or a refused address), or None."""
        mine = receiver_refusal(ip, port, self.receivers)
        if mine is not None:  # even with allow_private: approvals come only from humans
            return mine
        if self.allow_private:
            return None
        reason = address_blocked(ip, allow=self.private_networks)
        if reason is None:
            return None
        return f"{reason}; allow it by naming the address in {self.section}.allow_domains or with {self.section}.allow_private"

    def check_address(self, ip: IPAddress, port: int) -> None:
        """Raise ``denied`` if ``ip:port`` is refused (see :meth:`address_refusal`)."""
        reason = self.address_refusal(ip, port)
        if reason is not None:
            raise ToolFailure("denied", reason)

    def _checked(self, host: str, port: int, found: Iterable[IPAddress]) -> tuple[IPAddress, ...]:
        addresses = tuple(dict.fromkeys(found))
        if not addresses:
            raise ToolFailure("permanent", f"`{host}` resolves to no address")
        for ip in addresses:
            reason = self.address_refusal(ip, port)
            if reason is not None:
                raise ToolFailure("denied", f"host `{_where(host, port)}` resolves to a refused address: {reason}")
        return addresses

    async def resolve(self, host: str, port: int) -> tuple[IPAddress, ...]:
        """Every address ``host`` resolves to, each checked; connect only to these (DNS rebinding).

        The host is resolved once: connecting to the name again would ask DNS again, and the second
        answer is the one an attacker controls. An IP address is its own answer (no DNS).

        Raises:
            ToolFailure: ``denied`` if any address is refused (one bad address refuses the host: which
                one a client would pick is not ours to know); ``transient`` / ``permanent`` if the name
                does not resolve.
        """
        literal = _literal(host)
        if literal is not None:
            return self._checked(host, port, (literal,))
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise _unresolved(host, exc) from None
        return self._checked(host, port, _addresses(infos))

    def resolve_blocking(self, host: str, port: int) -> tuple[IPAddress, ...]:
        """:meth:`resolve` for code that already runs in a worker thread (smtplib, imaplib)."""
        literal = _literal(host)
        if literal is not None:
            return self._checked(host, port, (literal,))
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise _unresolved(host, exc) from None
        return self._checked(host, port, _addresses(infos))

    async def admit(self, raw: str | httpx.URL, *, schemes: Iterable[str] = HTTP_SCHEMES, redirect: bool = False) -> tuple[Target, tuple[IPAddress, ...]]:
        """:meth:`check_url` and :meth:`resolve` in one: the target and the checked addresses to connect to."""
        target = self.check_url(raw, schemes=schemes, redirect=redirect)
        return target, await self.resolve(target.host, target.port)

    async def refusal(self, raw: str | httpx.URL, *, schemes: Iterable[str] = HTTP_SCHEMES) -> str | None:
        """Why ``raw`` may not be requested (one line naming the fix), or None: :meth:`admit` as an answer.

        For callers that decide rather than fail, such as the browser's request interception.
        """
        try:
            await self.admit(raw, schemes=schemes)
        except ToolFailure as exc:
            return exc.message
        return None

    # -- 3. connecting

    def transport(self, *, ssl_context: ssl.SSLContext | None = None) -> GatedTransport:
        """An httpx transport that sends each request only to addresses this gate checked."""
        return GatedTransport(self, ssl_context=ssl_context)

    def client(
        self,
        *,
        timeout: float | httpx.Timeout,
        ssl_context: ssl.SSLContext | None = None,
        headers: dict[str, str] | None = None,
        auth: httpx.Auth | None = None,
        follow_redirects: bool = False,
    ) -> httpx.AsyncClient:
        """An ``httpx.AsyncClient`` behind this gate: every request (and every redirect it follows) is checked and pinned.

        No proxy and no ``.netrc`` (``trust_env=False``: a proxy would resolve the name again).
        The signature fits an MCP client's ``httpx_client_factory(headers, timeout, auth)``.
        """
        return httpx.AsyncClient(
            transport=self.transport(ssl_context=ssl_context),
            trust_env=False,
            follow_redirects=follow_redirects,
            timeout=timeout if isinstance(timeout, httpx.Timeout) else httpx.Timeout(timeout),
            headers=headers,
            auth=auth,
        )


def _addresses(infos: Iterable[Any]) -> list[IPAddress]:
    return [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]


def _unresolved(host: str, exc: BaseException) -> ToolFailure:
    if isinstance(exc, socket.gaierror):
        kind: ErrorKind = "transient" if exc.errno == socket.EAI_AGAIN else "permanent"
        return ToolFailure(kind, f"cannot resolve `{host}`: {exc.strerror}")
    return ToolFailure("permanent", f"cannot resolve `{host}`: not a valid host name")


class GatedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends every request only to an address its gate checked.

    For each request: :meth:`NetworkGate.check_url`, :meth:`NetworkGate.resolve`, then the request
    goes **to the checked address itself**: the URL's host is replaced by the IP, the ``Host`` header
    keeps the name, and for HTTPS the name is given to TLS as ``sni_hostname`` (httpcore uses it for
    SNI and for certificate verification). An address that refuses the connection costs nothing
    (nothing was sent) and the next one is tried. Connections are never kept alive: the pool keys
    them by IP, so a kept connection verified for one name could otherwise carry a request for
    another name on the same address. The address used is in ``response.extensions[PINNED_ADDRESS]``.
    """

    def __init__(self, gate: NetworkGate, *, ssl_context: ssl.SSLContext | None = None) -> None:
        self.gate = gate
        self._inner = httpx.AsyncHTTPTransport(
            verify=ssl_context if ssl_context is not None else tls_context(None), trust_env=False, limits=httpx.Limits(max_keepalive_connections=0)
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        target = self.gate.check_url(request.url)
        addresses = await self.gate.resolve(target.host, target.port)
        last_error: Exception | None = None
        for ip in addresses:
            extensions = dict(request.extensions)
            if request.url.scheme == "https" and target.host != ip.compressed:
                extensions["sni_hostname"] = target.host
            pinned = httpx.Request(request.method, request.url.copy_with(host=ip.compressed), headers=request.headers, stream=request.stream, extensions=extensions)
            try:
                response = await self._inner.handle_async_request(pinned)
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                last_error = exc  # nothing was sent: try the host's next checked address
                continue
            response.extensions[PINNED_ADDRESS] = ip.compressed
            return response
        assert last_error is not None
        raise last_error

    async def aclose(self) -> None:
        await self._inner.aclose()


def connect_pinned(addresses: Iterable[IPAddress], port: int, timeout: float | None, source_address: tuple[str, int] | None = None) -> socket.socket:
    """A TCP connection to the first of the checked ``addresses`` that accepts one (for SMTP, IMAP and other socket protocols).

    Raises:
        OSError: the last connection error when none accepts (as ``socket.create_connection`` does).
    """
    last_error: OSError | None = None
    for ip in addresses:
        try:
            return socket.create_connection((ip.compressed, port), timeout if timeout is not None else socket.getdefaulttimeout(), source_address)
        except OSError as exc:
            last_error = exc
    if last_error is None:
        raise OSError(f"no address to connect to on port {port}")
    raise last_error


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_file)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The TLS context trusting ``ca_file`` (a PEM bundle), or the system's CAs for ``None``.

    Loading the system's CAs takes milliseconds: one context per CA file, shared by calls.

    Raises:
        OSError, ssl.SSLError: the file cannot be read or is not PEM.
    """
    return _tls_context(ca_file)

