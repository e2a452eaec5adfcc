"""Graph builders: ``agent`` (the perceive → decide → act loop)."""

from kasloop.graphs.agent import build_graph

__all__ = ["build_graph"]
