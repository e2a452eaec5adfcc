"""Model specs → chat models, and one call path that turns provider failures into ``ModelError``.

Specs: ``scripted:FILE`` (deterministic replay), ``openai:NAME`` (any
OpenAI-compatible server through ``ChatOpenAI``), ``local`` (the embedded
model, managed by ``kasloop local-model``).
"""

from __future__ import annotations

import os
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage

from kasloop.config import AgentConfig
from kasloop.errors import ConfigError, ModelError
from kasloop.scripted import ScriptedChatModel

__all__ = ["build_model", "invoke_model"]


def build_model(spec: str, config: AgentConfig) -> BaseChatModel:
    """Create the chat model for one spec. Problems are ``ConfigError`` (exit 2)."""
    kind, _, rest = spec.partition(":")
    if kind == "scripted":
        if not rest:
            raise ConfigError("Model spec `scripted:` needs a file: --model scripted:PATH.jsonl")
        return ScriptedChatModel.from_file(rest)
    if kind == "openai":
        if not rest:
            raise ConfigError("Model spec `openai:` needs a model name, e.g. --model openai:gpt-4o-mini")
        from langchain_openai import ChatOpenAI

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
        )
    if spec == "local":
        raise ConfigError(
            "The embedded `local` model is not installed in this version; pass --model openai:NAME "
            "(with OPENAI_API_KEY) or --model scripted:FILE."
        )
    raise ConfigError(f"Unknown model spec `{spec}`; use scripted:FILE, openai:NAME or local.")


def _classify(exc: Exception) -> ModelError:
    status = getattr(exc, "status_code", None)
    name = type(exc).__name__
    if status is not None:
        transient = status == 429 or status >= 500
        return ModelError(f"model returned HTTP {status}: {exc}", transient=transient)
    transient = any(word in name for word in ("Connection", "Timeout"))
    return ModelError(f"model call failed ({name}): {exc}", transient=transient)


async def invoke_model(
    model: BaseChatModel,
    messages: list[BaseMessage],
    tools: list[dict[str, Any]],
    *,
    turn: int,
) -> AIMessage:
    """Call the model with the tools bound; raise ``ModelError`` for anything that went wrong."""
    bound = model.bind_tools(tools) if tools else model
    kwargs: dict[str, Any] = {"turn": turn} if isinstance(model, ScriptedChatModel) else {}
    try:
        reply = await bound.ainvoke(messages, **kwargs)
    except ModelError:
        raise
    except Exception as exc:  # noqa: BLE001 - provider errors are translated here, at the boundary
        raise _classify(exc) from exc
    if not isinstance(reply, AIMessage):
        raise ModelError(f"model returned {type(reply).__name__}, not an AI message", transient=False)
    return reply
