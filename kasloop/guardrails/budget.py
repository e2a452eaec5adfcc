"""Hard budgets: steps, tool calls, tokens, USD and working seconds, per run and per day.

A budget is checked *before* the call it would pay for, so it is never
exceeded by more than one call: before a model call kasloop projects its cost
(the prompt's approximate tokens plus the run's average reply so far, priced
with the model's entry in the price table) and pauses the thread instead of
making a call that would go over. The day limits add up the spend of every
thread in the database for the current UTC day (``kasloop_spend``).

A breach pauses the thread with status ``paused_budget`` (exit 11). At levels
2 and 3 the breach's edge leads to ``human_approval``, which asks a person to
raise the limit through ``interrupt()`` like any approval (a request of kind
``budget``, :func:`budget_request`): approving raises the limit in the
thread's stored policy and the thread goes on where it stopped; rejecting
ends the run, still paused. At level 4 nobody is asked: the run ends and the
channels are told. At every level ``kasloop budget THREAD --max-...`` raises
a limit (answering a request that waits for it) and ``kasloop resume``
continues.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

from kasloop.guardrails.approvals import ApprovalRequest, approval_id, granted_value
from kasloop.config.schema import AgentConfig, Budgets, ModelPrice
from kasloop.errors import ConfigError, UsageError
from kasloop.state import RunContext, Usage

__all__ = [
    "DEFAULT_PRICES",
    "EXPECTED_REPLY_TOKENS",
    "LIMITS",
    "Breach",
    "budget_pause",
    "budget_request",
    "check_prices",
    "cost",
    "granted_value",
    "model_call_breach",
    "price_for",
    "step_breach",
    "tool_call_breach",
    "utc_day",
    "with_budgets",
]

DEFAULT_PRICES: dict[str, ModelPrice] = {
    "local": ModelPrice(input=0.0, output=0.0),
    "scripted": ModelPrice(input=0.0, output=0.0),
    "gpt-4o-mini": ModelPrice(input=0.15, output=0.60),
    "gpt-4o": ModelPrice(input=2.50, output=10.00),
    "gpt-4.1": ModelPrice(input=2.00, output=8.00),
    "gpt-4.1-mini": ModelPrice(input=0.40, output=1.60),
    "gpt-4.1-nano": ModelPrice(input=0.10, output=0.40),
}
"""USD per million tokens (OpenAI's list prices when this was written; set your own under ``[prices]``)."""

EXPECTED_REPLY_TOKENS = 256
"""Reply size assumed for the first model call of a run (later ones use the run's average)."""

LIMITS: dict[str, str] = {
    "max_steps": "steps",
    "max_tool_calls": "tool calls",
    "max_tokens": "tokens",
    "max_usd": "USD",
    "max_seconds": "working seconds",
    "max_tokens_per_day": "tokens today (all threads)",
    "max_usd_per_day": "USD today (all threads)",
}
"""Every budget, by its name in ``[budgets]``, with the unit it counts."""


def utc_day(now: float | None = None) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(now if now is not None else time.time()))


def price_for(spec: str, prices: dict[str, ModelPrice]) -> ModelPrice | None:
    """The price of a model spec: the exact spec, then the model name (``openai:NAME`` → ``NAME``), then its kind."""
    table = {**DEFAULT_PRICES, **prices}
    kind, _, name = spec.partition(":")
    for key in (spec, name, kind):
        if key and key in table:
            return table[key]
    return None


def cost(price: ModelPrice | None, input_tokens: int, output_tokens: int) -> float:
    if price is None:
        return 0.0
    return (input_tokens * price.input + output_tokens * price.output) / 1_000_000


def check_prices(config: AgentConfig, specs: list[str]) -> None:
    """With a USD budget every model in the chain needs a price, or its spend could not be counted."""
    budgets = config.budgets
    if budgets.max_usd is None and budgets.max_usd_per_day is None:
        return
    for spec in specs:
        if price_for(spec, config.prices) is None:
            raise ConfigError(
                f"budgets.max_usd is set but model `{spec}` has no price; add it to kasloop.toml as "
                f'[prices."{spec}"] input = USD_PER_MILLION, output = USD_PER_MILLION.'
            )


@dataclass(frozen=True, slots=True)
class Breach:
    """A limit the next call would cross."""

    limit: str
    value: float
    used: float
    next_cost: float = 0.0
    before: str = "model call"
    """What was not started: ``step``, ``model call`` or ``tool call``."""

    @property
    def proposed(self) -> float:
        """What a human approving "raise the budget" grants: double, or enough for the next call."""
        raised = max(self.value * 2, self.used + self.next_cost)
        return float(round(raised)) if self.limit not in ("max_usd", "max_usd_per_day", "max_seconds") else round(raised, 4)

    def message(self) -> str:
        unit = LIMITS[self.limit]
        ahead = f"; the call would need about {_fmt(self.next_cost)} more" if self.next_cost and self.before == "model call" else ""
        return (
            f"Paused before the next {self.before}: budgets.{self.limit} = {_fmt(self.value)} ({unit}), used {_fmt(self.used)}{ahead}. "
            f"Raise it with `kasloop budget THREAD --{self.limit.replace('_', '-')} N` (or budgets.{self.limit} in kasloop.toml "
            "for new threads), then `kasloop resume THREAD`."
        )

    def to_json(self) -> dict[str, Any]:
        return {"limit": self.limit, "value": self.value, "used": self.used, "next_cost": self.next_cost, "before": self.before, "proposed": self.proposed}


