"""Deterministic gating (kasloop/guardrails/policy.py), autonomy levels (kasloop/config/schema.py) and the graph's routing.

The expected gates are written out by hand below, one row per combination,
from DESIGN §3: rules beat levels (deny is final, ask always asks), at level 3
a side effect after untrusted content was read always asks (even with an allow
rule), an allow rule runs the call otherwise; without a rule level 2 asks for
everything, level 3 for high/critical risk, level 4 for nothing.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import HumanMessage, ToolMessage
from langgraph.checkpoint.memory import InMemorySaver

import kasloop
import kasloop.graphs.agent
import kasloop.tools.registry
from kasloop import AgentConfig, AutonomyLevelError, ConfigError, PolicyRule
from kasloop.config.schema import AUTONOMY_LEVELS, check_autonomy
from kasloop.guardrails.policy import arg_hash, gate_call, matching_rule_action
from conftest import call

# level  risk      rule   tainted  → expected gate
GATE_TABLE = """
2  read      -      clean    ask
2  read      -      tainted  ask
2  read      allow  clean    allow
2  read      allow  tainted  allow
2  read      deny   clean    deny
2  read      deny   tainted  deny
2  read      ask    clean    ask
2  read      ask    tainted  ask
2  low       -      clean    ask
2  low       -      tainted  ask
2  low       allow  clean    allow
2  low       allow  tainted  allow
2  low       deny   clean    deny
2  low       deny   tainted  deny
2  low       ask    clean    ask
2  low       ask    tainted  ask
2  high      -      clean    ask
2  high      -      tainted  ask
2  high      allow  clean    allow
2  high      allow  tainted  allow
2  high      deny   clean    deny
2  high      deny   tainted  deny
2  high      ask    clean    ask
2  high      ask    tainted  ask
2  critical  -      clean    ask
2  critical  -      tainted  ask
2  critical  allow  clean    allow
2  critical  allow  tainted  allow
2  critical  deny   clean    deny
2  critical  deny   tainted  deny
2  critical  ask    clean    ask
2  critical  ask    tainted  ask
3  read      -      clean    allow
3  read      -      tainted  allow
3  read      allow  clean    allow
3  read      allow  tainted  allow
3  read      deny   clean    deny
3  read      deny   tainted  deny
3  read      ask    clean    ask
3  read      ask    tainted  ask
3  low       -      clean    allow
3  low       -      tainted  ask
3  low       allow  clean    allow
3  low       allow  tainted  ask
3  low       deny   clean    deny
3  low       deny   tainted  deny
3  low       ask    clean    ask
3  low       ask    tainted  ask
3  high      -      clean    ask
3  high      -      tainted  ask
3  high      allow  clean    allow
3  high      allow  tainted  ask
3  high      deny   clean    deny
3  high      deny   tainted  deny
3  high      ask    clean    ask
3  high      ask    tainted  ask
3  critical  -      clean    ask
3  critical  -      tainted  ask
3  critical  allow  clean    allow
3  critical  allow  tainted  ask
3  critical  deny   clean    deny
3  critical  deny   tainted  deny
3  critical  ask    clean    ask
3  critical  ask    tainted  ask
4  read      -      clean    allow
4  read      -      tainted  allow
4  read      allow  clean    allow
4  read      allow  tainted  allow
4  read      deny   clean    deny
4  read      deny   tainted  deny
4  read      ask    clean    ask
4  read      ask    tainted  ask
4  low       -      clean    allow
4  low       -      tainted  allow
4  low       allow  clean    allow
4  low       allow  tainted  allow
4  low       deny   clean    deny
4  low       deny   tainted  deny
4  low       ask    clean    ask
4  low       ask    tainted  ask
4  high      -      clean    allow
4  high      -      tainted  allow
4  high      allow  clean    allow
4  high      allow  tainted  allow
4  high      deny   clean    deny
4  high      deny   tainted  deny
4  high      ask    clean    ask
4  high      ask    tainted  ask
4  critical  -      clean    allow
4  critical  -      tainted  allow
4  critical  allow  clean    allow
4  critical  allow  tainted  allow
4  critical  deny   clean    deny
4  critical  deny   tainted  deny
4  critical  ask    clean    ask
4  critical  ask    tainted  ask
"""


def _parse_gate_table() -> list[tuple[int, str, str | None, bool, str]]:
    rows = []
    for line in GATE_TABLE.strip().splitlines():
        level, risk, rule, taint, gate = line.split()
        rows.append((int(level), risk, None if rule == "-" else rule, taint == "tainted", gate))
    return rows


GATE_ROWS = _parse_gate_table()


def test_gate_table_covers_every_combination_once() -> None:
    keys = [(level, risk, rule, tainted) for level, risk, rule, tainted, _ in GATE_ROWS]
    assert len(keys) == len(set(keys)) == 3 * 4 * 4 * 2
    assert {k[0] for k in keys} == {2, 3, 4}
    assert {k[1] for k in keys} == {"read", "low", "high", "critical"}
    assert {k[2] for k in keys} == {None, "allow", "deny", "ask"}


@pytest.mark.parametrize(
    ("level", "risk", "rule", "tainted", "expected"),
    GATE_ROWS,
    ids=[f"L{r[0]}-{r[1]}-{r[2] or 'norule'}-{'tainted' if r[3] else 'clean'}" for r in GATE_ROWS],
)
def test_gate_call_routing_table(level: int, risk: str, rule: str | None, tainted: bool, expected: str) -> None:
    gate, reason = gate_call(autonomy=level, risk=risk, rule_action=rule, tainted=tainted)  # type: ignore[arg-type]
    assert gate == expected
    assert isinstance(reason, str) and reason.strip(), "a human must be told why"


def test_gate_call_defaults_are_no_rule_and_not_tainted() -> None:
    assert gate_call(autonomy=3, risk="low") == gate_call(autonomy=3, risk="low", rule_action=None, tainted=False)
    assert gate_call(autonomy=3, risk="low")[0] == "allow"


def test_gate_reasons_name_the_cause() -> None:
    assert "deny" in gate_call(autonomy=4, risk="read", rule_action="deny")[1]
    assert "ask" in gate_call(autonomy=4, risk="read", rule_action="ask")[1]
    assert "untrusted" in gate_call(autonomy=3, risk="low", rule_action="allow", tainted=True)[1]
    assert "level 2" in gate_call(autonomy=2, risk="read")[1]
    assert "high" in gate_call(autonomy=3, risk="high")[1]


# --------------------------------------------------------------------------- rules


def test_tool_globs_match_and_non_matching_rules_give_none() -> None:
    rules = [PolicyRule(tool="files_*", action="allow")]
    assert matching_rule_action(rules, "files_write", {"path": "a.txt", "content": "x"}) == "allow"
    assert matching_rule_action(rules, "files_delete", {"path": "a.txt"}) == "allow"
    assert matching_rule_action(rules, "shell_run", {"command": "ls"}) is None
    assert matching_rule_action([], "files_write", {"path": "a"}) is None
    assert matching_rule_action([PolicyRule(tool="files_read", action="deny")], "files_read", {"path": "a"}) == "deny"
    assert matching_rule_action([PolicyRule(tool="files_read", action="deny")], "files_readme", {"path": "a"}) is None
    assert matching_rule_action([PolicyRule(tool="*", action="ask")], "anything_at_all", {}) == "ask"
    assert matching_rule_action([PolicyRule(tool="files_?rite", action="ask")], "files_write", {}) == "ask"


def test_argument_globs_must_all_match() -> None:
    rules = [PolicyRule(tool="files_write", action="allow", args={"path": "notes/*"})]
    assert matching_rule_action(rules, "files_write", {"path": "notes/today.md", "content": "x"}) == "allow"
    assert matching_rule_action(rules, "files_write", {"path": "src/main.py", "content": "x"}) is None
    assert matching_rule_action(rules, "files_write", {"content": "x"}) is None  # argument absent: no match
    assert matching_rule_action(rules, "files_append", {"path": "notes/today.md"}) is None  # other tool
    two = [PolicyRule(tool="files_write", action="deny", args={"path": "*.env", "content": "*KEY*"})]
    assert matching_rule_action(two, "files_write", {"path": "prod.env", "content": "API_KEY=1"}) == "deny"
    assert matching_rule_action(two, "files_write", {"path": "prod.env", "content": "harmless"}) is None
    assert matching_rule_action(two, "files_write", {"path": "notes.txt", "content": "API_KEY=1"}) is None


def test_argument_globs_match_the_string_form_of_non_string_arguments() -> None:
    rules = [PolicyRule(tool="shell_run", action="ask", args={"timeout": "3??"})]
    assert matching_rule_action(rules, "shell_run", {"command": "x", "timeout": 300}) == "ask"
    assert matching_rule_action(rules, "shell_run", {"command": "x", "timeout": 30}) is None


@pytest.mark.parametrize("order", ["as_written", "reversed"])
def test_strictest_matching_rule_wins_whatever_the_order(order: str) -> None:
    rules = [
        PolicyRule(tool="files_*", action="allow"),
        PolicyRule(tool="files_write", action="ask"),
        PolicyRule(tool="files_write", action="deny", args={"path": "secrets/*"}),
        PolicyRule(tool="files_delete", action="allow"),
        PolicyRule(tool="files_delete", action="deny"),
    ]
    if order == "reversed":
        rules.reverse()
    assert matching_rule_action(rules, "files_write", {"path": "secrets/key", "content": "x"}) == "deny"
    assert matching_rule_action(rules, "files_write", {"path": "notes/a", "content": "x"}) == "ask"
    assert matching_rule_action(rules, "files_read", {"path": "secrets/key"}) == "allow"
    assert matching_rule_action(rules, "files_delete", {"path": "a"}) == "deny"
    assert matching_rule_action(rules, "http_get", {"url": "https://x"}) is None


@pytest.mark.parametrize("path", ["./secrets/key.txt", "notes/../secrets/key.txt", "secrets//key.txt"])
def test_path_deny_rule_is_not_bypassed_by_an_equivalent_spelling(path: str) -> None:
    """A deny rule on ``secrets/*`` must also catch other spellings of the same workspace path.

    Otherwise the model (or a prompt injection) evades the rule by writing
    ``./secrets/key.txt``: the files jail resolves it to the very file the rule protects.
    """
    rules = [PolicyRule(tool="files_*", action="deny", args={"path": "secrets/*"})]
    assert matching_rule_action(rules, "files_write", {"path": "secrets/key.txt", "content": "x"}) == "deny"
    assert matching_rule_action(rules, "files_write", {"path": path, "content": "x"}) == "deny"


def test_policy_rule_rejects_unknown_actions_and_fields() -> None:
    with pytest.raises(ValueError):
        PolicyRule(tool="files_*", action="maybe")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        PolicyRule(tool="files_*", action="allow", when="always")  # type: ignore[call-arg]


# --------------------------------------------------------------------------- arg_hash


def test_arg_hash_is_sha256_of_canonical_json_of_tool_and_args() -> None:
    canonical = '{"args":{"content":"hi","path":"a.txt"},"tool":"files_write"}'
    expected = hashlib.sha256(canonical.encode()).hexdigest()
    assert arg_hash("files_write", {"path": "a.txt", "content": "hi"}) == expected
    assert len(expected) == 64 and all(c in "0123456789abcdef" for c in expected)


def test_arg_hash_is_stable_across_key_order_including_nested() -> None:
    a = arg_hash("http_post", {"url": "https://x", "json": {"b": [1, {"y": 2, "x": 1}], "a": None}})
    b = arg_hash("http_post", {"json": {"a": None, "b": [1, {"x": 1, "y": 2}]}, "url": "https://x"})
    assert a == b


def test_arg_hash_differs_when_anything_differs() -> None:
    base = arg_hash("files_write", {"path": "a.txt", "content": "hi"})
    assert arg_hash("files_write", {"path": "a.txt", "content": "hi!"}) != base
    assert arg_hash("files_write", {"path": "b.txt", "content": "hi"}) != base
    assert arg_hash("files_append", {"path": "a.txt", "content": "hi"}) != base
    assert arg_hash("files_write", {"path": "a.txt", "content": "hi", "extra": 1}) != base
    assert arg_hash("x", {"n": 1}) != arg_hash("x", {"n": "1"})
    assert arg_hash("x", {"items": [1, 2]}) != arg_hash("x", {"items": [2, 1]})  # list order matters


# --------------------------------------------------------------------------- autonomy levels


@pytest.mark.parametrize("level", [0, 1])
def test_levels_0_and_1_explain_themselves_and_say_kasloop_starts_at_2(level: int) -> None:
    for attempt in (lambda: check_autonomy(level), lambda: AgentConfig(autonomy=level)):
        with pytest.raises(AutonomyLevelError) as info:
            attempt()
        message = str(info.value)
        assert f"`{level}`" in message
        # It says what the level would mean (wording may change; an explanation of some substance must be there).
        assert f"level {level} would mean" in message
        explanation = message.split(f"level {level} would mean", 1)[1].split("kasloop starts at 2", 1)[0]
        assert len(explanation.split()) >= 5, explanation
        assert "kasloop starts at 2" in message
        assert isinstance(info.value, ConfigError) and info.value.exit_code == 2


def test_levels_0_and_1_get_different_explanations() -> None:
    messages = []
    for level in (0, 1):
        with pytest.raises(AutonomyLevelError) as info:
            check_autonomy(level)
        messages.append(str(info.value).replace(f"`{level}`", "`N`").replace(f"level {level}", "level N"))
    assert messages[0] != messages[1]


@pytest.mark.parametrize("level", [7, 5, -1, 100])
def test_nonexistent_levels_say_choose_2_3_or_4(level: int) -> None:
    for attempt in (lambda: check_autonomy(level), lambda: AgentConfig(autonomy=level)):
        with pytest.raises(AutonomyLevelError) as info:
            attempt()
        message = str(info.value)
        assert f"`{level}`" in message and "does not exist" in message
        assert re.search(r"choose 2\b.*\b3\b.*\b4\b", message), message


@pytest.mark.parametrize("level", [2, 3, 4])
def test_levels_2_3_4_are_accepted(level: int) -> None:
    assert check_autonomy(level) == level
    assert AgentConfig(autonomy=level).autonomy == level
    assert level in AUTONOMY_LEVELS and AUTONOMY_LEVELS[level]


def test_autonomy_is_frozen_once_configured() -> None:
    config = AgentConfig(autonomy=2)
    with pytest.raises(ValueError):
        config.autonomy = 4  # type: ignore[misc]
    assert config.autonomy == 2


# --------------------------------------------------------------------------- the real graph routes as the table says

# What the graph does with one call, per level, tool (one per risk) and rule:
#   approval = stops at human_approval with an interrupt, nothing ran
#   ran      = act ran the tool, the run finished
#   refused  = decide answered "Refused by policy", nothing ran, the run finished
# level  tool          rule   → outcome
GRAPH_TABLE = """
2  files_list    -      approval
2  files_list    allow  ran
2  files_list    deny   refused
2  files_list    ask    approval
2  files_write   -      approval
2  files_write   allow  ran
2  files_write   deny   refused
2  files_write   ask    approval
2  files_delete  -      approval
2  files_delete  allow  ran
2  files_delete  deny   refused
2  files_delete  ask    approval
3  files_list    -      ran
3  files_list    allow  ran
3  files_list    deny   refused
3  files_list    ask    approval
3  files_write   -      ran
3  files_write   allow  ran
3  files_write   deny   refused
3  files_write   ask    approval
3  files_delete  -      approval
3  files_delete  allow  ran
3  files_delete  deny   refused
3  files_delete  ask    approval
4  files_list    -      ran
4  files_list    allow  ran
4  files_list    deny   refused
4  files_list    ask    approval
4  files_write   -      ran
4  files_write   allow  ran
4  files_write   deny   refused
4  files_write   ask    approval
4  files_delete  -      ran
4  files_delete  allow  ran
4  files_delete  deny   refused
4  files_delete  ask    approval
"""

GRAPH_ROWS = [
    (int(level), tool, None if rule == "-" else rule, outcome)
    for level, tool, rule, outcome in (line.split() for line in GRAPH_TABLE.strip().splitlines())
]

TOOL_ARGS: dict[str, dict[str, Any]] = {
    "files_list": {"path": "."},
    "files_write": {"path": "out.txt", "content": "written by the agent"},
    "files_delete": {"path": "victim.txt"},
}


def _effect_happened(tool: str, ws: Path) -> bool:
    if tool == "files_write":
        return (ws / "out.txt").exists()
    if tool == "files_delete":
        return not (ws / "victim.txt").exists()
    return False  # files_list has no side effect; its ToolMessage shows it ran


async def run_graph_once(config: AgentConfig) -> Any:
    """Invoke the real graph for one goal with the thread's run context; return the final state snapshot."""
    graph = kasloop.build_graph(config, checkpointer=InMemorySaver())
    cfg = {"configurable": {"thread_id": "t"}}
    context = kasloop.graphs.agent.context_for(config, "t", kasloop.tools.registry.select_tools(config.tools))
    await graph.ainvoke(
        {"messages": [HumanMessage("go")], "goals": [{"id": "g1", "text": "go", "status": "open"}]}, cfg, context=context
    )
    return await graph.aget_state(cfg)


@pytest.mark.parametrize(
    ("level", "tool", "rule", "outcome"),
    GRAPH_ROWS,
    ids=[f"L{r[0]}-{r[1]}-{r[2] or 'norule'}" for r in GRAPH_ROWS],
)
async def test_graph_routes_each_call_as_the_table_says(
    workspace: Path, script: Callable[..., str], level: int, tool: str, rule: str | None, outcome: str
) -> None:
    (workspace / "victim.txt").write_text("precious")
    args = TOOL_ARGS[tool]
    config = AgentConfig(
        autonomy=level,
        model=script({"content": "working", "tool_calls": [call(tool, **args)]}, {"content": "finished"}),
        tools=["files"],
        workspace=workspace,
        rules=[PolicyRule(tool=tool, action=rule)] if rule else [],
    )
    state = await run_graph_once(config)
    tool_messages = [m for m in state.values.get("messages", []) if isinstance(m, ToolMessage)]

    if outcome == "approval":
        assert state.next == ("human_approval",)
        assert state.interrupts, "the pause must carry an approval request"
        [request] = state.interrupts[0].value["requests"]
        assert request["tool"] == tool and request["args"] == args
        assert request["arg_hash"] == arg_hash(tool, args)
        assert tool_messages == []
        assert not _effect_happened(tool, workspace)
    elif outcome == "ran":
        assert state.next == ()
        assert not state.interrupts
        [message] = tool_messages
        assert message.name == tool and message.status != "error", message
        if tool == "files_list":
            assert "victim.txt" in message.content
        else:
            assert _effect_happened(tool, workspace)
        if tool == "files_write":
            assert (workspace / "out.txt").read_text() == "written by the agent"
        assert state.values["status"] == "done" and state.values["output"] == "finished"
    else:
        assert outcome == "refused"
        assert state.next == ()
        assert not state.interrupts
        [message] = tool_messages
        assert "Refused by policy" in message.content and message.name == tool
        assert not _effect_happened(tool, workspace)
        assert state.values["status"] == "done" and state.values["output"] == "finished"
    assert (workspace / "victim.txt").exists() == (not (tool == "files_delete" and outcome == "ran"))


async def test_graph_deny_rule_on_a_path_holds_for_a_dotted_spelling(workspace: Path, script: Callable[..., str]) -> None:
    """End to end: a deny rule on ``secrets/*`` must stop a write to ``./secrets/key.txt`` (the same file)."""
    (workspace / "secrets").mkdir()
    (workspace / "secrets" / "key.txt").write_text("original")
    config = AgentConfig(
        autonomy=4,
        model=script(
            {"content": "", "tool_calls": [call("files_write", path="./secrets/key.txt", content="overwritten")]},
            {"content": "finished"},
        ),
        tools=["files"],
        workspace=workspace,
        rules=[PolicyRule(tool="files_*", action="deny", args={"path": "secrets/*"})],
    )
    state = await run_graph_once(config)
    [message] = [m for m in state.values["messages"] if isinstance(m, ToolMessage)]
    assert (workspace / "secrets" / "key.txt").read_text() == "original"
    assert "Refused by policy" in message.content
