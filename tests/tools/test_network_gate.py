"""The one network gate (tools/network.py) that http, webhook, browser and email share.

Pure parts (the rule grammar, the address check) are tested directly; resolution and
pinning against real servers on 127.0.0.1 (and a name, ``localhost``, that resolves
there). Private and link-local literals outside 127.0.0.0/8 are only ever given to the
address check; no test connects anywhere but 127.0.0.1 / 127.0.0.2.
"""

from __future__ import annotations

import ipaddress
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest
from webpages import reply, serve

from kasloop.safety.receivers import Receiver
from kasloop.errors import ConfigError
from kasloop.tools.base import ToolContext, ToolFailure
from kasloop.tools.http import HttpPolicy
from kasloop.tools.network import (
    PINNED_ADDRESS,
    HostRule,
    NetworkGate,
    address_blocked,
    connect_pinned,
    parse_url,
)
from kasloop.tools.registry import check_tool_settings

IP = ipaddress.ip_address


# --------------------------------------------------------------------------- the allow_domains grammar


def test_an_exact_host_matches_itself_in_any_spelling_and_nothing_else() -> None:
    rule = HostRule.parse("Example.COM.")
    assert rule == HostRule("example.com") and str(rule) == "example.com"
    assert rule.matches("example.com", 443) and rule.matches("example.com", 8080)
    assert not rule.matches("www.example.com", 443) and not rule.matches("example.com.evil.net", 443)
    assert HostRule.parse("bücher.de") == HostRule("xn--bcher-kva.de")  # IDNA, as URLs spell it
    assert parse_url("https://Bücher.DE./x").host == "xn--bcher-kva.de"


def test_star_dot_domain_is_any_subdomain_but_not_the_apex() -> None:
    rule = HostRule.parse("*.example.com")
    assert rule.matches("a.example.com", 443) and rule.matches("a.b.example.com", 80)
    assert not rule.matches("example.com", 443), "the apex needs its own entry"
    assert not rule.matches("badexample.com", 443) and not rule.matches("example.com.evil.net", 443)
    assert rule.address is None


def test_globs_and_a_lone_star() -> None:
    assert HostRule.parse("api-*.example.com").matches("api-eu.example.com", 443)
    assert not HostRule.parse("api-*.example.com").matches("www.example.com", 443)
    assert HostRule.parse("host?.example.com").matches("host1.example.com", 443)
    assert HostRule.parse("host[12].example.com").matches("host2.example.com", 443)
    with pytest.raises(ValueError):
        HostRule.parse("[ab].example.com")  # a leading `[` opens an IPv6 address
    assert HostRule.parse("*.bücher.de") == HostRule("*.xn--bcher-kva.de")
    anything_on_8443 = HostRule.parse("*:8443")
    assert anything_on_8443.matches("example.org", 8443) and not anything_on_8443.matches("example.org", 443)
    assert HostRule.parse("*").matches("127.0.0.1", 80) and HostRule.parse("*").address is None


def test_ip_addresses_and_ports() -> None:
    assert HostRule.parse("10.0.0.5").address == IP("10.0.0.5")
    assert HostRule.parse("127.0.0.1:8080") == HostRule("127.0.0.1", 8080)
    assert HostRule.parse("[::1]:8080") == HostRule("::1", 8080) and str(HostRule("::1", 8080)) == "[::1]:8080"
    assert HostRule.parse("::1") == HostRule("::1") and HostRule.parse("[::1]") == HostRule("::1")
    assert HostRule.parse("[0:0::1]").address == IP("::1")  # compressed, as URLs are
    exact = HostRule.parse("example.com:8443")
    assert exact.matches("example.com", 8443) and not exact.matches("example.com", 443)


@pytest.mark.parametrize(
    ("entry", "hint"),
    [
        ("a:b:c", "write a host"), ("http://a.com", "write a host"), ("a b", "write a host"), ("a..b", "write a host"),
        ("[::1]x", "write a host"), ("", "write a host"), ("*..com", "write a host"), ("user@a.com", "write a host"),
        ("host:99999", "host:port"), ("a.com:0", "host:port"), ("a.com:x", "host:port"), ("a.com:", "host:port"),
    ],
)  # fmt: skip
def test_a_bad_entry_is_one_line_naming_it_and_what_to_write(entry: str, hint: str) -> None:
    with pytest.raises(ValueError) as info:
        HostRule.parse(entry)
    message = str(info.value)
    assert message.startswith(f"`{entry}` ") and hint in message and "\n" not in message


