"""Helpers: deliver an event as Stripe does (the exact bytes, signed), read an org's balance
and ledger rows as the owner."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import psycopg
from flask.testing import FlaskClient

from tests import stripe_objects as so
from tests.plugins.service import (
    WEBHOOK_SECRET,
)

WEBHOOK = "/api/billing/stripe-webhook"


def deliver(client: FlaskClient, evt: dict[str, Any], *, secret: str = WEBHOOK_SECRET,
            raw: bytes | None = None, header: str | None = None,
            headers: dict[str, str] | None = None) -> Any:
    """POST an event as Stripe does: the exact bytes, signed over "{t}.{body}"."""
    payload = so.body(evt) if raw is None else raw
    signature = so.sign(payload, secret) if header is None else header
    return client.post(WEBHOOK, data=payload, headers={
        "Stripe-Signature": signature, "Content-Type": "application/json; charset=utf-8",
        **(headers or {})})


def balance(owner_conn: psycopg.Connection, org: uuid.UUID) -> Decimal:
    row = owner_conn.execute("SELECT sms_balance FROM organizations WHERE id = %s",
                             (org,)).fetchone()
    return Decimal(0) if row is None else row[0]


def ledger_rows(owner_conn: psycopg.Connection, org: uuid.UUID) -> list[tuple]:
    return owner_conn.execute(
        "SELECT type, amount, payment_intent_id FROM billing_transactions WHERE org_id = %s"
        " ORDER BY seq", (org,)).fetchall()
