"""The public API is pinned: what ``kasloop`` exports, and the errors' shape."""

from __future__ import annotations

import pickle

import kasloop
from kasloop import errors


def test_all_is_sorted_and_complete() -> None:
    assert kasloop.__all__ == sorted(kasloop.__all__)
    assert set(kasloop.__all__) == {
        "Agent", "AgentConfig", "AgentState", "Approval", "ApprovalError", "AutonomyLevelError", "BudgetExceeded", "Budgets",
        "CheckpointError", "Collaboration", "ConfigError", "KasloopError", "LocalModelError", "LongTermMemory", "MemoryItem", "ModelError", "OpenAISettings", "PolicyRule", "ProviderSettings", "RunContext",
        "RunResult", "RunUsage", "ScriptExhausted", "ScriptedChatModel", "Specialist", "ThreadNotFound", "UsageError", "build_collaboration_graph", "build_graph",
        "build_team_graph", "tool",
    }
    for name in kasloop.__all__:
        assert getattr(kasloop, name) is not None


def test_errors_form_one_tree_with_exit_codes_and_pickle() -> None:
    for name in errors.__all__:
        cls = getattr(errors, name)
        assert issubclass(cls, errors.KasloopError)
    assert errors.ConfigError("x").exit_code == 2
    assert errors.ApprovalError("x").exit_code == 2
    assert errors.BudgetExceeded("x").exit_code == 11
    assert errors.ScriptExhausted("x").exit_code == 1
    # Errors cross process boundaries (e.g. from a worker); pickling here checks only that round trip.
    err = pickle.loads(pickle.dumps(errors.ModelError("boom", transient=False)))
    assert err.message == "boom" and err.transient is False
