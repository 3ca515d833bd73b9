"""How the page writes money, counts, dates and types (Jinja filters).

One rule for every amount a customer reads on the page: the exact value the ledger holds,
never rounded, with the currency's own decimals at least and up to the ledger's 4, grouped
in thousands ("$1,234.5625", "$7.50", "¥5,200"). The API's `formatted` cuts to cents: the
balance card shows it (CONTRACT.md's `#balance`), and the exact balance under it whenever
the two differ, so "$138.06" never stands unexplained beside a history ending in
"$138.0625".
"""

from __future__ import annotations

import datetime as dt
import re
from decimal import Decimal

from flask import Flask

from billing_gateway.platform import money
from billing_gateway.platform.config import Settings

_TYPE_LABELS = {"purchase": "Purchase", "sms_send": "SMS send", "refund": "Refund",
                "adjustment": "Adjustment", "bonus": "Bonus", "reversal": "Reversal"}
MINUS = "\u2212"  # a true minus: as wide as "+", and read as "minus" by screen readers
_GROUPED = re.compile(r"[0-9]{1,3}(?:,[0-9]{3})+(?:\.[0-9]*)?")


def exact(amount: Decimal, currency: str) -> str:
    """The amount as the ledger holds it, grouped: "$1,234.5625", "$7.50", "\u2212$0.0075"."""
    held = -amount.normalize().as_tuple().exponent  # type: ignore[operator]  # finite amounts only
    return _written(amount, currency,
                    max(money.currency_exponent(currency), min(money.LEDGER_PLACES, held)))


def signed(amount: Decimal, currency: str) -> str:
    """An exact amount with its sign always shown: "+$25.00", "\u2212$0.0075"."""
    text = exact(abs(amount), currency)
    return f"+{text}" if amount > 0 else f"{MINUS}{text}" if amount < 0 else text


def whole(amount: Decimal, currency: str) -> str:
    """A whole amount without decimals, for button labels: "$10", "$1,000"."""
    if amount != amount.to_integral_value():
        return exact(amount, currency)
    return _written(amount, currency, 0)


def _written(amount: Decimal, currency: str, places: int) -> str:
    digits = f"{abs(amount):,.{places}f}"
    symbol = money.currency_symbol(currency)
    sign = MINUS if amount < 0 else ""
    return f"{sign}{symbol}{digits}" if symbol else f"{sign}{digits} {currency.upper()}"


def read_amount(typed: str, currency: str) -> Decimal:
    """Read an amount as a customer types it, or as the page writes it: "25", "25.00",
    "$1,000.00" (money.AmountError if it is not one). Commas only between groups of three,
    so that "1,5" (a decimal comma) is refused rather than read as 15."""
    text = typed.strip().removeprefix(money.currency_symbol(currency)).strip()
    if _GROUPED.fullmatch(text):
        text = text.replace(",", "")
    return money.parse_decimal_text(text)


def count(number: int) -> str:
    """A count grouped in thousands: "4,925"."""
    return f"{number:,}"


def iso_utc(when: dt.datetime) -> str:
    """ISO 8601 in UTC with a Z, for <time datetime>."""
    return when.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def register(app: Flask, settings: Settings) -> None:
    """Add the page's filters to the app's Jinja environment."""
    currency = settings.currency
    app.add_template_filter(lambda a: exact(Decimal(a), currency), "money")
    # The contract's `#balance` is the balance as the API formats it (`formatted`); the page
    # adds the exact amount beside it when the two differ (sub-cent SMS prices).
    app.add_template_filter(lambda a: money.format_display(Decimal(a), currency), "formatted")
    app.add_template_test(lambda a: Decimal(a) != Decimal(a).quantize(
        Decimal(1).scaleb(-money.currency_exponent(currency))), "sub_minor")
    app.add_template_filter(lambda a: signed(Decimal(a), currency), "signed_money")
    app.add_template_filter(lambda a: whole(Decimal(a), currency), "money_whole")
    # Machine-readable (data-amount): plain and exact, no symbol, no grouping.
    app.add_template_filter(lambda a: money.format_number(Decimal(a)), "plain_amount")
    # Beside an amount field: "$", or the code for a currency written without a symbol.
    app.add_template_filter(
        lambda c: money.currency_symbol(c) or c.upper(), "currency_symbol")
    app.add_template_filter(count, "count")
    app.add_template_filter(iso_utc, "iso_utc")
    app.add_template_filter(lambda t: _TYPE_LABELS.get(t, t), "type_label")
