"""The retry schedule: Svix's steps stretched to about three days, jittered by at most 20%,
and a receiver's Retry-After honoured (read strictly, capped at a day)."""

from __future__ import annotations

import itertools
import random
from datetime import UTC, datetime, timedelta

import pytest

from billing_gateway.notifications.schedule import (
    ATTEMPT_TIMEOUT_SECONDS,
    DISABLE_AFTER,
    RETRY_SCHEDULE,
    delay_with_retry_after,
    next_attempt_delay,
    retry_after_seconds,
)

NOW = datetime(2015, 10, 21, 7, 27, 0, tzinfo=UTC)
DAY = 86_400
SVIX = [0, 5, 300, 1800, 7200, 18000, 36000, 36000]


def seeded(seed: int) -> random.Random:
    """A generator with a fixed seed, so a failure can be replayed."""
    return random.Random(seed)  # noqa: S311  # jitter in tests, nothing secret


def test_schedule_lasts_about_three_days() -> None:
    total = sum(RETRY_SCHEDULE)
    assert 2.5 * DAY <= total <= 3.5 * DAY
    # Even with every delay at its jitter's extreme, the retries end within four days,
    # before an endpoint failing throughout would be disabled.
    assert 1.2 * total < 4 * DAY < DISABLE_AFTER.total_seconds()


def test_schedule_starts_as_svix_and_only_grows() -> None:
    assert list(RETRY_SCHEDULE[:len(SVIX)]) == SVIX
    assert all(a <= b for a, b in itertools.pairwise(RETRY_SCHEDULE))
    assert all(10 * 3600 <= step <= 14 * 3600 for step in RETRY_SCHEDULE[len(SVIX):])


def test_constants() -> None:
    assert ATTEMPT_TIMEOUT_SECONDS == 15
    assert timedelta(days=5) == DISABLE_AFTER


def test_first_attempt_is_immediate() -> None:
    assert next_attempt_delay(0) == 0


def test_schedule_is_exhausted_after_its_last_step() -> None:
    assert next_attempt_delay(len(RETRY_SCHEDULE) - 1) is not None
    assert next_attempt_delay(len(RETRY_SCHEDULE)) is None
    assert next_attempt_delay(len(RETRY_SCHEDULE) + 5) is None


def test_negative_attempts_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        next_attempt_delay(-1)


@pytest.mark.parametrize("attempts_made", range(1, len(RETRY_SCHEDULE)))
def test_jitter_stays_within_20_percent_and_spreads(attempts_made: int) -> None:
    rng = seeded(1234)
    nominal = RETRY_SCHEDULE[attempts_made]
    delays = [next_attempt_delay(attempts_made, rng=rng) for _ in range(2000)]
    assert all(d is not None and 0.8 * nominal <= d <= 1.2 * nominal for d in delays)
    spread = [d for d in delays if d is not None]
    # Jitter happens, and in both directions (a fixed delay would pass the bounds alone).
    assert min(spread) < 0.85 * nominal
    assert max(spread) > 1.15 * nominal


def test_jitter_is_reproducible_with_a_seed() -> None:
    first = [next_attempt_delay(3, rng=seeded(7)) for _ in range(3)]
    again = [next_attempt_delay(3, rng=seeded(7)) for _ in range(3)]
    assert first == again


@pytest.mark.parametrize(("value", "seconds"), [
    ("120", 120.0),
    ("0", 0.0),
    (" 30 ", 30.0),
    ("007", 7.0),
    ("86400", 86400.0),
    ("86401", 86400.0),                          # capped at a day
    ("9" * 5000, 86400.0),                       # beyond int()'s digit limit: still the cap
    ("Wed, 21 Oct 2015 07:28:00 GMT", 60.0),     # RFC 9110's example date
    ("Wed, 21 Oct 2015 07:28:00 -0000", 60.0),
    ("Wednesday, 21-Oct-15 07:28:00 GMT", 60.0),  # obsolete RFC 850 form, still to be read
    ("Wed Oct 21 07:28:00 2015", 60.0),          # obsolete asctime form (GMT)
    ("Wed, 32 Oct 2015 07:28:00 GMT", None),     # no such day
    ("Sat, 24 Oct 2015 07:27:00 GMT", 86400.0),  # three days ahead: capped
    ("Wed, 21 Oct 2015 07:26:00 GMT", None),     # in the past
    ("-5", None),
    ("+5", None),
    ("1.5", None),
    ("1_0", None),
    ("١٢٠", None),                               # Arabic-Indic digits
    ("soon", None),
    ("", None),
    ("   ", None),
    (None, None),
])
def test_retry_after_forms(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds


def test_retry_after_needs_an_aware_now() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        retry_after_seconds("5", now=datetime(2015, 10, 21, 7, 27))


def test_retry_after_later_than_the_schedule_wins() -> None:
    assert delay_with_retry_after(1, "120", NOW, seeded(1)) == 120.0


def test_schedule_later_than_retry_after_wins() -> None:
    delay = delay_with_retry_after(5, "60", NOW, seeded(1))
    assert delay is not None
    assert 0.8 * 5 * 3600 <= delay <= 1.2 * 5 * 3600


def test_jitter_never_goes_below_retry_after() -> None:
    rng = seeded(99)
    # 300 s jitters down to 240 s; the receiver asked for 290 s.
    delays = [delay_with_retry_after(2, "290", NOW, rng) for _ in range(500)]
    assert all(d is not None and d >= 290 for d in delays)
    assert 290.0 in delays


def test_unreadable_retry_after_leaves_the_schedule() -> None:
    assert delay_with_retry_after(1, "soon", NOW, seeded(3)) \
        == next_attempt_delay(1, rng=seeded(3))


def test_retry_after_does_not_extend_an_exhausted_schedule() -> None:
    assert delay_with_retry_after(len(RETRY_SCHEDULE), "60", NOW, seeded(1)) is None
