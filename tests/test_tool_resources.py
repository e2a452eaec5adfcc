"""What tools share across calls (ToolResources), the inbox, and the tool-settings check at config load."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from kasloop import Agent, AgentConfig, ConfigError
from kasloop.checkpoints import Inbox, open_database
from kasloop.tools.base import Tool, ToolContext, ToolResources
from kasloop.tools.registry import FAMILIES, SETTINGS, check_tool_settings
from conftest import CLIResult, call, db_fingerprint, write_script

# --------------------------------------------------------------------------- ToolResources


async def test_a_shared_object_is_created_once_even_by_concurrent_calls(tmp_path: Path) -> None:
    resources = ToolResources(home=tmp_path / "tools")
    made: list[int] = []
    entered, gate = asyncio.Event(), asyncio.Event()

    async def factory() -> int:
        made.append(len(made))
        entered.set()
        await gate.wait()  # the second caller arrives while the first object is being made
        return 42

    first = asyncio.create_task(resources.shared("browser", factory))
    await entered.wait()
    second = asyncio.create_task(resources.shared("browser", factory))
    gate.set()
    assert await asyncio.gather(first, second) == [42, 42]
    assert made == [0]


async def test_aclose_closes_newest_first_and_survives_a_failing_close(tmp_path: Path) -> None:
    resources = ToolResources(home=tmp_path / "tools")
    closed: list[str] = []

    async def close_ok(name: str) -> None:
        closed.append(name)

    async def close_fails(name: str) -> None:
        closed.append(name)
        raise RuntimeError("boom")

    async def make(name: str) -> Any:
        async def factory() -> str:
            return name

        return factory

    await resources.shared("a", await make("a"), close_ok)
    await resources.shared("b", await make("b"), close_fails)
    await resources.shared("c", await make("c"), close_ok)
    await resources.aclose()
    assert closed == ["c", "b", "a"]
    await resources.aclose()  # closing twice is harmless
    assert closed == ["c", "b", "a"]


async def test_discard_closes_one_object_and_the_next_call_makes_a_new_one(tmp_path: Path) -> None:
    resources = ToolResources(home=tmp_path / "tools")
    counter = {"n": 0}
    closed: list[int] = []

    async def factory() -> int:
        counter["n"] += 1
        return counter["n"]

    async def close(value: int) -> None:
        closed.append(value)

    assert await resources.shared("browser", factory, close) == 1
    await resources.discard("browser")
    assert closed == [1]
    assert await resources.shared("browser", factory, close) == 2


def test_home_defaults_to_a_private_temporary_folder() -> None:
    home = ToolResources().home
    assert home.is_dir() and home.name.startswith("kasloop-tools-")


class NoArgs(BaseModel):
    pass


async def test_an_agent_gives_tools_its_database_and_closes_shared_objects_when_the_run_ends(tmp_path: Path) -> None:
    seen: dict[str, Any] = {}
    closed: list[str] = []

    async def remember_resources(args: NoArgs, ctx: ToolContext) -> str:
        async def factory() -> str:
            return "connection"

        async def close(obj: str) -> None:
            closed.append(obj)

        seen["object"] = await ctx.resources.shared("conn", factory, close)
        seen["database"] = ctx.resources.database
        seen["home"] = ctx.resources.home
        seen["closed_during_call"] = list(closed)
        return "ok"

    tool = Tool(name="probe_resources", description="d", args_model=NoArgs, func=remember_resources, risk="read", idempotent=True)
    script = write_script(tmp_path / "s.jsonl", [{"tool_calls": [call("probe_resources")]}, {"content": "done"}])
    agent = Agent(AgentConfig(autonomy=4, model=f"scripted:{script}", tools=["probe_resources"], workspace=tmp_path), home=tmp_path / ".kasloop", tools=[tool])
    result = await agent.run("probe")
    assert result.status == "done"
    assert seen["object"] == "connection" and seen["closed_during_call"] == []
    assert seen["database"] is not None and Path(seen["database"].path) == agent.db_path
    assert seen["home"] == tmp_path / ".kasloop" / "tools"
    assert closed == ["connection"], "shared objects (one browser per agent) are closed when the run ends"


# --------------------------------------------------------------------------- inbox


async def test_inbox_messages_wait_in_the_database_and_are_read_after_the_last_seen_id(tmp_path: Path) -> None:
    async with open_database(tmp_path / "k.db") as db:
        inbox = Inbox(db)
        first = await inbox.put("t-1", "telegram", "hello", chat_id=7)
        await inbox.put("t-2", "webhook", "other thread")
        await inbox.put("t-1", "cli", "second")
    async with open_database(tmp_path / "k.db") as db:  # a later process sees them
        inbox = Inbox(db)
        assert [i.text for i in await inbox.pending("t-1")] == ["hello", "second"]
        taken = await inbox.take("t-1")
        assert [(i.id, i.source, i.text, i.data) for i in taken][0] == (first, "telegram", "hello", {"chat_id": 7})
        assert [i.text for i in taken] == ["hello", "second"]
        assert await inbox.take("t-1", after=taken[-1].id) == [] and await inbox.pending("t-1") == []
        assert [i.text for i in await inbox.pending("t-2")] == ["other thread"]


# --------------------------------------------------------------------------- tool settings checked at load


def test_every_family_has_a_settings_check() -> None:
    assert set(SETTINGS) == set(FAMILIES)


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({"http": {"allow_domain": ["x"]}}, "tool_settings.http.allow_domain: unknown key; known keys: allow_domains"),
        ({"shell": {"timeout": -1}}, "tool_settings.shell.timeout: Input should be greater than 0. Fix kasloop.toml."),
        ({"email": {"smtp": {"port": 25}}}, "tool_settings.email.smtp.host: Field required"),
        ({"browser": {"navigation_timeout": 0}}, "tool_settings.browser.navigation_timeout"),
        ({"telegram": {"token": "123:abc"}}, "tool_settings.telegram.token: Extra inputs are not permitted"),
        ({"process": {"kill_grace": 99}}, "tool_settings.process.kill_grace"),
        ({"webhook": {"secret": "s"}}, "tool_settings.webhook.secret"),
        ({"files": {"root": "/"}}, "tool_settings.files.root"),
        ({"ftp": {}}, "unknown family `ftp`"),
        ({"http": ["x"]}, "tool_settings.http must be a table"),
    ],
)
def test_bad_tool_settings_fail_at_config_load_with_one_line(tmp_path: Path, settings: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        check_tool_settings(settings, tmp_path)
    message = str(info.value)
    assert expected in message and "\n" not in message and message.endswith("Fix kasloop.toml.")
    if all(isinstance(v, dict) for v in settings.values()):
        with pytest.raises(ConfigError):
            Agent(AgentConfig(tool_settings=settings, workspace=tmp_path), home=tmp_path / ".kasloop")
    assert not (tmp_path / ".kasloop" / "kasloop.db").exists()


def test_good_tool_settings_pass(tmp_path: Path) -> None:
    check_tool_settings(
        {
            "http": {"allow_domains": ["example.org"]},
            "shell": {"allow": ["python3"]},
            "email": {"smtp": {"host": "127.0.0.1", "port": 2525, "security": "plain"}, "from_address": "bot@example.org"},
            "browser": {"allow_domains": ["example.org"]},
            "process": {"max_running": 2},
        },
        tmp_path,
    )


def test_cli_refuses_a_kasloop_toml_with_a_misspelt_tool_setting(tmp_path: Path, kasloop: Any) -> None:
    (tmp_path / "kasloop.toml").write_text('[tool_settings.http]\nallow_domain = ["example.org"]\n')
    before = db_fingerprint(tmp_path / ".kasloop" / "kasloop.db")
    result: CLIResult = kasloop("run", "fetch it", "--model", "scripted:none.jsonl")
    assert result.code == 2, result.err
    assert "allow_domain" in result.err and "Traceback" not in result.err and len(result.err.strip().splitlines()) == 1
    assert db_fingerprint(tmp_path / ".kasloop" / "kasloop.db") == before
