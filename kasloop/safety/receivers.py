"""kasloop's own receivers: the addresses no tool may reach.

A receiver is a server that takes decisions for kasloop: the signed approvals
receiver (:func:`kasloop.channels.webhook.approvals_app`), and any other server
a person names (a LangGraph dev / Studio server resumes threads too). If a
tool could reach one, a model allowed to post to private addresses could talk
to the thing that approves its calls. kasloop knows their addresses three ways:

1. **config**: ``approval_channels.receivers = ["127.0.0.1:8787"]`` (host:port,
   ``[v6]:port``), declared in this process whenever a config naming them is
   loaded (``kasloop.toml``, a thread's stored policy);
2. **this process**: :func:`kasloop.channels.webhook.serve_approvals` and the
   receiver app itself declare the address they listen on;
3. **the database**: a receiver records its address in ``kasloop_receivers``
   while it listens (:func:`record`), so the tools of every process on the same
   database see it (:func:`known_receivers`).

The network gate (:class:`kasloop.tools.network.NetworkGate`, shared by http,
webhook, browser and email) calls :func:`refusal` for every address a tool
would connect to, after DNS and at every redirect, **whatever**
``allow_private`` or ``allow_domains`` say. A receiver bound to a wildcard
address (``0.0.0.0``, ``::``) is refused on every loopback, private or local
address at its port; ``0.0.0.0`` and loopback addresses always count as local.

Standard library only: the tools import it.
"""

from __future__ import annotations

import functools
import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

__all__ = ["Receiver", "declare", "declared", "forget", "known_receivers", "parse_address", "record", "refusal", "withdraw"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Receiver:
    """One receiver: where it listens (an address or a host name) and what it is."""

    host: str
    port: int
    label: str = "approvals receiver"


def parse_address(entry: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) → ``(host, port)``; ValueError naming the entry otherwise."""
    text = entry.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_text = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port_text = text.rpartition(":")
    if not host or not port_text.isdigit() or not 0 < int(port_text) < 65536 or any(c.isspace() for c in host):
        raise ValueError(f"`{entry}` is not host:port (e.g. 127.0.0.1:8787 or [::1]:8787)")
    return host.lower().rstrip("."), int(port_text)


_lock = threading.Lock()
_declared: dict[Receiver, None] = {}


def declare(host: str, port: int, label: str = "approvals receiver") -> None:
    """Make ``host:port`` a receiver for every gate of this process."""
    with _lock:
        _declared[Receiver(host.lower().rstrip("."), int(port), label)] = None


def withdraw(host: str, port: int, label: str = "approvals receiver") -> None:
    """Forget a receiver of this process (it stopped listening); declarations with other labels (config) stay."""
    with _lock:
        _declared.pop(Receiver(host.lower().rstrip("."), int(port), label), None)


def declared() -> tuple[Receiver, ...]:
    """The receivers this process knows (config and its own servers)."""
    with _lock:
        return tuple(_declared)


def _ip(text: str | IPAddress) -> IPAddress:
    ip = ipaddress.ip_address(text.split("%", 1)[0].strip("[]")) if isinstance(text, str) else text
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip


@functools.lru_cache(maxsize=64)
def _addresses(host: str) -> tuple[IPAddress, ...]:
    """The addresses a receiver's host stands for; a name that does not resolve stands for every local one (fail closed)."""
    try:
        return (_ip(host),)
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return (ipaddress.IPv4Address("0.0.0.0"),)
    return tuple(dict.fromkeys(_ip(str(info[4][0])) for info in infos)) or (ipaddress.IPv4Address("0.0.0.0"),)


@functools.lru_cache(maxsize=1)
def _local_addresses() -> frozenset[IPAddress]:
    """Addresses of this host (best effort): a wildcard-bound receiver answers on each of them."""
    found: set[IPAddress] = set()
    for name in {socket.gethostname(), socket.getfqdn()}:
        try:
            found.update(_ip(str(info[4][0])) for info in socket.getaddrinfo(name, None))
        except (socket.gaierror, UnicodeError, ValueError):
            continue
    return frozenset(found)


def _reaches(receiver: IPAddress, ip: IPAddress) -> bool:
    """Whether a connection to ``ip`` can land on a server bound to ``receiver`` (same port)."""
    if ip == receiver or ip.is_unspecified or ip.is_loopback:
        return True  # 0.0.0.0 connects to this host; a loopback port is the one local server on it
    if receiver.is_unspecified:
        return not ip.is_global or ip in _local_addresses()
    return False


def refusal(address: str | IPAddress, port: int, known: Iterable[Receiver] = ()) -> str | None:
    """Why a tool may not connect to ``address:port`` (it is one of kasloop's receivers), or None."""
    ip = _ip(address)
    for receiver in (*declared(), *known):
        if receiver.port != port:
            continue
        if any(_reaches(bound, ip) for bound in _addresses(receiver.host)):
            where = f"[{ip}]:{port}" if ip.version == 6 else f"{ip}:{port}"
            return (
                f"{where} is kasloop's own {receiver.label} ({receiver.host}:{receiver.port}); no tool may reach kasloop's receivers "
                "(approvals come only from humans), whatever allow_private says"
            )
    return None


# --------------------------------------------------------------------------- the database registry

# Table ``kasloop_receivers``, declared in ``kasloop.checkpoints.schema``: created when the database opens.


async def record(db: Any, host: str, port: int, label: str = "approvals receiver") -> None:
    """Record a listening receiver in the database (every process's tools on it refuse its address)."""
    await db.execute(
        "INSERT INTO kasloop_receivers (address, host, port, label, node, pid, started_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (address) DO UPDATE SET label = excluded.label, node = excluded.node, pid = excluded.pid, started_at = excluded.started_at",
        (f"{host}:{port}", host, port, label, socket.gethostname(), os.getpid(), time.time()),
    )


async def forget(db: Any, host: str, port: int) -> None:
    """Remove a receiver that stopped listening."""
    await db.execute("DELETE FROM kasloop_receivers WHERE address = ?", (f"{host}:{port}",))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def stored(db: Any) -> tuple[Receiver, ...]:
    """The receivers recorded in the database (rows of dead processes on this host are dropped)."""
    rows = await db.fetchall("SELECT address, host, port, label, node, pid FROM kasloop_receivers")
    node = socket.gethostname()
    found: list[Receiver] = []
    for row in rows:
        if row["node"] == node and not _alive(int(row["pid"])):
            await db.execute("DELETE FROM kasloop_receivers WHERE address = ? AND pid = ?", (row["address"], row["pid"]))
            continue
        found.append(Receiver(str(row["host"]), int(row["port"]), str(row["label"])))
    return tuple(found)


async def known_receivers(ctx: Any) -> tuple[Receiver, ...]:
    """The receivers a tool call must not reach besides this process's: those of its database, if it has one."""
    resources = getattr(ctx, "resources", None)
    database = getattr(resources, "database", None)
    extra = tuple(getattr(resources, "receivers", ()) or ())
    if database is None:
        return extra
    return (*extra, *await stored(database))
