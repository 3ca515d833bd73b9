"""Exact money: parsing caller input, ledger precision, JSON numbers and display strings."""

from __future__ import annotations

import re
from decimal import ROUND_DOWN, Decimal

# The ledger keeps 4 decimal places (sub-cent SMS prices); top-ups are whole minor units.
LEDGER_PLACES = 4
LEDGER_QUANTUM = Decimal(1).scaleb(-LEDGER_PLACES)
# Largest single credit or debit accepted: far above any real top-up, far below the
# numeric(18,4) column limit, so a sum of many can never overflow.
MAX_AMOUNT = Decimal("1000000000")
# Largest price per SMS: with at most 1,000,000 messages per charge, no charge can exceed
# MAX_AMOUNT, so a well-formed charge is never refused for its size.
MAX_SMS_PRICE = Decimal("1000")

# Currencies whose minor unit is not 1/100, from Stripe's list of zero-decimal and
# three-decimal currencies: https://docs.stripe.com/currencies#zero-decimal
ZERO_DECIMAL_CURRENCIES = {
    "bif", "clp", "djf", "gnf", "jpy", "kmf", "krw", "mga", "pyg", "rwf", "ugx", "vnd",
    "vuv", "xaf", "xof", "xpf",
}
THREE_DECIMAL_CURRENCIES = {"bhd", "jod", "kwd", "omr", "tnd"}
_SYMBOLS = {"usd": "$", "eur": "€", "gbp": "£", "jpy": "¥", "inr": "₹"}


class AmountError(ValueError):
    """An input amount that the ledger refuses, with the reason for the caller."""


# What a number written as text may look like: ASCII digits, one optional sign, one
# optional decimal point, an optional exponent; nothing else. Python's Decimal() and int()
# are more generous: they take any script's digits (fullwidth, Arabic-Indic, Devanagari...)
# and "_" separators ("0_01" is 1), so they only ever see text this pattern has accepted.
_DECIMAL_TEXT = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_WHOLE_NUMBER_TEXT = re.compile(r"[0-9]+")
# Longer text is no real amount or count, and bounds the work of parsing it.
MAX_NUMBER_TEXT = 40


def parse_decimal_text(text: str) -> Decimal:
    """Read a decimal number written as text, strictly (see _DECIMAL_TEXT)."""
    if len(text) > MAX_NUMBER_TEXT or not _DECIMAL_TEXT.fullmatch(text):
        raise AmountError("must be a decimal number")
    return Decimal(text)


def parse_whole_number(text: str) -> int:
    """Read a non-negative whole number written as text in ASCII digits (a query's limit)."""
    if len(text) > MAX_NUMBER_TEXT or not _WHOLE_NUMBER_TEXT.fullmatch(text):
        raise AmountError("must be a whole number")
    return int(text)


def currency_exponent(currency: str) -> int:
    """Return how many decimal places the currency's minor unit has."""
    code = currency.lower()
    if code in ZERO_DECIMAL_CURRENCIES:
        return 0
    if code in THREE_DECIMAL_CURRENCIES:
        return 3
    return 2


def parse_amount(
    value: object, *, places: int = LEDGER_PLACES, maximum: Decimal = MAX_AMOUNT
) -> Decimal:
    """Turn a JSON number or numeric string into a positive Decimal with at most `places`.

    Floats are refused outright: JSON is parsed with Decimal, so a float here means a
    caller bypassed that and its value may already be rounded.
    """
    if isinstance(value, bool) or value is None:
        raise AmountError("must be a number")
    if isinstance(value, float):
        raise AmountError("must be an exact decimal, not a float")
    if isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, Decimal):
        amount = value
    elif isinstance(value, str):
        amount = parse_decimal_text(value)
    else:
        raise AmountError("must be a number")
    if not amount.is_finite():
        raise AmountError("must be a finite number")
    if amount <= 0:
        raise AmountError("must be greater than zero")
    if amount > maximum:
        raise AmountError(f"must be at most {format_number(maximum)}")
    exponent = amount.normalize().as_tuple().exponent
    if isinstance(exponent, int) and -exponent > places:
        raise AmountError(f"must have at most {places} decimal places")
    return amount.quantize(LEDGER_QUANTUM)


def to_number(amount: Decimal) -> Decimal:
    """Return the amount as JSON shows it: 2 decimals, or up to 4 when sub-cent digits exist."""
    quantized = amount.quantize(LEDGER_QUANTUM)
    cents = quantized.quantize(Decimal("0.01"))
    if cents == quantized:
        return cents
    return quantized.normalize()


def format_number(amount: Decimal) -> str:
    """Return the amount as a plain decimal string (no exponent)."""
    return f"{to_number(amount):f}"


def currency_symbol(currency: str) -> str:
    """The currency's symbol ("$"), or "" when it is shown by its code."""
    return _SYMBOLS.get(currency.lower(), "")


def format_display(amount: Decimal, currency: str) -> str:
    """Return a display string in whole minor units: "$52.88", "¥5200", "12.345 KWD".

    No thousands separators, as the seed's front end shows balances.

    Sub-cent digits are cut, never rounded up, so a display never shows credit that the
    ledger does not hold.
    """
    exponent = currency_exponent(currency)
    shown = amount.quantize(Decimal(1).scaleb(-exponent), rounding=ROUND_DOWN)
    sign = "-" if shown < 0 else ""
    digits = f"{abs(shown):f}"
    symbol = _SYMBOLS.get(currency.lower())
    if symbol:
        return f"{sign}{symbol}{digits}"
    return f"{sign}{digits} {currency.upper()}"


def to_minor_units(amount: Decimal, currency: str) -> int:
    """Convert a whole-minor-unit amount to Stripe's integer (52.88 usd -> 5288)."""
    scaled = amount.scaleb(currency_exponent(currency))
    if scaled != scaled.to_integral_value():
        raise AmountError(f"{amount} is not a whole number of {currency} minor units")
    return int(scaled)


def from_minor_units(units: int, currency: str) -> Decimal:
    """Convert Stripe's integer amount to a ledger Decimal (5288 usd -> 52.88)."""
    return Decimal(units).scaleb(-currency_exponent(currency)).quantize(LEDGER_QUANTUM)
