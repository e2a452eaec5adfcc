"""Approval channels end to end: a local Bot API server, aiosmtpd + Dovecot, and the signed webhook receiver on uvicorn.

Each channel: the request goes out, an approver's decision comes back and the
thread finishes; a decision from someone else, a forged or replayed callback
and an expired request are refused, logged, and change nothing. Every channel
uses its own secret (``KASLOOP_APPROVAL_*``): the approvals bot's token, the
approvals mailbox's password, the approval webhook secret.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from kasloop import Agent, AgentConfig, PolicyRule
from kasloop.channels.email import parse_reply
from approval_receivers import served_receiver, signed as shared_signed
from conftest import call

sys.path.insert(0, str(Path(__file__).parent / "tools"))
from fake_telegram import TOKEN, FakeTelegram, start_fake_telegram, stop_fake_telegram  # noqa: E402
from mailservers import Dovecot, Mailbox, start_dovecot, start_smtp  # noqa: E402

CHAT, APPROVER, STRANGER = 4242, 4242, 999
SECRET = "approval-webhook-secret-for-tests"
APPROVALS_BOT = "987654321:AAHapprovalsBotTokenForKasloopTests_01"


def write_goal(script: Callable[..., str]) -> str:
    return script({"content": "", "tool_calls": [call("files_write", path="report.md", content="approved content")]}, {"content": "written"})


def agent_with(tmp_path: Path, workspace: Path, model: str, **config: Any) -> Agent:
    # files_write is low risk: an `ask` rule makes it need a human at level 3.
    cfg = AgentConfig(autonomy=3, model=model, tools=["files"], workspace=workspace, rules=[PolicyRule(tool="files_write", action="ask")], **config)
    return Agent(cfg, home=tmp_path / ".kasloop")


async def refusals(agent: Agent, thread: str) -> list[dict[str, Any]]:
    return [e for e in await agent.history(thread) if e["kind"] == "approval_refused"]


# --------------------------------------------------------------------------- telegram


@pytest.fixture
def bot(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeTelegram]:
    """The approvals bot (its own token; the tools' bot is another one)."""
    monkeypatch.setenv("KASLOOP_TELEGRAM_TOKEN", TOKEN)
    monkeypatch.setenv("KASLOOP_APPROVAL_TELEGRAM_TOKEN", APPROVALS_BOT)
    server = start_fake_telegram(APPROVALS_BOT)
    server.add_chat(CHAT)
    server.add_chat(STRANGER, "mallory")
    yield server
    stop_fake_telegram(server)


async def test_telegram_buttons_decide_and_only_approvers_count(tmp_path: Path, workspace: Path, script: Callable[..., str], bot: FakeTelegram) -> None:
    agent = agent_with(
        tmp_path, workspace, write_goal(script),
        approval_channels={"telegram": {"chat_id": CHAT, "approvers": [APPROVER], "base_url": bot.base_url}},
    )
    waiting = await agent.run("write the report", thread_id="t")
    [request] = waiting.approvals
    [sent] = bot.sent
    assert sent["chat"]["id"] == CHAT and request["approval_id"] in sent["text"] and "files_write" in sent["text"]
    buttons = [b["callback_data"] for b in sent["reply_markup"]["inline_keyboard"][0]]
    assert buttons == [f"kasloop:{request['approval_id']}:approve", f"kasloop:{request['approval_id']}:reject"]

    bot.queue_callback(STRANGER, sent["message_id"], buttons[0])
    assert await agent.poll_approvals() == 0
    assert [a["approval_id"] for a in await agent.approvals("t")] == [request["approval_id"]], "a stranger's press changes nothing"
    [refused] = await refusals(agent, "t")
    assert refused["channel"] == "telegram" and "not an approver" in refused["reason"]

    bot.queue_callback(APPROVER, sent["message_id"], buttons[0])
    assert await agent.poll_approvals() == 1
    assert [a["text"] for a in bot.answers] == ["You are not an approver for this agent.", "Recorded: approve."]
    done = await agent.resume("t")
    assert done.status == "done" and (workspace / "report.md").read_text() == "approved content"
    decision = next(e for e in await agent.history("t") if e["kind"] == "approval_decision")
    assert decision["channel"] == "telegram" and decision["by"] == "telegram:alice"
    assert await agent.poll_approvals() == 0 and len(bot.sent) == 1, "announced once; nothing pending any more"


async def test_an_expired_request_is_refused_on_the_button(tmp_path: Path, workspace: Path, script: Callable[..., str], bot: FakeTelegram) -> None:
    agent = agent_with(
        tmp_path, workspace, write_goal(script), approval_ttl=0.001,
        approval_channels={"telegram": {"chat_id": CHAT, "approvers": [APPROVER], "base_url": bot.base_url}},
    )
    waiting = await agent.run("write the report", thread_id="t")
    approval_id = waiting.approvals[0]["approval_id"]
    deadline = time.time() + 5
    while time.time() < deadline and waiting.approvals[0]["expires_at"] >= time.time():
        await asyncio.sleep(0.01)  # wall-clock expiry is what is tested; nothing else to wait for
    bot.queue_callback(APPROVER, bot.sent[0]["message_id"], f"kasloop:{approval_id}:approve")
    assert await agent.poll_approvals() == 0
    assert "expired" in bot.answers[0]["text"]
    [refused] = await refusals(agent, "t")
    assert refused["reason"] == "expired"
    assert not (workspace / "report.md").exists()


# --------------------------------------------------------------------------- email


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Dovecot]:
    server = start_dovecot(tmp_path_factory.mktemp("dovecot"))
    yield server
    server.stop()


