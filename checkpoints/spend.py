"""Daily spend per thread: what the day budgets add up (``max_tokens_per_day``, ``max_usd_per_day``).

One row per (UTC day, thread) in ``kasloop_spend``, increased after every
model call; the day's total over all threads of the database is what a day
limit is checked against, so several threads (or processes) share one limit.
"""

from __future__ import annotations

from kasloop.checkpoints.database import Database

__all__ = ["MemorySpend", "SpendLog"]


class SpendLog:
    def __init__(self, db: Database) -> None:
        self.db = db

    async def add(self, day: str, thread_id: str, *, input_tokens: int, output_tokens: int, usd: float) -> None:
        """Deferred to the node's own commit (no hop of its own); a read of the day total commits it first."""
        self.db.defer(
            "INSERT INTO kasloop_spend (day, thread_id, model_calls, input_tokens, output_tokens, usd) VALUES (?, ?, 1, ?, ?, ?)"
            " ON CONFLICT (day, thread_id) DO UPDATE SET model_calls = kasloop_spend.model_calls + 1,"  # qualified: Postgres
            " input_tokens = kasloop_spend.input_tokens + excluded.input_tokens,"
            " output_tokens = kasloop_spend.output_tokens + excluded.output_tokens, usd = kasloop_spend.usd + excluded.usd",
            (day, thread_id, input_tokens, output_tokens, usd),
        )

    async def day_total(self, day: str) -> tuple[int, float]:
        """Tokens and USD spent on ``day`` by every thread."""
        row = await self.db.fetchone(
            "SELECT coalesce(sum(input_tokens + output_tokens), 0), coalesce(sum(usd), 0) FROM kasloop_spend WHERE day = ?", (day,)
        )
        return (int(row[0]), float(row[1])) if row is not None else (0, 0.0)


class MemorySpend:
    """The same, in process (graphs run without a kasloop database)."""

    def __init__(self) -> None:
        self.days: dict[str, tuple[int, float]] = {}

    async def add(self, day: str, thread_id: str, *, input_tokens: int, output_tokens: int, usd: float) -> None:
        tokens, spent = self.days.get(day, (0, 0.0))
        self.days[day] = (tokens + input_tokens + output_tokens, spent + usd)

    async def day_total(self, day: str) -> tuple[int, float]:
        return self.days.get(day, (0, 0.0))
