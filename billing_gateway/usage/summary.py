"""An org's usage per UTC day or per campaign over a range of days, from usage_daily."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

import psycopg

from billing_gateway.platform.db import require_tenant

# The longest range one summary covers, in days (a leap year, from/to inclusive).
MAX_DAYS = 366
# The range when the caller names none: the last 30 days, today (UTC) included.
DEFAULT_DAYS = 30


class GroupBy(StrEnum):
    """How a summary's items are grouped."""

    DAY = "day"
    CAMPAIGN = "campaign"


# usage_daily holds, per (org, UTC day, campaign), the SMS charged and the amount charged
# net of usage refunds (sql/008_usage_daily.sql); a range of days is an index range scan
# of its key, whatever the size of the ledger. The bounds are plain parameters, so that
# row level security lets them be index conditions (ledger/history.py says why).
_BY_DAY = """SELECT day, sum(sms_count), sum(amount) FROM usage_daily
    WHERE org_id = %s AND day BETWEEN %s AND %s GROUP BY day"""

_BY_CAMPAIGN = """SELECT campaign_id, sum(sms_count), sum(amount) FROM usage_daily
    WHERE org_id = %s AND day BETWEEN %s AND %s GROUP BY campaign_id
    ORDER BY sum(amount) DESC, campaign_id NULLS FIRST"""


class RangeTooLong(ValueError):
    """More days than one summary covers."""


class RangeReversed(ValueError):
    """A range whose first day comes after its last."""


def day_range(start: dt.date | None, end: dt.date | None, *,
              today: dt.date) -> tuple[dt.date, dt.date]:
    """Fill in a summary's range: `to` defaults to today (UTC), `from` to the 30 days that
    end on `to`; refuse from after to and more than MAX_DAYS days."""
    end = end or today
    if start is None:
        # The first day there is, near it (date.min plus a few days): no OverflowError.
        start = end - dt.timedelta(days=DEFAULT_DAYS - 1) if end.toordinal() > DEFAULT_DAYS \
            else dt.date.min
    if start > end:
        raise RangeReversed(f"Must not be after `to` ({end.isoformat()}).")
    if (end - start).days + 1 > MAX_DAYS:
        raise RangeTooLong(f"The range may cover at most {MAX_DAYS} days.")
    return start, end


def usage_summary(
    conn: psycopg.Connection,
    org_id: UUID,
    *,
    start: dt.date,
    end: dt.date,
    group_by: str,
) -> dict[str, Any]:
    """Return the org's usage from start to end (UTC days, both included) as
    {"items": [...], "total": {"sms_count", "amount"}}.

    By day: one item per day of the range, oldest first, zeros on days without usage. By
    campaign: one item per campaign with usage in the range (None: no campaign), the
    largest amount first. Amounts are charged net of usage refunds, exact.
    """
    require_tenant(org_id)
    grouping = GroupBy(group_by)
    if grouping is GroupBy.DAY:
        found = {day: (count, amount) for day, count, amount
                 in conn.execute(_BY_DAY, (org_id, start, end))}
        items = []
        for offset in range((end - start).days + 1):
            day = start + dt.timedelta(days=offset)
            count, amount = found.get(day, (0, Decimal(0)))
            items.append({"date": day, "sms_count": int(count), "amount": amount})
    else:
        items = [{"campaign_id": campaign, "sms_count": int(count), "amount": amount}
                 for campaign, count, amount in conn.execute(_BY_CAMPAIGN, (org_id, start, end))]
    return {
        "items": items,
        "total": {"sms_count": sum(item["sms_count"] for item in items),
                  "amount": sum((item["amount"] for item in items), Decimal(0))},
    }
