"""Approval channels and receivers: Telegram buttons, email replies, signed webhooks, and the inbox feeds.

``base`` holds the types every channel shares; ``fanout`` sends requests and
notices to the channels a config turns on; ``runner`` is what the daemon does
with them each cycle; ``webhook_receiver``, ``telegram_updates`` and
``email_inbox`` receive. This package file imports nothing, so the tools'
network gates can import ``kasloop.channels.receivers`` (standard library only)
without loading the channels.
"""
