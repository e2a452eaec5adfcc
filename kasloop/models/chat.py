"""Model specs → chat models, and one call path that turns provider failures into ``ModelError``.

Specs: ``scripted:FILE`` (deterministic replay), ``openai:NAME`` (any
OpenAI-compatible server through ``ChatOpenAI``), ``local`` (the embedded
model, managed by ``kasloop local-model``), and ``PROVIDER:NAME`` for every
other provider of LangChain's ``init_chat_model`` (:mod:`kasloop.models.providers`).
"""

from __future__ import annotations

import json
import os
import re
from typing import Any, Literal

import httpx
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, SystemMessage

from kasloop.models import local_server
from kasloop.config.schema import AgentConfig
from kasloop.errors import ConfigError, KasloopError, ModelError
from kasloop.models.providers import PROVIDERS, build_provider_model, check_provider
from kasloop.models.scripted import ScriptedChatModel, load_script

__all__ = [
    "DEFAULT_OPENAI_MODEL", "GUIDED_STEPS", "DetachedModel", "ModelChain", "build_model", "chain_with", "check_model_spec", "extract_tool_call", "invoke_model",
    "is_object_spec", "object_spec", "resolve_model_specs",
]

DEFAULT_OPENAI_MODEL = "openai:gpt-4o-mini"
LOCAL_TEMPERATURE = 0.3
"""Low, but not 0: a retry after a malformed reply must be able to come out differently."""


SEED_MARK = "kasloop_seed"
"""Model metadata: the sampling seed of turn 0 (``model_seed``); each turn adds its number."""


def _own_async_client(timeout: float) -> httpx.AsyncClient:
    """A fresh HTTP client for one model.

    langchain-openai otherwise shares one cached async client per base URL for
    the whole process; its kept-alive connections belong to the event loop of
    the first run, so a second ``asyncio.run`` (``run_sync`` twice, a notebook)
    failed with "Event loop is closed". A client per model binds to the loop
    that uses it.
    """
    return httpx.AsyncClient(timeout=timeout)


def object_spec(model: BaseChatModel) -> str:
    """What a thread's stored policy says of a chat model object given in Python: ``object:CLASS``."""
    return f"object:{type(model).__name__}"


def is_object_spec(spec: str) -> bool:
    return spec.startswith("object:")


def chain_with(model: BaseChatModel, specs: list[str]) -> list[str]:
    """The fallback chain when a chat model object is given: it takes the first model's place; the other
    specs stay its fallbacks."""
    return [object_spec(model), *specs[1:]]


class DetachedModel(BaseChatModel):
    """Stands for a chat model object that only the Python process given it has (``Agent(model=...)``).

    Another process (``kasloop status``, ``kasloop approve --no-resume``) compiles the thread's graph with
    it to read the thread's state and pauses; it never answers (the thread session refuses to drive a thread
    whose model it lacks, before any node runs).
    """

    spec: str

    @property
    def _llm_type(self) -> str:
        return "kasloop-detached"

    def _generate(self, messages: list[BaseMessage], stop: list[str] | None = None, run_manager: Any = None, **kwargs: Any) -> Any:
        raise ModelError(f"model `{self.spec}` is a Python object this process does not have", transient=False)


def resolve_model_specs(config: AgentConfig) -> list[str]:
    """The model chain to use: the configured one; else OpenAI if a key is set; else the local model."""
    if config.model is not None:
        return config.model_specs
    if config.openai.api_key is not None or os.environ.get("OPENAI_API_KEY"):
        return [DEFAULT_OPENAI_MODEL]
    return ["local"]


