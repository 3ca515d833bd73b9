"""Payments of auto top-ups as Stripe's webhook path sees them: which attempt a
PaymentIntent pays, and ending that attempt (sql finish_auto_topup). The worker that makes
these payments is billing_gateway/autotopup/attempts.py; docs/autotopup.md."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import psycopg

from billing_gateway.topups import stripe_client


@dataclass
class Failure:
    """Why Stripe did not take an attempt's payment, in Stripe's words."""

    code: str
    decline_code: str | None
    message: str
    payment_intent_id: str | None = None


def attempt_of(metadata: Any) -> uuid.UUID | None:
    """The auto top-up attempt a PaymentIntent of ours pays, if it is one."""
    if not isinstance(metadata, dict) or not stripe_client.tagged_org(metadata):
        return None
    try:
        return uuid.UUID(str(metadata.get(stripe_client.AUTO_TOPUP_KEY)))
    except ValueError:
        return None


def lock(conn: psycopg.Connection, attempt_id: uuid.UUID) -> bool:
    """Lock an attempt's row (in its org's scope) before its payment's credit takes the org's
    row: the order the worker takes them in. False if the org has no such attempt."""
    return conn.execute("SELECT 1 FROM auto_topup_attempts WHERE id = %s FOR UPDATE",
                        (attempt_id,)).fetchone() is not None


def finish(conn: psycopg.Connection, attempt_id: uuid.UUID, status: str,
           failure: Failure | None = None, payment_intent_id: str | None = None) -> str:
    """End an attempt (sql finish_auto_topup): its status, or 'already_<status>'."""
    row = conn.execute(
        "SELECT finish_auto_topup(%s, %s, %s, %s, %s, %s)",
        (attempt_id, status,
         payment_intent_id or (failure.payment_intent_id if failure else None),
         failure.code if failure else None, failure.decline_code if failure else None,
         failure.message[:500] if failure else None)).fetchone()
    assert row is not None
    return str(row[0])


def failure_of_intent(intent: dict[str, Any]) -> Failure:
    """The failure a payment_intent.payment_failed event reports."""
    error = intent.get("last_payment_error") or {}
    return Failure(error.get("code") or "payment_failed", error.get("decline_code"),
                   error.get("message") or "The payment failed", intent.get("id"))
