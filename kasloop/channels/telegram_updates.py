"""The Telegram update pump: messages and button presses to the tools' bot, handed on to the threads' inboxes.

:func:`pump_updates` long-polls ``getUpdates`` and hands each message / button
press to an async ``deliver(thread_id, source, text, data)``, e.g.
:func:`kasloop.channels.inbox_feed.inbox_deliver`, which puts it into the thread's
:class:`~kasloop.checkpoints.inbox.Inbox`; :func:`poll_once` is one
``getUpdates`` without waiting, for the daemon's cycle
(``kasloop.runtime.polling.poll_inbox``). Chats are mapped to threads by
``telegram.chat_threads``; chats not mapped (and not covered by
``default_thread``) are dropped. Run either the pump or the
``telegram_updates`` tool for one bot, not both: they share one offset.

The bot, its settings, the client and the stored offset are the telegram
tool family's (``kasloop.tools.telegram``); the approvals bot is another bot
(``kasloop.channels.telegram``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from kasloop.support.backoff import backoff_delay
from kasloop.channels.base import APPROVAL_PREFIX
from kasloop.channels.inbox_feed import Deliver
from kasloop.tools.telegram import TelegramState, _updates_params
from kasloop.tools.telegram_api import (
    TelegramClient,
    TelegramError,
    TelegramSettings,
    _bot_id,
    _token,
    describe_update,
)

__all__ = ["OnApproval", "handle_updates", "poll_once", "pump_updates"]

_log = logging.getLogger("kasloop.tools.telegram")  # the logger kasloop.safety.secrets.LOGGERS redacts; the pump logged here before it moved


def _receiver(settings: TelegramSettings | Mapping[str, Any], state: TelegramState | None) -> tuple[TelegramSettings, str, TelegramState, str]:
    """Settings, token, state and bot id of a receiving loop (``pump_updates``, ``poll_once``)."""
    conf = settings if isinstance(settings, TelegramSettings) else TelegramSettings.model_validate(dict(settings))
    token = _token(conf)
    return conf, token, state or TelegramState(), _bot_id(token)


async def pump_updates(
    settings: TelegramSettings | Mapping[str, Any],
    deliver: Deliver,
    *,
    state: TelegramState | None = None,
    stop: asyncio.Event | None = None,
    max_backoff: float = 60.0,
) -> int:
    """Long-poll ``getUpdates`` and hand each message / button press to ``deliver``; returns the count delivered.

    Runs until ``stop`` is set (checked between polls) or the task is cancelled.
    The offset is stored in ``state`` after each delivered update (give
    ``TelegramState(database)`` to survive restarts), so an update is handed on
    once; if ``deliver`` raises, the error propagates and that update is
    offered again on the next run. Updates from chats without a thread
    (``chat_threads`` / ``default_thread``) are skipped. Transient failures are
    retried with backoff (Telegram's ``retry_after`` for 429); a permanent one
    (token rejected) raises :class:`TelegramError`.
    """
    conf, token, state, bot = _receiver(settings, state)
    delivered = 0
    failures = 0
    async with TelegramClient(conf, token) as client:
        while stop is None or not stop.is_set():
            _, params = await _updates_params(state, bot, timeout=conf.poll_timeout)
            try:
                updates = await client.call("getUpdates", params, read_timeout=conf.timeout + conf.poll_timeout)
            except TelegramError as exc:
                if exc.kind != "transient":
                    raise
                failures += 1
                # 2, 4, ... 64 s (the exponent stops at 6), at most max_backoff; Telegram's own wait first
                delay = exc.retry_after if exc.retry_after is not None else backoff_delay(min(failures, 6), base=1.0, cap=max_backoff)
                _log.warning("telegram getUpdates failed, retrying in %.0f s: %s", delay, exc.message)
                await _pause(delay, stop)
                continue
            failures = 0
            delivered += await handle_updates(client, conf, updates, deliver, state, bot)
    return delivered


OnApproval = Callable[[dict[str, Any]], Awaitable[str]]
"""Handles one approval button press (the ``callback_query``); returns the text to answer it with."""


async def handle_updates(
    client: TelegramClient, conf: TelegramSettings, updates: Any, deliver: Deliver, state: TelegramState, bot: str,
    on_approval: OnApproval | None = None,
) -> int:
    """Hand one batch of updates on (approval buttons to ``on_approval``, the rest to ``deliver``); returns how many were delivered.

    The offset is stored after each update, so each is handled once.
    """
    delivered = 0
    for update in updates if isinstance(updates, list) else []:
        update_id = update.get("update_id")
        query = update.get("callback_query")
        data = query.get("data") if isinstance(query, dict) else None
        if on_approval is not None and isinstance(data, str) and data.startswith(APPROVAL_PREFIX):
            answer = await on_approval(query)
            with contextlib.suppress(TelegramError):  # a press not acknowledged only spins a while in the app
                await client.call("answerCallbackQuery", {"callback_query_id": str(query.get("id", "")), "text": answer[:200]})
        else:
            described = describe_update(update)
            thread = conf.thread_for(described[0]) if described is not None else None
            if described is not None and thread is not None and conf.chat_allowed(described[0]):
                await deliver(thread, "telegram", described[1], described[2])
                delivered += 1
        if isinstance(update_id, int):
            await state.put("offset", bot, update_id + 1)
    return delivered


async def poll_once(
    settings: TelegramSettings | Mapping[str, Any], deliver: Deliver, *, state: TelegramState | None = None, on_approval: OnApproval | None = None,
) -> int:
    """One ``getUpdates`` without waiting (for the daemon's cycle): approval buttons and messages alike."""
    conf, token, state, bot = _receiver(settings, state)
    async with TelegramClient(conf, token) as client:
        _, params = await _updates_params(state, bot, timeout=0)
        updates = await client.call("getUpdates", params)
        return await handle_updates(client, conf, updates, deliver, state, bot, on_approval)


async def _pause(seconds: float, stop: asyncio.Event | None) -> None:
    if stop is None:
        await asyncio.sleep(seconds)
        return
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        pass
