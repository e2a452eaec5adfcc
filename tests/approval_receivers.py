"""The webhook approvals receiver served on a real socket, and callbacks signed the way an approver's side signs them."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn

from kasloop import Agent
from kasloop.channels.webhook_receiver import approvals_app
from kasloop.checkpoints import open_database
from kasloop.tools.webhook import DELIVERY_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, sign

__all__ = ["served_receiver", "signed"]


@asynccontextmanager
async def served_receiver(agent: Agent) -> AsyncIterator[str]:
    """``approvals_app`` served by plain uvicorn on a socket the test binds (nothing declares its address);
    yields its base URL."""
    async with open_database(agent.db_path) as db:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        server = uvicorn.Server(uvicorn.Config(approvals_app(agent.sessions, db), log_level="warning", lifespan="off"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        try:
            yield f"http://127.0.0.1:{sock.getsockname()[1]}"
        finally:
            server.should_exit = True
            await asyncio.wait_for(task, 10)
            sock.close()


def signed(payload: dict[str, Any], delivery: str, *, secret: str, timestamp: int | None = None) -> tuple[bytes, dict[str, str]]:
    """The body and HMAC headers of a callback signed with ``secret``."""
    body = json.dumps(payload).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    headers = {"Content-Type": "application/json", TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sign(secret, ts, delivery, body), DELIVERY_HEADER: delivery}
    return body, headers
