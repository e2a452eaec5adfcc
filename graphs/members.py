"""What a team's specialists and a collaboration's peers share: their config, their compiled loops, their run policy.

A member is the ordinary agent loop (:func:`~kasloop.graphs.agent.build_graph`) built from the lead's
config with only its own tools, its model and a level no higher than the lead's. :mod:`kasloop.graphs.team`
(the manager delegates to specialists) and :mod:`kasloop.graphs.collaboration` (peers take turns) both build
their members here; the team module, which picks between the two, imports the collaboration module.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

from langchain_core.language_models import BaseChatModel

from kasloop.config.schema import AgentConfig, Specialist
from kasloop.graphs.agent import build_graph, context_for
from kasloop.nodes.deps import EventSink, InboxLike, LedgerLike, SpendLike
from kasloop.state import RunContext, Usage
from kasloop.tools.base import Tool, ToolResources
from kasloop.tools.registry import select_tools

__all__ = ["SPECIALIST_PROMPT", "build_members", "specialist_config", "specialist_context"]

SPECIALIST_PROMPT = (
    "You are the {name} specialist of a team: {description} Do the task you are given with your tools. "
    "Paths are relative to the workspace. If a call is refused or fails, read why and try another way. "
    "When the task is done, reply in plain text with the result the manager needs."
)


def specialist_config(
    manager: AgentConfig, name: str, member: Specialist, *, prompt: str = SPECIALIST_PROMPT, extra_tools: Iterable[str] = ()
) -> AgentConfig:
    """A member's config (a team's specialist, a collaboration's peer): the lead config with only the
    member's tools (plus ``extra_tools``), its model, its ``prompt`` and a level capped at the lead's."""
    autonomy = min(member.autonomy or manager.autonomy, manager.autonomy)
    return manager.model_copy(update={
        "tools": [*member.tools, *extra_tools],
        "autonomy": autonomy,
        "model": member.model if member.model is not None else manager.model,
        "system_prompt": prompt.format(name=name, description=member.description),
        "run_team": None,
        "run_collaboration": None,
        "budgets": manager.budgets.model_copy(update={"max_steps": member.max_steps}),
    })


def build_members(
    members: Mapping[str, Specialist],
    config_for: Callable[[str, Specialist], AgentConfig],
    *,
    models: Mapping[str, BaseChatModel] | None,
    tools: tuple[Tool, ...],
    ledger: LedgerLike,
    events: EventSink,
    inbox: InboxLike,
    resources: ToolResources,
    spend: SpendLike,
) -> tuple[dict[str, Any], dict[str, AgentConfig], dict[str, tuple[str, ...]]]:
    """Each member's compiled agent loop, config and tool names (a team's specialists, a collaboration's peers).

    Members share the ledger, event log, inbox, tool resources and spend log of the graph they run in.
    """
    graphs: dict[str, Any] = {}
    configs: dict[str, AgentConfig] = {}
    names: dict[str, tuple[str, ...]] = {}
    for name, member in members.items():
        configs[name] = config_for(name, member)
        names[name] = tuple(select_tools(configs[name].tools, tools, configs[name].tool_traits))
        graphs[name] = build_graph(
            configs[name], model=(models or {}).get(name), tools=tools, ledger=ledger, events=events,
            inbox=inbox, resources=resources, spend=spend, name=f"kasloop-{name}",
        )
    return graphs, configs, names


def _left(limit: float | None, used: float) -> float | None:
    return None if limit is None else max(limit - used, 0)


def specialist_context(manager: RunContext, used: Usage, config: AgentConfig, thread_id: str, tools: Iterable[str]) -> RunContext:
    """The specialist's run policy: its own tools and level, the manager's rules, and only what is left
    of the manager's budgets (the delegation itself counts as one of the manager's tool calls)."""
    own = context_for(config, thread_id, tools)
    tool_calls = _left(manager.max_tool_calls, used["tool_calls"] + 1)
    tokens = _left(manager.max_tokens, used["input_tokens"] + used["output_tokens"])
    return RunContext(
        thread_id=thread_id,
        autonomy=min(own.autonomy, manager.autonomy),
        tools=own.tools,
        rules=manager.rules,
        risk_overrides=dict(manager.risk_overrides),
        max_steps=own.max_steps,
        max_tool_calls=int(tool_calls) if tool_calls is not None else None,
        max_tokens=int(tokens) if tokens is not None else None,
        max_usd=_left(manager.max_usd, used["usd"]),
        max_seconds=_left(manager.max_seconds, used["seconds"]),
        max_tokens_per_day=manager.max_tokens_per_day,
        max_usd_per_day=manager.max_usd_per_day,
        budget_asks=False,  # the manager asks: its act node turns this breach into its own
    )
