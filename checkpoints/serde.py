"""Checkpoint serialisation that encodes each message once, not once per checkpoint.

LangGraph writes the whole state at every step: with a window of 40 messages
and three steps per cycle, the same message objects are msgpack-encoded
about 120 times per cycle, which was the largest single cost of kasloop's
loop after the database hops. Messages are not changed after they enter the
state (kasloop's nodes and LangGraph's ``add_messages`` make new objects), so
this serializer keeps the encoded form of recently seen message objects
(holding a reference, so an object's ``id`` cannot be reused while cached)
and reuses it. A message must therefore not be changed in place once it is
in the state; replace it with a new object (as ``add_messages`` does). The bytes are exactly what ``JsonPlusSerializer`` writes; reading
is unchanged.
"""

from __future__ import annotations

from typing import Any

import ormsgpack
from langchain_core.messages import BaseMessage
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer, _msgpack_default, _option

__all__ = ["MessageCachingSerializer"]

CACHE_SIZE = 512


class MessageCachingSerializer(JsonPlusSerializer):
    """``JsonPlusSerializer`` with a small cache of encoded messages (see the module docstring)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._encoded: dict[int, tuple[BaseMessage, Any]] = {}

    def _default(self, obj: Any) -> Any:
        if not isinstance(obj, BaseMessage):
            return _msgpack_default(obj)
        hit = self._encoded.get(id(obj))
        if hit is not None and hit[0] is obj:
            return hit[1]
        encoded = _msgpack_default(obj)
        if len(self._encoded) >= CACHE_SIZE:
            self._encoded.clear()  # the window is far smaller than this; a rare full reset is cheapest
        self._encoded[id(obj)] = (obj, encoded)
        return encoded

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        if obj is None or isinstance(obj, bytes | bytearray):
            return super().dumps_typed(obj)
        try:
            return "msgpack", ormsgpack.packb(obj, default=self._default, option=_option)
        except ormsgpack.MsgpackEncodeError:
            return super().dumps_typed(obj)
