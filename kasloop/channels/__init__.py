"""Approval channels: Telegram buttons, email replies and signed webhook callbacks (see ``base``).

The names below are imported on first use, so the network gates of the tools can import
``kasloop.channels.receivers`` (standard library only) without loading the channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kasloop.channels.base import Incoming
    from kasloop.channels.fanout import announce, channels_for

__all__ = ["Incoming", "announce", "channels_for"]

_HOMES = {"Incoming": "base", "announce": "fanout", "channels_for": "fanout"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        from importlib import import_module

        return getattr(import_module(f"kasloop.channels.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
