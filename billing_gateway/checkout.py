"""Checkout top-ups asked of Stripe without holding the database while Stripe is waited on.

Three steps, each its own short transaction or none: record the request (`record_request`),
call Stripe (no transaction, no pooled connection), record the session (`record_session`)
or the failure (`record_failure`). A crash between them leaves a 'pending' request that a
retry with the same Idempotency-Key, or `billing-gateway reconcile`, settles
(sql/006_checkout_requests.sql).
"""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg

from billing_gateway.errors import ServiceUnavailable

# A pending request older than this is no longer in flight anywhere: a Stripe call lasts
# at most STRIPE_TIMEOUT x (STRIPE_MAX_RETRIES + 1) plus the SDK's backoff, seconds.
STALE_AFTER_SECONDS = 15 * 60


class StripeBusy(ServiceUnavailable):
    """Every slot for waiting on Stripe is taken in this process; retry shortly."""


@dataclass(frozen=True)
class TopUpRequest:
    """What one top-up asks Stripe for, recorded before the call."""

    org_id: uuid.UUID
    amount: Decimal
    currency: str
    created_by: str
    stripe_idempotency_key: str


class StripeSlots:
    """At most `size` requests of this process wait on Stripe at once.

    Stripe's latency must never take every worker thread: beyond the bound a top-up is
    refused at once (503 with Retry-After), and charges and balance reads keep their threads.
    """

    def __init__(self, size: int) -> None:
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def hold(self) -> Iterator[None]:
        """Take a slot for the duration of the block, or raise StripeBusy."""
        if not self._slots.acquire(blocking=False):
            raise StripeBusy("Too many top-ups are waiting on Stripe; retry in a moment")
        try:
            yield
        finally:
            self._slots.release()


def record_request(conn: psycopg.Connection, request: TopUpRequest) -> None:
    """Record the request before Stripe is called (a retry with the same key finds it)."""
    conn.execute("INSERT INTO organizations (id) VALUES (%s) ON CONFLICT DO NOTHING",
                 (request.org_id,))
    conn.execute(
        "INSERT INTO checkout_requests"
        " (stripe_idempotency_key, org_id, amount, currency, created_by)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (stripe_idempotency_key) DO NOTHING",
        (request.stripe_idempotency_key, request.org_id, request.amount, request.currency,
         request.created_by))


def record_session(conn: psycopg.Connection, request: TopUpRequest,
                   session: dict[str, Any]) -> None:
    """Record the session Stripe created, and settle the request with it."""
    conn.execute(
        "INSERT INTO checkout_sessions (id, org_id, amount, currency, created_by)"
        " VALUES (%s, %s, %s, %s, %s) ON CONFLICT (id) DO NOTHING",
        (session["id"], request.org_id, request.amount, request.currency, request.created_by))
    conn.execute(
        "UPDATE checkout_requests SET status = 'created', session_id = %s, error = NULL,"
        " updated_at = now() WHERE stripe_idempotency_key = %s",
        (session["id"], request.stripe_idempotency_key))


def record_failure(conn: psycopg.Connection, request: TopUpRequest, error: str) -> None:
    """Mark a request Stripe refused or did not answer (a later retry may still settle it)."""
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
    """Every org's requests still pending, oldest first, with when each was made
    (the 'stripe' scope: reconciliation)."""
    rows = conn.execute(
        "SELECT org_id, amount, currency, created_by, stripe_idempotency_key, created_at"
        " FROM checkout_requests WHERE status = 'pending' ORDER BY created_at").fetchall()
    return [(TopUpRequest(*row[:5]), row[5]) for row in rows]
