"""``graphs/agent.py`` exposes a module-level ``graph`` (for LangGraph Studio), built from kasloop.toml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from conftest import call, write_script


def test_module_level_graph_is_built_from_the_config_file_and_runs(tmp_path: Path) -> None:
    script = write_script(tmp_path / "s.jsonl", [{"content": "", "tool_calls": [call("files_write", path="a.txt", content="studio")]}, {"content": "done"}])
    (tmp_path / "ws").mkdir()
    (tmp_path / "kasloop.toml").write_text(f'autonomy = 4\nmodel = "scripted:{script}"\nworkspace = "ws"\n')
    code = (
        "import asyncio, json\n"
        "from langchain_core.messages import HumanMessage\n"
        "from langgraph.checkpoint.memory import InMemorySaver\n"
        "from kasloop.graphs.agent import graph\n"
        "assert graph.checkpointer is None\n"
        "out = asyncio.run(graph.ainvoke({'messages': [HumanMessage('write a.txt')], 'goals': [{'id': 'g1', 'text': 'write a.txt', 'status': 'open'}]}))\n"
        "print(json.dumps({'status': out['status'], 'output': out['output'], 'nodes': sorted(graph.get_graph().nodes)}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["status"] == "done" and result["output"] == "done"
    assert set(result["nodes"]) >= {"perceive", "decide", "act", "self_diagnose", "human_approval"}
    assert (tmp_path / "ws" / "a.txt").read_text() == "studio"


async def test_a_graph_run_without_a_context_uses_its_own_thread_id(tmp_path: Path, workspace: Path, script: Callable[..., str]) -> None:
    """What a server does (no context, or ``{}``): each thread still gets its own ledger keys and approval ids."""
    from langchain_core.messages import HumanMessage
    from langgraph.checkpoint.memory import InMemorySaver

    from kasloop import AgentConfig, build_graph

    model = script({"content": "", "tool_calls": [call("files_write", path="a.txt", content="hi")]}, {"content": "done"})
    graph = build_graph(AgentConfig(autonomy=4, model=model, tools=["files"], workspace=workspace), checkpointer=InMemorySaver())
    goal = {"messages": [HumanMessage("write a.txt")], "goals": [{"id": "g1", "text": "write a.txt", "status": "open"}]}
    for thread in ("A", "B"):
        (workspace / "a.txt").unlink(missing_ok=True)
        out = await graph.ainvoke(goal, {"configurable": {"thread_id": thread}}, context={})
        assert out["status"] == "done"
        assert (workspace / "a.txt").read_text() == "hi", f"thread {thread} ran its own call, not another thread's recorded one"