def build_model(spec: str, config: AgentConfig) -> BaseChatModel:
    """Create the chat model for one spec. Problems are ``ConfigError`` (exit 2)."""
    kind, rest = _parse_spec(spec)
    if kind == "scripted":
        return ScriptedChatModel.from_file(rest)
    if kind == "object":
        return DetachedModel(spec=spec)
    if kind in PROVIDERS:
        return build_provider_model(spec, config.providers.get(kind))
    if kind == "openai":
        from langchain_openai import ChatOpenAI  # here: it loads the openai SDK (about 0.5 s), which a scripted model never needs

        key = config.openai.api_key.get_secret_value() if config.openai.api_key else os.environ.get("OPENAI_API_KEY")
        if not key and not config.openai.base_url:
            raise ConfigError(
                f"Model `{spec}` needs an API key: set OPENAI_API_KEY or `openai.api_key` in kasloop.toml "
                "(or `openai.base_url` for a local OpenAI-compatible server)."
            )
        return ChatOpenAI(
            model=rest,
            base_url=config.openai.base_url,
            api_key=key or "not-needed",
            max_retries=0,  # kasloop's recovery ladder decides about retries
            timeout=config.openai.timeout,
            stream_usage=True,  # a streamed reply (Agent.astream) still reports its tokens
            http_async_client=_own_async_client(config.openai.timeout),
        )
    from langchain_openai import ChatOpenAI  # here, as above

    # "local": _parse_spec allows nothing else
    return ChatOpenAI(
        model="local",
        base_url=local_server.ensure_running(),
        api_key="local",  # the server is bound to 127.0.0.1 and needs no key
        max_retries=0,
        timeout=config.openai.timeout,
        http_async_client=_own_async_client(config.openai.timeout),
        max_tokens=512,  # also capped on the server (-n)
        temperature=LOCAL_TEMPERATURE,
        metadata={TOOLS_IN_PROMPT: True, GUIDED_STEPS: True, SEED_MARK: config.model_seed},
    )


def _classify(exc: Exception) -> ModelError:
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    if status is not None:
        transient = status == 429 or status >= 500
        return ModelError(f"model returned HTTP {status}: {exc}", transient=transient)
    transient = any(word in name for word in ("Connection", "Timeout"))
    return ModelError(f"model call failed ({name}): {exc}", transient=transient)


def _parse_spec(spec: str) -> tuple[str, str]:
    """``(kind, rest)`` of a spec whose form is right; ``ConfigError`` naming the problem otherwise."""
    kind, _, rest = spec.partition(":")
    if kind == "scripted" and not rest:
        raise ConfigError("Model spec `scripted:` needs a file: --model scripted:PATH.jsonl")
    if kind == "openai" and not rest:
        raise ConfigError("Model spec `openai:` needs a model name, e.g. --model openai:gpt-4o-mini")
    if kind not in ("scripted", "openai", "object") and spec != "local":
        check_provider(spec)  # one line naming the problem: an unknown provider, no model name, a missing package
    return kind, rest


def check_model_spec(spec: str) -> None:
    """Check a spec's form without building it (no server started, no key needed); ``ConfigError`` if wrong."""
    kind, rest = _parse_spec(spec)
    if kind == "scripted":
        load_script(rest)


class ModelChain:
    """The fallback chain of models: the first is built now, the others when a fallback first needs them.

    self_diagnose moves a thread to the next model (``model_index`` in the
    state) when one keeps failing; a later model is built only then, so a
    ``local`` fallback does not start a server nobody uses. Scripted models in a
    chain share the thread's turn counter: each script is indexed by the same turn.
    """

    def __init__(self, specs: list[str], config: AgentConfig, *, first: BaseChatModel | None = None) -> None:
        if not specs and first is None:
            raise ConfigError("No model configured; set `model` in kasloop.toml or pass --model.")
        for spec in specs[1:]:
            check_model_spec(spec)
        self.specs = specs or ["custom"]
        self.config = config
        self._built: dict[int, BaseChatModel] = {0: first if first is not None else build_model(self.specs[0], config)}

    def __len__(self) -> int:
        return len(self.specs)

    def spec(self, index: int) -> str:
        return self.specs[min(index, len(self.specs) - 1)]

    def get(self, index: int) -> BaseChatModel:
        """The model at ``index`` (the last one past the end). Raises ``ModelError`` if it cannot be built."""
        index = min(index, len(self.specs) - 1)
        if index not in self._built:
            try:
                self._built[index] = build_model(self.specs[index], self.config)
            except KasloopError as exc:
                raise ModelError(f"fallback model `{self.specs[index]}` cannot be used: {exc.message}", transient=False) from None
        return self._built[index]


