"""Tier 1, working memory: what the model sees stays bounded; what falls out is folded into a running summary.

A thread that runs for days must not send a longer prompt every cycle (slower,
dearer, and past the model's context sooner or later). So each cycle perceive
checks the messages against two limits, a message count (``max_messages``)
and a token budget (``context_tokens``, counted with langchain-core's
``count_tokens_approximately``). When either is exceeded, the oldest turns are
evicted down to a low-water mark (:data:`LOW_WATER` of each limit), so eviction
and its summary call happen every few cycles, not every cycle.

Evicted turns are never split: the kept tail starts on a message that opens a
turn (not a ``ToolMessage``, whose call would be gone), and the newest turn is
always kept whole. The model folds the evicted turns into ``summary`` (bounded
to :data:`SUMMARY_MAX_CHARS`), which decide puts in the system prompt as
"Earlier: ...". If the model cannot summarise (an outage, a budget), a plain
digest of the evicted turns is used instead, so the loop never stops for it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.messages.utils import count_tokens_approximately

from kasloop.errors import ModelError
from kasloop.models.chat import invoke_model

__all__ = [
    "LOW_WATER",
    "SUMMARY_MAX_CHARS",
    "SUMMARY_PROMPT",
    "Folded",
    "digest",
    "eviction_cut",
    "fold_into_summary",
    "last_turn_start",
    "message_tokens",
    "prompt_tokens",
    "render_line",
    "summary_request_tokens",
]

LOW_WATER = 0.6
"""After an eviction the kept messages fit in this share of each limit (hysteresis)."""
SUMMARY_MAX_CHARS = 1500
"""The running summary never grows past this; the oldest part is dropped first."""
LINE_CHARS = 240
"""Each evicted message is shown to the summariser in at most this many characters."""
TRANSCRIPT_CHARS = 6000
"""The evicted turns sent to the summariser at once, at most (the newest part wins)."""

SUMMARY_PROMPT = (
    "You keep the running summary of an agent's earlier work. Merge the new events into the summary. "
    "Keep facts, results, names, numbers, decisions and what failed; drop chatter. "
    "Reply with the updated summary only, at most 120 words of plain text."
)


_COUNTED: dict[int, tuple[BaseMessage, int]] = {}
_COUNTED_MAX = 8192


def message_tokens(message: BaseMessage) -> int:
    """Approximate tokens of one message (langchain-core's estimate), remembered per message object.

    Every cycle counts the whole working memory twice (eviction, then the
    prompt's size for the budget); the messages in the state are the same
    objects from cycle to cycle, so each is counted once (the cache holds a
    reference, so an object's ``id`` is not reused while it is cached).
    """
    hit = _COUNTED.get(id(message))
    if hit is not None and hit[0] is message:
        return hit[1]
    tokens = count_tokens_approximately([message])
    if len(_COUNTED) >= _COUNTED_MAX:
        _COUNTED.clear()
    _COUNTED[id(message)] = (message, tokens)
    return tokens


def prompt_tokens(messages: Sequence[BaseMessage]) -> int:
    """Approximate tokens of ``messages`` (langchain-core's estimate: about 4 characters per token)."""
    return sum(message_tokens(m) for m in messages)


def last_turn_start(messages: Sequence[BaseMessage]) -> int:
    """Index of the newest message that opens a turn (not a ``ToolMessage``); -1 if there is none."""
    for index in range(len(messages) - 1, -1, -1):
        if not isinstance(messages[index], ToolMessage):
            return index
    return -1


def eviction_cut(messages: Sequence[BaseMessage], *, max_messages: int, max_tokens: int) -> int:
    """Index of the first message to keep; 0 while both limits hold.

    Over a limit, keep the newest messages that fit in :data:`LOW_WATER` of
    both limits, move the cut later until it opens a turn, and never cut into
    the newest turn (a single huge turn is kept rather than split).
    """
    sizes = [message_tokens(m) for m in messages]
    if len(messages) <= max_messages and sum(sizes) <= max_tokens:
        return 0
    keep_messages = max(1, int(max_messages * LOW_WATER))
    keep_tokens = int(max_tokens * LOW_WATER)
    cut, kept = len(messages), 0
    while cut > 0 and len(messages) - cut < keep_messages and kept + sizes[cut - 1] <= keep_tokens:
        cut -= 1
        kept += sizes[cut]
    while cut < len(messages) and isinstance(messages[cut], ToolMessage):
        cut += 1
    return min(cut, max(0, last_turn_start(messages)))


def render_line(message: BaseMessage) -> str:
    """One message as one short line of plain text (for the summariser and the diagnosis prompt)."""
    if isinstance(message, ToolMessage):
        text = f"result of {message.name or 'a tool'}: {message.content}"
    elif isinstance(message, AIMessage):
        calls = "; ".join(f"{c['name']}({json.dumps(c.get('args') or {}, ensure_ascii=False)})" for c in message.tool_calls)
        said = str(message.text).strip()
        text = "assistant" + (f": {said}" if said else "") + (f" -> called {calls}" if calls else "")
    elif isinstance(message, HumanMessage):
        text = f"user: {message.content}"
    else:
        text = f"{message.type}: {message.content}"
    text = " ".join(str(text).split())
    return text if len(text) <= LINE_CHARS else text[: LINE_CHARS - 1] + "…"


def _transcript(evicted: Sequence[BaseMessage]) -> str:
    lines = [render_line(m) for m in evicted]
    while len(lines) > 1 and sum(len(line) + 1 for line in lines) > TRANSCRIPT_CHARS:
        lines.pop(0)  # the newest evicted events matter most to what comes next
    return "\n".join(lines)


def _bounded(summary: str) -> str:
    summary = summary.strip()
    if len(summary) <= SUMMARY_MAX_CHARS:
        return summary
    return "…" + summary[-(SUMMARY_MAX_CHARS - 1) :]


def digest(previous: str, evicted: Sequence[BaseMessage]) -> str:
    """The summary without a model: the previous one plus one short line per evicted message."""
    lines = [render_line(m)[:120] for m in evicted]
    return _bounded("\n".join(part for part in (previous, *lines) if part))


@dataclass(frozen=True, slots=True)
class Folded:
    """A new running summary and how it was made."""

    summary: str
    by_model: bool
    input_tokens: int = 0
    output_tokens: int = 0
    error: str = ""


def _request(previous: str, evicted: Sequence[BaseMessage]) -> list[BaseMessage]:
    return [
        SystemMessage(SUMMARY_PROMPT),
        HumanMessage(f"Summary so far:\n{previous or '(none)'}\n\nNew events:\n{_transcript(evicted)}\n\nThe updated summary:"),
    ]


def summary_request_tokens(previous: str, evicted: Sequence[BaseMessage]) -> int:
    """Approximate prompt tokens of the summarising call (for the budget check before it)."""
    return prompt_tokens(_request(previous, evicted))


async def fold_into_summary(model: BaseChatModel, previous: str, evicted: Sequence[BaseMessage], *, turn: int) -> Folded:
    """Ask the model to merge ``evicted`` into ``previous``; fall back to :func:`digest` if it cannot."""
    try:
        reply = await invoke_model(model, _request(previous, evicted), [], turn=turn, purpose="summary")
    except ModelError as exc:
        return Folded(digest(previous, evicted), by_model=False, error=exc.message)
    text = str(reply.text).strip()
    usage = reply.usage_metadata or {}
    if not text or reply.tool_calls:
        return Folded(digest(previous, evicted), by_model=False, error="the model's summary was empty")
    return Folded(_bounded(text), by_model=True, input_tokens=usage.get("input_tokens", 0), output_tokens=usage.get("output_tokens", 0))
