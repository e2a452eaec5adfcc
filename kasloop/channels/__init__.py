"""Approval channels and receivers: Telegram buttons, email replies, signed webhooks, and the inbox feeds.

``base`` holds the types every channel shares; ``fanout`` sends requests and
notices to the channels a config turns on; ``webhook_receiver``,
``telegram_updates`` and ``email_inbox`` receive, into ``inbox_feed``. What the
daemon does with them each cycle is ``kasloop.runtime.polling``. This package
file imports nothing, so importing one module does not load the others.
"""
