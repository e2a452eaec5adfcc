"""kasloop: autonomous AI agents that run for days, built on LangGraph.

The public API is what ``__all__`` lists; everything else may change.
"""

from kasloop.agent import Agent, RunResult
from kasloop.runtime.result import Approval, RunUsage
from kasloop.config.schema import AgentConfig, Budgets, Collaboration, OpenAISettings, PolicyRule, ProviderSettings, Specialist
from kasloop.errors import (
    ApprovalError,
    AutonomyLevelError,
    BudgetExceeded,
    CheckpointError,
    ConfigError,
    KasloopError,
    LocalModelError,
    ModelError,
    ScriptExhausted,
    ThreadNotFound,
    UsageError,
)
from kasloop.graphs.agent import build_graph
from kasloop.graphs.collaboration import build_collaboration_graph
from kasloop.graphs.team import build_team_graph
from kasloop.memory.items import MemoryItem
from kasloop.memory.long_term import LongTermMemory
from kasloop.models.scripted import ScriptedChatModel
from kasloop.state import AgentState, RunContext
from kasloop.tools.langchain_tools import tool

__version__ = "0.1.0"

__all__ = [
    "Agent",
    "AgentConfig",
    "AgentState",
    "Approval",
    "ApprovalError",
    "AutonomyLevelError",
    "BudgetExceeded",
    "Budgets",
    "CheckpointError",
    "Collaboration",
    "ConfigError",
    "KasloopError",
    "LocalModelError",
    "LongTermMemory",
    "MemoryItem",
    "ModelError",
    "OpenAISettings",
    "PolicyRule",
    "ProviderSettings",
    "RunContext",
    "RunResult",
    "RunUsage",
    "ScriptExhausted",
    "ScriptedChatModel",
    "Specialist",
    "ThreadNotFound",
    "UsageError",
    "build_collaboration_graph",
    "build_graph",
    "build_team_graph",
    "tool",
]
