"""An org's Stripe Customer: made once, the first time a card is to be saved."""

from __future__ import annotations

import uuid

import psycopg
import stripe

from billing_gateway.platform.db import get_db, release_db, require_tenant, tenant_transaction
from billing_gateway.topups import stripe_client


def customer_id(conn: psycopg.Connection, org_id: uuid.UUID) -> str | None:
    """The org's Stripe Customer id, if it has one (in its tenant transaction)."""
    require_tenant(org_id)
    row = conn.execute("SELECT customer_id FROM stripe_customers WHERE org_id = %s",
                       (org_id,)).fetchone()
    return str(row[0]) if row else None


def ensure_customer(client: stripe.StripeClient, org_id: uuid.UUID, caller: str) -> str:
    """The org's Stripe Customer, created at Stripe the first time, and again if Stripe no
    longer has it (deleted, or another account's keys now).

    No connection is held while Stripe answers. Two requests racing to create it send
    Stripe the same idempotency key (derived from the org, and from the Customer it
    replaces), so Stripe makes one Customer and answers both with it; the first row written
    wins either way. A duplicated Customer would strand the card saved on it.
    """
    with tenant_transaction(get_db(), org_id, caller) as conn:
        found = customer_id(conn, org_id)
    release_db()
    if found is not None and stripe_client.customer_exists(client, found):
        return found
    created = stripe_client.create_customer(client, org_id, replacing=found)
    with tenant_transaction(get_db(), org_id, caller) as conn:
        conn.execute("INSERT INTO organizations (id) VALUES (%s) ON CONFLICT DO NOTHING",
                     (org_id,))
        if found is None:
            conn.execute("INSERT INTO stripe_customers (org_id, customer_id) VALUES (%s, %s)"
                         " ON CONFLICT (org_id) DO NOTHING", (org_id, created))
        else:
            conn.execute("UPDATE stripe_customers SET customer_id = %s"
                         " WHERE org_id = %s AND customer_id = %s", (created, org_id, found))
        kept = customer_id(conn, org_id)
    assert kept is not None
    return kept
