"""MCP servers' tools as kasloop tools (``[mcp.NAME]`` in the config), through langchain-mcp-adapters.

A server named in the config's ``tools`` (``NAME`` for all its tools, ``NAME__tool`` for one) is
reached the first time a command needs its tools: a stdio server is started then, and every call of
the run goes through that one session; when the run ends (``ToolResources.aclose``) the session is
closed and a stdio server stopped. If kasloop itself is killed, the server's stdin closes (servers exit
on that) and the kernel kills it too (``PR_SET_PDEATHSIG``), so nothing stays behind.

What kasloop knows of an MCP tool comes from the config, never from the server: its risk is
``risk.TOOL`` or ``default_risk`` (``high`` unless set; a server's ``readOnlyHint`` does not lower it),
it is idempotent only when ``idempotent`` lists it, and its results are always untrusted (outside
content: at level 3 the next side effect needs approval). A server that dies mid-call turns the call
into an error the model sees: ``outcome_unknown`` for a tool that is not idempotent (it may have
acted), ``transient`` for one that is; the next call starts the server again.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import os
import sys
from collections.abc import Iterable
from datetime import timedelta
from typing import Any

from kasloop.config.schema import AgentConfig, McpServer
from kasloop.errors import ConfigError
from kasloop.tools.contract import Tool, ToolContext, ToolFailure
from kasloop.tools.langchain_tools import schema_model
from kasloop.tools.resources import ToolResources

__all__ = ["SEPARATOR", "McpConnection", "all_tool_names", "describe_servers", "mcp_servers_named", "mcp_tools", "plain_tool_names"]

SEPARATOR = "__"
"""Between a server's name and its tool's: ``github__create_issue``."""

_PDEATHSIG = (
    "import ctypes, os, signal, sys\n"
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: die with kasloop\n"
    "if os.getppid() == int(sys.argv[1]):\n"
    "    os.execvp(sys.argv[2], sys.argv[2:])\n"
)
"""Started in front of a stdio server: the kernel kills the server when kasloop dies, even by ``kill -9``."""


def mcp_servers_named(config: AgentConfig, names: Iterable[str]) -> set[str]:
    """The MCP servers of ``config`` that ``names`` (tool or family names) refer to."""
    found: set[str] = set()
    for name in names:
        server = name.split(SEPARATOR, 1)[0]
        if server in config.mcp and (name == server or name.startswith(server + SEPARATOR)):
            found.add(server)
    return found


def plain_tool_names(config: AgentConfig, names: Iterable[str]) -> list[str]:
    """``names`` without those of MCP servers (checked once the servers are reached)."""
    return [n for n in names if not mcp_servers_named(config, [n])]


def all_tool_names(config: AgentConfig) -> list[str]:
    """Every tool name the config's agents select: its own, its team members' and its collaboration's peers'."""
    names = list(config.tools)
    for member in (*config.team_members().values(), *config.collaboration_peers().values()):
        names.extend(member.tools)
    return names


async def mcp_tools(config: AgentConfig, resources: ToolResources) -> tuple[Tool, ...]:
    """The tools of every MCP server the config's agents name, each server reached once per ``resources``.

    Raises:
        ConfigError: a server could not be started or reached (one line naming it).
    """
    tools: list[Tool] = []
    for name in sorted(mcp_servers_named(config, all_tool_names(config))):
        connection = await _connection(resources, name, config.mcp[name])
        tools.extend(connection.tools)
    return tuple(tools)


async def _connection(resources: ToolResources, name: str, server: McpServer) -> McpConnection:
    async def start() -> McpConnection:
        connection = McpConnection(name, server)
        await connection.start()
        return connection

    async def stop(connection: McpConnection) -> None:
        await connection.aclose()

    return await resources.shared(f"mcp:{name}", start, stop)


class McpConnection:
    """One MCP server's session, held open by a task of its own for the run (the MCP client's task groups
    must be left by the task that entered them, while tool calls come from LangGraph's tasks)."""

    def __init__(self, name: str, server: McpServer) -> None:
        self.name = name
        self.server = server
        self.tools: tuple[Tool, ...] = ()
        self._session: Any = None
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()
        self._ready: asyncio.Future[None] | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> None:
        """Reach the server and list its tools; ``ConfigError`` if it cannot be reached."""
        if importlib.util.find_spec("langchain_mcp_adapters") is None:
            raise ConfigError(f'MCP server `{self.name}` needs the langchain-mcp-adapters package, which is not installed: pip install "kasloop[mcp]"')
        try:
            await self._open()
            from langchain_mcp_adapters.tools import load_mcp_tools

            listed = await load_mcp_tools(self._session, server_name=self.name)
        except ConfigError:
            raise
        except Exception as exc:  # noqa: BLE001 - whatever the transport raised, one line naming the server
            await self.aclose()
            raise ConfigError(f"MCP server `{self.name}` could not be reached: {_first_line(exc)}. Check [mcp.{self.name}] in kasloop.toml.") from None
        self.tools = tuple(self._tool(lc.name, lc.description or "", lc.args_schema) for lc in listed)

    async def _open(self) -> None:
        connection = self._connection()
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._ready = ready
        self._stop = asyncio.Event()

        async def hold() -> None:
            try:
                async with _session(connection) as session:
                    await session.initialize()
                    self._session = session
                    ready.set_result(None)
                    await self._stop.wait()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits for the session
                if not ready.done():
                    ready.set_exception(exc if isinstance(exc, Exception) else RuntimeError(repr(exc)))
            finally:
                self._session = None

        self._task = asyncio.create_task(hold(), name=f"kasloop-mcp-{self.name}")
        await asyncio.wait_for(asyncio.shield(ready), timeout=max(self.server.timeout, 30.0))

    def _connection(self) -> dict[str, Any]:
        server = self.server
        # A reply the server never sends (it died mid-call: over HTTP the request would wait forever) ends as an
        # error of the MCP client after ``timeout``, classified below; the tool's own timeout is a little longer.
        session = {"read_timeout_seconds": timedelta(seconds=server.timeout)}
        if server.url is not None:
            headers = {header: _secret(self.name, f"headers_from.{header}", var) for header, var in server.headers_from.items()}
            return {"transport": "streamable_http", "url": server.url, "headers": headers or None, "timeout": server.timeout, "session_kwargs": session}
        env = {**server.env, **{key: _secret(self.name, f"env_from.{key}", var) for key, var in server.env_from.items()}}
        # In front of the server: a few lines that ask the kernel to kill it with kasloop (kill -9 included).
        args = ["-c", _PDEATHSIG, str(os.getpid()), str(server.command), *server.args]
        connection: dict[str, Any] = {"transport": "stdio", "command": sys.executable, "args": args, "env": env or None, "session_kwargs": session}
        if server.cwd is not None:
            connection["cwd"] = str(server.cwd)
        return connection

    def _tool(self, remote: str, description: str, schema: Any) -> Tool:
        server = self.server
        name = f"{self.name}{SEPARATOR}{remote}"
        idempotent = remote in server.idempotent

        async def call(args: Any, ctx: ToolContext) -> str:
            return await self.call(remote, args.model_dump(exclude_unset=True), idempotent=idempotent)

        return Tool(
            name=name,
            description=(description.strip() or remote)[:1000],
            args_model=schema_model(name, schema if isinstance(schema, dict) else {"type": "object", "properties": {}}),
            func=call,
            risk=server.risk.get(remote, server.default_risk),
            idempotent=idempotent,
            timeout=server.timeout + 5,
            family=self.name,
            untrusted=True,  # whatever the server says about itself
        )

    async def call(self, tool: str, arguments: dict[str, Any], *, idempotent: bool) -> str:
        """Call ``tool`` on the server (started again first if it died); its text, or ``ToolFailure``."""
        async with self._lock:
            if self._session is None:
                try:
                    await self.aclose()
                    await self._open()
                except Exception as exc:  # noqa: BLE001 - the server cannot be started again now
                    raise ToolFailure("transient", f"MCP server `{self.name}` is not running and could not be started: {_first_line(exc)}") from None
        session = self._session
        try:
            result = await session.call_tool(tool, arguments)
        except Exception as exc:  # noqa: BLE001 - the server went away or broke the protocol mid-call
            await self._mark_dead()
            if idempotent:
                raise ToolFailure("transient", f"MCP server `{self.name}` failed during the call ({_first_line(exc)}); it is safe to retry") from None
            raise ToolFailure(
                "outcome_unknown",
                f"MCP server `{self.name}` stopped during `{tool}` ({_first_line(exc)}); the call may or may not have taken effect",
            ) from None
        text = _result_text(result)
        if getattr(result, "isError", False):
            raise ToolFailure("permanent", text or f"`{tool}` failed on MCP server `{self.name}`")
        return text

    async def _mark_dead(self) -> None:
        self._stop.set()
        self._session = None

    async def aclose(self) -> None:
        """Close the session (a stdio server is stopped: its stdin closes, then it is terminated)."""
        self._stop.set()
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, timeout=10)
        self._session = None


