"""The org's saved card: recorded from the payment that saved it, shown, removed."""

from __future__ import annotations

import uuid

import psycopg
import stripe
from psycopg.rows import class_row

from billing_gateway.platform.db import get_db, release_db, require_tenant, tenant_transaction
from billing_gateway.topups import stripe_client
from billing_gateway.topups.saved_cards import SavedCard


def saved_card(conn: psycopg.Connection, org_id: uuid.UUID) -> SavedCard | None:
    """The org's saved card, if any (in its tenant transaction)."""
    require_tenant(org_id)
    with conn.cursor(row_factory=class_row(SavedCard)) as cur:
        return cur.execute(
            "SELECT customer_id, payment_method_id, brand, last4, exp_month, exp_year,"
            " payment_intent_id, saved_at FROM saved_cards WHERE org_id = %s",
            (org_id,)).fetchone()


def remove(client: stripe.StripeClient, org_id: uuid.UUID, caller: str) -> SavedCard | None:
    """Detach the org's card at Stripe, forget it and turn auto top-up off; the card
    removed, or None if there was none. Detached first: a card forgotten here but still
    attached at Stripe could still be charged by anyone holding the key. No connection is
    held while Stripe answers.
    """
    with tenant_transaction(get_db(), org_id, caller) as conn:
        card = saved_card(conn, org_id)
    release_db()
    if card is None:
        return None
    stripe_client.detach_payment_method(client, card.payment_method_id)
    with tenant_transaction(get_db(), org_id, caller) as conn:
        removed = conn.execute(
            "DELETE FROM saved_cards WHERE org_id = %s AND payment_method_id = %s RETURNING 1",
            (org_id, card.payment_method_id)).fetchone()
        if removed:  # a newer card saved meanwhile stays, with the settings it works under
            conn.execute("SELECT set_auto_topup(%s, false, NULL, NULL)", (org_id,))
    return card
