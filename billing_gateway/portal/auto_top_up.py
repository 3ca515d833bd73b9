"""The billing page's automatic top-up section, in the customer's words: the card on file, the
settings form (read and checked), the last attempt and how it ended, and a pause.

The data comes from billing_gateway.autotopup (`settings.read`, the same dict as
GET /api/billing/auto-top-up), and changes go through it (`settings.update`,
`cards.remove`): this module only says things and reads the form.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import Any

from billing_gateway.autotopup.attempts import charged_amount
from billing_gateway.platform import money
from billing_gateway.platform.config import Settings
from billing_gateway.portal import filters

# Stripe's card brands (https://docs.stripe.com/api/payment_methods/object#payment_method_object-card-brand)
# as the card itself says them.
_BRANDS = {"amex": "American Express", "cartes_bancaires": "Cartes Bancaires",
           "diners": "Diners Club", "discover": "Discover", "eftpos_au": "eftpos",
           "interac": "Interac", "jcb": "JCB", "link": "Link", "mastercard": "Mastercard",
           "unionpay": "UnionPay", "visa": "Visa"}

# Decline codes worth telling the card's owner (https://docs.stripe.com/declines/codes).
# Stripe asks that lost, stolen, fraudulent and "pick up" cards be shown as a generic
# decline, so that whoever holds such a card learns nothing: those, and codes not listed
# here, read "Your card was declined."
_DECLINES = {
    "insufficient_funds": "insufficient funds",
    "card_velocity_exceeded": "over the card's limit",
    "withdrawal_count_limit_exceeded": "over the card's limit",
    "card_not_supported": "the card does not allow this kind of payment",
    "currency_not_supported": "the card does not allow payments in this currency",
    "transaction_not_allowed": "the card does not allow this kind of payment",
    "do_not_honor": "your bank did not say why",
    "call_issuer": "your bank did not say why",
    "processing_error": "a processing error at your bank",
    "issuer_not_available": "your bank could not be reached",
    "try_again_later": "your bank asked to try again later",
}
# Failure codes other than a decline (docs/autotopup.md, "Failures").
_FAILURES = {
    "authentication_required": (
        "Your bank asked you to confirm this payment, which cannot be done while you are "
        "away. Pay once on this page to confirm the card."),
    "expired_card": "Your card has expired.",
    "incorrect_cvc": "Your bank asked for the card's security code.",
    "processing_error": "Your bank had a problem processing the payment.",
    "stripe_unavailable": ("Our payment provider could not be reached, so your card was "
                           "not charged."),
    "resource_missing": "The saved card is no longer available to charge.",
}
_NOT_CHARGED = "The payment did not go through."

# Form fields, as the page names them (API field names are mapped to these).
ENABLED, THRESHOLD, TARGET = "enabled", "threshold", "target"
_API_FIELDS = {"enabled": ENABLED, "threshold": THRESHOLD, "targetBalance": TARGET}


class AttemptState(StrEnum):
    """What the customer is told of an attempt's status."""

    IN_PROGRESS = "In progress"
    ADDED = "Added"
    FAILED = "Failed"
    CANCELED = "Canceled"


_STATES = {"pending": AttemptState.IN_PROGRESS, "submitted": AttemptState.IN_PROGRESS,
           "succeeded": AttemptState.ADDED, "failed": AttemptState.FAILED,
           "canceled": AttemptState.CANCELED}


@dataclass(frozen=True)
class Card:
    """The saved card as its owner recognizes it: "Visa ending 4242", "12/2029"."""

    label: str
    expiry: str
    expired: bool


@dataclass(frozen=True)
class LastAttempt:
    """The last auto top-up: when, how much, how it ended and why."""

    status: str  # the attempt's own status (data-status)
    state: AttemptState
    amount: Decimal
    balance_at_trigger: Decimal
    created_at: dt.datetime
    reason: str | None  # failed only


