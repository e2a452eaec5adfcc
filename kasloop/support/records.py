"""``FrozenRecord``: a frozen pydantic model that can also be read by key.

kasloop's results were dicts before they were typed (``RunResult.approvals``, ``RunResult.usage``); reading
them by key (``result.approvals[0]["approval_id"]``) keeps working for code written then, while attributes
are the typed way. A key that is not a field is a ``KeyError``, as in the dict; ``{**record}`` works too.
For JSON, ``record.model_dump(mode="json")`` (``json.dumps`` does not take a model).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["FrozenRecord"]


class FrozenRecord(BaseModel):
    model_config = ConfigDict(frozen=True)

    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in type(self).model_fields else default

    def keys(self) -> list[str]:
        """The field names: with ``__getitem__``, what ``{**record}`` and ``dict(record)`` read."""
        return list(type(self).model_fields)
