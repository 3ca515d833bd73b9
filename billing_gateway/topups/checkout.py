"""Checkout top-ups asked of Stripe without holding the database while Stripe is waited on.

Three steps, each its own short transaction or none: record the request (`record_request`),
call Stripe (no transaction, no pooled connection), record the session (`record_session`)
or the failure (`record_failure`). A crash between them leaves a 'pending' request that a
retry with the same Idempotency-Key, or `billing-gateway reconcile`, settles
(sql/006_checkout_requests.sql).
"""

from __future__ import annotations

import datetime as dt
import enum
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from billing_gateway.platform.db import require_tenant
from billing_gateway.platform.errors import IdempotencyConflict, ServiceUnavailable

# A pending request older than this is no longer in flight anywhere: a Stripe call lasts
# at most STRIPE_TIMEOUT x (STRIPE_MAX_RETRIES + 1) plus the SDK's backoff, seconds.
STALE_AFTER_SECONDS = 15 * 60


class StripeBusy(ServiceUnavailable):
    """Every slot for waiting on Stripe is taken in this process; retry shortly."""

    def __init__(self, retry_after: int) -> None:
        super().__init__("Too many top-ups are waiting on Stripe; retry in a moment")
        self.retry_after = retry_after


@dataclass(frozen=True)
class TopUpRequest:
    """What one top-up asks Stripe for, recorded before the call."""

    org_id: uuid.UUID
    amount: Decimal
    currency: str
    created_by: str
    stripe_idempotency_key: str
    save_card: bool = False  # save the card to the org's Stripe Customer


class StripeSlots:
    """At most `size` requests of this process wait on Stripe at once.

    Stripe's latency must never take every worker thread: beyond the bound a top-up is
    refused at once (503 with Retry-After), and charges and balance reads keep their threads.
    """

    def __init__(self, size: int, retry_after: int) -> None:
        self._slots = threading.BoundedSemaphore(size)
        # A slot frees when a Stripe call ends: at the latest after about one timeout.
        self.retry_after = retry_after

    @contextmanager
    def try_hold(self) -> Iterator[bool]:
        """Take a slot for the block if one is free; yield whether one was (never waits)."""
        held = self._slots.acquire(blocking=False)
        try:
            yield held
        finally:
            if held:
                self._slots.release()

    def busy(self) -> StripeBusy:
        """The refusal when no slot was free."""
        return StripeBusy(self.retry_after)


def record_request(conn: psycopg.Connection, request: TopUpRequest) -> dt.datetime:
    """Record the request before Stripe is called; a retry with the same key takes up its
    request again (pending, and fresh for reconcile's staleness) unless it was settled.

    The Stripe key does not cover the amount: the same key with another amount would be
    refused by Stripe (400) as a 502, so it is refused here first, as 409. Returns when the
    request was first recorded: the session's expiry is counted from it, so a retry sends
    Stripe the very same parameters (a replayed key with other parameters is refused).
    """
    conn.execute("INSERT INTO organizations (id) VALUES (%s) ON CONFLICT DO NOTHING",
                 (request.org_id,))
    recorded = conn.execute(
        "INSERT INTO checkout_requests"
        " (stripe_idempotency_key, org_id, amount, currency, created_by)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (stripe_idempotency_key) DO UPDATE SET"
        "  status = CASE WHEN checkout_requests.status = 'created' THEN 'created'"
        "                ELSE 'pending' END,"
        "  updated_at = now()"
        " RETURNING org_id, amount, currency, created_by, created_at",
        (request.stripe_idempotency_key, request.org_id, request.amount, request.currency,
         request.created_by)).fetchone()
    if recorded is None or recorded[:4] != (request.org_id, request.amount, request.currency,
                                            request.created_by):
        raise IdempotencyConflict("This Idempotency-Key was already used for another top-up")
    first_recorded: dt.datetime = recorded[4]
    return first_recorded


class CheckoutExpired(IdempotencyConflict):
    """The Checkout Session this request's Idempotency-Key made can no longer be paid."""


def record_session(conn: psycopg.Connection, request: TopUpRequest,
                   session: dict[str, Any]) -> None:
    """Record the session Stripe created, and settle the request with it."""
    expires_at = session.get("expires_at")
    conn.execute(
        "INSERT INTO checkout_sessions (id, org_id, amount, currency, created_by, expires_at)"
        " VALUES (%s, %s, %s, %s, %s, to_timestamp(%s)) ON CONFLICT (id) DO NOTHING",
        (session["id"], request.org_id, request.amount, request.currency, request.created_by,
         expires_at if isinstance(expires_at, int) else None))
    conn.execute(
        "UPDATE checkout_requests SET status = 'created', session_id = %s, error = NULL,"
        " updated_at = now() WHERE stripe_idempotency_key = %s",
        (session["id"], request.stripe_idempotency_key))


