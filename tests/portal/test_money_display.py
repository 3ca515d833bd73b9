"""How the page writes amounts and counts (billing_gateway.portal.filters), whatever the
currency: exact to the ledger's 4 decimals, never rounded, grouped in thousands."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing_gateway.portal import filters


@pytest.mark.parametrize(("amount", "currency", "shown"), [
    ("138.0625", "usd", "$138.0625"),
    ("138.0600", "usd", "$138.06"),
    ("7.5", "usd", "$7.50"),
    ("0", "usd", "$0.00"),
    ("1234567.8912", "usd", "$1,234,567.8912"),
    ("1E+3", "usd", "$1,000.00"),
    ("-0.0075", "usd", "\u2212$0.0075"),
    ("5200", "jpy", "\u00a55,200"),
    ("5200.25", "jpy", "\u00a55,200.25"),
    ("12.3", "kwd", "12.300 KWD"),
    ("1000.0001", "chf", "1,000.0001 CHF"),
])
def test_an_amount_is_shown_exact_and_grouped(amount: str, currency: str, shown: str) -> None:
    assert filters.exact(Decimal(amount), currency) == shown


def test_a_signed_amount_always_shows_its_sign() -> None:
    assert filters.signed(Decimal("25"), "usd") == "+$25.00"
    assert filters.signed(Decimal("-1234.5"), "usd") == "\u2212$1,234.50"
    assert filters.signed(Decimal("0"), "usd") == "$0.00"


def test_a_whole_amount_drops_only_zero_decimals() -> None:
    assert filters.whole(Decimal("1000.00"), "usd") == "$1,000"
    assert filters.whole(Decimal("10.50"), "usd") == "$10.50"


@pytest.mark.parametrize(("number", "shown"), [(0, "0"), (999, "999"), (4925, "4,925"),
                                               (1234567, "1,234,567")])
def test_a_count_is_grouped_in_thousands(number: int, shown: str) -> None:
    assert filters.count(number) == shown
