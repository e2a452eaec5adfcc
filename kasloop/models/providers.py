"""Chat models of every provider LangChain's ``init_chat_model`` knows, by spec ``provider:name``.

``scripted:``, ``openai:`` and ``local`` are built by :mod:`kasloop.models.chat`
itself; any other ``provider:name`` (``anthropic:claude-sonnet-4-5``,
``ollama:qwen2.5``, ``google_genai:gemini-2.5-flash``, ...) goes through
``init_chat_model`` with what ``[providers.NAME]`` says: a base URL, the
environment variable holding the key (never the key itself: it would be
stored with the config), a timeout. kasloop's recovery ladder decides about
retries, so the client's own are off where the provider has them.

A provider's package is an optional extra (``pip install "kasloop[anthropic]"``);
a spec whose package is missing is refused when the config is checked, with
one line naming the extra, not at the first model call of a run.
"""

from __future__ import annotations

import importlib.util
import os
from typing import Any

from langchain_core.language_models import BaseChatModel

from kasloop.config.schema import ProviderSettings
from kasloop.errors import ConfigError
from kasloop.safety.secrets import PROVIDER_KEY_ENVS

__all__ = ["KEY_ENVS", "PROVIDERS", "build_provider_model", "check_provider"]

PROVIDERS: dict[str, tuple[str, str | None]] = {
    "anthropic": ("langchain_anthropic", "anthropic"),
    "anthropic_bedrock": ("langchain_aws", "aws"),
    "azure_ai": ("langchain_azure_ai", None),
    "azure_openai": ("langchain_openai", ""),
    "baseten": ("langchain_baseten", None),
    "bedrock": ("langchain_aws", "aws"),
    "bedrock_converse": ("langchain_aws", "aws"),
    "cohere": ("langchain_cohere", None),
    "deepseek": ("langchain_deepseek", None),
    "fireworks": ("langchain_fireworks", None),
    "google_anthropic_vertex": ("langchain_google_vertexai", None),
    "google_genai": ("langchain_google_genai", "google"),
    "google_vertexai": ("langchain_google_vertexai", None),
    "groq": ("langchain_groq", "groq"),
    "huggingface": ("langchain_huggingface", None),
    "ibm": ("langchain_ibm", None),
    "litellm": ("langchain_litellm", None),
    "mistralai": ("langchain_mistralai", "mistralai"),
    "nvidia": ("langchain_nvidia_ai_endpoints", None),
    "ollama": ("langchain_ollama", "ollama"),
    "openrouter": ("langchain_openrouter", None),
    "perplexity": ("langchain_perplexity", None),
    "together": ("langchain_together", None),
    "upstage": ("langchain_upstage", None),
    "xai": ("langchain_xai", None),
}
"""Provider → (the LangChain package that implements it, kasloop's extra for it: ``""`` is installed with
kasloop, ``None`` has no extra and is installed by its own name). The providers of ``init_chat_model``."""

KEY_ENVS = PROVIDER_KEY_ENVS
"""The variable each provider's client reads its key from when ``api_key_env`` names none (redacted everywhere)."""

_CLIENT_OPTIONS = {"anthropic", "azure_openai", "deepseek", "fireworks", "google_genai", "groq", "mistralai", "openrouter", "together", "xai"}
"""Providers whose chat model takes ``timeout`` and ``max_retries`` (others get only what is configured)."""


def check_provider(spec: str) -> tuple[str, str]:
    """``(provider, model name)`` of a ``provider:name`` spec whose package is installed; ``ConfigError`` otherwise."""
    provider, _, name = spec.partition(":")
    if provider not in PROVIDERS:
        raise ConfigError(
            f"Unknown model spec `{spec}`; use scripted:FILE, openai:NAME, local, or PROVIDER:NAME with a provider of "
            f"LangChain's init_chat_model ({', '.join(sorted(PROVIDERS))})."
        )
    if not name:
        raise ConfigError(f"Model spec `{provider}:` needs a model name, e.g. --model {provider}:MODEL")
    package, extra = PROVIDERS[provider]
    if importlib.util.find_spec(package) is None:
        install = f'pip install "kasloop[{extra}]"' if extra else f"pip install {package.replace('_', '-')}"
        raise ConfigError(f"Model `{spec}` needs the {package.replace('_', '-')} package, which is not installed: {install}")
    return provider, name


def build_provider_model(spec: str, settings: ProviderSettings | None) -> BaseChatModel:
    """The chat model of ``spec`` through ``init_chat_model``; problems are one-line ``ConfigError``s (exit 2)."""
    from langchain.chat_models import init_chat_model  # here: it imports the provider's SDK, which most runs never need

    provider, name = check_provider(spec)
    settings = settings or ProviderSettings()
    options: dict[str, Any] = dict(settings.options)
    if settings.base_url:
        options["base_url"] = settings.base_url
    if settings.api_key_env:
        key = os.environ.get(settings.api_key_env)
        if not key:
            raise ConfigError(f"Model `{spec}` needs its key in ${settings.api_key_env} (providers.{provider}.api_key_env); set it.")
        options["api_key"] = key
    if provider in _CLIENT_OPTIONS:
        options.setdefault("timeout", settings.timeout)
        options.setdefault("max_retries", 0)  # kasloop's recovery ladder decides about retries
    try:
        model = init_chat_model(name, model_provider=provider, **options)
    except Exception as exc:  # noqa: BLE001 - a provider's own validation (a missing key, a bad option) becomes one line
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        hint = f" (set ${KEY_ENVS[provider]} or providers.{provider}.api_key_env)" if provider in KEY_ENVS and "key" in first.lower() else ""
        raise ConfigError(f"Model `{spec}` cannot be built: {first}{hint}.") from None
    if provider == "anthropic":
        _own_anthropic_client(model)
    return model


def _own_anthropic_client(model: Any) -> None:
    """A client of this model's own, with its own HTTP connections.

    langchain-anthropic shares one cached async HTTP client per base URL for the whole process; its
    kept-alive connections belong to the event loop of the first run, so a second ``asyncio.run``
    (``run_sync`` twice, a notebook) would fail with "Event loop is closed" (as langchain-openai's did:
    see ``chat.py``). The SDK's client, given none, makes its own.
    """
    import anthropic

    model.__dict__["_async_client"] = anthropic.AsyncClient(**model._client_params)