@pytest.mark.parametrize("family", ["http", "webhook", "browser"])
def test_bad_entries_fail_when_the_config_loads_with_the_same_line_in_every_family(family: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_tool_settings({family: {"allow_domains": ["example.com", "https://example.org/"]}}, Path("."))
    message = info.value.message
    assert f"tool_settings.{family}" in message and "allow_domains" in message and "\n" not in message
    assert "`https://example.org/` is not an allow_domains entry; write a host (`example.com`), `*.example.com` for its subdomains" in message
    assert "Value error" not in message
    check_tool_settings({family: {"allow_domains": ["example.com", "*.example.org:8443", "api-*.example.net", "[::1]:80"]}}, Path("."))


@pytest.mark.parametrize(
    "entry",
    ["example.com", "Example.COM.", "*.example.com", "api-*.example.com", "*", "*:8443", "10.0.0.5", "127.0.0.1:8080", "[::1]:8080", "::1", "bücher.de"],
)
def test_http_webhook_and_browser_accept_the_same_forms_and_build_the_same_rules(entry: str) -> None:
    from kasloop.tools.browser import BrowserSettings, browser_gate
    from kasloop.tools.webhook import WebhookSettings

    check_tool_settings({family: {"allow_domains": [entry]} for family in ("http", "webhook", "browser")}, Path("."))
    http = HttpPolicy.from_context(ToolContext(workspace=Path("."), extra={"http": {"allow_domains": [entry]}})).gate
    webhook = WebhookSettings(allow_domains=[entry]).policy().gate
    browser = browser_gate(BrowserSettings(allow_domains=[entry]))
    assert http.rules == webhook.rules == browser.rules == (HostRule.parse(entry),)
    assert http.private_networks == webhook.private_networks == browser.private_networks
    assert (http.section, webhook.section, browser.section) == ("http", "webhook", "browser")


def test_an_unknown_http_key_is_one_line_naming_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        check_tool_settings({"http": {"allow_domain": ["example.com"]}}, Path("."))
    message = info.value.message
    assert "tool_settings.http.allow_domain: unknown key; known keys: allow_domains, allow_private" in message and "\n" not in message
    for bad in ({"allow_private": "yes"}, {"timeout": True}, {"max_bytes": "10"}):
        with pytest.raises(ConfigError):
            check_tool_settings({"http": bad}, Path("."))


# --------------------------------------------------------------------------- the address check


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1", "10.255.255.255", "172.16.0.1", "172.20.1.1", "172.31.255.254", "192.168.0.1", "192.168.255.255",
        "169.254.169.254", "169.254.0.1", "127.0.0.1", "127.255.255.254", "0.0.0.0", "100.64.0.1", "224.0.0.1",
        "255.255.255.255", "192.0.2.1", "198.18.0.1", "240.0.0.1",
        "::1", "::", "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254", "fe80::1", "fe80::1%eth0",
        "fc00::1", "fd12:3456::1", "ff02::1", "fec0::1", "2002:7f00:1::1", "2002:a00:1::1", "64:ff9b::7f00:1",
        "64:ff9b::a9fe:a9fe", "2001:0:4136:e378:8000:63bf:3fff:fdd2", "::127.0.0.1", "2001:db8::1",
    ],
)  # fmt: skip
def test_address_check_refuses_non_public_addresses(address: str) -> None:
    assert address_blocked(address) is not None, address
    with pytest.raises(ToolFailure) as info:
        NetworkGate(section="http").check_address(IP(address.split("%")[0]), 80)
    assert info.value.kind == "denied" and "http.allow_private" in info.value.message


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "93.184.216.34", "172.15.255.255", "172.32.0.1", "192.169.0.1", "2606:4700:4700::1111", "64:ff9b::808:808", "2002:808:808::1"])
def test_address_check_accepts_public_addresses(address: str) -> None:
    assert address_blocked(address) is None
    NetworkGate(section="http").check_address(IP(address), 443)


def test_address_check_reasons_ipv4_mapped_ipv6_and_explicit_networks() -> None:
    assert address_blocked("127.0.0.1") == "127.0.0.1 is a loopback address"
    assert address_blocked("169.254.169.254") == "169.254.169.254 is a link-local address"
    assert address_blocked("0.0.0.0") == "0.0.0.0 is a unspecified address"
    assert address_blocked("::ffff:127.0.0.1") == "::ffff:7f00:1 embeds 127.0.0.1 is a loopback address"
    assert address_blocked("::ffff:192.168.1.1") == "::ffff:c0a8:101 embeds 192.168.1.1 is a private address"
    ten = [ipaddress.ip_network("10.0.0.0/8")]
    assert address_blocked("10.1.2.3", allow=ten) is None and address_blocked("::ffff:10.1.2.3", allow=ten) is None
    assert address_blocked("192.168.1.1", allow=ten) is not None
    NetworkGate(section="http", allow_private=True).check_address(IP("10.0.0.1"), 80)


