"""``scripted:FILE``: a chat model that replays a JSON Lines script, turn by turn.

Deterministic, so tests, the demo and notebooks behave the same every run.
One line per model turn::

    {"content": "Writing the file.", "tool_calls": [{"name": "files_write", "args": {"path": "a.txt", "content": "hi"}}]}
    {"content": "Done: a.txt holds the greeting."}
    {"error": "simulated outage"}

``tool_calls`` is optional; a call's ``id`` is optional and generated from
the turn if absent (``call_<turn>_<index>``, so a replayed turn keeps its
ids); like any model's ids it is only the model's name for the call: kasloop
gives every call its own id (decide), so a script may repeat an id to test
that. ``"error"`` makes that turn raise a ``ModelError``. The file must be
UTF-8 (a byte-order mark is allowed); anything else is a ``ConfigError``
naming the line. A turn without tool
calls ends the goal. Asking for a turn past the end raises
``ScriptExhausted``: a script never goes silent.

kasloop passes the thread's position as ``turn=`` so a thread resumed in a
new process continues with the next line; used on its own the model counts
its own calls.

Working memory's summarising calls (``purpose="summary"``) and the
self-diagnosis prompt (``purpose="diagnose"``) are not script turns: they are
answered deterministically from the request (the summary so far and the first
words of each new event; the error line), so a script stays one line per
decision however long the thread runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.utils.function_calling import convert_to_openai_tool
from pydantic import PrivateAttr

from kasloop.errors import ConfigError, ModelError, ScriptExhausted

__all__ = ["ScriptedChatModel", "load_script"]

_TURN_KEYS = {"content", "tool_calls", "error"}


def _bad(path: Path, line_no: int, problem: str) -> ConfigError:
    return ConfigError(
        f"Script `{path}` line {line_no}: {problem}. Each line must be an object like "
        '{"content": "text", "tool_calls": [{"name": "files_write", "args": {...}}]}.'
    )


def load_script(path: str | Path) -> list[dict[str, Any]]:
    """Read and check a script file; every problem is a ``ConfigError`` naming the line."""
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"Script file `{path}` does not exist; pass --model scripted:PATH with an existing JSONL file.") from None
    except OSError as exc:
        raise ConfigError(f"Script file `{path}` cannot be read: {exc.strerror}.") from None
    try:
        text = raw.decode("utf-8-sig")  # JSON Lines are UTF-8; a byte-order mark some editors write is allowed
    except UnicodeDecodeError as exc:
        line_no = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"Script `{path}` line {line_no}: not valid UTF-8 (byte 0x{raw[exc.start]:02x}); save the script as UTF-8.") from None
    turns: list[dict[str, Any]] = []
    for line_no, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            turn = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _bad(path, line_no, f"not valid JSON ({exc.msg})") from None
        if not isinstance(turn, dict):
            raise _bad(path, line_no, "not a JSON object")
        unknown = set(turn) - _TURN_KEYS
        if unknown:
            raise _bad(path, line_no, f"unknown key `{sorted(unknown)[0]}`")
        calls = turn.get("tool_calls", [])
        if not isinstance(calls, list) or not all(
            isinstance(c, dict) and isinstance(c.get("name"), str) and isinstance(c.get("args", {}), dict) for c in calls
        ):
            raise _bad(path, line_no, "`tool_calls` must be a list of {\"name\": str, \"args\": object}")
        turns.append(turn)
    return turns


def _approx_tokens(text: str) -> int:
    return max(1, len(text) // 4)


SUMMARY_SO_FAR = "Summary so far:\n"
NEW_EVENTS = "New events:\n"


def _side_reply(request: str, text: str) -> ChatResult:
    """A side call's answer (summary, diagnosis), with token usage estimated like a scripted turn's."""
    tokens = _approx_tokens(text)
    message = AIMessage(content=text, usage_metadata={"input_tokens": _approx_tokens(request), "output_tokens": tokens, "total_tokens": tokens})
    return ChatResult(generations=[ChatGeneration(message=message)])


def _summary_result(messages: list[BaseMessage]) -> ChatResult:
    """A summary that depends only on the request, so a replayed thread summarises the same way."""
    request = str(messages[-1].content)
    previous = request.partition(SUMMARY_SO_FAR)[2].partition("\n\n")[0].strip()
    events = request.partition(NEW_EVENTS)[2].rpartition("\n\n")[0].splitlines()
    lines = [] if previous in ("", "(none)") else [previous]
    lines += [" ".join(line.split()[:12]) for line in events if line.strip()]
    return _side_reply(request, "\n".join(lines))


def _diagnosis_result(messages: list[BaseMessage]) -> ChatResult:
    """A cause-and-plan built from the request's error line (deterministic, like the summary)."""
    request = str(messages[-1].content)
    error = next((line for line in request.splitlines() if line.startswith("Error (")), "Error: unknown")
    return _side_reply(request, f"Cause: {error.partition(': ')[2].removeprefix('Error: ')[:120]}. Next: change the arguments or use another tool.")


class ScriptedChatModel(BaseChatModel):
    """Replays a script; supports ``bind_tools``; reports token usage."""

    __test__ = False  # not a pytest test class

    path: str
    turns: list[dict[str, Any]]
    _calls: int = PrivateAttr(default=0)

    @classmethod
    def from_file(cls, path: str | Path) -> ScriptedChatModel:
        return cls(path=str(path), turns=load_script(path))

    @property
    def _llm_type(self) -> str:
        return "kasloop-scripted"

    def bind_tools(self, tools: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        """Accept tools like any tool-calling model; the script decides which are called."""
        return self.bind(tools=[convert_to_openai_tool(t) for t in tools], **kwargs)

    async def _agenerate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: Any = None,
        **kwargs: Any,
    ) -> ChatResult:
        # Nothing to wait for: answer inline instead of in a thread pool.
        return self._generate(messages, stop, None, **kwargs)

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        if kwargs.get("purpose") == "summary":
            return _summary_result(messages)
        if kwargs.get("purpose") == "diagnose":
            return _diagnosis_result(messages)
        turn = kwargs.get("turn")
        if turn is None:
            turn = self._calls
        self._calls = turn + 1
        if turn >= len(self.turns):
            raise ScriptExhausted(
                f"Script `{self.path}` has {len(self.turns)} turns and turn {turn + 1} was asked for; "
                "add a final line without tool_calls to end the goal."
            )
        spec = self.turns[turn]
        if "error" in spec:
            raise ModelError(f"scripted model error at turn {turn + 1}: {spec['error']}", transient=True)
        calls = [
            {"name": c["name"], "args": c.get("args", {}), "id": c.get("id") or f"call_{turn}_{i}", "type": "tool_call"}
            for i, c in enumerate(spec.get("tool_calls", []))
        ]
        content = spec.get("content", "")
        # Like real APIs, the tool schemas count as prompt tokens.
        prompt_chars = sum(len(str(m.content)) for m in messages) + len(json.dumps(kwargs.get("tools") or []))
        out_tokens = _approx_tokens(content + json.dumps(calls))
        in_tokens = max(1, prompt_chars // 4)
        message = AIMessage(
            content=content,
            tool_calls=calls,
            usage_metadata={"input_tokens": in_tokens, "output_tokens": out_tokens, "total_tokens": in_tokens + out_tokens},
            response_metadata={"model_name": f"scripted:{self.path}", "script_turn": turn},
        )
        return ChatResult(generations=[ChatGeneration(message=message)])
