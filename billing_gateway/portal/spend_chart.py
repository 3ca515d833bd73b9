"""Spend per day as bar geometry for a server-rendered SVG (no script, no library)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

WIDTH, HEIGHT = 600, 160  # the SVG's viewBox; it scales to the card's width
BAR_GAP = 2


@dataclass(frozen=True)
class Bar:
    """One day's bar, in viewBox units, with what a screen reader and tooltip say."""

    x: float
    y: float
    width: float
    height: float
    day: dt.date
    amount: Decimal
    sms_count: int


@dataclass(frozen=True)
class SpendChart:
    """The bars, the tallest day (the scale) and the period's total."""

    bars: list[Bar]
    peak: Decimal
    total: Decimal
    sms_count: int
    width: int = WIDTH
    height: int = HEIGHT


def draw(items: Sequence[Mapping[str, Any]], total: Mapping[str, Any]) -> SpendChart:
    """Lay out one bar per day (the summary's items, oldest first), scaled to the peak."""
    peak = max((Decimal(item["amount"]) for item in items), default=Decimal(0))
    slot = WIDTH / max(1, len(items))
    bars = []
    for index, item in enumerate(items):
        amount = Decimal(item["amount"])
        # A day with any spend gets at least a sliver, so it never looks like no spend.
        height = 0.0 if peak <= 0 or amount <= 0 else max(
            2.0, float(amount / peak) * (HEIGHT - 4))
        bars.append(Bar(x=index * slot + BAR_GAP / 2, y=HEIGHT - height,
                        width=max(1.0, slot - BAR_GAP), height=height,
                        day=_day(item["date"]), amount=amount,
                        sms_count=int(item.get("sms_count", item.get("smsCount", 0)) or 0)))
    return SpendChart(bars=bars, peak=peak, total=Decimal(total["amount"]),
                      sms_count=int(total.get("sms_count", total.get("smsCount", 0)) or 0))


def _day(value: Any) -> dt.date:
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(str(value))
