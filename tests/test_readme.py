"""The README stays true: its two opening commands, its graph and its test command."""

from __future__ import annotations

import re
from pathlib import Path

from kasloop.cli.graph import mermaid

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands() -> None:
    first_block = re.search(r"```sh\n(.*?)```", README, re.S)
    assert first_block is not None and README.index("```sh") < README.index("\n## ")
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.strip()]
    assert commands == ["make demo", "make test"]


def test_ci_runs_the_readme_test_command() -> None:
    ci = (ROOT / ".ci" / "run").read_text().splitlines()
    assert "make test" in [line.strip() for line in ci]


def test_mermaid_diagram_is_the_real_graph() -> None:
    block = re.search(r"```mermaid\n(.*?)```", README, re.S)
    assert block is not None
    assert block.group(1) == mermaid()


def test_graph_has_the_five_nodes() -> None:
    diagram = mermaid()
    for node in ("perceive", "decide", "act", "self_diagnose", "human_approval"):
        assert f"\t{node}({node})" in diagram
