"""How long to wait before trying again: one exponential-backoff rule for every loop that retries.

Three places wait after a failure, and each used to write its own formula: ``self_diagnose``
(before a transient tool or model failure is retried), the daemon (after a cycle with errors)
and the Telegram update pump (after a failed ``getUpdates``). They all wait
``base * factor ** attempt``, capped, optionally spread at random so that many agents or
daemons that failed together do not come back together; :func:`backoff_delay` is that rule.

Why not ``tenacity`` (already installed as a dependency of ``langchain-core``): none of the three
retries one call in a loop, which is what tenacity wraps. ``self_diagnose`` only computes the wait;
the retry itself is the graph's ``transient: retry`` edge, so that it is checkpointed. The daemon
and the pump loop forever, a success resets the count, the pump obeys Telegram's ``retry_after``
and both wake early when stopped. Tenacity's wait strategies need a ``RetryCallState`` and draw
jitter from the global ``random`` module, so tests could not make them repeatable; a pure function
of the attempt number can be, and it is all that the three need.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

__all__ = ["Jitter", "backoff_delay"]

Jitter = float | tuple[float, float]
"""Random spread of a delay: a fraction ``j`` (the delay times a number drawn from ``[1 - j, 1 + j)``)
or the range ``(low, high)`` of that multiplier itself (``(0.5, 1.0)``: between half and all of it)."""


def backoff_delay(
    attempt: int,
    *,
    base: float,
    factor: float = 2.0,
    cap: float | None = None,
    jitter: Jitter = 0.0,
    rng: random.Random | Callable[[], float] | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (0 for the first): ``min(base * factor ** attempt, cap)``, spread by ``jitter``.

    Args:
        attempt: failures so far, counted from 0; negative counts as 0.
        base: the wait of attempt 0, in seconds.
        factor: how much each failure multiplies the wait by (2: it doubles).
        cap: the most the wait grows to, before the jitter (None: no cap). The cap also keeps a
            long run of failures from overflowing a float: past it the wait simply stays at ``cap``.
        jitter: how the wait is spread at random (see :data:`Jitter`); 0: not at all, and then
            ``rng`` is not called.
        rng: where the random number in ``[0, 1)`` comes from: a ``random.Random`` (seed it in
            tests) or a function like ``random.random``; default: the ``random`` module.

    Never negative: a multiplier below 0 (a jitter fraction over 1) gives 0.
    """
    try:
        growth = factor ** max(attempt, 0)
    except OverflowError:  # e.g. 2.0 ** 1100: the wait is past any cap
        growth = math.inf
    delay = base * growth if base else 0.0
    if cap is not None:
        delay = min(delay, cap)
    low, high = (1.0 - jitter, 1.0 + jitter) if isinstance(jitter, int | float) else jitter
    if (low, high) != (1.0, 1.0):
        draw = rng.random if isinstance(rng, random.Random) else (rng or random.random)
        delay *= low + (high - low) * draw()
    return max(0.0, delay)