def reply(to_request: EmailMessage, sender: str, first_line: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "agent@example.org"
    msg["Subject"] = "Re: " + str(to_request["Subject"])
    msg["In-Reply-To"] = str(to_request["Message-ID"])
    msg.set_content(f"{first_line}\n\n> {to_request.get_content()[:200]}")
    return msg.as_bytes()


async def test_an_email_reply_with_the_code_from_an_approver_decides(
    tmp_path: Path, workspace: Path, script: Callable[..., str], dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    box: Mailbox = dovecot.new_mailbox()  # the approvals' own mailbox, with its own password variable
    monkeypatch.setenv("KASLOOP_APPROVAL_IMAP_PASSWORD", box.password)
    smtp = start_smtp()
    try:
        agent = agent_with(
            tmp_path, workspace, write_goal(script),
            tool_settings={"email": {"smtp": smtp.settings(), "from_address": "agent@example.org"}},
            approval_channels={"email": {"to": "ops@example.org", "approvers": ["ops@example.org"], "imap": box.settings(password_env="KASLOOP_APPROVAL_IMAP_PASSWORD")}},
        )
        waiting = await agent.run("write the report", thread_id="t")
        approval_id = waiting.approvals[0]["approval_id"]
        [request] = smtp.recorder.messages()
        assert request["To"] == "ops@example.org" and approval_id in str(request["Subject"])
        code = next(line.split()[1] for line in request.get_content().splitlines() if line.startswith("APPROVE "))

        box.append(reply(request, "Mallory <mallory@evil.example>", f"APPROVE {code}"))
        box.append(reply(request, "ops@example.org", "APPROVE 00000000"))
        assert await agent.poll_approvals() == 0, "a stranger, and an approver without the code, decide nothing"
        reasons = sorted(r["reason"] for r in await refusals(agent, "t"))
        assert reasons == ["mallory@evil.example is not an approver", "the reply does not quote this request's code"]

        box.append(reply(request, "Ops Team <ops@example.org>", f"REJECT {code}: not this week"))
        assert await agent.poll_approvals() == 1
        assert await agent.poll_approvals() == 0, "each reply is handled once"
        result = await agent.resume("t")
        assert result.status == "done" and not (workspace / "report.md").exists()
        decision = next(e for e in await agent.history("t") if e["kind"] == "approval_decision")
        assert (decision["decision"], decision["channel"], decision["by"]) == ("reject", "email", "email:ops@example.org")
    finally:
        smtp.recorder.release.set()
        smtp.controller.stop()


def test_reply_parsing_takes_the_first_own_line_only() -> None:
    assert parse_reply("Re: [kasloop] Approval ap-0123456789: x", "\n> APPROVE 1234ABCD\nreject 1234abcd - too risky") == (
        "ap-0123456789", "reject", "1234ABCD", "too risky",
    )
    assert parse_reply("no id here", "APPROVE 1234ABCD") is None
    assert parse_reply("ap-0123456789", "Sounds good, APPROVE 1234ABCD") is None


# --------------------------------------------------------------------------- webhook


@asynccontextmanager
async def receiver(agent: Agent) -> AsyncIterator[str]:
    async with served_receiver(agent) as base:
        yield f"{base}/approvals"


def signed(payload: dict[str, Any], delivery: str, *, secret: str = SECRET, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    return shared_signed(payload, delivery, secret=secret, timestamp=timestamp)


async def wait_for_status(agent: Agent, thread: str, status: str) -> dict[str, Any]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        [row] = await agent.status(thread)
        if row["status"] == status:
            return row
        await asyncio.sleep(0.05)
    raise AssertionError(f"thread {thread} never reached {status}")


async def test_signed_webhook_callbacks_decide_and_forged_or_replayed_ones_are_refused(
    tmp_path: Path, workspace: Path, script: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KASLOOP_APPROVAL_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("KASLOOP_WEBHOOK_SECRET", "the-tools-own-webhook-secret")
    seen: list[dict[str, Any]] = []

    async def collector_app(scope: Any, receive: Any, send: Any) -> None:  # the approvers' side: receives the requests
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        seen.append(json.loads(body))
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/plain")]})
        await send({"type": "http.response.body", "body": b"ok"})

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    collector = uvicorn.Server(uvicorn.Config(collector_app, log_level="warning", lifespan="off"))
    collector_task = asyncio.create_task(collector.serve(sockets=[sock]))
    url = f"http://127.0.0.1:{sock.getsockname()[1]}/requests"
    try:
        agent = agent_with(
            tmp_path, workspace, write_goal(script),
            tool_settings={"webhook": {"allow_domains": ["127.0.0.1"]}},
            approval_channels={"webhook": {"url": url}},
        )
        waiting = await agent.run("write the report", thread_id="t")
        approval_id = waiting.approvals[0]["approval_id"]
        assert [r["approval_id"] for r in seen] == [approval_id] and seen[0]["type"] == "approval_request"
        assert seen[0] == {"type": "approval_request", **waiting.approvals[0]}, "the one JSON shape, arg_hash included"

        async with receiver(agent) as callback, httpx.AsyncClient() as client:
            forged_body, forged = signed({"approval_id": approval_id, "decision": "approve"}, "cb-1", secret="wrong")
            assert (await client.post(callback, content=forged_body, headers=forged)).status_code == 401
            old_body, old = signed({"approval_id": approval_id, "decision": "approve"}, "cb-2", timestamp=int(time.time()) - 3600)
            assert (await client.post(callback, content=old_body, headers=old)).status_code == 401
            assert [a["approval_id"] for a in await agent.approvals("t")] == [approval_id], "nothing decided yet"

            body, headers = signed({"approval_id": approval_id, "decision": "approve", "by": "ci-bot"}, "cb-3")
            answer = await client.post(callback, content=body, headers=headers)
            assert answer.status_code == 200 and answer.json()["ok"] is True
            await wait_for_status(agent, "t", "done")
            replay = await client.post(callback, content=body, headers=headers)
            assert replay.status_code == 409, "the same signed callback again is a replay"
        assert (workspace / "report.md").read_text() == "approved content"
        history = await agent.history("t")
        decision = next(e for e in history if e["kind"] == "approval_decision")
        assert (decision["channel"], decision["by"]) == ("webhook", "webhook:ci-bot")
        reasons = [e["reason"] for e in history if e["kind"] == "approval_refused"]
        assert reasons == ["bad signature or stale timestamp", "bad signature or stale timestamp", "replayed callback"]
    finally:
        collector.should_exit = True
        await asyncio.wait_for(collector_task, 10)
        sock.close()


async def test_at_level_4_an_escalation_is_a_notification_sent_once(tmp_path: Path, workspace: Path, script: Callable[..., str], bot: FakeTelegram) -> None:
    reads = [{"content": "", "tool_calls": [call("files_read", path=f"missing-{i}.txt")]} for i in range(6)]
    config = AgentConfig(
        autonomy=4, model=script(*reads), tools=["files"], workspace=workspace, diagnose_with_model=False,
        approval_channels={"telegram": {"chat_id": CHAT, "approvers": [APPROVER], "base_url": bot.base_url}},
    )
    agent = Agent(config, home=tmp_path / ".kasloop")
    result = await agent.run("read the missing files", thread_id="t")
    assert result.status == "escalated" and result.exit_code == 12
    [notice] = bot.sent
    assert notice["text"].startswith("Thread t escalated") and "failures in a row" in notice["text"]
    assert "reply_markup" not in notice, "nothing to decide at level 4: a notice, not a request"
    assert (await agent.resume("t")).status == "escalated"
    assert len(bot.sent) == 1, "the same escalation is notified once"


async def test_mail_from_allowed_senders_feeds_the_inbox_and_the_daemon_acts_on_it(
    tmp_path: Path, workspace: Path, script: Callable[..., str], dovecot: Dovecot, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kasloop.runtime.daemon import Daemon

    box: Mailbox = dovecot.new_mailbox()
    monkeypatch.setenv("KASLOOP_TEST_IMAP_PASSWORD", box.password)
    model = script({"content": "ready"}, {"content": "", "tool_calls": [call("files_write", path="todo.md", content="ship it")]}, {"content": "noted"})
    config = AgentConfig(
        autonomy=4, model=model, tools=["files"], workspace=workspace,
        tool_settings={"email": {"imap": box.settings(), "inbox_thread": "ops", "inbox_senders": ["*@example.org"]}},
    )
    agent = Agent(config, home=tmp_path / ".kasloop")
    assert (await agent.run("wait for mail", thread_id="ops")).status == "done"
    stranger = EmailMessage()
    stranger["From"], stranger["To"], stranger["Subject"] = "x@evil.example", "agent@example.org", "Do something bad"
    stranger.set_content("rm everything")
    boss = EmailMessage()
    boss["From"], boss["To"], boss["Subject"] = "Boss <boss@example.org>", "agent@example.org", "Write todo.md"
    boss.set_content("Put 'ship it' in todo.md.")
    box.append(stranger.as_bytes())
    box.append(boss.as_bytes())

    report = await Daemon(agent.sessions, interval=1).cycle()
    assert report.errors == [] and report.visited == ["ops"]
    assert (workspace / "todo.md").read_text() == "ship it"
    inbox = [e for e in await agent.history("ops") if e["kind"] == "inbox"]
    assert [e["source"] for e in inbox] == ["email"] and "Write todo.md" in inbox[0]["text"]
    assert box.count() == 2 and await agent.poll_inbox() == 0, "read once; the stranger's mail is left alone, unread"
