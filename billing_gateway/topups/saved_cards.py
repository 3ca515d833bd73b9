"""The card a Checkout payment saved for off-session top-ups: read from Stripe for its
payment_intent.succeeded, and recorded in the event's transaction (sql save_card).
billing_gateway/autotopup uses the card; docs/autotopup.md."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import psycopg
import stripe

from billing_gateway.topups import auto_payments, customers, stripe_client


@dataclass
class SavedCard:
    """A card saved to the org's Stripe Customer for off-session top-ups."""

    customer_id: str
    payment_method_id: str
    brand: str
    last4: str
    exp_month: int
    exp_year: int
    payment_intent_id: str
    saved_at: dt.datetime


def _stripe_id(value: Any) -> str | None:
    """An id, or an expanded object's id."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def card_to_save(client: Callable[[], stripe.StripeClient],
                 intent: dict[str, Any]) -> SavedCard | None:
    """The card a succeeded PaymentIntent of a Checkout top-up with saveCard saved, read
    from Stripe (the PaymentIntent names only the PaymentMethod). Called before the
    event's transaction opens: no connection waits on Stripe. None for any other payment
    (auto top-ups pay with the card already on file).

    https://docs.stripe.com/payments/save-during-payment: setup_future_usage=off_session
    attaches the PaymentMethod to the PaymentIntent's customer once the payment succeeds.
    """
    if (intent.get("object") != "payment_intent" or intent.get("status") != "succeeded"
            or stripe_client.tagged_org(intent.get("metadata")) is None
            or auto_payments.attempt_of(intent.get("metadata")) is not None
            or intent.get("setup_future_usage") != "off_session"):
        return None
    method_id, customer = _stripe_id(intent.get("payment_method")), _stripe_id(
        intent.get("customer"))
    created = intent.get("created")
    if method_id is None or customer is None or not isinstance(created, int):
        return None
    method = stripe_client.retrieve_payment_method(client(), method_id)
    card = method.get("card")
    if method.get("type") != "card" or not isinstance(card, dict):
        return None
    return SavedCard(customer, method_id, str(card.get("brand")), str(card.get("last4")),
                     int(card["exp_month"]), int(card["exp_year"]), str(intent["id"]),
                     dt.datetime.fromtimestamp(created, dt.UTC))


def record(conn: psycopg.Connection, org_id: uuid.UUID, card: SavedCard) -> bool:
    """Keep the card if it is on the org's own Customer and newer than the one on file
    (events come in any order); True if kept. In the org's scope."""
    if customers.customer_id(conn, org_id) != card.customer_id:
        return False
    row = conn.execute(
        "SELECT save_card(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (org_id, card.customer_id, card.payment_method_id, card.brand, card.last4,
         card.exp_month, card.exp_year, card.payment_intent_id, card.saved_at)).fetchone()
    return bool(row and row[0])
