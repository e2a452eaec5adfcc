"""Observability: the HTML report (``kasloop report THREAD``) opened in real Chromium, and JSON log lines.

A scripted agent runs at level 3 against a real workspace and database: one
tool error (reading a missing file), a file whose content is a ``<script>``
tag read back into the event log, one approval (``files_delete`` is high
risk), then done. The report must show all of it as text, run no script and
load nothing: Chromium records every request the page makes.
"""

from __future__ import annotations

import io
import json
import logging
import re
import struct
import zlib
from collections.abc import Callable, Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

from kasloop import Agent, AgentConfig, ConfigError
from kasloop.config.schema import ModelPrice
from kasloop.support.logs import EVENTS_LOGGER, JsonFormatter, configure, log_event
from kasloop.reporting.report import default_report_path, render_report, write_report
from kasloop.tools.browser import BROWSER_ARGS
from conftest import CLIResult, call

PAYLOAD = "<script>window.__pwned = 1</script><img src=x onerror=\"window.__pwned = 2\">"
GOAL = "tidy the workspace & report"
PRICE = {"scripted": ModelPrice(input=1000.0, output=2000.0)}  # USD per million tokens: visible amounts


def turns() -> list[dict[str, Any]]:
    return [
        {"content": "look first", "tool_calls": [call("files_read", path="missing.txt")]},
        {"content": "write it", "tool_calls": [call("files_write", path="page.html", content=PAYLOAD)]},
        {"content": "check it", "tool_calls": [call("files_read", path="page.html")]},
        {"content": "remove it", "tool_calls": [call("files_delete", path="page.html")]},
        {"content": "all tidy"},
    ]


def agent_for(tmp_path: Path, workspace: Path, model: str) -> Agent:
    config = AgentConfig(autonomy=3, model=model, tools=["files"], workspace=workspace, prices=PRICE)
    return Agent(config, home=tmp_path / ".kasloop")


# -- helpers: the page's text by element id, PNG facts ----------------------------------------------


class _Text(HTMLParser):
    """Text of the whole page (``""``) and of each element with an id; script/style text is not text."""

    VOID = {"meta", "br", "hr", "img", "input", "link", "col"}

    def __init__(self) -> None:
        super().__init__()
        self.stack: list[tuple[str, str | None]] = []
        self.texts: dict[str, list[str]] = {"": []}
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag in self.VOID:
            return
        ident = dict(attrs).get("id")
        if ident:
            self.texts[ident] = []
        self.stack.append((tag, ident))

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th", "tr", "li", "div", "p", "h1", "h2", "h3", "h4", "pre"):
            self.handle_data("\t" if tag in ("td", "th") else "\n")
        while self.stack:
            if self.stack.pop()[0] == tag:
                break

    def handle_data(self, data: str) -> None:
        if any(t in ("style", "script", "title") for t, _ in self.stack):
            return
        self.texts[""].append(data)
        for _, ident in self.stack:
            if ident:
                self.texts[ident].append(data)


def page_text(document: str) -> tuple[dict[str, str], list[str]]:
    parser = _Text()
    parser.feed(document)
    return {k: "".join(v) for k, v in parser.texts.items()}, parser.tags


