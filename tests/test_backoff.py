"""kasloop.support.backoff: the one exponential-backoff rule of self_diagnose, the daemon and the Telegram pump (issue 16, item 8)."""

from __future__ import annotations

import random

import pytest

from kasloop.support.backoff import backoff_delay


def test_without_jitter_the_delay_doubles_from_base() -> None:
    assert [backoff_delay(n, base=0.5) for n in range(5)] == [0.5, 1.0, 2.0, 4.0, 8.0]
    assert [backoff_delay(n, base=1.0, factor=3.0) for n in range(4)] == [1.0, 3.0, 9.0, 27.0]
    assert backoff_delay(-2, base=0.5) == 0.5, "a negative attempt counts as the first"


def test_the_cap_holds_and_a_long_run_of_failures_does_not_overflow() -> None:
    assert [backoff_delay(n, base=1.0, cap=60.0) for n in range(1, 8)] == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0]
    assert backoff_delay(5000, base=30.0, cap=600.0) == 600.0
    assert backoff_delay(5000, base=0.0, cap=600.0) == 0.0


def test_no_jitter_draws_no_random_number() -> None:
    def never() -> float:
        raise AssertionError("rng called without jitter")

    assert backoff_delay(3, base=1.0, rng=never) == 8.0
    assert backoff_delay(3, base=1.0, jitter=(1.0, 1.0), rng=never) == 8.0


@pytest.mark.parametrize(("jitter", "low", "high"), [(0.1, 0.9, 1.1), (0.5, 0.5, 1.5), ((0.5, 1.0), 0.5, 1.0)])
def test_jitter_stays_in_its_range_and_covers_it(jitter: float | tuple[float, float], low: float, high: float) -> None:
    rng = random.Random(16_08)
    for attempt in range(6):
        plain = backoff_delay(attempt, base=0.25, cap=5.0)
        spread = [backoff_delay(attempt, base=0.25, cap=5.0, jitter=jitter, rng=rng) for _ in range(400)]
        assert all(plain * low <= d <= plain * high for d in spread), (attempt, min(spread), max(spread))
        assert min(spread) < plain * (low + (high - low) * 0.1) and max(spread) > plain * (high - (high - low) * 0.1), "the whole range is used"


def test_the_jitter_applies_after_the_cap() -> None:
    spread = [backoff_delay(20, base=1.0, cap=10.0, jitter=0.2, rng=random.Random(seed)) for seed in range(200)]
    assert all(8.0 <= d <= 12.0 for d in spread) and max(spread) > 10.0


def test_a_seeded_random_makes_the_delays_repeatable() -> None:
    first = [backoff_delay(n, base=0.5, jitter=(0.5, 1.0), rng=random.Random(7)) for n in range(5)]
    again = [backoff_delay(n, base=0.5, jitter=(0.5, 1.0), rng=random.Random(7)) for n in range(5)]
    assert first == again
    seeded = random.Random(7)
    assert backoff_delay(2, base=0.5, jitter=(0.5, 1.0), rng=random.Random(7)) == 2.0 * (0.5 + seeded.random() / 2)
    assert backoff_delay(2, base=0.5, jitter=0.1, rng=lambda: 0.0) == pytest.approx(1.8)
    assert backoff_delay(2, base=0.5, jitter=0.1, rng=lambda: 0.5) == pytest.approx(2.0)


def test_never_negative() -> None:
    assert backoff_delay(0, base=1.0, jitter=1.5, rng=lambda: 0.0) == 0.0


def test_the_three_call_sites_keep_their_delays() -> None:
    # self_diagnose: retry_backoff * 2**attempt, between half and all of it
    from kasloop.nodes.self_diagnose import _backoff

    random.seed(3)
    delays = [_backoff(0.2, n) for n in range(4)]
    assert all(0.2 * 2**n * 0.5 <= d <= 0.2 * 2**n for n, d in enumerate(delays))
    # the Telegram pump: 2, 4, ... s after 1, 2, ... failures, the exponent stopping at 6, at most max_backoff
    pump = [backoff_delay(min(failures, 6), base=1.0, cap=60.0) for failures in range(1, 9)]
    assert pump == [2.0, 4.0, 8.0, 16.0, 32.0, 60.0, 60.0, 60.0]
    assert backoff_delay(min(50, 6), base=1.0, cap=600.0) == 64.0
