"""Standing rules people add while the agent runs (``kasloop approve --always``, ``kasloop rules add``).

They join the rules of every thread in the database at its next drive. Only
people write them (the CLI and the Python API); a model or a tool cannot. As
with configured rules the strictest matching rule wins (deny > ask > allow),
so an "always allow" can never override a configured deny, and at level 3 a
side effect after untrusted content still asks.
"""

from __future__ import annotations

import json
import time
from typing import Any

from kasloop.checkpoints.database import Connection, Database
from kasloop.config.schema import PolicyRule

__all__ = ["RuleStore"]


class RuleStore:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, rule: PolicyRule, *, by: str) -> int:
        def insert(conn: Connection) -> int:
            cur = conn.execute(
                "INSERT INTO kasloop_rules (tool, action, args, created_by, created_at) VALUES (?, ?, ?, ?, ?) RETURNING id",
                (rule.tool, rule.action, json.dumps(rule.args, sort_keys=True), by, time.time()),
            )
            return int(cur.fetchone()[0])  # RETURNING: both SQLite and Postgres (no lastrowid there)

        return await self.db.write(insert)

    async def all(self) -> list[dict[str, Any]]:
        rows = await self.db.fetchall("SELECT * FROM kasloop_rules ORDER BY id")
        return [
            {"id": r["id"], "tool": r["tool"], "action": r["action"], "args": json.loads(r["args"]), "created_by": r["created_by"], "created_at": r["created_at"]}
            for r in rows
        ]

    async def policy_rules(self) -> list[PolicyRule]:
        return [PolicyRule(tool=r["tool"], action=r["action"], args=r["args"]) for r in await self.all()]

    async def remove(self, rule_id: int) -> bool:
        return 1 == await self.db.execute("DELETE FROM kasloop_rules WHERE id = ?", (rule_id,))