@dataclass
class SettingsForm:
    """The settings form as shown: what was typed (or is stored) and each field's problem."""

    enabled: bool
    threshold: str
    target: str
    errors: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Section:
    """Everything the section shows."""

    enabled: bool
    paused: bool
    failures: int
    threshold: Decimal | None
    target: Decimal | None
    next_try: dt.datetime | None
    card: Card | None
    last: LastAttempt | None
    resume_amount: Decimal | None
    form: SettingsForm


def card_of(method: Mapping[str, Any] | None, today: dt.date) -> Card | None:
    """The saved card in words; expired once its expiry month is over."""
    if method is None:
        return None
    brand = str(method["brand"])
    name = _BRANDS.get(brand, brand.replace("_", " ").title() if brand != "unknown" else "Card")
    month, year = int(method["exp_month"]), int(method["exp_year"])
    return Card(label=f"{name} ending {method['last4']}", expiry=f"{month:02d}/{year}",
                expired=(year, month) < (today.year, today.month))


def failure_reason(code: str | None, decline_code: str | None) -> str:
    """Why an attempt failed, for the card's owner: "Your card was declined (insufficient
    funds)." Stripe's codes, never its developer messages."""
    if code == "card_declined" or (code is None and decline_code):
        if decline_code in _FAILURES:  # a decline that asks for something (authentication)
            return _FAILURES[decline_code]
        detail = _DECLINES.get(decline_code or "")
        return f"Your card was declined ({detail})." if detail else "Your card was declined."
    if code in _FAILURES:
        return _FAILURES[code]
    return _NOT_CHARGED


def last_attempt(row: Mapping[str, Any] | None, currency: str) -> LastAttempt | None:
    """The last attempt as the page tells it."""
    if row is None:
        return None
    status = str(row["status"])
    state = _STATES.get(status, AttemptState.IN_PROGRESS)
    return LastAttempt(
        status=status, state=state, amount=charged_amount(row["amount"], currency),
        balance_at_trigger=row["balance_at_trigger"], created_at=row["created_at"],
        reason=failure_reason(row["failure_code"], row["decline_code"])
        if state is AttemptState.FAILED else None)


def resume_amount(settings: Settings, balance: Decimal, target: Decimal | None) -> Decimal:
    """What "Pay now" charges: back up to the target (rounded up to a cent), at least the
    smallest top-up, at most the largest."""
    needed = charged_amount(max(Decimal(0), (target or Decimal(0)) - balance),
                            settings.currency)
    return min(max(needed, settings.min_topup), settings.max_topup)


def section(state: Mapping[str, Any], settings: Settings, balance: Decimal, today: dt.date,
            form: SettingsForm | None = None) -> Section:
    """The section for the org's auto top-up (settings.read's dict), with the form as typed
    when it comes back with errors."""
    paused = bool(state["paused"])
    return Section(
        enabled=bool(state["enabled"]), paused=paused,
        failures=int(state["consecutive_failures"]), threshold=state["threshold"],
        target=state["target_balance"],
        next_try=state["next_attempt_not_before"] if state["enabled"] else None,
        card=card_of(state["payment_method"], today),
        last=last_attempt(state["last_attempt"], settings.currency),
        resume_amount=resume_amount(settings, balance, state["target_balance"])
        if paused else None,
        form=form or SettingsForm(enabled=bool(state["enabled"]),
                                  threshold=_plain(state["threshold"]),
                                  target=_plain(state["target_balance"])))


def _plain(amount: Decimal | None) -> str:
    return "" if amount is None else money.format_number(amount)


@dataclass(frozen=True)
class Wanted:
    """The settings the form asks for (None: keep the stored amount)."""

    enabled: bool
    threshold: Decimal | None
    target: Decimal | None


