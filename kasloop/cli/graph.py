"""``kasloop graph``: print the agent loop as a mermaid diagram, drawn from the real compiled graph."""

from __future__ import annotations

import typer

from kasloop.config.schema import AgentConfig
from kasloop.graphs.agent import build_graph
from kasloop.models.scripted import ScriptedChatModel

__all__ = ["mermaid", "register"]


def mermaid() -> str:
    """The mermaid source of the agent graph (no model is called; the shape does not depend on it)."""
    graph = build_graph(AgentConfig(model="scripted:-"), model=ScriptedChatModel(path="-", turns=[]))
    return graph.get_graph().draw_mermaid()


def register(app: typer.Typer) -> None:
    @app.command()
    def graph() -> None:
        """Print the agent loop as a mermaid diagram (paste it into the README, a doc or mermaid.live)."""
        typer.echo(mermaid(), nl=False)
