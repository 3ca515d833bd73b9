"""How the page writes money, dates and types (Jinja filters)."""

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from flask import Flask

from billing_gateway.platform import money
from billing_gateway.platform.config import Settings

_TYPE_LABELS = {"purchase": "Purchase", "sms_send": "SMS send", "refund": "Refund",
                "adjustment": "Adjustment", "bonus": "Bonus", "reversal": "Reversal"}


def exact(amount: Decimal, currency: str) -> str:
    """The amount as the ledger holds it, with 2 to 4 decimals: "$52.8825", "$7.50"."""
    places = max(2, min(money.LEDGER_PLACES, -amount.normalize().as_tuple().exponent))  # type: ignore[operator]  # finite amounts only
    digits = f"{abs(amount):.{places}f}"
    symbol = money.currency_symbol(currency)
    sign = "-" if amount < 0 else ""
    return f"{sign}{symbol}{digits}" if symbol else f"{sign}{digits} {currency.upper()}"


def signed(amount: Decimal, currency: str) -> str:
    """An exact amount with its sign always shown: "+$25.00", "\u2212$0.0075" (true minus)."""
    text = exact(abs(amount), currency)
    return f"+{text}" if amount > 0 else f"\u2212{text}" if amount < 0 else text


def iso_utc(when: dt.datetime) -> str:
    """ISO 8601 in UTC with a Z, for <time datetime>."""
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def register(app: Flask, settings: Settings) -> None:
    """Add the page's filters to the app's Jinja environment."""
    currency = settings.currency
    app.add_template_filter(lambda a: money.format_display(Decimal(a), currency), "money")
    app.add_template_filter(
        lambda a: money.format_display(Decimal(a), currency).removesuffix(".00"), "money_whole")
    app.add_template_filter(lambda a: exact(Decimal(a), currency), "exact_money")
    app.add_template_filter(lambda a: signed(Decimal(a), currency), "signed_money")
    app.add_template_filter(lambda a: money.format_number(Decimal(a)), "plain_amount")
    app.add_template_filter(iso_utc, "iso_utc")
    app.add_template_filter(lambda t: _TYPE_LABELS.get(t, t), "type_label")
