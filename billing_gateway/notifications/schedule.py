"""When to try a failed webhook again: the retry schedule, its jitter and Retry-After."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

# Seconds to wait before each attempt, counted from the previous one. The first eight are
# Svix's schedule (https://docs.svix.com/retries): immediately, 5 s, 5 min, 30 min, 2 h,
# 5 h, 10 h, 10 h, which ends after 27.6 h. Three 14 h steps follow (the Standard Webhooks
# spec's example schedule has a 14 h step too) so that a receiver down over a long weekend
# still gets its events: 11 attempts over 250,505 s, about 69.6 h or 2.9 days in all.
RETRY_SCHEDULE: tuple[int, ...] = (
    0, 5, 5 * 60, 30 * 60, 2 * 3600, 5 * 3600, 10 * 3600, 10 * 3600,
    14 * 3600, 14 * 3600, 14 * 3600,
)
# Each delay moves by up to 20% either way, so the retries of many webhooks that failed
# together (a receiver's outage) do not all arrive together when it comes back.
JITTER = 0.2
# A receiver asking for more than a day is treated as asking for a day: the schedule, not
# the receiver, decides when an event is given up.
MAX_RETRY_AFTER_SECONDS = 24 * 3600
# The spec recommends 15 to 30 s for a receiver to answer; Svix gives 15 s, which keeps
# workers free.
ATTEMPT_TIMEOUT_SECONDS = 15
# An endpoint that has failed every attempt for this long is disabled (and its owner told),
# as Svix does: longer than one event's schedule, so one bad event alone never disables it.
DISABLE_AFTER = timedelta(days=5)

# Jitter needs no secrecy, only spread: a plain pseudo-random generator is right here.
_jitter_rng = random.Random()  # noqa: S311  # not used for anything security-related


def next_attempt_delay(attempts_made: int, *, rng: random.Random | None = None) -> float | None:
    """Seconds until the next attempt after `attempts_made` failed ones; None when done."""
    if attempts_made < 0:
        raise ValueError("attempts_made must not be negative")
    if attempts_made >= len(RETRY_SCHEDULE):
        return None
    delay = RETRY_SCHEDULE[attempts_made]
    return delay * (rng or _jitter_rng).uniform(1 - JITTER, 1 + JITTER)


def retry_after_seconds(value: str | None, *, now: datetime) -> float | None:
    """Read a Retry-After header (delta-seconds or an HTTP-date) as seconds from `now`.

    None when absent, unreadable, negative or in the past; at most MAX_RETRY_AFTER_SECONDS.
    """
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    # RFC 9110 section 10.2.3: Retry-After = HTTP-date / delay-seconds (1*DIGIT). int()
    # alone would also take "-5", "+5", "1_0" and other scripts' digits.
    if text.isascii() and text.isdigit():
        significant = text.lstrip("0") or "0"
        # More digits than the cap has are above it (and int() refuses 4,300 digits).
        if len(significant) > len(str(MAX_RETRY_AFTER_SECONDS)):
            return float(MAX_RETRY_AFTER_SECONDS)
        return float(min(int(significant), MAX_RETRY_AFTER_SECONDS))
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):  # a year past datetime's range
        return None
    if when.tzinfo is None:
        # parsedate_to_datetime leaves "-0000" dates naive; HTTP-dates are always GMT.
        when = when.replace(tzinfo=UTC)
    seconds = (when - now).total_seconds()
    if seconds < 0:
        return None
    return min(seconds, float(MAX_RETRY_AFTER_SECONDS))


def delay_with_retry_after(attempts_made: int, retry_after_value: str | None, now: datetime,
                           rng: random.Random | None = None) -> float | None:
    """Seconds until the next attempt: the schedule's delay or the receiver's Retry-After,
    whichever is later; None when the schedule is exhausted (Retry-After cannot extend it)."""
    scheduled = next_attempt_delay(attempts_made, rng=rng)
    if scheduled is None:
        return None
    asked = retry_after_seconds(retry_after_value, now=now)
    return scheduled if asked is None else max(scheduled, asked)