def refuse_unpayable(conn: psycopg.Connection, org_id: uuid.UUID, session_id: str) -> None:
    """Raise CheckoutExpired if one of the org's sessions can no longer be paid: expired by
    Stripe (checkout.session.expired) or by its time, or its payment failed. A paid session
    can be shown again; so can one the gateway has no record of (nothing to judge by).

    A replayed answer must not hand out a dead payment page, and a new session under the
    same Idempotency-Key would be a different answer to the same key (CONTRACT.md): the
    caller is told to start a new top-up with a new key instead.
    """
    require_tenant(org_id)
    row = conn.execute(
        "SELECT status, coalesce(expires_at, created_at + interval '24 hours'),"
        "       coalesce(expires_at, created_at + interval '24 hours') <= now()"
        " FROM checkout_sessions WHERE id = %s AND org_id = %s",
        (session_id, org_id)).fetchone()
    if row is None:
        return
    status, expires_at, past = row
    if status == "payment_failed":
        raise CheckoutExpired("The payment of the Checkout Session made for this "
                              "Idempotency-Key failed; start a new top-up with a new "
                              "Idempotency-Key")
    if status == "expired" or (status == "open" and past):
        raise expired(expires_at)


def expired(expires_at: dt.datetime) -> CheckoutExpired:
    """The refusal of a session that expired at `expires_at`."""
    return CheckoutExpired(
        "The Checkout Session made for this Idempotency-Key expired at "
        f"{expires_at.astimezone(dt.UTC):%Y-%m-%dT%H:%M:%SZ} and can no longer be paid; "
        "start a new top-up with a new Idempotency-Key")


def record_failure(conn: psycopg.Connection, request: TopUpRequest, error: str) -> None:
    """Mark a request Stripe refused (a definite answer: no session exists). A request whose
    outcome is unknown (no answer in time, a 5xx) stays pending for a retry or reconcile."""
    conn.execute(
        "UPDATE checkout_requests SET status = 'failed', error = %s, updated_at = now()"
        " WHERE stripe_idempotency_key = %s AND status = 'pending'",
        (error, request.stripe_idempotency_key))


def abandon(conn: psycopg.Connection, request: TopUpRequest) -> None:
    """Mark a pending request that Stripe has no session for (it never reached Stripe)."""
    conn.execute(
        "UPDATE checkout_requests SET status = 'abandoned', updated_at = now()"
        " WHERE stripe_idempotency_key = %s AND status = 'pending'",
        (request.stripe_idempotency_key,))


def pending_requests(conn: psycopg.Connection) -> list[tuple[TopUpRequest, dt.datetime]]:
    """Every org's requests still pending, oldest first, with when each was last sent to
    Stripe (the 'stripe' scope: reconciliation)."""
    rows = conn.execute(
        "SELECT org_id, amount, currency, created_by, stripe_idempotency_key, updated_at"
        " FROM checkout_requests WHERE status = 'pending' ORDER BY updated_at").fetchall()
    return [(TopUpRequest(*row[:5]), row[5]) for row in rows]


class PaymentState(enum.StrEnum):
    """What became of a Checkout Session, as the customer coming back from it sees it."""

    PROCESSING = "processing"  # paid or being paid; the webhook has not credited it yet
    CREDITED = "credited"
    FAILED = "failed"  # expired or the payment failed: nothing was taken
    UNKNOWN = "unknown"  # not a session of this org


@dataclass(frozen=True)
class CheckoutOutcome:
    """A session's state and, once credited, the credit."""

    state: PaymentState
    amount: Decimal | None = None


def outcome(conn: psycopg.Connection, org_id: uuid.UUID, session_id: str) -> CheckoutOutcome:
    """Tell what became of one of the org's Checkout Sessions (in its tenant transaction).

    Credited means the purchase row for the session's PaymentIntent exists: the credit is
    keyed on the PaymentIntent, whichever of Stripe's events arrived first.
    """
    require_tenant(org_id)
    row = conn.execute(
        "SELECT s.status, t.amount FROM checkout_sessions s"
        " LEFT JOIN billing_transactions t ON t.org_id = s.org_id AND t.type = 'purchase'"
        "  AND t.payment_intent_id = s.payment_intent_id"
        " WHERE s.id = %s AND s.org_id = %s", (session_id, org_id)).fetchone()
    if row is None:
        return CheckoutOutcome(PaymentState.UNKNOWN)
    status, credit = row
    if credit is not None:
        return CheckoutOutcome(PaymentState.CREDITED, credit)
    if status in ("expired", "payment_failed"):
        return CheckoutOutcome(PaymentState.FAILED)
    return CheckoutOutcome(PaymentState.PROCESSING)
