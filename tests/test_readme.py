"""The README stays true: its two opening commands, its graph, its test command, its contents and its links.

The README is the newcomer's guide; the reference lives in ``docs/``. These tests keep the two
honest together: every relative link in README.md and docs/*.md reaches an existing file (and, for
``#anchor`` links, an existing heading, slugged the way GitHub does it), the table of contents lists
exactly the README's ``## `` sections, every page of ``docs/`` is reachable from the README, and the
README stays short enough to read.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kasloop.cli.graph import mermaid

ROOT = Path(__file__).resolve().parent.parent
README_PATH = ROOT / "README.md"
README = README_PATH.read_text()
DOCS = ROOT / "docs"
MAX_README_LINES = 650

FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.M | re.S)
INLINE_CODE = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.I)  # https:, mailto:, ...


def markdown_files() -> list[Path]:
    """README.md and every page of docs/, the documentation a reader can follow links through."""
    return [README_PATH, *sorted(DOCS.glob("*.md"))]


def _prose(text: str) -> str:
    """The text without fenced code blocks (a `# comment` in a toml block is not a heading)."""
    return FENCE.sub("", text)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def headings(text: str, level: int | None = None) -> list[tuple[int, str]]:
    found = []
    for line in _prose(text).splitlines():
        match = re.match(r"^(#{1,6}) (.+?)\s*#*\s*$", line)
        if match and (level is None or len(match.group(1)) == level):
            found.append((len(match.group(1)), match.group(2)))
    return found


def anchors(path: Path) -> set[str]:
    """Every anchor of a markdown file, with GitHub's -1, -2 ... suffixes for repeated headings."""
    seen: dict[str, int] = {}
    result = set()
    for _, heading in headings(path.read_text()):
        slug = github_slug(heading)
        if slug in seen:
            seen[slug] += 1
            result.add(f"{slug}-{seen[slug]}")
        else:
            seen[slug] = 0
            result.add(slug)
    return result


def relative_links(path: Path) -> list[str]:
    text = INLINE_CODE.sub("", _prose(path.read_text()))
    return [target for target in LINK.findall(text) if not EXTERNAL.match(target)]


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


def test_the_mermaid_diagram_is_one_block_in_the_graph_section() -> None:
    assert README.count("```mermaid") == 1
    section = README.index("\n## The graph\n")
    next_section = README.index("\n## ", section + 1)
    assert section < README.index("```mermaid") < next_section


def test_graph_has_the_five_nodes() -> None:
    diagram = mermaid()
    for node in ("perceive", "decide", "act", "self_diagnose", "human_approval"):
        assert f"\t{node}({node})" in diagram


def test_readme_stays_short() -> None:
    lines = len(README.splitlines())
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (limit {MAX_README_LINES}): move reference material to docs/ and link to it"
    )


def test_table_of_contents_lists_every_section_in_order() -> None:
    sections = [text for _, text in headings(README, level=2)]
    assert sections[0] == "Contents", "the table of contents is the README's first section"
    body = README.split("\n## Contents\n", 1)[1].split("\n## ", 1)[0]
    entries = re.findall(r"^- \[([^\]]+)\]\(#([^)]+)\)", body, re.M)
    assert [anchor for _, anchor in entries] == [github_slug(s) for s in sections[1:]]
    assert [title for title, _ in entries] == sections[1:]


def test_table_of_contents_comes_after_the_first_screen() -> None:
    contents = README.index("\n## Contents\n")
    assert README.index("make test") < contents
    assert len(README[:contents].splitlines()) <= 45, "the first screen (what kasloop is, the two commands) stays one screen"


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_reaches_a_file_and_anchor(path: Path) -> None:
    broken = []
    for target in relative_links(path):
        file_part, _, anchor = target.partition("#")
        destination = (path.parent / file_part).resolve() if file_part else path
        if not destination.exists():
            broken.append(f"{target}: no such file")
            continue
        if not destination.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
            continue
        if anchor:
            if destination.suffix != ".md":
                broken.append(f"{target}: an anchor into a file that is not markdown")
            elif anchor not in anchors(destination):
                broken.append(f"{target}: no heading with anchor #{anchor} in {destination.relative_to(ROOT)}")
    assert not broken, f"broken links in {path.relative_to(ROOT)}:\n" + "\n".join(broken)


def test_the_link_checker_sees_links_and_catches_broken_ones(tmp_path: Path) -> None:
    """Why this exists: a checker that finds no links passes everything."""
    assert len(relative_links(README_PATH)) >= 20
    page = tmp_path / "page.md"
    page.write_text("# A `code` title: yes\n\n[ok](#a-code-title-yes) [no](#nope) `[not](a-link.md)`\n\n```\n[x](y.md)\n```\n")
    assert relative_links(page) == ["#a-code-title-yes", "#nope"]
    assert anchors(page) == {"a-code-title-yes"}
    assert github_slug("PostgreSQL: `--db postgresql://...`") == "postgresql---db-postgresql"
    assert github_slug("5. Keep it running: the daemon and the inbox") == "5-keep-it-running-the-daemon-and-the-inbox"


def test_every_docs_page_is_linked_from_the_readme() -> None:
    pages = sorted(DOCS.glob("*.md"))
    assert pages, "docs/ holds the reference the README links to"
    linked = {(README_PATH.parent / target.partition("#")[0]).resolve() for target in relative_links(README_PATH)}
    orphans = [str(page.relative_to(ROOT)) for page in pages if page.resolve() not in linked]
    assert not orphans, f"not linked from README.md: {orphans}"


@pytest.mark.parametrize("path", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_every_docs_page_has_a_title_and_a_way_back(path: Path) -> None:
    text = path.read_text()
    assert text.startswith("# "), f"{path.name} starts with its title"
    assert "](../README.md" in text, f"{path.name} links back to the README"


def test_the_bring_your_own_example_builds_an_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The README's model-object and LangChain-tool example, as written (no model call is made)."""
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-readme-example")
    monkeypatch.setenv("KASLOOP_HOME", str(tmp_path / ".kasloop"))
    section = README.split("### 8. Bring your own model, tools and MCP servers", 1)[1]
    block = section.split("```python\n", 1)[1].split("```", 1)[0]
    namespace: dict[str, object] = {}
    exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - the README's own example
    agent = namespace["agent"]
    assert agent.config.model == ["object:ChatAnthropic"]  # type: ignore[attr-defined]
    assert [(t.name, t.risk, t.idempotent) for t in agent.sessions.extra_tools] == [("word_count", "read", True)]  # type: ignore[attr-defined]


def test_the_mcp_example_is_a_valid_config(tmp_path: Path) -> None:
    """The README's `[mcp.notes]` table loads as written, with the risk it promises."""
    from kasloop.config.loading import load_config

    section = README.split("### 8. Bring your own model, tools and MCP servers", 1)[1]
    block = section.split("```toml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "kasloop.toml").write_text(block)
    config = load_config(tmp_path / "kasloop.toml", cwd=tmp_path)
    assert config.tools == ["files", "notes"]
    assert config.mcp["notes"].risk == {"search": "read"} and config.mcp["notes"].default_risk == "high"