def _secret(server: str, setting: str, variable: str) -> str:
    value = os.environ.get(variable)
    if not value:
        raise ConfigError(f"MCP server `{server}` needs ${variable} ({setting} in [mcp.{server}]); set it.")
    return value


def _result_text(result: Any) -> str:
    """The text of an MCP tool result: its text blocks; other blocks named; structured content as JSON."""
    parts: list[str] = []
    for block in getattr(result, "content", None) or []:
        kind = getattr(block, "type", "")
        if kind == "text":
            parts.append(str(getattr(block, "text", "")))
        else:
            parts.append(f"[{kind or 'unknown'} content omitted]")
    if not parts and getattr(result, "structuredContent", None) is not None:
        return json.dumps(result.structuredContent, ensure_ascii=False, default=str)
    return "\n".join(parts)


@contextlib.asynccontextmanager
async def _session(connection: dict[str, Any]) -> Any:
    """An MCP client session over ``connection``. A stdio server is started through the ``mcp`` package itself,
    with its stderr on a real file: ``langchain-mcp-adapters`` leaves it on ``sys.stderr``, which in a Jupyter
    kernel has no file descriptor (the server could not start there), and it would expand ``${VAR}`` in the
    environment kasloop hands over (a secret's value is passed as it is)."""
    if connection["transport"] != "stdio":
        from langchain_mcp_adapters.sessions import create_session

        async with create_session(connection) as session:  # type: ignore[arg-type]
            yield session
        return
    from mcp import ClientSession
    from mcp.client.stdio import StdioServerParameters, stdio_client

    params = StdioServerParameters(command=connection["command"], args=connection["args"], env=connection["env"], cwd=connection.get("cwd"))
    async with stdio_client(params, errlog=_errlog()) as (read, write), ClientSession(read, write, **connection["session_kwargs"]) as session:
        yield session


