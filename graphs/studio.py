"""The graphs `langgraph dev` / LangGraph Studio serve (``langgraph.json``), built from kasloop.toml at import.

langgraph-api looks the variable up in the module's ``__dict__`` (a module
``__getattr__`` is never consulted, so the lazy ``kasloop.graphs.agent.graph``
cannot be served) and calls factory functions on its event loop, where
``langgraph dev`` rejects blocking file reads such as loading kasloop.toml.
So the graph is built when this module is imported, from the kasloop.toml of
the folder the server runs in. Runs get the config's policy, under their own
thread id (see ``NodeDeps.context``).

``team`` is the manager of the config's team (``run_team``, else ``default``):
an approval inside a specialist is an interrupt of the team thread, whose
payload names the specialist's thread (``<thread>/<specialist>-…``). Studio
draws it with its specialists (``act`` → specialist → ``act``, see
:class:`~kasloop.graphs.team.TeamGraph`), so it does not look like ``agent``.
"""

from __future__ import annotations

from typing import Any

from langgraph.graph.state import CompiledStateGraph

from kasloop.graphs.agent import build_graph
from kasloop.graphs.team import TeamGraph, build_team_graph
from kasloop.config.loading import load_config

__all__ = ["agent", "team"]

_config = load_config()
agent: CompiledStateGraph[Any, Any, Any, Any] = build_graph(_config)
team: TeamGraph = build_team_graph(_config.model_copy(update={"run_team": _config.run_team or "default"}))