def test_settings_build_the_gate_an_ip_entry_unlocks_its_address_a_name_does_not() -> None:
    gate = NetworkGate.from_settings("webhook", allow_domains=["127.0.0.1:80", "localhost", "*.example.org"], allow_private=["10.0.0.0/8"])
    assert gate.section == "webhook" and not gate.allow_private
    assert gate.private_networks == (ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("10.0.0.0/8"))
    gate.check_address(IP("127.0.0.1"), 80)
    with pytest.raises(ToolFailure, match="127.0.0.2 is a loopback address; allow it by naming the address in webhook.allow_domains or with webhook.allow_private"):
        gate.check_address(IP("127.0.0.2"), 80)
    assert NetworkGate.from_settings("http", allow_private=True).allow_private


# --------------------------------------------------------------------------- URLs and host rules


def test_check_url_takes_http_urls_and_refuses_hosts_off_the_allowlist() -> None:
    gate = NetworkGate.from_settings("http", allow_domains=["*.example.com", "127.0.0.1:8080"])
    target = gate.check_url("https://API.Example.com./v1?q=1")
    assert (target.host, target.port, target.where) == ("api.example.com", 443, "api.example.com:443")
    assert gate.check_url("http://127.0.0.1:8080/").port == 8080
    with pytest.raises(ToolFailure) as info:
        gate.check_url("http://127.0.0.1:8081/")
    assert info.value.kind == "denied"
    assert info.value.message == "host `127.0.0.1:8081` is not on the http allowlist; add `127.0.0.1` (or `127.0.0.1:8081`) to http.allow_domains to allow it"
    with pytest.raises(ToolFailure, match=r"host `example.com:443` is not on the http allowlist"):
        gate.check_url("https://example.com/")  # the apex is not a subdomain
    assert NetworkGate(section="http").check_url("http://[::1]:81/").where == "[::1]:81"


@pytest.mark.parametrize("url", ["ftp://127.0.0.1/", "file:///etc/passwd", "not a url", "http:///nohost", "http://exa mple.com/"])
def test_bad_urls_are_bad_args_from_the_caller_and_denied_from_a_redirect(url: str) -> None:
    gate = NetworkGate(section="http")
    with pytest.raises(ToolFailure) as given:
        gate.check_url(url)
    with pytest.raises(ToolFailure) as redirected:
        gate.check_url(url, redirect=True)
    assert (given.value.kind, redirected.value.kind) == ("bad_args", "denied")
    assert gate.check_url("ws://127.0.0.1/", schemes=("http", "https", "ws", "wss")).port == 80


# --------------------------------------------------------------------------- resolution


async def test_a_name_resolving_to_loopback_is_refused_unless_allowed() -> None:
    with pytest.raises(ToolFailure) as info:
        await NetworkGate(section="http").resolve("localhost", 8080)
    assert info.value.kind == "denied"
    assert info.value.message.startswith("host `localhost:8080` resolves to a refused address: ")
    assert "is a loopback address" in info.value.message and "http.allow_private" in info.value.message
    # A name on the allowlist does not unlock it either: only allow_private or the address itself does.
    named = NetworkGate.from_settings("http", allow_domains=["localhost"])
    assert await named.refusal("http://localhost:8080/") is not None
    loopback = ipaddress.ip_network("127.0.0.0/8")
    allowed = NetworkGate.from_settings("http", allow_private=["127.0.0.0/8", "::1/128"])
    addresses = await allowed.resolve("localhost", 8080)
    assert addresses and all(ip in loopback or ip == IP("::1") for ip in addresses)
    assert await NetworkGate(section="http", allow_private=True).resolve("localhost", 8080) == addresses
    assert await NetworkGate(section="http").refusal("http://localhost:8080/") is not None


async def test_an_address_is_its_own_answer_and_an_unknown_name_is_not_denied() -> None:
    assert await NetworkGate(section="http", allow_private=True).resolve("127.0.0.2", 80) == (IP("127.0.0.2"),)
    assert NetworkGate(section="http", allow_private=True).resolve_blocking("::ffff:127.0.0.1", 80) == (IP("::ffff:127.0.0.1"),)
    with pytest.raises(ToolFailure) as info:
        await NetworkGate(section="http").resolve("no-such-host.invalid", 80)
    assert info.value.kind in ("permanent", "transient") and "cannot resolve `no-such-host.invalid`" in info.value.message


