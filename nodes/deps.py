"""What every node needs besides the state: the model, the tools, the ledger, the event log and the inbox.

Built once per graph by ``build_graph``. The per-thread policy (autonomy,
tool names, rules, budgets) arrives separately as the run's ``RunContext``,
which nodes can read and never write.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from langchain_core.language_models import BaseChatModel
from langgraph.runtime import Runtime

from kasloop.checkpoints.inbox import InboxItem
from kasloop.checkpoints.ledger import LedgerEntry
from kasloop.checkpoints.spend import MemorySpend
from kasloop.guardrails.budget import Breach, cost, model_call_breach, price_for, utc_day
from kasloop.config.schema import AgentConfig, ModelPrice
from kasloop.errors import ModelError
from kasloop.models.chat import GUIDED_STEPS, ModelChain
from kasloop.safety.secrets import Redactor
from kasloop.state import AgentState, RunContext, Usage, empty_usage
from kasloop.tools.base import Tool, ToolResources, openai_schema

__all__ = ["EventSink", "InboxLike", "LedgerLike", "NodeDeps", "RedactingEvents", "SpendLike", "step_of"]


class LedgerLike(Protocol):
    async def claim(self, key: str, *, thread_id: str, call_id: str, tool: str, arg_hash: str, idempotent: bool) -> LedgerEntry | None: ...
    async def record_result(self, key: str, result: dict[str, Any], *, now: bool = True) -> None: ...


class InboxLike(Protocol):
    async def take(self, thread_id: str, after: int = 0) -> list[InboxItem]: ...


class SpendLike(Protocol):
    async def add(self, day: str, thread_id: str, *, input_tokens: int, output_tokens: int, usd: float) -> None: ...
    async def day_total(self, day: str) -> tuple[int, float]: ...


class EventSink(Protocol):
    async def append(self, thread_id: str, step: int, kind: str, **data: Any) -> None: ...


@dataclass(frozen=True)
class RedactingEvents:
    """An event sink that redacts secrets from every event's data before it is written."""

    inner: EventSink
    redactor: Redactor

    async def append(self, thread_id: str, step: int, kind: str, **data: Any) -> None:
        await self.inner.append(thread_id, step, kind, **self.redactor.deep(data))


_NO_CONTEXT = RunContext()
"""What LangGraph makes of a missing or empty context."""


def step_of(state: AgentState) -> int:
    usage = state.get("usage")
    return usage["steps"] if usage else 0


@dataclass(kw_only=True)
class NodeDeps:
    config: AgentConfig
    models: ModelChain
    """The fallback chain; ``state["model_index"]`` says which one a thread uses now."""
    tools: dict[str, Tool]
    ledger: LedgerLike
    events: EventSink
    default_context: RunContext
    inbox: InboxLike | None = None
    spend: SpendLike = field(default_factory=MemorySpend)
    resources: ToolResources = field(default_factory=ToolResources)
    redactor: Redactor = field(default_factory=lambda: Redactor({}))
    """The agent's secrets: redacted from tool results, model replies, inbox messages and events."""
    _schemas: dict[tuple[str, ...], list[dict[str, Any]]] = field(default_factory=dict)
    _schema_tokens: dict[tuple[str, ...], int] = field(default_factory=dict)

    def model_for(self, state: AgentState) -> BaseChatModel:
        """The thread's current model in the chain (raises ``ModelError`` if a fallback cannot be built)."""
        return self.models.get(state.get("model_index", 0))

    def guided(self, state: AgentState) -> bool:
        """Is the thread's current model shown a goal one step at a time (``guide_steps``, else the model's flag)?"""
        if self.config.guide_steps is not None:
            return self.config.guide_steps
        try:
            model = self.model_for(state)
        except ModelError:
            return False  # a fallback that cannot be built: decide's model call reports it
        return bool((model.metadata or {}).get(GUIDED_STEPS))

    async def model_budget(self, state: AgentState, ctx: RunContext, prompt_tokens: int) -> Breach | None:
        """Would the next model call (of about ``prompt_tokens``) cross a budget? Day totals are read only when limited."""
        usage = state.get("usage") or empty_usage()
        day_tokens, day_usd = (0, 0.0)
        if ctx.max_tokens_per_day is not None or ctx.max_usd_per_day is not None:
            day_tokens, day_usd = await self.spend.day_total(utc_day())
        return model_call_breach(ctx, usage, prompt_tokens=prompt_tokens, price=self.price(state), day_tokens=day_tokens, day_usd=day_usd)

    def price(self, state: AgentState) -> ModelPrice | None:
        return price_for(self.models.spec(state.get("model_index", 0)), self.config.prices)

    async def spent(
        self, state: AgentState, ctx: RunContext, usage: Usage, input_tokens: int, output_tokens: int, seconds: float
    ) -> dict[str, Any]:
        """Count one model call in ``usage`` (tokens, USD, seconds) and in the day's spend; returns what
        it cost (``input_tokens``, ``output_tokens``, ``usd``) for the call's event."""
        usd = cost(self.price(state), input_tokens, output_tokens)
        usage["model_calls"] += 1
        usage["input_tokens"] += input_tokens
        usage["output_tokens"] += output_tokens
        usage["usd"] = round(usage["usd"] + usd, 9)
        usage["seconds"] = round(usage["seconds"] + seconds, 6)
        if input_tokens or output_tokens:
            await self.spend.add(utc_day(), ctx.thread_id, input_tokens=input_tokens, output_tokens=output_tokens, usd=usd)
        return {"input_tokens": input_tokens, "output_tokens": output_tokens, "usd": round(usd, 9)}

    def context(self, runtime: Runtime[RunContext] | None) -> RunContext:
        """The run's context; the config's policy, under the run's real thread id, when the caller gave none.

        A server (``langgraph dev``) passes ``{}``, which LangGraph turns into ``RunContext()``: that is
        "none given" too. The thread id matters: approval ids and ledger keys are per thread.
        """
        ctx = runtime.context if runtime is not None else None
        if isinstance(ctx, RunContext) and ctx != _NO_CONTEXT:
            return ctx
        info = getattr(runtime, "execution_info", None) if runtime is not None else None
        thread = getattr(info, "thread_id", None) if info is not None else None
        return dataclasses.replace(self.default_context, thread_id=str(thread)) if thread else self.default_context

    def offered_tools(self, ctx: RunContext) -> dict[str, Tool]:
        """Tools this run may call: the thread's allowed names that exist in this graph."""
        return {name: self.tools[name] for name in ctx.tools if name in self.tools}

    def schema_tokens(self, ctx: RunContext) -> int:
        """Approximate prompt tokens the tool schemas add to every model call."""
        key = tuple(ctx.tools)
        if key not in self._schema_tokens:
            self._schema_tokens[key] = len(json.dumps(self.schemas(ctx))) // 4
        return self._schema_tokens[key]

    def schemas(self, ctx: RunContext) -> list[dict[str, Any]]:
        key = tuple(ctx.tools)
        if key not in self._schemas:
            self._schemas[key] = [openai_schema(t) for t in self.offered_tools(ctx).values()]
        return self._schemas[key]
