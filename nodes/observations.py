"""Re-reading is perceiving: polling a read tool (``process_status``, a log file, a page) is never refused.

A repeat of a call that changes nothing is refused in decide ("this exact call already succeeded"); a call
that *observes* the world (risk ``read``, or a tool that declares ``observes=True``) may give a new answer
each time, so it runs again. What tells a poll from a loop is its result:

- act keeps, per call (its ``arg_hash``), a digest of the last result and how many identical calls in a row
  brought the same one (``observations`` in the state). A tool whose text holds a clock ("running for 12 s")
  says what counts as news in ``ToolResult.metadata["observed"]`` (``process_status``: status, exit code,
  log size); that is compared instead of the text. A result that can never change again (an exited
  process) is marked ``metadata["final"]``: the same call after it is answered, not run. The model is told, with the result, whether it
  ``changed`` or is ``unchanged`` since the last identical call.
- In ``done_calls`` an observation is recorded as ``HASH:DIGEST``: the same call with a new result is
  progress (the stall count starts over) and never forms a loop pattern with its earlier self; the same
  call with the same result is not progress.
- Polling that brings nothing new backs off: the next identical call waits ``poll_backoff`` seconds, doubling
  each time (at most ``poll_backoff_max``), and after ``poll_limit`` identical results in a row decide answers
  the call instead of running it, telling the model to wait or stop.

Side effects keep their protection: only observing calls are treated this way.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from kasloop.config.schema import AgentConfig
from kasloop.tools.base import Tool

__all__ = [
    "POLLED_FINAL", "POLLED_UNCHANGED", "call_hash_of", "observation_entry", "observes", "poll_delay", "polled_out", "remember_observation",
]

MAX_OBSERVATIONS = 32
"""Observed calls remembered per task (the oldest are forgotten first)."""

POLLED_FINAL = (
    "Not run: the identical call before returned a final result, which cannot change any more (for example, the "
    "process has exited). Use that result: if the task is done, reply in plain text."
)
POLLED_UNCHANGED = (
    "Not run: the last {count} identical calls all returned the same result, so polling again now would most "
    "likely return it again. Wait longer before checking again, or stop: if the task is done or cannot be done, "
    "reply in plain text with what you know."
)


def observes(tool: Tool | None) -> bool:
    """Whether calling ``tool`` again may return something new: it declares so, or it only reads (risk ``read``)."""
    if tool is None:
        return False
    return tool.observes if tool.observes is not None else tool.risk == "read"


def call_hash_of(done_entry: str) -> str:
    """The call's ``arg_hash`` of a ``done_calls`` entry (an observation's entry also carries its result's digest)."""
    return done_entry.split(":", 1)[0]


def observation_entry(observations: dict[str, Any] | None, call_hash: str) -> dict[str, Any] | None:
    return (observations or {}).get(call_hash)


def polled_out(config: AgentConfig, observations: dict[str, Any] | None, call_hash: str) -> str | None:
    """Why this poll is answered instead of run (its last result was final, or ``poll_limit`` identical results
    in a row), as the text the model reads; None: it runs."""
    entry = observation_entry(observations, call_hash)
    if entry is None:
        return None
    if entry.get("final"):
        return POLLED_FINAL
    if entry["unchanged"] + 1 >= config.poll_limit:
        return POLLED_UNCHANGED.format(count=entry["unchanged"] + 1)
    return None


def poll_delay(config: AgentConfig, observations: dict[str, Any] | None, call_hash: str) -> float:
    """Seconds to wait before running this observation again: none until it came back unchanged, then
    ``poll_backoff`` doubling with each unchanged result, at most ``poll_backoff_max``."""
    entry = observation_entry(observations, call_hash)
    if entry is None or entry["unchanged"] < 1:
        return 0.0
    return float(min(config.poll_backoff * 2 ** (entry["unchanged"] - 1), config.poll_backoff_max))


def remember_observation(
    observations: dict[str, Any] | None, call_hash: str, output: str, observed: Any = None, *, final: bool = False,
) -> tuple[dict[str, Any], str, str | None]:
    """Record this result of an observing call (``observed``: what the tool says counts as news, else the text):
    the new ``observations``, its ``done_calls`` entry, and what to tell the model (``changed`` / ``unchanged``
    since the last identical call, ``None`` the first time)."""
    news = output if observed is None else json.dumps(observed, sort_keys=True, default=str)
    digest = hashlib.sha256(news.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    known = dict(observations or {})
    previous = known.pop(call_hash, None)
    same = previous is not None and previous["digest"] == digest
    known[call_hash] = {"digest": digest, "at": round(time.time(), 3), "unchanged": previous["unchanged"] + 1 if same else 0, "final": final}
    while len(known) > MAX_OBSERVATIONS:
        known.pop(next(iter(known)))
    note = None if previous is None else "unchanged" if same else "changed"
    return known, f"{call_hash}:{digest}", note
