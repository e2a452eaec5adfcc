"""Real MCP servers for the MCP tests: the ``mcp`` package's own ``FastMCP``, on stdio or HTTP.

A helper, not a test module. Run as a script it serves one MCP server::

    python mcp_servers.py stdio [--crash-on TOOL] [--pid-file PATH] [--log FILE]
    python mcp_servers.py http --port N [--crash-on TOOL] [--pid-file PATH] [--log FILE]

``stdio`` speaks MCP over stdin/stdout (what a stdio client starts);
``http`` serves streamable HTTP on ``127.0.0.1:N`` at ``/mcp`` (127.0.0.1 only).

* ``--pid-file PATH``: the server writes its own pid there at start, so a test
  can check later that the process is gone.
* ``--crash-on TOOL``: calling that tool kills the server mid-call
  (``os._exit(1)``: no reply, nothing flushed, no clean-up).
* ``--log FILE``: one JSON line per tool call, ``{"tool": NAME, "arguments": {...}}``,
  appended (and closed) as the call *starts*, before any crash, so a test can
  count the calls that reached the server, crashed ones included.

Tools: ``add`` (annotated read-only), ``echo``, ``append_note`` (a side effect
in a file; annotated not destructive, not idempotent), ``slow`` (for timeouts;
async, so the server keeps serving while it sleeps), ``env`` (which environment
the server got) and ``crash`` (always dies mid-call).

From pytest code in the same process:

* ``stdio_command(*flags)`` gives ``(command, args)`` for a stdio connection;
* ``http_server(*flags)`` runs the HTTP server as a subprocess on a free port
  for the ``with`` block and yields an ``HttpServer`` (``.url``, ``.port``,
  ``.process``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mcp.server.fastmcp import FastMCP

SCRIPT = Path(__file__)
HOST = "127.0.0.1"
HTTP_PATH = "/mcp"
START_TIMEOUT = 20.0  # seconds for the HTTP server to accept connections
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL at the end of http_server()


# ---------------------------------------------------------------------------
# The server (runs in the subprocess)
# ---------------------------------------------------------------------------


def build_server(*, crash_on: str | None = None, log: Path | None = None) -> FastMCP:
    """The test MCP server: its tools, with ``crash_on`` and ``log`` applied to every call."""
    from mcp.server.fastmcp import FastMCP
    from mcp.types import ToolAnnotations

    server = FastMCP("kasloop-test", host=HOST, streamable_http_path=HTTP_PATH, log_level="WARNING")

    def called(tool: str, **arguments: Any) -> None:
        """Every tool starts here: log the call, then die if this tool is the one to crash on."""
        if log is not None:
            with log.open("a", encoding="utf-8") as f:
                f.write(json.dumps({"tool": tool, "arguments": arguments}) + "\n")
        if tool == crash_on:
            os._exit(1)

    @server.tool(annotations=ToolAnnotations(readOnlyHint=True))
    def add(a: int, b: int) -> int:
        """Add two integers and return their sum."""
        called("add", a=a, b=b)
        return a + b

    @server.tool()
    def echo(text: str) -> str:
        """Return the given text unchanged."""
        called("echo", text=text)
        return text

    @server.tool(annotations=ToolAnnotations(destructiveHint=False, idempotentHint=False))
    def append_note(path: str, text: str) -> str:
        """Append a line of text to the file at the given absolute path (created if missing)."""
        called("append_note", path=path, text=text)
        data = (text + "\n").encode("utf-8")
        with open(path, "ab") as f:
            f.write(data)
        return f"appended {len(data)} bytes"

    @server.tool()
    async def slow(seconds: float) -> str:
        """Wait the given number of seconds, then return "slept"."""
        called("slow", seconds=seconds)
        await asyncio.sleep(seconds)
        return "slept"

    @server.tool()
    def env(name: str) -> str:
        """Return the value of the named environment variable in the server's process, or "" if unset."""
        called("env", name=name)
        return os.environ.get(name, "")

    @server.tool()
    def crash() -> str:
        """Crash the server process immediately (never returns)."""
        called("crash")
        os._exit(1)

    return server


def _quiet_session_close_noise() -> None:
    """Drop one known-harmless server log: ``mcp`` logs a ``ClosedResourceError`` traceback at ERROR
    from its GET (server-to-client) SSE stream whenever a client ends its HTTP session (DELETE)."""

    def keep(record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not (
            record.getMessage() == "Error in standalone SSE writer" and type(exc).__name__ == "ClosedResourceError"
        )

    logging.getLogger("mcp.server.streamable_http").addFilter(keep)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="An MCP server for kasloop's tests.")
    parser.add_argument("transport", choices=["stdio", "http"])
    parser.add_argument("--port", type=int, help="HTTP port on 127.0.0.1 (http only, required there)")
    parser.add_argument("--crash-on", metavar="TOOL", help="die abruptly (os._exit) when this tool is called")
    parser.add_argument("--pid-file", metavar="PATH", type=Path, help="write this process's pid here at start")
    parser.add_argument("--log", metavar="FILE", type=Path, help="append one JSON line per tool call")
    args = parser.parse_args(argv)
    if args.transport == "http" and args.port is None:
        parser.error("http needs --port")

    if args.pid_file is not None:
        args.pid_file.write_text(f"{os.getpid()}\n", encoding="utf-8")
    server = build_server(crash_on=args.crash_on, log=args.log)
    if args.transport == "stdio":
        server.run("stdio")
    else:
        server.settings.port = args.port
        _quiet_session_close_noise()
        server.run("streamable-http")


# ---------------------------------------------------------------------------
# Helpers for the tests (run in the test process)
# ---------------------------------------------------------------------------


def stdio_command(*flags: str) -> tuple[str, list[str]]:
    """``(command, args)`` that start the stdio server, e.g. for ``{"transport": "stdio", "command": ..., "args": ...}``."""
    return sys.executable, [str(SCRIPT), "stdio", *flags]


@dataclass(frozen=True)
class HttpServer:
    """A running HTTP server started by ``http_server()``."""

    url: str  # http://127.0.0.1:PORT/mcp
    port: int
    process: subprocess.Popen[bytes]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=STOP_TIMEOUT)
            return
        except subprocess.TimeoutExpired:
            process.kill()
    process.wait()


@contextmanager
def http_server(*flags: str) -> Iterator[HttpServer]:
    """Run the streamable HTTP server in a subprocess on a free port for the ``with`` block.

    Returns once the port accepts connections (polled, deadline ``START_TIMEOUT``);
    raises ``RuntimeError`` if the server exits or never listens. At exit the
    process is terminated (killed if it lingers) and waited for.
    """
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, str(SCRIPT), "http", "--port", str(port), *flags],
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _accepts(port):
            if time.monotonic() > deadline:
                raise RuntimeError(f"MCP test server did not listen on {HOST}:{port} within {START_TIMEOUT} s")
            try:
                code = process.wait(timeout=0.05)  # the poll interval, and notices an early exit
            except subprocess.TimeoutExpired:
                continue
            raise RuntimeError(f"MCP test server exited with code {code} before listening on {HOST}:{port}")
        yield HttpServer(url=f"http://{HOST}:{port}{HTTP_PATH}", port=port, process=process)
    finally:
        _stop(process)


if __name__ == "__main__":
    main()
