"""Approval channels: Telegram buttons, email replies and signed webhook callbacks (see ``base``).

The names below are imported on first use, so the network gates of the tools can import
``kasloop.channels.receivers`` (standard library only) without loading the channels.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kasloop.channels.base import Incoming, announce, channels_for

__all__ = ["Incoming", "announce", "channels_for"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from kasloop.channels import base

        return getattr(base, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