async def invoke_model(
    model: BaseChatModel,
    messages: list[BaseMessage],
    tools: list[dict[str, Any]],
    *,
    turn: int,
    purpose: Literal["decide", "summary", "diagnose"] = "decide",
) -> AIMessage:
    """Call the model with the tools bound; raise ``ModelError`` for anything that went wrong.

    ``purpose="summary"`` (working memory's summary) and ``"diagnose"`` (the
    self-diagnosis prompt) are side calls: a scripted model answers them
    without using up a turn of its script.
    """
    in_prompt = bool(tools) and bool((model.metadata or {}).get(TOOLS_IN_PROMPT))
    if in_prompt:
        # The server gets no `tools`: it cannot reject a reply that does not parse as a call (the small
        # model's HTTP 500s), and the raw reply reaches extract_tool_call, which can tell a call, an answer
        # and an echoed tool result apart.
        messages = with_tool_listing(messages, tools)
    try:
        bound = model.bind_tools(tools) if tools and not in_prompt else model
    except NotImplementedError:  # a model that cannot be given tool schemas (a test fake): its replies may still carry calls
        bound = model
    kwargs: dict[str, Any] = {"turn": turn, "purpose": purpose} if isinstance(model, ScriptedChatModel) else {}
    seed = (model.metadata or {}).get(SEED_MARK)
    if isinstance(seed, int):
        # Sampling seeded by the turn number: the same thread replays the same way (tests and bug
        # reports are reproducible), while a retry, being a new turn, samples anew.
        kwargs["seed"] = seed + turn
    try:
        reply = await bound.ainvoke(messages, **kwargs)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - provider errors are translated here, at the boundary
        raise _classify(exc) from exc
    if not isinstance(reply, AIMessage):
        raise ModelError(f"model returned {type(reply).__name__}, not an AI message", transient=False)
    if not reply.tool_calls and _cut_off(reply):
        # Not an answer: the model was still writing (measured: a files_write whose content repeated a word
        # until the limit). It goes through the recovery ladder, and the model is told how to fit.
        raise ModelError(
            "the reply was cut off at the model's token limit before it finished; keep replies and file content short "
            "(write a long file in parts with files_append)",
            transient=False,
        )
    if not reply.tool_calls and tools:
        echoed = echoed_result(str(reply.content))
        if echoed is not None:
            # A small model that copies the last tool result means "that was it": measured on the 0.5B
            # model, asking it again only made it repeat the finished call. Its answer is the result.
            return AIMessage(content=echoed, usage_metadata=reply.usage_metadata, response_metadata=reply.response_metadata)
        recovered = extract_tool_call(str(reply.content), tools, call_id=f"call_{turn}_0")
        if recovered is not None:
            reply = AIMessage(content="", tool_calls=[recovered], usage_metadata=reply.usage_metadata, response_metadata=reply.response_metadata)
        elif names_a_tool(str(reply.content), tools):
            name = str(reply.content).strip().strip("`'\".").strip()
            raise ModelError(
                f"the reply is only the name `{name}`, which is neither an answer nor a call; to call it, send one JSON "
                f'object {{"name": "{name}", "arguments": {{...}}}}; if the task is done, say so in a sentence',
                transient=False,
            )
        elif looks_like_call(str(reply.content), tools):
            raise ModelError(
                "the reply looks like a tool call but is not valid JSON, so nothing ran; send the call again as one "
                'complete JSON object {"name": ..., "arguments": {...}} with short content',
                transient=False,
            )
    return reply


def _cut_off(reply: AIMessage) -> bool:
    """Did the model stop at its token limit (OpenAI ``finish_reason`` / Anthropic ``stop_reason``)?"""
    meta = reply.response_metadata or {}
    return meta.get("finish_reason") == "length" or meta.get("stop_reason") == "max_tokens"


_CALL_START = re.compile(r'^\s*(```[a-zA-Z]*\s*)?\{\s*"(name|function|arguments|tool)"\s*:')


def looks_like_call(text: str, tools: list[dict[str, Any]]) -> bool:
    """A reply that starts like a call (``{"name": ...``) and names one of the tools, but did not parse:
    never a final answer."""
    if not _CALL_START.match(text):
        return False
    names = [t["function"]["name"] for t in tools]
    return any(f'"{name}"' in text for name in names)


def _with_path_from(tool: dict[str, Any], name: str, args: dict[str, Any]) -> dict[str, Any]:
    """``args`` for the hint, with a missing required ``path`` filled by a file name the model used as the function."""
    params = tool["function"].get("parameters") or {}
    if "path" in args or "path" not in (params.get("required") or []) or not re.search(r"[./]", name):
        return args
    return {"path": name, **args}


def names_a_tool(text: str, tools: list[dict[str, Any]]) -> bool:
    """A reply that is only a tool's name (measured: ``files_write`` after an error) is not an answer."""
    word = text.strip().strip("`'\".").strip()
    return word in {t["function"]["name"] for t in tools}


