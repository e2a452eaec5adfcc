"""How kasloop reaches what runs outside it: model providers (``[openai]``, ``[providers.NAME]``) and MCP servers
(``[mcp.NAME]``). None of it holds a secret: keys and tokens are named by the environment variable that holds them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from kasloop.safety.approval_secrets import tool_secret_problem

__all__ = ["MCP_NAME", "McpServer", "OpenAISettings", "ProviderSettings", "Risk", "ToolTraitSettings"]

Risk = Literal["read", "low", "high", "critical"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class OpenAISettings(_Frozen):
    """How to reach an OpenAI-compatible server. Never stored with a thread."""

    base_url: str | None = None
    """e.g. ``http://127.0.0.1:8080/v1``; default: OpenAI's (or ``OPENAI_BASE_URL``)."""
    api_key: SecretStr | None = None
    """Default: ``OPENAI_API_KEY``."""
    timeout: float = 120.0
    """Seconds per request."""


class ProviderSettings(_Frozen):
    """How to reach one provider of ``PROVIDER:NAME`` model specs (``[providers.anthropic]``). Never stored with a thread."""

    base_url: str | None = None
    """The provider's API, e.g. ``http://127.0.0.1:11434`` for a local Ollama; default: the provider's own."""
    api_key_env: str | None = None
    """The environment variable holding the key (redacted everywhere); default: the provider's own variable
    (``ANTHROPIC_API_KEY``, ``GOOGLE_API_KEY``, ...). A key is never written in the config."""
    timeout: float = Field(default=120.0, gt=0)
    """Seconds per request (providers whose client takes one)."""
    options: dict[str, str | int | float | bool] = Field(default_factory=dict)
    """More keyword arguments for the provider's chat model, e.g. ``{max_tokens = 2048}`` or Ollama's ``{num_ctx = 8192}``."""


MCP_NAME = re.compile(r"^[a-z][a-z0-9_]*$")


class McpServer(_Frozen):
    """One MCP server (``[mcp.NAME]``) whose tools an agent may get as ``NAME__tool``.

    Either ``command`` (a stdio server kasloop starts on demand and stops at the end of the run) or ``url``
    (a streamable HTTP endpoint). Secrets never appear here: ``env_from`` and ``headers_from`` name the
    variables of kasloop's environment that hold them (read when the server is reached, redacted everywhere).
    """

    command: str | None = None
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    """Plain (non-secret) variables for a stdio server, on top of a minimal environment (``PATH``, ``HOME``, ...)."""
    env_from: dict[str, str] = Field(default_factory=dict)
    """Server variable → the variable of kasloop's environment holding its value (a token)."""
    cwd: Path | None = None
    url: str | None = None
    """``http://HOST:PORT/mcp`` or ``https://...``: a streamable HTTP server."""
    headers_from: dict[str, str] = Field(default_factory=dict)
    """HTTP header → the variable holding its value (e.g. ``{Authorization = "MCP_AUTH"}`` with ``MCP_AUTH="Bearer ..."``)."""
    risk: dict[str, Risk] = Field(default_factory=dict)
    """Tool (its name on the server) → risk. Every other tool gets ``default_risk``; a server's own annotations
    (``readOnlyHint`` and the like) never lower it."""
    default_risk: Risk = "high"
    idempotent: list[str] = Field(default_factory=list)
    """Tools that may safely run twice (after a crash or a server that died mid-call); the others are not."""
    timeout: float = Field(default=60.0, gt=0)
    """Seconds per call."""

    @model_validator(mode="after")
    def _one_transport(self) -> McpServer:
        if (self.command is None) == (self.url is None):
            raise ValueError("give either `command` (a stdio server) or `url` (a streamable HTTP server)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ValueError(f"url `{self.url}` must start with http:// or https://")
        for key, value in {**self.env, **{str(a): a for a in self.args}}.items():
            if "${" in value:
                raise ValueError(f"`{key}` holds `${{...}}`: name secrets with env_from / headers_from instead of expanding them here")
        for setting, names in (("env_from", self.env_from), ("headers_from", self.headers_from)):
            for key, name in names.items():
                problem = tool_secret_problem(f"{setting}.{key}", name)
                if problem is not None:
                    raise ValueError(problem)
        return self


class ToolTraitSettings(_Frozen):
    """``[tool_traits.NAME]``: what kasloop gates on, for one of your own tools given to ``Agent(tools=...)`` or
    ``build_graph(tools=...)`` (a LangChain tool from a library you cannot decorate with ``kasloop.tool``).

    Each value set here replaces what the tool declared; what is left out stays as declared (for an undeclared
    LangChain tool: ``high``, not idempotent, untrusted). Built-in tools keep their own (``risk_overrides``
    changes a risk), and MCP tools take theirs from ``[mcp.NAME]``.
    """

    risk: Risk | None = None
    idempotent: bool | None = None
    untrusted: bool | None = None
    """Whether results may carry outside content (taint): ``false`` only for a tool whose output you control."""
    family: str | None = None
    timeout: float | None = Field(default=None, gt=0)

