"""Stripe payments in the ledger: one credit per PaymentIntent, refunds and lost disputes
taken back exactly, and given back when a refund fails or is canceled, whatever order
their events arrive in.

Each function runs inside a db.stripe_transaction and locks the payment's row first
(then, through the ledger functions, its org's row), so two events of one payment never
interleave. The state kept per payment (sql/004_stripe.sql, sql/011_stripe_hygiene.sql)
makes every effect a function of what has been seen, not of the order it was seen in:
`settle` moves the ledger to `least(credited, refunded + disputed)` taken back, in either
direction.
"""

from __future__ import annotations

import logging
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

log = logging.getLogger("billing_gateway.stripe")

# Refund statuses after which a refund gives nothing back to the customer's card: final,
# and its reversal is undone. https://docs.stripe.com/api/refunds/object#refund_object-status
VOIDED = ("failed", "canceled")
# How far along a refund's status is; a status never moves back (events come in any order).
# An unknown status counts as standing, like pending.
_STATUS_RANK = {"pending": 0, "requires_action": 0, "succeeded": 1, "failed": 2, "canceled": 2}


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
    charge_refunded_minor: int


def lock_payment(conn: psycopg.Connection, payment_intent_id: str) -> Payment:
    """Return the payment's row, created empty if new, locked until the transaction ends."""
    conn.execute("INSERT INTO stripe_payments (payment_intent_id) VALUES (%s)"
                 " ON CONFLICT (payment_intent_id) DO NOTHING", (payment_intent_id,))
    with conn.cursor(row_factory=class_row(Payment)) as cur:
        payment = cur.execute(
            "SELECT payment_intent_id, org_id, currency, credited_minor, refunded_minor,"
            " disputed_minor, reversed_minor, shortfall, charge_refunded_minor"
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
    for dispute_id, disputed_minor, dispute_currency in _disputes_in_other_currency(
            conn, payment):  # lost before the credit landed, in another currency
        _warn_dispute_currency(payment, dispute_id, disputed_minor, dispute_currency)
    if not result.is_duplicate:
        # Counted before the event's transaction commits: one that then rolls back is
        # counted again on Stripe's retry (rare; the ledger is the exact record).
        metrics.credited("stripe", "purchase", money.from_minor_units(amount_minor, currency))
    return "duplicate" if result.is_duplicate else "credited"


def record_refund(conn: psycopg.Connection, payment_intent_id: str,
                  amount_refunded_minor: int) -> str:
    """Note a charge's cumulative refunded amount (charge.refunded; the largest seen counts,
    as events come in any order); take back the part not yet taken."""
    payment = lock_payment(conn, payment_intent_id)
    if amount_refunded_minor <= payment.charge_refunded_minor:
        return "refund_already_applied"
    conn.execute("UPDATE stripe_payments SET charge_refunded_minor = %s, updated_at = now()"
                 " WHERE payment_intent_id = %s", (amount_refunded_minor, payment_intent_id))
    payment.charge_refunded_minor = amount_refunded_minor
    return settle(conn, payment) or "refund_pending_credit"


def record_refund_object(conn: psycopg.Connection, refund_id: str, payment_intent_id: str,
                         amount_minor: int, status: str | None) -> str:
    """Note one Refund's status (refund.created/updated/failed, charge.refund.updated); a
    refund that failed or was canceled gives back what its reversal took, once.

    A status only moves forward (pending, then succeeded, then failed; requires_action,
    then canceled): a redelivered or late event of an earlier status changes nothing.
    Outcomes: reversed, restored (credits given back), refund_recorded (nothing owed
    changed), refund_already_recorded, refund_pending_credit (the payment is not credited
    yet; its credit will apply what is known by then).
    """
    payment = lock_payment(conn, payment_intent_id)
    status = status or "pending"
    row = conn.execute("SELECT status FROM stripe_refunds WHERE id = %s",
                       (refund_id,)).fetchone()
    if row is None:
        conn.execute("INSERT INTO stripe_refunds (id, payment_intent_id, amount_minor, status)"
                     " VALUES (%s, %s, %s, %s)",
                     (refund_id, payment_intent_id, amount_minor, status))
    elif _STATUS_RANK.get(status, 0) > _STATUS_RANK.get(row[0], 0):
        conn.execute("UPDATE stripe_refunds SET status = %s, updated_at = now() WHERE id = %s",
                     (status, refund_id))
    else:
        return "refund_already_recorded"
    outcome = settle(conn, payment, refund=(refund_id, status))
    if outcome is not None:
        return outcome
    return "refund_pending_credit" if payment.credited_minor is None else "refund_recorded"


def record_lost_dispute(conn: psycopg.Connection, dispute_id: str, payment_intent_id: str,
                        amount_minor: int, currency: str) -> str:
    """Take back a lost dispute's amount, once per dispute, if it is in the payment's
    currency.

    A dispute in another currency is recorded and not applied: its amount in minor units
    of that currency says nothing exact about the payment's currency, so it waits for a
    human (outcome dispute_currency_mismatch; `needs_review`). While the payment's currency
    is unknown (its credit has not landed), the credit decides (see `settle`).
    """
    payment = lock_payment(conn, payment_intent_id)
    currency = currency.lower()
    added = conn.execute(
        "INSERT INTO stripe_disputes (id, payment_intent_id, amount_minor, currency)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (id) DO NOTHING RETURNING 1",
        (dispute_id, payment_intent_id, amount_minor, currency)).fetchone()
    if not added:
        return "dispute_already_applied"
    if payment.currency is not None and currency != payment.currency:
        _warn_dispute_currency(payment, dispute_id, amount_minor, currency)
        return "dispute_currency_mismatch"
    return settle(conn, payment) or "dispute_pending_credit"


def _warn_dispute_currency(payment: Payment, dispute_id: str, amount_minor: int,
                           currency: str) -> None:
    log.warning("lost dispute %s of payment %s (org %s) is %s %s minor units, the payment is "
                "in %s: not taken back; it needs a human (GET /api/billing/payments/shortfalls"
                ", billing-gateway reconcile)", dispute_id, payment.payment_intent_id,
                payment.org_id, amount_minor, currency, payment.currency)


def _disputes_in_other_currency(conn: psycopg.Connection,
                                payment: Payment) -> list[tuple[str, int, str]]:
    """The payment's lost disputes in another currency than its own (id, amount, currency)."""
    rows = conn.execute(
        "SELECT id, amount_minor, currency FROM stripe_disputes WHERE payment_intent_id = %s"
        " AND currency <> %s ORDER BY created_at",
        (payment.payment_intent_id, payment.currency)).fetchall()
    return [(row[0], row[1], row[2]) for row in rows]


def _refunded_minor(conn: psycopg.Connection, payment: Payment) -> int:
    """The refunded amount in effect: the larger of the charge's largest amount_refunded
    less the refunds known to have failed or been canceled, and the refunds known one by
    one that still stand.

    Each bound is at most the truth once every event has arrived (the charge's figure
    counts a failed refund only until it fails), and the second is the truth when Stripe
    sends refund.created, so a refund that fails is never taken back twice nor given back
    twice. Without refund.created, a new refund on a charge whose earlier refund failed is
    taken back only when an event of that refund itself arrives (docs/stripe.md).
    """
    row = conn.execute(
        "SELECT coalesce(sum(amount_minor) FILTER (WHERE status = ANY(%s)), 0),"
        "       coalesce(sum(amount_minor) FILTER (WHERE status <> ALL(%s)), 0)"
        " FROM stripe_refunds WHERE payment_intent_id = %s",
        (list(VOIDED), list(VOIDED), payment.payment_intent_id)).fetchone()
    assert row is not None
    voided, standing = int(row[0]), int(row[1])
    return max(payment.charge_refunded_minor - voided, standing, 0)


def _disputed_minor(conn: psycopg.Connection, payment: Payment) -> int:
    """The lost disputes in the payment's currency (those recorded before disputes had a
    currency, sql/011_stripe_hygiene.sql, were taken as the payment's). While the payment's
    currency is unknown only those count: nothing is taken back before the credit anyway."""
    row = conn.execute(
        "SELECT coalesce(sum(amount_minor), 0) FROM stripe_disputes"
        " WHERE payment_intent_id = %s AND (currency IS NULL OR currency = %s)",
        (payment.payment_intent_id, payment.currency)).fetchone()
    assert row is not None
    return int(row[0])


def settle(conn: psycopg.Connection, payment: Payment,
           refund: tuple[str, str] | None = None) -> str | None:
    """Bring what the ledger took back to least(credited, refunded + disputed): take back
    what is owed, or give back what a failed or canceled refund (`refund`: its id and
    status) no longer owes.

    Returns 'reversed', 'restored', or None when nothing changed (or nothing can yet,
    before the credit lands). The balance never goes below zero: what a reversal cannot
    take is the payment's shortfall, and a give-back forgives that shortfall first.
    """
    refunded, disputed = _refunded_minor(conn, payment), _disputed_minor(conn, payment)
    if (refunded, disputed) != (payment.refunded_minor, payment.disputed_minor):
        conn.execute("UPDATE stripe_payments SET refunded_minor = %s, disputed_minor = %s,"
                     " updated_at = now() WHERE payment_intent_id = %s",
                     (refunded, disputed, payment.payment_intent_id))
        payment.refunded_minor, payment.disputed_minor = refunded, disputed
    if payment.org_id is None or payment.credited_minor is None or payment.currency is None:
        return None
    owed_minor = (min(payment.credited_minor, payment.refunded_minor + payment.disputed_minor)
                  - payment.reversed_minor)
    if owed_minor > 0:
        _reverse(conn, payment, owed_minor)
        return "reversed"
    if owed_minor < 0:
        _give_back(conn, payment, -owed_minor, refund)
        return "restored"
    return None


def _reverse(conn: psycopg.Connection, payment: Payment, owed_minor: int) -> None:
    """Take back `owed_minor`: what the balance holds, the rest as shortfall."""
    assert payment.org_id is not None and payment.currency is not None
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


def _give_back(conn: psycopg.Connection, payment: Payment, excess_minor: int,
               refund: tuple[str, str] | None) -> None:
    """Undo `excess_minor` of what was taken back. The part never taken (the shortfall) is
    forgiven first; the rest is credited as a `refund` row (credits given back to the
    customer, CONTRACT.md) naming the payment and, in its metadata, the refund
    (`stripe_refund`: the key by which verify-ledger tells these rows from any other
    refund, billing_gateway/ledger/invariants.py)."""
    assert payment.org_id is not None and payment.currency is not None
    excess = money.from_minor_units(excess_minor, payment.currency)
    forgiven = min(payment.shortfall, excess)
    given = excess - forgiven
    if given > 0:
        enter_org(conn, payment.org_id)
        credits.credit(
            conn, payment.org_id, given, type="refund", payment_method="stripe",
            payment_intent_id=payment.payment_intent_id,
            description="Stripe refund failed or was canceled: credits given back",
            created_by=CREATED_BY,
            metadata={"stripe_refund": refund[0] if refund else None,
                      "refund_status": refund[1] if refund else None,
                      "requested": excess, "forgiven_shortfall": forgiven})
        metrics.credited("stripe", "refund", given)
    conn.execute(
        "UPDATE stripe_payments SET reversed_minor = reversed_minor - %s,"
        " shortfall = shortfall - %s, updated_at = now() WHERE payment_intent_id = %s",
        (excess_minor, forgiven, payment.payment_intent_id))
    payment.reversed_minor -= excess_minor
    payment.shortfall -= forgiven


def needs_review(conn: psycopg.Connection) -> list[dict[str, object]]:
    """Lost disputes in another currency than their payment's, not yet marked reviewed,
    newest first: not taken back, for a human to settle (GET /payments/shortfalls,
    reconcile)."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT 'dispute_currency_mismatch' AS kind, d.id AS dispute_id,"
            " d.payment_intent_id, p.org_id, d.amount_minor, d.currency,"
            " p.currency AS payment_currency, d.created_at"
            " FROM stripe_disputes d JOIN stripe_payments p USING (payment_intent_id)"
            " WHERE d.reviewed_at IS NULL AND d.currency <> p.currency"
            " ORDER BY d.created_at DESC").fetchall()


def mark_reviewed(conn: psycopg.Connection, dispute_id: str,
                  reviewer: str) -> dict[str, object] | None:
    """Record that a human settled a dispute in another currency (the first review stands);
    None if no such dispute needs one."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "UPDATE stripe_disputes d SET reviewed_at = coalesce(d.reviewed_at, now()),"
            " reviewed_by = coalesce(d.reviewed_by, %s)"
            " FROM stripe_payments p WHERE d.id = %s"
            " AND p.payment_intent_id = d.payment_intent_id AND d.currency <> p.currency"
            " RETURNING d.id AS dispute_id, d.payment_intent_id, d.reviewed_at, d.reviewed_by",
            (reviewer, dispute_id)).fetchone()


def shortfalls(conn: psycopg.Connection) -> list[dict[str, object]]:
    """Payments whose reversal the balance could not fully cover (for admins)."""
    with conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute(
            "SELECT payment_intent_id, org_id, currency, credited_minor, refunded_minor,"
            " disputed_minor, shortfall, updated_at FROM stripe_payments"
            " WHERE shortfall > 0 ORDER BY updated_at DESC").fetchall()
