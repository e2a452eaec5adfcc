"""LangChain tools as kasloop tools: any ``BaseTool`` (``@tool`` functions included), gated like the built-in ones.

kasloop needs to know what LangChain's tool contract does not say: the risk of
a call, whether running it twice is harmless, and whether its result is
outside content. :func:`tool` writes those into the tool's ``metadata`` (the
tool stays a LangChain tool, usable anywhere else); a tool that declares
nothing is treated as the riskiest kind: risk ``high``, not idempotent, its
output untrusted. ``risk_overrides`` in the config can still set a tool's risk
by name.

:func:`from_langchain` wraps one as a :class:`~kasloop.tools.contract.Tool`:
its arguments are validated with the tool's own schema, every call goes
through the policy gate, approvals, the act ledger, truncation, redaction and
taint like a built-in call, and the run's tracers see one tool span per call,
kasloop's (redacted), not a second one from LangChain with the raw arguments.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Iterable
from typing import Any, Literal

from langchain_core.tools import BaseTool
from langchain_core.tools import tool as langchain_tool
from pydantic import BaseModel, ConfigDict, Field, ValidationError, create_model

from kasloop.errors import ConfigError
from kasloop.tools.contract import DEFAULT_OUTPUT_LIMIT, Tool, ToolContext

__all__ = ["METADATA_KEY", "ToolTraits", "as_tools", "from_langchain", "schema_model", "tool"]

METADATA_KEY = "kasloop"
"""The key of a LangChain tool's ``metadata`` that holds its :class:`ToolTraits`."""


class ToolTraits(BaseModel):
    """What kasloop must know about a tool to gate it. The defaults are the strictest: a tool that says
    nothing is ``high`` risk, not idempotent, and its output is untrusted."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    risk: Literal["read", "low", "high", "critical"] = "high"
    idempotent: bool = False
    untrusted: bool = True
    """Whether results may carry outside content (a page, a mail, a message): at level 3 a side effect
    while one is in working memory needs approval."""
    family: str = ""
    """A family name the config's ``tools`` may select it by (besides its own name)."""
    timeout: float = Field(default=30.0, gt=0)
    output_limit: int = Field(default=DEFAULT_OUTPUT_LIMIT, ge=100)


def tool(
    *,
    risk: Literal["read", "low", "high", "critical"] = "high",
    idempotent: bool = False,
    untrusted: bool = True,
    family: str = "",
    timeout: float = 30.0,
    output_limit: int = DEFAULT_OUTPUT_LIMIT,
) -> Callable[[Any], BaseTool]:
    """Declare how kasloop gates a LangChain tool (or a function, made one with LangChain's ``@tool``).

    Example:
        ```python
        @kasloop.tool(risk="read", idempotent=True, untrusted=False)
        @langchain_core.tools.tool
        def word_count(text: str) -> int:
            \"\"\"Count the words of a text.\"\"\"
            return len(text.split())
        ```

    Returns the same LangChain tool with ``metadata["kasloop"]`` set; pass it to ``Agent(tools=...)``,
    ``build_graph(tools=...)`` or a team, and name it (or its ``family``) in the config's ``tools``.

    Raises:
        ConfigError: a value kasloop cannot use (one line naming it).
    """
    try:
        traits = ToolTraits(risk=risk, idempotent=idempotent, untrusted=untrusted, family=family, timeout=timeout, output_limit=output_limit)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"kasloop.tool(): {'.'.join(str(p) for p in first['loc'])}: {first['msg']}.") from None

    def declare(target: Any) -> BaseTool:
        made = target if isinstance(target, BaseTool) else langchain_tool(target)
        made.metadata = {**(made.metadata or {}), METADATA_KEY: traits.model_dump()}
        return made

    return declare


def from_langchain(lc_tool: BaseTool) -> Tool:
    """A LangChain tool as a kasloop :class:`Tool`, with the traits :func:`tool` declared (or the strictest)."""
    try:
        traits = ToolTraits.model_validate((lc_tool.metadata or {}).get(METADATA_KEY) or {})
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"Tool `{lc_tool.name}`: metadata['kasloop'].{'.'.join(str(p) for p in first['loc'])}: {first['msg']}.") from None

    async def call(args: BaseModel, ctx: ToolContext) -> str:
        # No callbacks of its own: the act node already opened this call's span, with redacted arguments.
        result = await lc_tool.ainvoke(args.model_dump(exclude_unset=True), config={"callbacks": []})
        return result_text(result)

    return Tool(
        name=lc_tool.name,
        description=(lc_tool.description or lc_tool.name).strip(),
        args_model=_args_model(lc_tool),
        func=call,
        risk=traits.risk,
        idempotent=traits.idempotent,
        timeout=traits.timeout,
        output_limit=traits.output_limit,
        family=traits.family,
        untrusted=traits.untrusted,
    )


def as_tools(tools: Iterable[Tool | BaseTool]) -> tuple[Tool, ...]:
    """kasloop tools and LangChain tools as kasloop tools (what ``Agent``, ``build_graph`` and teams accept)."""
    converted: list[Tool] = []
    for item in tools:
        if isinstance(item, Tool):
            converted.append(item)
        elif isinstance(item, BaseTool):
            converted.append(from_langchain(item))
        else:
            raise ConfigError(
                f"`{item!r}` is not a tool; pass kasloop.tools.Tool objects or LangChain tools (BaseTool, e.g. made with @tool)."
            )
    return tuple(converted)


def result_text(result: Any) -> str:
    """What the model sees of a LangChain tool's result: text as it is, content blocks' text joined, else JSON."""
    if isinstance(result, str):
        return result
    content = getattr(result, "content", result)  # a ToolMessage a tool built itself
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content and all(isinstance(b, dict) and b.get("type") == "text" for b in content):
        return "\n".join(str(b.get("text", "")) for b in content)
    return json.dumps(content, ensure_ascii=False, default=str)


def _args_model(lc_tool: BaseTool) -> type[BaseModel]:
    """The tool's own argument schema as a pydantic model (what validates a call and what the model sees)."""
    schema = lc_tool.tool_call_schema
    if isinstance(schema, type) and issubclass(schema, BaseModel):
        return schema
    return schema_model(lc_tool.name, schema if isinstance(schema, dict) else {"type": "object", "properties": {}})


def schema_model(name: str, schema: dict[str, Any]) -> type[BaseModel]:
    """A model for a tool whose schema is plain JSON Schema (MCP tools, hand-written schemas): the model is
    shown that schema, its top-level required arguments are checked here, and the tool checks the rest."""
    shown = copy.deepcopy(schema)
    required = [str(r) for r in schema.get("required", [])]
    fields: dict[str, Any] = {key: (Any, ...) for key in required}
    base = create_model(f"{name}_args", __config__=ConfigDict(extra="allow"), **fields)  # type: ignore[call-overload]

    class SchemaArgs(base):  # type: ignore[misc, valid-type]
        @classmethod
        def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
            return copy.deepcopy(shown)

    SchemaArgs.__name__ = f"{name}_args"
    return SchemaArgs
