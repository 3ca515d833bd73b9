"""Exact money: parsing, JSON numbers, display strings, minor units."""

from __future__ import annotations

from decimal import Decimal

import pytest

from billing_gateway.platform import json_codec, money


@pytest.mark.parametrize("value,expected", [
    ("52.8800", "52.88"), ("52.8825", "52.8825"), ("0.0075", "0.0075"), ("100", "100.00"),
    ("52.882", "52.882"), ("-0.0075", "-0.0075"), ("1E+3", "1000.00"),
])
def test_json_number_keeps_cents_and_sub_cents(value: str, expected: str) -> None:
    assert json_codec.dumps(money.to_number(Decimal(value))) == expected


@pytest.mark.parametrize("value,currency,shown", [
    ("52.8825", "usd", "$52.88"), ("0.0099", "usd", "$0.00"), ("1234.5", "eur", "€1234.50"),
    ("5200", "jpy", "¥5200"), ("12.3456", "kwd", "12.345 KWD"), ("-3.5", "usd", "-$3.50"),
])
def test_display_cuts_to_minor_units(value: str, currency: str, shown: str) -> None:
    assert money.format_display(Decimal(value), currency) == shown


@pytest.mark.parametrize("value", [float("1.1"), True, None, [], "1e", "NaN", "-0.01",
                                   Decimal("Infinity"), "0.00001"])
def test_parse_amount_refuses(value: object) -> None:
    with pytest.raises(money.AmountError):
        money.parse_amount(value)


def test_parse_amount_respects_places() -> None:
    assert money.parse_amount("0.0075") == Decimal("0.0075")
    with pytest.raises(money.AmountError, match="2 decimal places"):
        money.parse_amount("0.0075", places=2)


def test_json_loads_decimals_and_refuses_nan() -> None:
    assert json_codec.loads('{"a": 0.1}')["a"] == Decimal("0.1")
    with pytest.raises(ValueError):
        json_codec.loads('{"a": NaN}')


@pytest.mark.parametrize("amount,currency,units", [
    ("52.88", "usd", 5288), ("5200", "jpy", 5200), ("1.234", "kwd", 1234),
])
def test_minor_units_round_trip(amount: str, currency: str, units: int) -> None:
    assert money.to_minor_units(Decimal(amount), currency) == units
    assert money.from_minor_units(units, currency) == Decimal(amount)


def test_fraction_of_a_minor_unit_is_refused() -> None:
    with pytest.raises(money.AmountError):
        money.to_minor_units(Decimal("1.005"), "usd")
