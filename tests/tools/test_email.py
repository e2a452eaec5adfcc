"""The ``email`` family (tools/email.py) against real mail servers on 127.0.0.1.

SMTP is a real aiosmtpd server that records every greeting and every accepted
message; IMAP is a real Dovecot (``dovecot-imapd``) started for this module.
Refusals are checked on the far side: no greeting, no message, no flag change.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import datetime, timezone
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from mailservers import Cert, Dovecot, Mailbox, SmtpServer, free_port, make_cert, start_dovecot, start_smtp

import kasloop.tools.email as email_tools
from kasloop.tools.base import Tool, ToolContext, ToolResult, openai_schema, run_tool
from kasloop.tools.email import EMAIL_TOOLS, EmailSettings, imap_quote, message_id_for, parse_addresses, search_criteria

TOOLS: dict[str, Tool] = {tool.name: tool for tool in EMAIL_TOOLS}
KEY = "ksl-0123456789abcdef0123456789abcdef01234567"
SENDER = "Kas Agent <agent@example.com>"
SMTP_USER, SMTP_PASSWORD = "agent", "s3cret-smtp-pw!"
IMAP_ENV = "KASLOOP_TEST_IMAP_PASSWORD"
SMTP_ENV = "KASLOOP_TEST_SMTP_PASSWORD"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Cert:
    return make_cert(tmp_path_factory.mktemp("smtp-tls"))


@pytest.fixture
def smtp() -> Iterator[Any]:
    started: list[SmtpServer] = []

    def start(**kwargs: Any) -> SmtpServer:
        server = start_smtp(**kwargs)
        started.append(server)
        return server

    yield start
    for server in started:
        server.recorder.release.set()
        server.controller.stop()


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    server = start_dovecot(tmp_path_factory.mktemp("dovecot"))
    yield server
    server.stop()
    assert server.process.returncode is not None


@pytest.fixture
def mailbox(dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch) -> Mailbox:
    box = dovecot.new_mailbox()
    monkeypatch.setenv(IMAP_ENV, box.password)
    return box


@pytest.fixture
def ws(tmp_path: Path) -> Path:
    folder = tmp_path / "ws"
    folder.mkdir()
    return folder


def ctx(email: dict[str, Any] | None, workspace: Path = Path("."), key: str = KEY) -> ToolContext:
    return ToolContext(workspace=workspace, idempotency_key=key, extra={"email": email} if email is not None else {})


def send_settings(server: SmtpServer, **smtp: Any) -> dict[str, Any]:
    return {"smtp": server.settings(**smtp), "from_address": SENDER}


async def send(email: dict[str, Any], workspace: Path = Path("."), key: str = KEY, **args: Any) -> ToolResult:
    return await run_tool(TOOLS["email_send"], args, ctx(email, workspace, key))


async def imap(name: str, box: Mailbox, security: str = "plain", settings: dict[str, Any] | None = None, **args: Any) -> ToolResult:
    email = {"imap": box.settings(security), **(settings or {})}
    return await run_tool(TOOLS[name], args, ctx(email))


def nothing_arrived(server: SmtpServer) -> bool:
    return server.recorder.ehlos == [] and server.recorder.envelopes == []


def raw_mail(subject: str, body: str, *, sender: str = "Alice <alice@example.net>", day: int = 1, extra: str = "") -> bytes:
    date = format_datetime(datetime(2024, 5, day, 9, 30, tzinfo=timezone.utc))
    return (f"From: {sender}\r\nTo: user@example.net\r\nSubject: {subject}\r\nDate: {date}\r\n{extra}\r\n{body}\r\n").encode()


# --------------------------------------------------------------------------- sending


async def test_send_delivers_exactly_the_message_with_attachments(smtp: Any, ws: Path) -> None:
    server = smtp()
    (ws / "docs").mkdir()
    pdf = b"%PDF-1.4\n" + bytes(range(256)) * 8
    (ws / "docs" / "report.pdf").write_bytes(pdf)
    (ws / "notes.txt").write_text("line one\nline two\n")
    body = "Hello Bob,\n\nthe report is attached.\n.\nA line with a lone dot above.\nGrüße"
    result = await send(
        send_settings(server), ws,
        to='bob@example.org, "Doe, Jane" <jane@example.org>', cc="carol@example.org",
        subject="Quarterly report – Q3", body=body, attachments=["docs/report.pdf", "notes.txt"],
    )  # fmt: skip
    assert result.ok, result
    assert f"Message-ID <{KEY}@kasloop>" in result.output and "report.pdf" in result.output
    assert result.metadata["message_id"] == f"<{KEY}@kasloop>"
    assert result.metadata["to"] == ["bob@example.org", "jane@example.org"] and result.metadata["cc"] == ["carol@example.org"]
    [env] = server.recorder.envelopes
    assert env.mail_from == "agent@example.com"
    assert isinstance(env.original_content, bytes) and env.original_content.isascii()  # 7-bit clean: no 8BITMIME needed
    assert env.rcpt_tos == ["bob@example.org", "jane@example.org", "carol@example.org"]
    [msg] = server.recorder.messages()
    assert msg["From"] == SENDER
    assert msg["To"] == 'bob@example.org, "Doe, Jane" <jane@example.org>'
    assert msg["Cc"] == "carol@example.org"
    assert msg["Subject"] == "Quarterly report – Q3"
    assert msg["Message-ID"] == f"<{KEY}@kasloop>"
    assert msg["Date"]
    assert msg.get_body(("plain",)).get_content().replace("\r\n", "\n").rstrip("\n") == body  # type: ignore[union-attr]
    attachments = list(msg.iter_attachments())
    assert [(a.get_filename(), a.get_content_type()) for a in attachments] == [("report.pdf", "application/pdf"), ("notes.txt", "text/plain")]
    assert attachments[0].get_payload(decode=True) == pdf
    assert attachments[1].get_payload(decode=True) == b"line one\nline two\n"


async def test_a_retry_of_one_call_carries_the_same_message_id(smtp: Any) -> None:
    server = smtp()
    settings = send_settings(server)
    first = await send(settings, to="bob@example.org", subject="hi", body="one")
    retry = await send(settings, to="bob@example.org", subject="hi", body="one")
    other = await send(settings, key="ksl-another-call", to="bob@example.org", subject="hi", body="one")
    assert first.ok and retry.ok and other.ok
    ids = [m["Message-ID"] for m in server.recorder.messages()]
    assert ids == [f"<{KEY}@kasloop>", f"<{KEY}@kasloop>", "<ksl-another-call@kasloop>"]


def test_message_ids_are_sanitised_and_stay_distinct() -> None:
    assert message_id_for("ksl-abc") == "<ksl-abc@kasloop>"
    odd = message_id_for("thread 1:step<2>@x")
    assert odd.startswith("<thread-1-step-2-x-") and odd.endswith("@kasloop>") and " " not in odd
    assert message_id_for("a b") != message_id_for("a:b")
    assert message_id_for("") != message_id_for("")  # no key: a fresh random id each time


async def test_starttls_with_a_private_ca_and_login_from_the_environment(smtp: Any, cert: Cert, monkeypatch: pytest.MonkeyPatch) -> None:
    server = smtp(security="starttls", cert=cert, login=(SMTP_USER, SMTP_PASSWORD))
    monkeypatch.setenv(SMTP_ENV, SMTP_PASSWORD)
    settings = send_settings(server, ca_file=str(cert.cert), username=SMTP_USER, password_env=SMTP_ENV)
    result = await send(settings, to="bob@example.org", subject="over tls", body="secret stuff")
    assert result.ok, result
    assert server.recorder.logins == [(SMTP_USER, True)]
    [msg] = server.recorder.messages()
    assert msg["Subject"] == "over tls" and SMTP_PASSWORD not in result.output + str(result.metadata)


async def test_a_wrong_password_is_denied_and_never_shown(smtp: Any, cert: Cert, monkeypatch: pytest.MonkeyPatch) -> None:
    server = smtp(security="starttls", cert=cert, login=(SMTP_USER, SMTP_PASSWORD))
    monkeypatch.setenv(SMTP_ENV, "wrong-password-9876")
    settings = send_settings(server, ca_file=str(cert.cert), username=SMTP_USER, password_env=SMTP_ENV)
    result = await send(settings, to="bob@example.org", subject="x", body="y")
    assert not result.ok and result.error_kind == "denied", result
    assert "refused the login" in result.output and SMTP_ENV in result.output
    assert "wrong-password-9876" not in result.output + str(result.metadata)
    assert server.recorder.logins == [(SMTP_USER, False)] and server.recorder.envelopes == []


async def test_an_untrusted_certificate_is_refused_before_login(smtp: Any, cert: Cert, monkeypatch: pytest.MonkeyPatch) -> None:
    server = smtp(security="starttls", cert=cert, login=(SMTP_USER, SMTP_PASSWORD))
    monkeypatch.setenv(SMTP_ENV, SMTP_PASSWORD)
    result = await send(send_settings(server, username=SMTP_USER, password_env=SMTP_ENV), to="bob@example.org", subject="x", body="y")
    assert not result.ok and result.error_kind == "permanent", result
    assert "certificate" in result.output and "ca_file" in result.output
    assert server.recorder.logins == [] and server.recorder.envelopes == []


async def test_implicit_tls(smtp: Any, cert: Cert) -> None:
    server = smtp(security="ssl", cert=cert)
    result = await send(send_settings(server, ca_file=str(cert.cert)), to="bob@example.org", subject="ssl", body="b")
    assert result.ok, result
    assert [m["Subject"] for m in server.recorder.messages()] == ["ssl"]


@pytest.mark.parametrize("security", ["ssl", "starttls"])
async def test_a_server_named_by_host_name_is_reached_at_the_checked_address_and_tls_checks_the_name(smtp: Any, cert: Cert, security: str) -> None:
    """The network gate resolves `localhost` once and smtplib connects to that address; TLS still verifies `localhost`."""
    server = smtp(security=security, cert=cert)
    result = await send(send_settings(server, host="localhost", ca_file=str(cert.cert)), to="bob@example.org", subject="by name", body="b")
    assert result.ok, result
    assert [m["Subject"] for m in server.recorder.messages()] == ["by name"]


async def test_kasloops_receivers_are_refused_as_mail_servers_too(smtp: Any, mailbox: Mailbox) -> None:
    from kasloop.safety.receivers import declare, withdraw

    server = smtp()
    imap_port = int(mailbox.settings("plain")["port"])
    for port in (server.port, imap_port):
        declare("127.0.0.1", port, "test receiver")
    try:
        sent = await send(send_settings(server), to="bob@example.org", subject="x", body="y")
        assert not sent.ok and sent.error_kind == "denied" and "kasloop's own test receiver" in sent.output, sent
        found = await imap("email_search", mailbox, query="anything")
        assert not found.ok and found.error_kind == "denied" and "kasloop's own test receiver" in found.output, found
    finally:
        for port in (server.port, imap_port):
            withdraw("127.0.0.1", port, "test receiver")
    assert nothing_arrived(server)


async def test_a_missing_password_variable_is_a_config_error_before_connecting(smtp: Any) -> None:
    server = smtp()
    os.environ.pop(SMTP_ENV, None)
    result = await send(send_settings(server, username=SMTP_USER, password_env=SMTP_ENV), to="bob@example.org", subject="x", body="y")
    assert not result.ok and result.error_kind == "permanent" and SMTP_ENV in result.output
    assert nothing_arrived(server)


async def test_one_refused_recipient_means_nothing_is_sent(smtp: Any) -> None:
    server = smtp()
    server.recorder.refuse.add("ghost@example.org")
    result = await send(send_settings(server), to="bob@example.org, ghost@example.org", subject="x", body="y")
    assert not result.ok and result.error_kind == "permanent", result
    assert "ghost@example.org" in result.output and "nothing was sent" in result.output
    assert server.recorder.ehlos and server.recorder.envelopes == []


async def test_a_send_abandoned_before_the_data_stage_sends_nothing(smtp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = smtp()
    server.recorder.stall = "RCPT"
    monkeypatch.setattr(email_tools, "_SEND_DEADLINE", 0.5)
    result = await send(send_settings(server), to="bob@example.org", subject="slow", body="b")
    assert not result.ok and result.error_kind == "timeout" and "nothing was sent" in result.output, result
    server.recorder.release.set()  # the server answers RCPT now; the abandoned send must hang up instead of sending DATA
    assert server.recorder.closed.wait(10)
    assert server.recorder.envelopes == []


async def test_a_send_abandoned_after_the_data_went_out_is_outcome_unknown(smtp: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    server = smtp()
    server.recorder.stall = "DATA"
    monkeypatch.setattr(email_tools, "_SEND_DEADLINE", 0.5)
    result = await send(send_settings(server), to="bob@example.org", subject="slow", body="b")
    assert not result.ok and result.error_kind == "outcome_unknown", result
    assert f"<{KEY}@kasloop>" in result.output and "check before retrying" in result.output
    server.recorder.release.set()
    assert server.recorder.received.wait(10)  # indeed: the server had it
    assert [m["Message-ID"] for m in server.recorder.messages()] == [f"<{KEY}@kasloop>"]


async def test_a_closed_port_is_transient() -> None:
    settings = {"smtp": {"host": "127.0.0.1", "port": free_port(), "security": "plain", "timeout": 5}, "from_address": SENDER}
    result = await send(settings, to="bob@example.org", subject="x", body="y")
    assert not result.ok and result.error_kind == "transient", result


# --------------------------------------------------------------------------- sending: attacks and refusals


@pytest.mark.parametrize("path", ["../secret.txt", "docs/../../secret.txt", "ABSOLUTE"])
async def test_attachments_outside_the_workspace_are_refused_and_nothing_is_sent(smtp: Any, ws: Path, path: str) -> None:
    server = smtp()
    secret = ws.parent / "secret.txt"
    secret.write_text("top secret")
    (ws / "docs").mkdir()
    if path == "ABSOLUTE":
        path = str(secret)
    result = await send(send_settings(server), ws, to="bob@example.org", subject="x", body="y", attachments=[path])
    assert not result.ok and result.error_kind == "bad_args", result
    assert "top secret" not in result.output
    assert nothing_arrived(server)


async def test_an_absolute_path_is_refused_even_inside_the_workspace(smtp: Any, ws: Path) -> None:
    server = smtp()
    (ws / "a.txt").write_text("a")
    result = await send(send_settings(server), ws, to="bob@example.org", subject="x", body="y", attachments=[str(ws / "a.txt")])
    assert not result.ok and result.error_kind == "bad_args" and "relative" in result.output
    assert nothing_arrived(server)


async def test_a_symlink_out_of_the_workspace_is_denied_and_nothing_is_sent(smtp: Any, ws: Path) -> None:
    server = smtp()
    secret = ws.parent / "secret.txt"
    secret.write_text("top secret")
    (ws / "innocent.txt").symlink_to(secret)
    result = await send(send_settings(server), ws, to="bob@example.org", subject="x", body="y", attachments=["innocent.txt"])
    assert not result.ok and result.error_kind == "denied", result
    assert "top secret" not in result.output
    assert nothing_arrived(server)


async def test_a_symlink_inside_the_workspace_is_followed(smtp: Any, ws: Path) -> None:
    server = smtp()
    (ws / "real.csv").write_text("a,b\n1,2\n")
    (ws / "link.csv").symlink_to(ws / "real.csv")
    result = await send(send_settings(server), ws, to="bob@example.org", subject="x", body="y", attachments=["link.csv"])
    assert result.ok, result
    [att] = list(server.recorder.messages()[0].iter_attachments())
    assert att.get_filename() == "link.csv" and att.get_payload(decode=True) == b"a,b\n1,2\n"


async def test_attachments_over_the_size_cap_are_refused(smtp: Any, ws: Path) -> None:
    server = smtp()
    (ws / "a.bin").write_bytes(b"x" * 600)
    (ws / "b.bin").write_bytes(b"y" * 600)
    settings = {**send_settings(server), "max_attachment_bytes": 1000}
    result = await send(settings, ws, to="bob@example.org", subject="x", body="y", attachments=["a.bin", "b.bin"])
    assert not result.ok and result.error_kind == "bad_args" and "max_attachment_bytes" in result.output
    assert nothing_arrived(server)
    missing = await send(settings, ws, to="bob@example.org", subject="x", body="y", attachments=["nope.bin"])
    assert not missing.ok and missing.error_kind == "bad_args" and "does not exist" in missing.output
    folder = await send(settings, ws, to="bob@example.org", subject="x", body="y", attachments=["."])
    assert not folder.ok and folder.error_kind == "bad_args"
    assert nothing_arrived(server)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("subject", "Hello\r\nBcc: victim@example.org"),
        ("subject", "Hello\nX-Injected: 1"),
        ("subject", "Hello\rX-Injected: 1"),
        ("to", "bob@example.org\r\nBcc: victim@example.org"),
        ("cc", "carol@example.org\nBcc: victim@example.org"),
    ],
)
async def test_header_injection_is_refused_and_nothing_is_sent(smtp: Any, field: str, value: str) -> None:
    server = smtp()
    args = {"to": "bob@example.org", "subject": "s", "body": "b", field: value}
    result = await send(send_settings(server), **args)
    assert not result.ok and result.error_kind == "bad_args", result
    assert field in result.output and "one line" in result.output
    assert nothing_arrived(server)


@pytest.mark.parametrize("field", ["to", "cc"])
async def test_a_recipient_outside_the_allowlist_is_denied_and_nothing_is_sent(smtp: Any, field: str) -> None:
    server = smtp()
    settings = {**send_settings(server), "allow_recipients": ["*@example.org", "boss@corp.example.com"]}
    args = {"to": "bob@example.org", "subject": "s", "body": "b", field: "bob@example.org, mallory@evil.example"}
    result = await send(settings, **args)
    assert not result.ok and result.error_kind == "denied", result
    assert "mallory@evil.example" in result.output and "allow_recipients" in result.output
    assert nothing_arrived(server)
    # a look-alike domain does not match the glob either
    sneaky = await send(settings, to="bob@example.org.evil.example", subject="s", body="b")
    assert not sneaky.ok and sneaky.error_kind == "denied"
    assert nothing_arrived(server)
    allowed = await send(settings, to="BOSS@corp.example.com, ann@example.org", subject="s", body="b")
    assert allowed.ok, allowed
    assert server.recorder.envelopes[0].rcpt_tos == ["BOSS@corp.example.com", "ann@example.org"]


@pytest.mark.parametrize("to", ["bob", "bob@", "@example.org", "bob@localhost", "a@b.c d@e.f", "Bob <bob@example.org", "alice@example.org)<bob@example.org>", ",,"])
async def test_malformed_addresses_are_bad_args(smtp: Any, to: str) -> None:
    server = smtp()
    result = await send(send_settings(server), to=to, subject="s", body="b")
    assert not result.ok and result.error_kind == "bad_args", (to, result)
    assert nothing_arrived(server)


def test_address_parsing_keeps_display_names() -> None:
    found = parse_addresses('"Doe, Jane" <jane@example.org>, bob@example.org, Ünal <u@example.org>,')
    assert [(a.display_name, a.addr_spec) for a in found] == [("Doe, Jane", "jane@example.org"), ("", "bob@example.org"), ("Ünal", "u@example.org")]


# --------------------------------------------------------------------------- settings and schemas


@pytest.mark.parametrize(
    "email",
    [
        {"smtp": {"host": "x", "security": "tls"}},
        {"smtp": {"host": "x", "password": "hunter2"}},
        {"smtp": {"port": 25}},
        {"smtp": {"host": "x", "port": 70000}},
        {"smtp": {"host": "x", "password_env": "not a name"}},
        {"from_address": "not an address"},
        {"allow_recipients": "*@example.com"},
        {"allow_recipients": ["no-at-sign"]},
        {"max_attachment_bytes": -1},
        {"nope": 1},
    ],
)
async def test_broken_settings_are_a_permanent_error(email: dict[str, Any]) -> None:
    result = await send(email, to="bob@example.org", subject="s", body="b")
    assert not result.ok and result.error_kind == "permanent" and "tool_settings.email" in result.output, result
    assert "hunter2" not in result.output


def test_settings_model_defaults() -> None:
    settings = EmailSettings.model_validate({"smtp": {"host": "mail.example.com"}, "imap": {"host": "imap.example.com", "username": "me"}})
    assert settings.smtp is not None and settings.imap is not None
    assert (settings.smtp.security, settings.smtp.effective_port, settings.smtp.password_env) == ("starttls", 587, "KASLOOP_SMTP_PASSWORD")
    assert (settings.imap.security, settings.imap.effective_port, settings.imap.password_env) == ("ssl", 993, "KASLOOP_IMAP_PASSWORD")
    assert EmailSettings().model_dump()["allow_recipients"] == []


async def test_missing_sections_say_what_to_configure() -> None:
    result = await send({}, to="bob@example.org", subject="s", body="b")
    assert result.error_kind == "permanent" and "email.smtp.host" in result.output
    result = await send({"smtp": {"host": "127.0.0.1"}}, to="bob@example.org", subject="s", body="b")
    assert result.error_kind == "permanent" and "from_address" in result.output
    for name, args in (("email_search", {"query": "x"}), ("email_read", {"id": 1}), ("email_mark", {"id": 1})):
        result = await run_tool(TOOLS[name], args, ctx({}))
        assert result.error_kind == "permanent" and "email.imap.host" in result.output
        result = await run_tool(TOOLS[name], args, ctx({"imap": {"host": "127.0.0.1"}}))
        assert result.error_kind == "permanent" and "username" in result.output


@pytest.mark.parametrize(
    ("name", "args", "field"),
    [
        ("email_send", {"subject": "s", "body": "b"}, "to"),
        ("email_send", {"to": ["bob@example.org"], "subject": "s", "body": "b"}, "to"),
        ("email_send", {"to": "bob@example.org", "subject": 5, "body": "b"}, "subject"),
        ("email_send", {"to": "bob@example.org", "subject": "s"}, "body"),
        ("email_send", {"to": "bob@example.org", "subject": "s", "body": "b", "attachments": "a.txt"}, "attachments"),
        ("email_send", {"to": "bob@example.org", "subject": "s", "body": "b", "cc": 3}, "cc"),
        ("email_search", {}, "query"),
        ("email_search", {"query": "x", "limit": 0}, "limit"),
        ("email_search", {"query": "x", "limit": "many"}, "limit"),
        ("email_search", {"query": "x", "unseen_only": "perhaps"}, "unseen_only"),
        ("email_search", {"query": ["x"]}, "query"),
        ("email_read", {}, "id"),
        ("email_read", {"id": "abc"}, "id"),
        ("email_read", {"id": 0}, "id"),
        ("email_read", {"id": 1, "folder": 7}, "folder"),
        ("email_mark", {"id": 1, "seen": "maybe"}, "seen"),
        ("email_mark", {"seen": True}, "id"),
    ],
)
async def test_wrong_argument_types_are_bad_args_naming_the_field(name: str, args: dict[str, Any], field: str) -> None:
    result = await run_tool(TOOLS[name], args, ctx({}))
    assert not result.ok and result.error_kind == "bad_args", result
    assert f"`{name}`" in result.output and field in result.output


EXPECTED = {
    "email_send": (["to", "subject", "body", "cc", "attachments"], {"to", "subject", "body"}, "high", False),
    "email_search": (["query", "folder", "limit", "unseen_only"], {"query"}, "read", True),
    "email_read": (["id", "folder"], {"id"}, "read", True),
    "email_mark": (["id", "seen", "folder"], {"id"}, "low", True),
}


@pytest.mark.parametrize("tool", EMAIL_TOOLS, ids=lambda t: t.name)
def test_schema_given_to_the_model_matches_the_args_model(tool: Tool) -> None:
    function = openai_schema(tool)["function"]
    assert function["name"] == tool.name and function["description"] == tool.description
    params = function["parameters"]
    names = list(tool.args_model.model_fields)
    assert params["type"] == "object" and list(params["properties"]) == names
    assert set(params["required"]) == {n for n, f in tool.args_model.model_fields.items() if f.is_required()}
    props, required, _, _ = EXPECTED[tool.name]
    assert names == props and set(params["required"]) == required
    for prop in params["properties"].values():
        assert prop["description"] and "title" not in prop
    assert len(tool.description) < 80


def test_family_names_risks_and_idempotency_are_as_designed() -> None:
    table = {t.name: (t.risk, t.idempotent, t.family) for t in EMAIL_TOOLS}
    assert table == {name: (risk, idem, "email") for name, (_, _, risk, idem) in EXPECTED.items()}


# --------------------------------------------------------------------------- IMAP: search, read, mark


def seed(box: Mailbox) -> dict[str, int]:
    return {
        "lunch": box.append(raw_mail("Lunch plans", "Pizza at noon?", sender="Bob <bob@example.net>", day=1), flags="\\Seen"),
        "invoice1": box.append(raw_mail("Invoice 17", "Please pay invoice 17.", day=2)),
        "invoice2": box.append(raw_mail("Your invoice 18", "Second invoice.", sender="Billing <billing@shop.example.com>", day=3)),
    }


async def test_search_lists_newest_first_with_id_date_sender_subject(mailbox: Mailbox) -> None:
    uids = seed(mailbox)
    result = await imap("email_search", mailbox, query="invoice")
    assert result.ok, result
    lines = result.output.splitlines()
    assert lines[0] == "2 message(s) in INBOX match; newest 2 (id | date | from | subject):"
    assert lines[1:] == [
        f"{uids['invoice2']} | 2024-05-03 09:30 | Billing <billing@shop.example.com> | Your invoice 18 [unseen]",
        f"{uids['invoice1']} | 2024-05-02 09:30 | Alice <alice@example.net> | Invoice 17 [unseen]",
    ]
    assert result.metadata == {"folder": "INBOX", "total": 2, "uids": [uids["invoice2"], uids["invoice1"]]}
    limited = await imap("email_search", mailbox, query="", limit=1)
    assert limited.ok and limited.metadata["total"] == 3 and limited.metadata["uids"] == [uids["invoice2"]]
    by_sender = await imap("email_search", mailbox, query="from:billing invoice")
    assert by_sender.metadata["uids"] == [uids["invoice2"]]
    by_subject = await imap("email_search", mailbox, query='subject:"invoice 17"')
    assert by_subject.metadata["uids"] == [uids["invoice1"]]
    unseen = await imap("email_search", mailbox, query="", unseen_only=True)
    assert unseen.metadata["uids"] == [uids["invoice2"], uids["invoice1"]]
    none = await imap("email_search", mailbox, query="zebra")
    assert none.ok and none.output == "No messages in INBOX match `zebra`." and none.metadata["total"] == 0
    # searching never changes flags
    assert mailbox.flags(uids["invoice1"]) == set()


async def test_search_finds_non_ascii_text(mailbox: Mailbox) -> None:
    uid = mailbox.append(raw_mail("=?utf-8?q?Gr=C3=BC=C3=9Fe_aus_M=C3=BCnchen?=", "Servus"))
    mailbox.append(raw_mail("Hello from Berlin", "Hallo"))
    result = await imap("email_search", mailbox, query="münchen")
    assert result.ok, result
    assert result.metadata["uids"] == [uid] and "Grüße aus München" in result.output


async def test_read_shows_headers_text_and_attachment_names_without_marking_seen(mailbox: Mailbox) -> None:
    msg = EmailMessage()
    msg["From"] = "Alice <alice@example.net>"
    msg["To"] = "user@example.net"
    msg["Subject"] = "Photos and the plan"
    msg["Date"] = format_datetime(datetime(2024, 5, 4, 8, 15, tzinfo=timezone.utc))
    msg["Message-ID"] = "<plan-1@example.net>"
    msg.set_content("Plain fallback")
    msg.add_alternative("<html><body><h1>The plan</h1><p>Meet at <b>noon</b>.</p><script>evil()</script></body></html>", subtype="html")
    photo = b"\x89PNG\r\n\x1a\n" + b"\x00\xff" * 500
    msg.add_attachment(photo, maintype="image", subtype="png", filename="photo.png")
    uid = mailbox.append(msg.as_bytes())
    result = await imap("email_read", mailbox, id=uid)
    assert result.ok, result
    head, _, body = result.output.partition("\n\n")
    assert head.splitlines() == [
        "From: Alice <alice@example.net>",
        "To: user@example.net",
        "Date: 2024-05-04 08:15 +0000",
        "Subject: Photos and the plan",
        "Message-ID: <plan-1@example.net>",
        "Flags: (none)",
        f"Attachments: photo.png (image/png, {len(photo)} bytes)",
    ]
    assert body == "Plain fallback"
    assert "PNG" not in result.output and "\x00" not in result.output
    assert mailbox.flags(uid) == set()  # reading did not mark it seen (checked on a separate connection)
    html_only = EmailMessage()
    html_only["Subject"] = "html"
    html_only.set_content("<p>Meet at <b>noon</b>.</p><script>evil()</script>", subtype="html")
    uid2 = mailbox.append(html_only.as_bytes())
    result = await imap("email_read", mailbox, id=uid2)
    assert result.ok and result.output.endswith("\n\nMeet at noon.") and "evil" not in result.output, result
    assert mailbox.flags(uid2) == set()


async def test_read_downloads_at_most_max_read_bytes(mailbox: Mailbox) -> None:
    uid = mailbox.append(raw_mail("big", "word " * 2000))
    result = await imap("email_read", mailbox, settings={"max_read_bytes": 1024}, id=uid)
    assert result.ok, result
    assert "only the first 1024 were read" in result.output and result.metadata["truncated"] is True
    assert result.output.count("word") < 300


async def test_mark_sets_and_clears_seen(mailbox: Mailbox) -> None:
    uids = seed(mailbox)
    uid = uids["invoice1"]
    for _ in range(2):  # idempotent
        result = await imap("email_mark", mailbox, id=uid)
        assert result.ok and result.output == f"Marked message {uid} in INBOX as seen.", result
        assert mailbox.flags(uid) == {"\\Seen"}
    assert mailbox.flags(uids["invoice2"]) == set()  # only that one
    result = await imap("email_mark", mailbox, id=uids["lunch"], seen=False)
    assert result.ok, result
    assert mailbox.flags(uids["lunch"]) == set()


async def test_unknown_ids_and_folders_are_bad_args(mailbox: Mailbox) -> None:
    seed(mailbox)
    for name in ("email_read", "email_mark"):
        result = await imap(name, mailbox, id=999)
        assert not result.ok and result.error_kind == "bad_args" and "email_search" in result.output, result
    result = await imap("email_search", mailbox, query="x", folder="Nope")
    assert not result.ok and result.error_kind == "bad_args" and "Nope" in result.output, result
    result = await imap("email_search", mailbox, query="x", folder="INBOX\r\nA1 DELETE INBOX")
    assert not result.ok and result.error_kind == "bad_args", result
    assert mailbox.count() == 3


async def test_folder_names_with_spaces_and_non_ascii_are_quoted(mailbox: Mailbox) -> None:
    mailbox.create('"Archive 2024"')
    mailbox.create('"Entw&APw-rfe"')  # "Entwürfe" in modified UTF-7
    uid = mailbox.append(raw_mail("old", "archived"), folder='"Archive 2024"')
    uid2 = mailbox.append(raw_mail("draft", "unfinished"), folder='"Entw&APw-rfe"')
    result = await imap("email_search", mailbox, query="archived", folder="Archive 2024")
    assert result.ok and result.metadata["uids"] == [uid], result
    result = await imap("email_search", mailbox, query="", folder="Entwürfe")
    assert result.ok and result.metadata["uids"] == [uid2], result
    result = await imap("email_mark", mailbox, id=uid, folder="Archive 2024")
    assert result.ok and mailbox.flags(uid, '"Archive 2024"') == {"\\Seen"}


@pytest.mark.parametrize("security", ["ssl", "starttls"])
async def test_imap_over_tls_with_a_private_ca(mailbox: Mailbox, security: str) -> None:
    uids = seed(mailbox)
    result = await imap("email_search", mailbox, security, query="lunch")
    assert result.ok and result.metadata["uids"] == [uids["lunch"]], result


async def test_imap_without_the_private_ca_fails_the_certificate_check(mailbox: Mailbox) -> None:
    settings = mailbox.settings("ssl")
    del settings["ca_file"]
    result = await run_tool(TOOLS["email_search"], {"query": "x"}, ctx({"imap": settings}))
    assert not result.ok and result.error_kind == "permanent" and "certificate" in result.output, result


async def test_a_wrong_imap_password_is_denied_and_never_shown(mailbox: Mailbox, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(IMAP_ENV, "wrong-imap-pass-42")
    result = await imap("email_search", mailbox, query="x")
    assert not result.ok and result.error_kind == "denied", result
    assert mailbox.user in result.output and IMAP_ENV in result.output
    assert "wrong-imap-pass-42" not in result.output and mailbox.password not in result.output
    monkeypatch.delenv(IMAP_ENV)
    result = await imap("email_search", mailbox, query="x")
    assert not result.ok and result.error_kind == "permanent" and IMAP_ENV in result.output


# --------------------------------------------------------------------------- IMAP: injection


async def test_imap_syntax_in_a_query_is_literal_text(mailbox: Mailbox) -> None:
    uids = seed(mailbox)
    tricky = mailbox.append(raw_mail("Odd one", 'He wrote ") OR ALL ( in the middle'))
    result = await imap("email_search", mailbox, query='") OR ALL (')
    assert result.ok, result
    assert result.metadata["uids"] == [tricky]  # with injection, ALL would list every message
    for query in ('lunch") OR ALL ("', 'x" OR ALL', "\\"):
        result = await imap("email_search", mailbox, query=query)
        assert result.ok and result.metadata["total"] == 0, (query, result)
    assert uids


async def test_crlf_in_a_query_cannot_start_a_new_command(mailbox: Mailbox) -> None:
    uids = seed(mailbox)
    attacks = [
        "lunch\r\nA1 UID STORE 1:* +FLAGS (\\Deleted)",
        'lunch"\r\nA2 UID STORE 1:* +FLAGS (\\Flagged)\r\nA3 SEARCH "',
        "lunch\nA4 DELETE INBOX",
        "lunch\x00 {5}\r\nhello",
    ]
    for query in attacks:
        result = await imap("email_search", mailbox, query=query)
        assert result.ok and result.metadata["total"] == 0, (query, result)
    for uid in uids.values():
        assert not mailbox.flags(uid) & {"\\Deleted", "\\Flagged"}
    assert mailbox.count() == len(uids)


def test_search_criteria_quote_every_value() -> None:
    args, literal = search_criteria('from:"big boss" subject:hi ") OR ALL ( back\\slash', unseen_only=False, literal_plus=True)
    assert literal is None
    assert args == [
        b"FROM", b'"big boss"', b"SUBJECT", b'"hi"',
        b"TEXT", b'"\\")"', b"TEXT", b'"OR"', b"TEXT", b'"ALL"', b"TEXT", b'"("', b"TEXT", b'"back\\\\slash"',
    ]  # fmt: skip
    assert search_criteria("", unseen_only=False, literal_plus=True) == ([b"ALL"], None)
    assert search_criteria("a\r\nb", unseen_only=False, literal_plus=True) == ([b"TEXT", b'"a"', b"TEXT", b'"b"'], None)
    args, literal = search_criteria("grüße a", unseen_only=True, literal_plus=False)
    assert args == [b"CHARSET", b"UTF-8", b"UNSEEN", b"TEXT", b'"a"', b"TEXT"] and literal == "grüße".encode()
    args, _ = search_criteria("grüße a", unseen_only=False, literal_plus=True)
    assert args == [b"CHARSET", b"UTF-8", b"TEXT", b'"a"', b"TEXT", b"{7+}\r\ngr\xc3\xbc\xc3\x9fe"]
    assert imap_quote('a"b\\c') == b'"a\\"b\\\\c"'
    with pytest.raises(ValueError):
        imap_quote("a\r\nb")


async def test_an_interrupted_send_is_found_in_the_sent_folder_by_its_message_id(smtp: Any, mailbox: Mailbox) -> None:
    """After a crash mid-send, act asks the tool to reconcile: a copy in the sent folder settles it."""
    server = smtp()
    settings = {**send_settings(server), "imap": mailbox.settings(), "sent_folder": "Sent"}
    assert (await send(settings, key="ksl-crashed", to="bob@example.org", subject="Report", body="numbers")).ok
    mailbox.create("Sent")
    mailbox.append(server.recorder.messages()[0].as_bytes(), folder="Sent")  # what the provider files (e.g. Gmail does)
    tool = TOOLS["email_send"]
    args = tool.args_model.model_validate({"to": "bob@example.org", "subject": "Report", "body": "numbers"})
    assert tool.reconcile is not None
    assert await tool.reconcile(args, ctx(settings, key="ksl-crashed")) is True
    assert await tool.reconcile(args, ctx(settings, key="ksl-another-call")) is None, "not found does not prove it was not sent"
    assert await tool.reconcile(args, ctx({k: v for k, v in settings.items() if k != "sent_folder"}, key="ksl-crashed")) is None
