"""Stripe payments in the ledger: one credit per PaymentIntent, refunds and lost disputes
taken back exactly, whatever order their events arrive in.

Each function runs inside a db.stripe_transaction and locks the payment's row first
(then, through the ledger functions, its org's row), so two events of one payment never
interleave. The state kept per payment (sql/004_stripe.sql) makes every effect a function
of what has been seen, not of the order it was seen in.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

import psycopg
from psycopg.rows import class_row

from billing_gateway.ledger import credits
from billing_gateway.platform import metrics, money
from billing_gateway.platform.db import enter_org
from billing_gateway.platform.errors import IdempotencyConflict

CREATED_BY = "stripe"


@dataclass
class Payment:
    """What the gateway knows of one PaymentIntent (amounts in minor units)."""

    payment_intent_id: str
    org_id: UUID | None
    currency: str | None
    credited_minor: int | None
    refunded_minor: int
    disputed_minor: int
    reversed_minor: int
    shortfall: Decimal


def lock_payment(conn: psycopg.Connection, payment_intent_id: str) -> Payment:
    """Return the payment's row, created empty if new, locked until the transaction ends."""
    conn.execute("INSERT INTO stripe_payments (payment_intent_id) VALUES (%s)"
                 " ON CONFLICT (payment_intent_id) DO NOTHING", (payment_intent_id,))
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        payment = cur.execute(
            "SELECT payment_intent_id, org_id, currency, credited_minor, refunded_minor,"
            " disputed_minor, reversed_minor, shortfall"
            " FROM stripe_payments WHERE payment_intent_id = %s FOR UPDATE",
            (payment_intent_id,)).fetchone()
    assert payment is not None
    return payment


def credit_payment(conn: psycopg.Connection, payment_intent_id: str, org_id: UUID,
                   amount_minor: int, currency: str, *, settlement_currency: str,
                   origin: str | None = None) -> str:
    """Credit a succeeded payment once; then apply any refund or dispute seen before it.

    Outcomes: credited, duplicate, currency_mismatch, org_mismatch, amount_mismatch,
    conflict (the ledger already holds this PaymentIntent for another org or amount).
    Only 'credited' changes a balance; the others are stored on the event for review.
    """
    payment = lock_payment(conn, payment_intent_id)
    currency = currency.lower()
    if currency != settlement_currency:
        conn.execute("UPDATE stripe_payments SET currency = %s, updated_at = now()"
                     " WHERE payment_intent_id = %s", (currency, payment_intent_id))
        return "currency_mismatch"
    if payment.org_id is not None and payment.org_id != org_id:
        return "org_mismatch"
    if payment.credited_minor is not None:
        return "duplicate" if payment.credited_minor == amount_minor else "amount_mismatch"
    if amount_minor <= 0:
        return "amount_mismatch"
    enter_org(conn, org_id)
    try:
        # A savepoint: a refused credit must not abort the event's transaction.
        with conn.transaction():
            result = credits.credit(
                conn, org_id, money.from_minor_units(amount_minor, currency),
                type="purchase", payment_method="stripe", payment_intent_id=payment_intent_id,
                description="Stripe top-up", created_by=CREATED_BY,
                metadata={"stripe_origin": origin} if origin else None,
            )
    except IdempotencyConflict:
        return "conflict"
    conn.execute(
        "UPDATE stripe_payments SET org_id = %s, currency = %s, credited_minor = %s,"
        " updated_at = now() WHERE payment_intent_id = %s",
        (org_id, currency, amount_minor, payment_intent_id))
    payment.org_id, payment.currency, payment.credited_minor = org_id, currency, amount_minor
    settle(conn, payment)
    if not result.is_duplicate:
        # Counted before the event's transaction commits: one that then rolls back is
        # counted again on Stripe's retry (rare; the ledger is the exact record).
        metrics.credited("stripe", "purchase", money.from_minor_units(amount_minor, currency))
    return "duplicate" if result.is_duplicate else "credited"


def record_refund(conn: psycopg.Connection, payment_intent_id: str,
                  amount_refunded_minor: int) -> str:
    """Note a charge's cumulative refunded amount; take back the part not yet taken."""
    payment = lock_payment(conn, payment_intent_id)
    if amount_refunded_minor <= payment.refunded_minor:
        return "refund_already_applied"
    conn.execute("UPDATE stripe_payments SET refunded_minor = %s, updated_at = now()"
                 " WHERE payment_intent_id = %s", (amount_refunded_minor, payment_intent_id))
    payment.refunded_minor = amount_refunded_minor
    return settle(conn, payment) or "refund_pending_credit"


def record_lost_dispute(conn: psycopg.Connection, dispute_id: str, payment_intent_id: str,
                        amount_minor: int) -> str:
    """Take back a lost dispute's amount, once per dispute."""
    payment = lock_payment(conn, payment_intent_id)
    added = conn.execute(
        "INSERT INTO stripe_disputes (id, payment_intent_id, amount_minor) VALUES (%s, %s, %s)"
        " ON CONFLICT (id) DO NOTHING RETURNING 1",
        (dispute_id, payment_intent_id, amount_minor)).fetchone()
    if not added:
        return "dispute_already_applied"
    conn.execute("UPDATE stripe_payments SET disputed_minor = disputed_minor + %s,"
                 " updated_at = now() WHERE payment_intent_id = %s",
                 (amount_minor, payment_intent_id))
    payment.disputed_minor += amount_minor
    return settle(conn, payment) or "dispute_pending_credit"


def settle(conn: psycopg.Connection, payment: Payment) -> str | None:
    """Write the reversal owed now: least(credited, refunded + disputed) - reversed.

    Returns 'reversed' (or None when nothing is owed yet, say before the credit landed).
    The balance never goes below zero: what it cannot cover is the payment's shortfall.
    """
    if payment.org_id is None or payment.credited_minor is None or payment.currency is None:
        return None
    owed_minor = (min(payment.credited_minor, payment.refunded_minor + payment.disputed_minor)
                  - payment.reversed_minor)
    if owed_minor <= 0:
        return None
    owed = money.from_minor_units(owed_minor, payment.currency)
    enter_org(conn, payment.org_id)
    row = conn.execute(
        "SELECT transaction_id, taken FROM reverse_credits(%s, %s, %s, %s, %s, %s)",
        (payment.org_id, owed, payment.payment_intent_id,
         "Stripe refund or lost dispute", CREATED_BY,
         credits.jsonb({"refunded_minor": payment.refunded_minor,
                       "disputed_minor": payment.disputed_minor,
                       # topup.reversed's reason (sql/functions/40_topups.sql)
                       "reason": "dispute" if payment.disputed_minor > 0 else "refund"})),
    ).fetchone()
    assert row is not None
    shortfall = owed - row[1]
    conn.execute(
        "UPDATE stripe_payments SET reversed_minor = reversed_minor + %s,"
        " shortfall = shortfall + %s, updated_at = now() WHERE payment_intent_id = %s",
        (owed_minor, shortfall, payment.payment_intent_id))
    payment.reversed_minor += owed_minor
    payment.shortfall += shortfall
    return "reversed"


def shortfalls(conn: psycopg.Connection) -> list[dict[str, object]]:
    """Payments whose reversal the balance could not fully cover (for admins)."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT payment_intent_id, org_id, currency, credited_minor, refunded_minor,"
            " disputed_minor, shortfall, updated_at FROM stripe_payments"
            " WHERE shortfall > 0 ORDER BY updated_at DESC").fetchall()