async def test_kasloops_receivers_are_refused_even_with_allow_private() -> None:
    gate = NetworkGate(section="http", allow_private=True, receivers=(Receiver("127.0.0.1", 8787),))
    for host in ("127.0.0.1", "localhost", "::ffff:127.0.0.1", "0.0.0.0"):
        with pytest.raises(ToolFailure) as info:
            await gate.resolve(host, 8787)
        assert info.value.kind == "denied" and "kasloop's own approvals receiver" in info.value.message, host
    with pytest.raises(ToolFailure, match="kasloop's own approvals receiver"):
        gate.resolve_blocking("localhost", 8787)
    assert await gate.resolve("127.0.0.1", 8788) == (IP("127.0.0.1"),)  # another port is another server


# --------------------------------------------------------------------------- pinned connections


@pytest.fixture
def site() -> Iterator[tuple[int, list[dict[str, str]]]]:
    seen: list[dict[str, str]] = []

    def answer(handler: BaseHTTPRequestHandler) -> None:
        seen.append({"path": handler.path, "host": handler.headers.get("Host", "")})
        if handler.path == "/away":
            handler.send_response(302)
            handler.send_header("Location", f"http://localhost:{handler.server.server_address[1]}/landed")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        reply(handler, "hello", "text/plain")

    with serve(answer) as where:
        yield int(where.rsplit(":", 1)[1]), seen


async def test_the_gated_client_sends_to_the_checked_address_with_the_name_in_the_host_header(site: tuple[int, list[dict[str, str]]]) -> None:
    port, seen = site
    gate = NetworkGate.from_settings("mcp", allow_private=["127.0.0.1/32"])
    async with gate.client(timeout=5) as client:
        response = await client.get(f"http://localhost:{port}/hi")
    assert response.status_code == 200 and response.text == "hello"
    assert response.extensions[PINNED_ADDRESS] == "127.0.0.1"
    assert seen == [{"path": "/hi", "host": f"localhost:{port}"}]


async def test_the_gated_client_refuses_before_connecting_and_gates_every_redirect(site: tuple[int, list[dict[str, str]]]) -> None:
    port, seen = site
    with pytest.raises(ToolFailure) as info:
        async with NetworkGate(section="mcp").client(timeout=5) as client:
            await client.get(f"http://127.0.0.1:{port}/hi")
    assert info.value.kind == "denied" and "mcp.allow_private" in info.value.message
    assert seen == []
    # Redirects the client follows go through the gate too: only the address 127.0.0.1 is allowed, by
    # its literal, so the hop to `localhost` (same server) is refused after the first request.
    only_the_address = NetworkGate.from_settings("mcp", allow_domains=[f"127.0.0.1:{port}"])
    with pytest.raises(ToolFailure, match=f"host `localhost:{port}` is not on the mcp allowlist"):
        async with only_the_address.client(timeout=5, follow_redirects=True) as client:
            await client.get(f"http://127.0.0.1:{port}/away")
    assert [s["path"] for s in seen] == ["/away"]


async def test_an_address_that_refuses_the_connection_is_skipped(site: tuple[int, list[dict[str, str]]]) -> None:
    port, seen = site  # the server listens on 127.0.0.1 only: 127.0.0.2 refuses the connection
    sock = connect_pinned((IP("127.0.0.2"), IP("127.0.0.1")), port, 5)
    with sock:
        assert sock.getpeername() == ("127.0.0.1", port)
    with pytest.raises(OSError):
        connect_pinned((IP("127.0.0.2"),), port, 5)
    transport = NetworkGate(section="mcp", allow_private=True).transport()
    request = httpx.Request("GET", f"http://127.0.0.1:{port}/direct")
    response = await transport.handle_async_request(request)
    await response.aread()
    await transport.aclose()
    assert response.status_code == 200 and seen[-1]["path"] == "/direct"


def test_connect_pinned_serves_plain_socket_protocols() -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    got: list[bytes] = []

    def accept() -> None:
        conn, _ = listener.accept()
        with conn:
            got.append(conn.recv(16))

    thread = threading.Thread(target=accept)
    thread.start()
    addresses = NetworkGate(section="email.smtp", allow_private=True).resolve_blocking("localhost", port)
    with connect_pinned([ip for ip in addresses if ip.version == 4], port, 5) as sock:
        sock.sendall(b"EHLO x\r\n")
    thread.join(10)
    listener.close()
    assert got == [b"EHLO x\r\n"]


def test_http_policy_is_the_gate_plus_limits() -> None:
    policy = HttpPolicy.from_context(ToolContext(workspace=Path("."), extra={"http": {"allow_domains": ["*.example.com"], "timeout": 3}}))
    assert policy.gate.section == "http" and policy.gate.rules == (HostRule("*.example.com"),) and policy.timeout == 3.0
