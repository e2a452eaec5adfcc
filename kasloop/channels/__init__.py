"""Approval channels: Telegram buttons, email replies and signed webhook callbacks (see ``base``)."""

from kasloop.channels.base import Incoming, announce, channels_for

__all__ = ["Incoming", "announce", "channels_for"]