def read_form(form: Mapping[str, str], settings: Settings, state: Mapping[str, Any]
              ) -> tuple[SettingsForm, Wanted | None]:
    """Read and check the settings form against the rules of GET/PUT /auto-top-up
    (docs/autotopup.md, "Settings"), each problem in the customer's words next to its
    field; the settings wanted, or None when there are problems.

    autotopup.settings.update checks the same rules again and stays the authority: its
    refusals, if they ever differ, are shown by `api_errors`.
    """
    typed = SettingsForm(enabled=form.get(ENABLED) == "yes",
                         threshold=form.get(THRESHOLD, "").strip()[:40],
                         target=form.get(TARGET, "").strip()[:40])
    currency = settings.currency
    amounts: dict[str, Decimal | None] = {}
    for name, text in ((THRESHOLD, typed.threshold), (TARGET, typed.target)):
        amounts[name] = None
        if not text:
            if typed.enabled:
                typed.errors[name] = (
                    "Enter the balance at which to top up." if name == THRESHOLD
                    else "Enter the balance to top up to.")
            continue
        try:
            amount = filters.read_amount(text, currency)
        except money.AmountError:
            typed.errors[name] = f"“{text}” is not an amount, such as 10 or 10.00."
            continue
        if amount <= 0:
            typed.errors[name] = "Enter an amount above zero."
        elif amount > settings.max_topup:  # no top-up could follow from it
            typed.errors[name] = f"Enter at most {filters.exact(settings.max_topup, currency)}."
        elif not _whole_minor_units(amount, currency):
            typed.errors[name] = "Use whole cents, such as 10 or 10.50."
        else:
            amounts[name] = amount
    if typed.enabled and state["payment_method"] is None:
        typed.errors[ENABLED] = ("Save a card first: tick “Save this card for automatic "
                                 "top-ups” when you add funds.")
    threshold = amounts[THRESHOLD] if amounts[THRESHOLD] is not None else (
        None if THRESHOLD in typed.errors else state["threshold"])
    target = amounts[TARGET] if amounts[TARGET] is not None else (
        None if TARGET in typed.errors else state["target_balance"])
    if TARGET not in typed.errors:
        problem = _target_problem(settings, threshold, target)
        if problem:
            typed.errors[TARGET] = problem
    if typed.errors:
        return typed, None
    return typed, Wanted(typed.enabled, amounts[THRESHOLD], amounts[TARGET])


def _whole_minor_units(amount: Decimal, currency: str) -> bool:
    try:
        money.to_minor_units(amount, currency)
    except money.AmountError:
        return False
    return True


def _target_problem(settings: Settings, threshold: Decimal | None,
                    target: Decimal | None) -> str | None:
    """The target's rules: each top-up must be one Checkout would take."""
    currency = settings.currency
    if target is None:
        return None
    if target > settings.max_topup:
        return f"Top up to at most {filters.exact(settings.max_topup, currency)}."
    if threshold is None:
        return None
    if target <= threshold:
        return (f"Top up to more than the balance at which to top up "
                f"({filters.exact(threshold, currency)}).")
    if target - threshold < settings.min_topup:
        return (f"Top up to at least {filters.exact(threshold + settings.min_topup, currency)}:"
                f" {filters.exact(settings.min_topup, currency)} above the balance at which to"
                f" top up, the smallest top-up.")
    return None


def api_errors(typed: SettingsForm, fields: Mapping[str, list[str]]) -> SettingsForm:
    """The form with autotopup's own refusals (its rules, should they ever differ from
    read_form's) next to the fields they name."""
    for name, messages in fields.items():
        typed.errors.setdefault(_API_FIELDS.get(name, ENABLED), " ".join(messages))
    return typed


def saved_message(state: Mapping[str, Any], started: bool, currency: str) -> str:
    """What the page says after Save, from the settings now in force."""
    if not state["enabled"]:
        return "Automatic top-ups are off. Nothing will be charged automatically."
    card = card_of(state["payment_method"], dt.datetime.now(dt.UTC).date())
    text = (f"Automatic top-ups are on: when your balance falls below "
            f"{filters.exact(state['threshold'], currency)}, we charge "
            f"{card.label if card else 'your card'} to bring it back to "
            f"{filters.exact(state['target_balance'], currency)}.")
    if started:
        text += " Your balance is below that now, so a top-up has started."
    return text
