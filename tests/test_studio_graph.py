"""``graphs/agent.py`` exposes a module-level ``graph`` (for LangGraph Studio), built from kasloop.toml."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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
