"""A thread's policy as stored: made absolute when the thread starts, read back for every later command.

The policy is stored with the thread so that any process can resume it, and so that a different
process, flag or model output cannot widen what the thread may do. Paths in it (the workspace,
scripted model files) are made absolute first: a resumed thread may run in another folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from kasloop.config.schema import AgentConfig, Specialist
from kasloop.errors import ConfigError
from kasloop.models.chat import check_model_spec, resolve_model_specs

__all__ = ["absolute_policy", "check_models", "thread_config"]


def thread_config(config: AgentConfig, policy: dict[str, Any]) -> AgentConfig:
    """``config`` (this process's settings) under a thread's stored ``policy``; a broken policy is a ``ConfigError``."""
    try:
        return config.with_thread_policy(policy)
    except ValidationError as exc:
        raise ConfigError(f"The stored policy of this thread is invalid: {exc.errors()[0]['msg']}.") from None


def absolute_policy(config: AgentConfig, cwd: Path) -> AgentConfig:
    """Make paths in the policy absolute, so any process can resume the thread."""
    workspace = config.workspace if config.workspace.is_absolute() else (cwd / config.workspace)
    team = {name: _absolute_members(members, cwd) for name, members in config.team.items()}
    collaboration = {
        name: chosen.model_copy(update={"peers": _absolute_members(chosen.peers, cwd)}) for name, chosen in config.collaboration.items()
    }
    return config.model_copy(update={
        "workspace": workspace.resolve(), "model": _absolute_specs(resolve_model_specs(config), cwd), "team": team,
        "collaboration": collaboration,
    })


def check_models(config: AgentConfig) -> None:
    """Every model spec a new thread of ``config`` names (its own, its team's, its peers') is well formed and
    its script exists: checked before the database is opened, so a typo writes nothing (``ConfigError``)."""
    members = {**config.team_members(), **config.collaboration_peers()}
    for model in [resolve_model_specs(config), *(member.model for member in members.values() if member.model is not None)]:
        for spec in [model] if isinstance(model, str) else model:
            check_model_spec(spec)


def _absolute_members(members: dict[str, Specialist], cwd: Path) -> dict[str, Specialist]:
    """Team members or peers with absolute scripted model paths."""
    return {
        name: spec.model_copy(update={"model": _absolute_specs(spec.model, cwd)}) if spec.model is not None else spec
        for name, spec in members.items()
    }


def _absolute_specs(model: str | list[str], cwd: Path) -> str | list[str]:
    """Scripted model files as absolute paths (a resumed thread may run in another folder)."""
    specs = []
    for spec in [model] if isinstance(model, str) else model:
        kind, _, rest = spec.partition(":")
        if kind == "scripted" and rest and not Path(rest).is_absolute():
            spec = f"scripted:{(cwd / rest).resolve()}"
        specs.append(spec)
    return specs[0] if len(specs) == 1 else specs