def png_facts(path: Path) -> tuple[int, int, int]:
    """(width, height, distinct byte values in the pixel data): a blank page has very few."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG file"
    width, height = struct.unpack(">II", data[16:24])
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    return width, height, len(set(zlib.decompress(idat)))


# -- the report of a real run, in Chromium ----------------------------------------------------------


async def test_report_of_a_level_3_run_shows_cycles_tools_approvals_errors_and_cost_in_chromium(
    tmp_path: Path, workspace: Path, script: Callable[..., str]
) -> None:
    from playwright.async_api import async_playwright

    agent = agent_for(tmp_path, workspace, script(*turns()))
    waiting = await agent.run(GOAL, thread_id="tidy")
    assert waiting.status == "waiting_approval"
    [request] = waiting.approvals
    assert request["tool"] == "files_delete"

    # While it waits, the report lists the request as pending.
    early = await write_report(agent, "tidy")
    assert early == default_report_path(tmp_path / ".kasloop", "tidy") and early.is_file()
    texts, _ = page_text(early.read_text())
    assert request["approval_id"] in texts["approvals"] and "pending" in texts["approvals"]
    assert "waiting_approval" in texts[""]

    done = await agent.approve(request["approval_id"])
    assert done.status == "done" and not (workspace / "page.html").exists()
    path = await write_report(agent, "tidy", tmp_path / "out" / "tidy.html")
    document = path.read_text()
    assert [p.name for p in path.parent.iterdir()] == ["tidy.html"], "no temp file left behind"

    # Escaped by construction: the payload never becomes markup, and nothing links outside the page.
    assert "<script" not in document.lower() and "<img" not in document.lower()
    assert "&lt;script&gt;window.__pwned = 1&lt;/script&gt;" in document
    assert all(link.startswith("#") for link in re.findall(r'(?:href|src)="([^"]*)"', document))

    usage = done.usage
    screenshot = tmp_path / "report.png"
    requests: list[str] = []
    async with async_playwright() as playwright:
        context = await playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path="/usr/bin/chromium", args=list(BROWSER_ARGS), headless=True,
            viewport={"width": 1200, "height": 900},
        )
        try:
            page = await context.new_page()
            page.on("request", lambda r: requests.append(r.url))
            await page.goto(path.resolve().as_uri())
            await page.screenshot(path=str(screenshot), full_page=True)
            body = await page.inner_text("body")
            header = await page.inner_text("header")
            approvals = await page.inner_text("#approvals")
            errors = await page.inner_text("#errors")
            cost = await page.inner_text("#cost")
            timeline = await page.inner_text("#timeline")
            goals = await page.inner_text("#goals")
            pwned = await page.evaluate("window.__pwned")
        finally:
            await context.close()

    assert requests == [path.resolve().as_uri()], "the report loads nothing but itself"
    assert pwned is None, "no script from a tool output ran"
    width, height, distinct = png_facts(screenshot)
    assert width == 1200 and height > 900 and screenshot.stat().st_size > 30_000 and distinct > 50, (width, height, distinct)

    assert GOAL in header and "done" in header and "scripted:" in header
    assert f"{usage['input_tokens']:,}" in header and f"{usage['model_calls']}" in header
    assert PAYLOAD in timeline, "the <script> from the tool output is shown as text"
    for text in ("files_read", "files_write", "files_delete", "look first", "all tidy", "self diagnose", "replan", "approval requested"):
        assert text in timeline, text
    assert re.search(r"files_delete\s+ask", timeline) and re.search(r"files_read\s+allow", timeline), "calls show their gate"
    assert "approval" in body.lower()
    assert request["approval_id"] in approvals and "approve" in approvals and "Cycle" in approvals and "pending" not in approvals
    assert "files_read failed (bad_args)" in errors and "missing.txt" in errors and "recovery: replan" in errors
    history = await agent.history("tidy")
    assert len([e for e in history if e["kind"] == "decide"]) == 5
    itemised = sum(e.get("input_tokens", 0) for e in history if e["kind"] in ("decide", "self_diagnose", "summary"))
    assert itemised == usage["input_tokens"], "decisions, diagnoses and summaries carry what they cost"
    assert re.search(rf"all cycles\s+{usage['model_calls']}\s+{usage['input_tokens']:,}", cost), cost
    assert "other model calls" not in cost, "every model call is itemised in its cycle"
    assert re.search(rf"^1\s+{re.escape(GOAL)}\s+done\s+4\s+4 \(1 failed\)\s+1\s+1\s+6", goals, re.M), goals  # 5 decisions + 1 diagnosis


# -- rendering details, on event lists shaped like Agent.history returns ---------------------------


def _row(**over: Any) -> dict[str, Any]:
    usage = {"steps": 3, "tool_calls": 2, "model_calls": 3, "input_tokens": 300, "output_tokens": 30, "usd": 0.0006, "seconds": 1.5}
    return {"thread": "t", "status": "done", "goal": "second goal", "autonomy": 4, "model": "scripted:x", "usage": usage,
            "budgets": {}, "output": "ok", "approvals": [], "unread": 0, "updated_at": 1_700_000_100.0, **over}


def _ev(i: int, step: int, kind: str, **data: Any) -> dict[str, Any]:
    return {"id": i, "ts": 1_700_000_000.0 + i, "step": step, "kind": kind, **data}


def _decide(i: int, step: int, tokens: int, usd: float, calls: list[dict[str, Any]] | None = None, content: str = "") -> dict[str, Any]:
    return _ev(i, step, "decide", content=content, calls=calls or [], turn=i, prompt_tokens=tokens, input_tokens=tokens, output_tokens=10, usd=usd)


def test_goals_split_the_timeline_and_step_0_events_join_the_cycle_they_happened_in() -> None:
    events = [
        _ev(1, 0, "goal", text="first goal"),
        _ev(2, 1, "perceive", observation="step 1"),
        _decide(3, 1, 100, 0.0002, [{"tool": "files_write", "gate": "allow", "reason": "low"}]),
        _ev(4, 1, "tool", tool="files_write", call_id="c", arg_hash="h", ok=True, error_kind=None, reused=False, output="Wrote."),
        _ev(5, 0, "told", message_id=7, source="cli"),
        _decide(6, 2, 100, 0.0002, content="first done"),
        _ev(7, 0, "goal", text="second goal"),
        _ev(8, 3, "perceive", observation="step 3"),
        _decide(9, 3, 100, 0.0002, content="second done"),
    ]
    texts, _ = page_text(render_report(_row(), events))
    first, second = texts["goal-1"], texts["goal-2"]
    assert "first goal" in first and "Cycle 1" in first and "Cycle 2" in first and "second goal" not in first
    assert "Cycle 3" in second and "Cycle 1" not in second
    assert "told" in texts["g1-c1"] and "message_id" in texts["g1-c1"], "the step-0 event stayed in cycle 1"
    assert "told" not in texts["g1-c2"]
    goals = texts["goals"]
    assert "first goal" in goals and "second goal" in goals
    # Per-goal totals: goal 1 had two model calls (220 tokens, $0.0004), goal 2 one (110 tokens).
    assert "220" in goals and "$0.0004" in goals and "110" in goals
    assert "No approval was requested." in texts["approvals"] and "No errors." in texts["errors"]


def test_every_field_from_models_tools_and_people_is_escaped() -> None:
    evil = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    events = [
        _ev(1, 0, "goal", text=evil),
        _decide(2, 1, 50, 0.0, [{"tool": evil, "gate": evil, "reason": evil}], content=evil),
        _ev(3, 1, "tool", tool=evil, ok=False, error_kind=evil, reused=False, output=evil),
        _ev(4, 1, "self_diagnose", action=evil, error_kind=evil, source=evil, attempts=1, message=evil, diagnosis=evil),
        _ev(5, 1, "approval_requested", approval_id=evil, tool=evil, arg_hash="h", reason=evil),
        _ev(6, 1, "approval_decision", approval_id=evil, decision=evil, by=evil, channel=evil, arg_hash="h", new_arg_hash=None),
        _ev(7, 1, "error", source=evil, message=evil),
        _ev(8, 1, "something_new", **{evil: evil}),
    ]
    row = _row(thread=evil, goal=evil, output=evil, model=evil,
               approvals=[{"approval_id": "ap-1", "tool": evil, "args": {"x": evil}, "reason": evil, "created_at": 1.0, "expires_at": 2.0}])
    document = render_report(row, events)
    texts, tags = page_text(document)
    assert "img" not in tags and "script" not in tags, "no markup came from the data"
    assert texts[""].count(evil) >= 15, "each field is shown, as text"
    assert "pending" in texts["approvals"] and '{"x": ' in texts["approvals"], "pending requests come from the status row"


def test_cost_table_shows_model_calls_the_event_log_does_not_itemise() -> None:
    """Diagnosis and summary model calls count in usage but carry no tokens in their events."""
    events = [_ev(1, 0, "goal", text="g"), _decide(2, 1, 100, 0.0002), _decide(3, 2, 100, 0.0002)]
    texts, _ = page_text(render_report(_row(), events))
    assert "event log)\t1\t100\t10\t$0.0002\t" in texts["cost"], texts["cost"]
    exact = _row(usage={**_row()["usage"], "model_calls": 2, "input_tokens": 200, "output_tokens": 20, "usd": 0.0004})
    assert "other model calls" not in page_text(render_report(exact, events))[0]["cost"]


# -- the CLI ------------------------------------------------------------------------------------------


def test_report_cli_writes_the_file_prints_its_path_and_refuses_unknown_threads_in_one_line(
    tmp_path: Path, workspace: Path, script: Callable[..., str], kasloop: Callable[..., CLIResult]
) -> None:
    model = script({"content": "", "tool_calls": [call("files_write", path="a.txt", content="<b>hi</b>")]}, {"content": "written"})
    run = kasloop("run", "write a file", "--thread", "cli/1", "--model", model, "--workspace", str(workspace), "--autonomy", "4", "--json")
    assert run.code == 0, run

    made = kasloop("report", "cli/1")
    assert made.code == 0, made
    expected = (tmp_path / ".kasloop" / "reports" / "cli_1.html").resolve()
    assert made.out == f"{expected}\n" and expected.is_file()
    texts, _ = page_text(expected.read_text())
    assert "write a file" in texts["goals"] and "files_write" in texts["timeline"] and "written" in texts[""]

    custom = kasloop("report", "cli/1", "--out", str(tmp_path / "r.html"))
    assert custom.code == 0 and Path(custom.out.strip()) == (tmp_path / "r.html").resolve() and (tmp_path / "r.html").is_file()
    (tmp_path / "dir").mkdir()
    into = kasloop("report", "cli/1", "--out", str(tmp_path / "dir"))
    assert into.code == 0 and (tmp_path / "dir" / "cli_1.html").is_file(), into

    unknown = kasloop("report", "nope")
    assert unknown.code == 2 and unknown.out == "" and unknown.err.count("\n") == 1 and "`nope`" in unknown.err, unknown
    (tmp_path / "blocker").write_text("a file, not a folder")
    blocked = kasloop("report", "cli/1", "--out", str(tmp_path / "blocker" / "r.html"))
    assert blocked.code == 2 and blocked.err.count("\n") == 1 and "--out" in blocked.err and "Traceback" not in blocked.err, blocked


# -- JSON logs ----------------------------------------------------------------------------------------


@pytest.fixture
def kasloop_logger() -> Iterator[logging.Logger]:
    """Put the ``kasloop`` logger back as it was, whatever a test configured."""
    logger = logging.getLogger("kasloop")
    saved = (list(logger.handlers), logger.level, logger.propagate)
    yield logger
    for handler in logger.handlers:
        if handler not in saved[0]:
            logger.removeHandler(handler)
    logger.setLevel(saved[1])
    logger.propagate = saved[2]


def test_json_lines_carry_thread_step_kind_and_event_data_one_object_per_line(kasloop_logger: logging.Logger) -> None:
    stream = io.StringIO()
    configure("INFO", stream)
    log_event("t1", 3, "tool", {"tool": "files_read", "ok": False, "error_kind": "bad_args", "output": "line 1\nline 2\u2028line 3",
                                "args": {"path": Path("a.txt")}, "message": "a field named like the line's own key"})
    log_event("t1", 4, "decide", {"calls": [], "usd": 0.25, "content": "héllo"})
    logging.getLogger("kasloop.runtime").info("plain %s", "record", extra={"pid": 42})
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("kasloop.runtime").exception("it failed")

    lines = stream.getvalue().splitlines()  # splitlines also breaks on U+2028: it must be escaped
    assert len(lines) == 4, lines
    tool, decide, plain, failure = (json.loads(line) for line in lines)
    assert tool["thread"] == "t1" and tool["step"] == 3 and tool["kind"] == "tool" and tool["logger"] == EVENTS_LOGGER
    assert tool["level"] == "INFO" and tool["message"] == "tool files_read failed (bad_args)"
    assert tool["data"]["output"] == "line 1\nline 2\u2028line 3" and tool["data"]["args"] == {"path": "a.txt"}
    assert tool["data"]["message"] == "a field named like the line's own key"
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", tool["ts"])
    assert decide["data"] == {"calls": [], "usd": 0.25, "content": "héllo"} and "héllo" in lines[1]
    assert plain == {"ts": plain["ts"], "level": "INFO", "logger": "kasloop.runtime", "message": "plain record", "pid": 42}
    assert failure["level"] == "ERROR" and "ValueError: boom" in failure["exc"] and "Traceback" in failure["exc"]


def test_configure_is_idempotent_filters_by_level_and_refuses_unknown_levels(kasloop_logger: logging.Logger) -> None:
    first, second = io.StringIO(), io.StringIO()
    configure("INFO", first)
    configure("warning", second)
    assert sum(isinstance(h.formatter, JsonFormatter) for h in kasloop_logger.handlers) == 1
    log_event("t", 1, "perceive", {"observation": "x"})
    logging.getLogger("kasloop.agent").warning("careful")
    assert first.getvalue() == "", "the first handler was replaced, not kept"
    [line] = second.getvalue().splitlines()
    assert json.loads(line)["message"] == "careful", "INFO events are below WARNING"
    with pytest.raises(ConfigError, match="`LOUD`"):
        configure("LOUD", second)


def test_log_event_records_are_visible_to_standard_handlers(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=EVENTS_LOGGER):
        log_event("t9", 2, "approval_decision", {"approval_id": "ap-1", "decision": "approve"})
    [record] = caplog.records
    assert record.name == EVENTS_LOGGER and record.levelno == logging.INFO
    assert (record.thread_id, record.step, record.kind) == ("t9", 2, "approval_decision")  # type: ignore[attr-defined]
    assert record.getMessage() == "approval ap-1: approve" and record.data["decision"] == "approve"  # type: ignore[attr-defined]


def test_kasloop_log_json_streams_every_event_as_one_json_line(tmp_path: Path, kasloop: Callable[..., Any]) -> None:
    plan = tmp_path / "plan.jsonl"
    plan.write_text(json.dumps({"content": "", "tool_calls": [{"name": "files_write", "args": {"path": "a.txt", "content": "hi"}}]}) + "\n" + json.dumps({"content": "done"}) + "\n")
    (tmp_path / "ws").mkdir()
    run = kasloop("run", "write a.txt", "--model", f"scripted:{plan}", "--workspace", str(tmp_path / "ws"), "--autonomy", "4", "--json", env={"KASLOOP_LOG": "json"})
    assert run.code == 0, run.err
    lines = [json.loads(line) for line in run.err.splitlines() if line.startswith("{")]
    kinds = [line["kind"] for line in lines if line.get("logger") == "kasloop.events"]
    assert kinds[:1] == ["goal"] and {"perceive", "decide", "tool"} <= set(kinds)
    tool = next(line for line in lines if line.get("kind") == "tool")
    assert tool["thread"] == json.loads(run.out)["thread"] and tool["step"] == 1 and tool["data"]["tool"] == "files_write"
    assert len(lines) == len(run.err.strip().splitlines()), "nothing but JSON lines on stderr"


def test_status_of_a_thread_sums_usage_per_goal(tmp_path: Path, kasloop: Callable[..., Any]) -> None:
    plan = tmp_path / "plan.jsonl"
    turns = [
        {"content": "", "tool_calls": [{"name": "files_write", "args": {"path": "a.txt", "content": "a"}}]}, {"content": "first done"},
        {"content": "", "tool_calls": [{"name": "files_write", "args": {"path": "b.txt", "content": "b"}}]}, {"content": "second done"},
    ]
    plan.write_text("".join(json.dumps(t) + "\n" for t in turns))
    (tmp_path / "ws").mkdir()
    common = ("--model", f"scripted:{plan}", "--workspace", str(tmp_path / "ws"), "--autonomy", "4", "--thread", "two")
    assert kasloop("run", "write a.txt", *common).code == 0
    assert kasloop("run", "write b.txt", *common).code == 0
    shown = kasloop("status", "two", "--json")
    assert shown.code == 0, shown.err
    goals = shown.json()["goals"]
    assert [(g["goal"], g["outcome"], g["tool_calls"], g["model_calls"]) for g in goals] == [("write a.txt", "done", 1, 2), ("write b.txt", "done", 1, 2)]
    assert all(g["input_tokens"] > 0 for g in goals)
    human = kasloop("status", "two")
    assert "Goals of two" in human.out and "write b.txt" in human.out