_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")

MAX_LEAD_IN = 40
"""Characters of text a reply may have before the JSON object that makes it a call."""

GUIDED_STEPS = "kasloop_guided_steps"
"""Model metadata flag: the model is shown one step of a goal at a time unless ``guide_steps`` says otherwise."""

TOOLS_IN_PROMPT = "kasloop_tools_in_prompt"
"""Model metadata flag: describe the tools in the system prompt and parse calls from the reply text."""


def with_tool_listing(messages: list[BaseMessage], tools: list[dict[str, Any]]) -> list[BaseMessage]:
    """``messages`` with the tools described in the system message, in the wording of kasloop's chat template."""
    listing = "\n".join(json.dumps(t, ensure_ascii=False) for t in tools)
    text = (
        "\n\n# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
        f"You are provided with function signatures within <tools></tools> XML tags:\n<tools>\n{listing}\n</tools>\n\n"
        "To call a function, reply with only one JSON object, no markdown and no code fences:\n"
        '{"name": <function-name>, "arguments": <args-json-object>}\nWhen no function is needed, reply in plain text.'
    )
    if messages and isinstance(messages[0], SystemMessage):
        return [SystemMessage(str(messages[0].content) + text), *messages[1:]]
    return [SystemMessage(text.lstrip()), *messages]


def echoed_result(text: str) -> str | None:
    """If the reply is a copy of one of kasloop's tool-result envelopes (``{"tool", "ok", ...}``, which small
    models echo), the plain text it stands for; else None."""
    data = _leading_json(text)
    # Measured on the 0.5B model: it also echoes the envelope with "tool" renamed to "name"
    # ({"name": "files_write", "ok": true, "result": "Wrote ..."}); a call has "arguments" instead.
    if data is None or "ok" not in data or "arguments" in data:
        return None
    tool = data.get("tool", data.get("name"))
    if not isinstance(tool, str):
        return None
    detail = data.get("result") if data.get("ok") else data.get("message")
    return f"{tool}: {detail}" if isinstance(detail, str) else f"{tool} finished."


def _leading_json(text: str) -> dict[str, Any] | None:
    """The JSON object a small model's reply consists of, if any.

    Tolerates what the 0.5B model does in practice: a code fence, a short lead-in
    ("The function returned: {...}") and missing closing braces at the end. A
    reply with more than a short lead-in before the object is prose, not a call.
    """
    stripped = _FENCE.sub("", text.strip())
    start = stripped.find("{")
    if start < 0 or start > MAX_LEAD_IN:
        return None
    body = stripped[start:]
    for extra in range(4):
        try:
            data, _ = json.JSONDecoder().raw_decode(body + "}" * extra)
        except json.JSONDecodeError:
            continue
        return data if isinstance(data, dict) else None
    return None


def extract_tool_call(text: str, tools: list[dict[str, Any]], *, call_id: str) -> dict[str, Any] | None:
    """Recover a tool call that a small model wrote as text instead of a structured call.

    Small models often answer ``{"name": "files_write", "arguments": {...}}``
    as plain content (sometimes in a code fence, sometimes without its last
    brace). Only a reply that *is* such an object is taken; a plain-text answer
    stays an answer. A call of a function that is not bound is a ``ModelError``
    naming the valid ones, so the model is asked again with that error.
    """
    data = _leading_json(text)
    if data is None or not isinstance(data.get("name"), str):
        return None
    args = data.get("arguments", data.get("args", data.get("parameters", {})))
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    if not isinstance(args, dict):
        return None
    names = [t["function"]["name"] for t in tools]
    if data["name"] not in names:
        # Measured on the 0.5B model: {"name": "notes.md", "arguments": {"content": ...}} (the file as the
        # function). The message shows the call's right shape with its own arguments, which it then copies.
        example = json.dumps({"name": names[0], "arguments": _with_path_from(tools[0], data["name"], args)}, ensure_ascii=False) if len(names) == 1 else None
        raise ModelError(
            f"the reply called `{data['name']}`, which is not a tool; `name` must be one of: {', '.join(names)}"
            + (f" (every argument goes inside `arguments`, e.g. {example[:200]})" if example else ""),
            transient=False,
        )
    return {"name": data["name"], "args": args, "id": call_id, "type": "tool_call"}