def _fmt(number: float) -> str:
    return f"{number:.4f}".rstrip("0").rstrip(".") if isinstance(number, float) and not number.is_integer() else str(int(number))


def _over(limit: str, value: float | None, used: float, ahead: float) -> Breach | None:
    if value is None or used + ahead <= value:
        return None
    return Breach(limit, float(value), float(round(used, 6)), float(round(ahead, 6)))


def model_call_breach(
    ctx: RunContext, usage: Usage, *, prompt_tokens: int, price: ModelPrice | None, day_tokens: int = 0, day_usd: float = 0.0
) -> Breach | None:
    """The first budget the next model call would exceed (by projection), or None."""
    reply = usage["output_tokens"] // usage["model_calls"] if usage["model_calls"] else EXPECTED_REPLY_TOKENS
    tokens = prompt_tokens + reply
    usd = cost(price, prompt_tokens, reply)
    if ctx.max_seconds is not None and usage["seconds"] >= ctx.max_seconds:
        return Breach("max_seconds", float(ctx.max_seconds), round(usage["seconds"], 3))
    return (
        _over("max_tokens", ctx.max_tokens, usage["input_tokens"] + usage["output_tokens"], tokens)
        or _over("max_usd", ctx.max_usd, usage["usd"], usd)
        or _over("max_tokens_per_day", ctx.max_tokens_per_day, day_tokens, tokens)
        or _over("max_usd_per_day", ctx.max_usd_per_day, day_usd, usd)
    )


def step_breach(ctx: RunContext, usage: Usage) -> Breach | None:
    """max_steps: checked by perceive before a new cycle starts."""
    if ctx.max_steps is not None and usage["steps"] >= ctx.max_steps:
        return Breach("max_steps", float(ctx.max_steps), float(usage["steps"]), 1.0, before="step")
    return None


def tool_call_breach(ctx: RunContext, usage: Usage) -> Breach | None:
    """The first budget the next tool call would exceed, or None."""
    if ctx.max_tool_calls is not None and usage["tool_calls"] >= ctx.max_tool_calls:
        return Breach("max_tool_calls", float(ctx.max_tool_calls), float(usage["tool_calls"]), 1.0, before="tool call")
    if ctx.max_seconds is not None and usage["seconds"] >= ctx.max_seconds:
        return Breach("max_seconds", float(ctx.max_seconds), round(usage["seconds"], 3), before="tool call")
    return None


def budget_pause(ctx: RunContext, breach: dict[str, Any], message: str) -> dict[str, Any]:
    """The state update of a node that stops before a call ``breach`` forbids.

    At levels 2 and 3 the status is ``waiting_approval`` and the edge leads to ``human_approval``, which
    asks a person to raise the limit; at level 4, and in a team's specialist (``RunContext.budget_asks``),
    it is ``paused_budget`` and the run ends. ``budget_breach`` stays set until the next ``perceive`` or
    ``act`` (where the thread goes on once the limit is raised).
    """
    asks = ctx.autonomy < 4 and ctx.budget_asks
    return {"status": "waiting_approval" if asks else "paused_budget", "output": message, "budget_breach": breach}


def budget_request(thread_id: str, breach: dict[str, Any], ttl: float) -> ApprovalRequest:
    """The approval request (kind ``budget``) asking a human to raise the limit ``breach`` names.

    Its id depends on the limit, its value and what was used, so the node asking again after a re-run
    (same numbers) makes the same request, while a new pause after a raise is a new one.
    """
    now = time.time()  # only the id must be stable across re-runs; the runner keeps the first payload
    return ApprovalRequest(
        approval_id=approval_id(thread_id, "budget", breach["limit"], breach["value"], breach["used"]),
        thread=thread_id, kind="budget", call_id="", tool="budget", args=dict(breach), risk="high",
        arg_hash=f"{thread_id}:budget:{breach['limit']}:{breach['value']}:{breach['used']}",
        reason=f"budgets.{breach['limit']} = {breach['value']:g} ({LIMITS.get(breach['limit'], '')}) is used up ({breach['used']:g}). "
        f"Approve to raise it to {breach['proposed']:g} (or --edit '{{\"value\": N}}'), reject to leave the thread paused.",
        created_at=now, expires_at=now + ttl,
    )


def with_budgets(policy: dict[str, Any], limits: dict[str, Any]) -> dict[str, Any]:
    """A thread's stored policy with ``limits`` changed (checked like kasloop.toml's ``[budgets]``)."""
    try:
        budgets = Budgets(**{**policy.get("budgets", {}), **limits})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise UsageError(f"Budget {'.'.join(str(p) for p in first['loc'])}: {first['msg']}.") from None
    return {**policy, "budgets": budgets.model_dump(mode="json")}