def _errlog() -> Any:
    """Where a stdio server's stderr goes: this process's stderr when it is a real file (a terminal, a log),
    else the interpreter's original one (a notebook kernel's ``sys.stderr`` is not a file)."""
    for stream in (sys.stderr, sys.__stderr__):
        try:
            if stream is not None:
                stream.fileno()
                return stream
        except (AttributeError, OSError, ValueError):
            continue
    return open(os.devnull, "w")  # noqa: SIM115 - no stderr at all: the server's messages go nowhere


def _first_line(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:300]


async def describe_servers(config: AgentConfig) -> list[dict[str, Any]]:
    """Every ``[mcp.NAME]`` server reached once, with its tools and what kasloop makes of them (``kasloop mcp list``):
    ``{"server", "transport", "tools": [{"name", "risk", "idempotent", "description"}], "error"}``."""
    found: list[dict[str, Any]] = []
    resources = ToolResources()
    try:
        for name, server in sorted(config.mcp.items()):
            entry: dict[str, Any] = {"server": name, "transport": "stdio" if server.command else "http", "tools": [], "error": None}
            try:
                connection = await _connection(resources, name, server)
            except ConfigError as exc:
                entry["error"] = exc.message
            else:
                entry["tools"] = [
                    {"name": t.name, "risk": t.risk, "idempotent": t.idempotent, "description": t.description.splitlines()[0][:120]}
                    for t in connection.tools
                ]
            found.append(entry)
    finally:
        await resources.aclose()
    return found
