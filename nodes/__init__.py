"""The loop's nodes, one module each: perceive, decide, act, self_diagnose, human_approval."""

from kasloop.nodes.act import make_act
from kasloop.nodes.decide import make_decide
from kasloop.nodes.deps import NodeDeps
from kasloop.nodes.human_approval import make_human_approval
from kasloop.nodes.perceive import make_perceive
from kasloop.nodes.self_diagnose import make_self_diagnose

__all__ = ["NodeDeps", "make_act", "make_decide", "make_human_approval", "make_perceive", "make_self_diagnose"]
