"""Auto top-up attempts: the worker charges the saved card off-session; the webhook path
ends the attempt when Stripe says how the payment went.

An attempt is started by SQL, under the org's row lock, in the transaction of the charge
that took the balance below the threshold (sql/functions/70_autotopup.sql). The worker
claims it with FOR UPDATE SKIP LOCKED and keeps that claim while Stripe answers, so a
second worker never sends it twice, and a worker killed mid-call leaves it pending: the
next try sends the same idempotency key (the attempt's id) and Stripe answers with the
same PaymentIntent instead of charging again. Credits come only from the webhook path
(billing_gateway/topups/webhook_events.py), like every payment's.
"""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from dataclasses import dataclass
from decimal import ROUND_CEILING, Decimal

import psycopg
import stripe
from psycopg.rows import class_row

from billing_gateway.platform import metrics, money
from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import autotopup_transaction, enter_org
from billing_gateway.platform.errors import BillingError
from billing_gateway.topups import stripe_client
from billing_gateway.topups.auto_payments import Failure, finish

log = logging.getLogger("billing_gateway.autotopup")

# Stripe 5xx, 429 and timeouts: the same attempt (the same key) is tried again after these
# delays, then recorded as failed. The SDK already retries each call once
# (STRIPE_MAX_RETRIES); these cover an outage of minutes, not of seconds.
RETRY_DELAYS = (dt.timedelta(seconds=10), dt.timedelta(minutes=1), dt.timedelta(minutes=5))
# PaymentIntent statuses after which only the webhook can tell the end: the payment went
# through, or will (https://docs.stripe.com/payments/paymentintents/lifecycle).
SUBMITTED_STATUSES = ("succeeded", "processing", "requires_capture")


@dataclass
class Attempt:
    """An attempt the worker has claimed."""

    id: uuid.UUID
    org_id: uuid.UUID
    amount: Decimal
    customer_id: str
    payment_method_id: str
    tries: int


def charged_amount(amount: Decimal, currency: str) -> Decimal:
    """What to charge for `amount`: rounded up to the currency's minor unit, so the
    balance reaches the target (a balance of 4.9925 recharged to 20.00 is charged 15.01)."""
    step = Decimal(1).scaleb(-money.currency_exponent(currency))
    return amount.quantize(step, rounding=ROUND_CEILING)


def attempt_next(conn: psycopg.Connection, settings: Settings,
                 client: stripe.StripeClient) -> str | None:
    """Claim one due attempt and ask Stripe for its payment; its outcome, or None when
    nothing is due."""
    with autotopup_transaction(conn), conn.cursor(row_factory=class_row(Attempt)) as cur:
        attempt = cur.execute(
            "SELECT id, org_id, amount, customer_id, payment_method_id, tries"
            " FROM auto_topup_attempts WHERE status = 'pending' AND next_try_at <= now()"
            " ORDER BY next_try_at LIMIT 1 FOR UPDATE SKIP LOCKED").fetchone()
        if attempt is None:
            return None
        enter_org(conn, attempt.org_id)
        state = conn.execute("SELECT auto_topup_state FROM organizations WHERE id = %s",
                             (attempt.org_id,)).fetchone()
        if state is None or state[0] != "on":  # turned off, or the card removed, meanwhile
            return finish(conn, attempt.id, "canceled")
        amount = charged_amount(attempt.amount, settings.currency)
        if amount != attempt.amount:
            conn.execute("UPDATE auto_topup_attempts SET amount = %s WHERE id = %s",
                         (amount, attempt.id))
        outcome = _charge(conn, settings, client, attempt, amount)
    # Counted once the outcome is recorded (a try that dies before is tried again).
    metrics.auto_topup_tried(outcome)
    return outcome


def _charge(conn: psycopg.Connection, settings: Settings, client: stripe.StripeClient,
            attempt: Attempt, amount: Decimal) -> str:
    """Create the PaymentIntent (the claim held) and record what Stripe answered."""
    try:
        intent = stripe_client.create_off_session_payment(
            client, settings, attempt.org_id, attempt.id, amount, attempt.customer_id,
            attempt.payment_method_id)
    except stripe.CardError as exc:
        return _fail(conn, attempt, _card_failure(exc))
    except stripe.StripeError as exc:
        error = stripe_client.provider_error(exc)
        # 409: an earlier try of this very key is still running at Stripe (a worker that
        # died mid-call); its answer will be this one's.
        if isinstance(error, stripe_client.StripeOutcomeUnknown) or exc.http_status == 409:
            return _try_again(conn, attempt, error)
        # Refused outright (a detached card, a deleted customer): no webhook will come.
        return _fail(conn, attempt, Failure(exc.code or "rejected", None, _message(error)))
    status = intent.get("status")
    if status not in SUBMITTED_STATUSES:
        left = intent.get("last_payment_error") or {}
        return _fail(conn, attempt, Failure(
            left.get("code") or str(status), left.get("decline_code"),
            left.get("message") or f"Stripe left the payment {status}", intent.get("id")))
    conn.execute(
        "UPDATE auto_topup_attempts SET status = 'submitted', payment_intent_id = %s,"
        " tries = tries + 1, updated_at = now() WHERE id = %s", (intent["id"], attempt.id))
    return "submitted"


def _card_failure(exc: stripe.CardError) -> Failure:
    """A card_error as Stripe sends it: code, decline_code, and the PaymentIntent it left."""
    error = exc.error
    intent = getattr(error, "payment_intent", None) if error is not None else None
    return Failure(exc.code or "card_error", getattr(error, "decline_code", None),
                   exc.user_message or str(exc), getattr(intent, "id", None))


def _message(error: BillingError) -> str:
    return error.message[:500]


def _try_again(conn: psycopg.Connection, attempt: Attempt, error: BillingError) -> str:
    """Stripe could not say (timeout, 5xx, 429): the same attempt again later, with the
    same key, a bounded number of times; then it failed."""
    tries = attempt.tries + 1
    if tries > len(RETRY_DELAYS):
        return _fail(conn, attempt, Failure("stripe_unavailable", None, _message(error)))
    conn.execute(
        "UPDATE auto_topup_attempts SET tries = %s, next_try_at = now() + %s,"
        " failure_message = %s, updated_at = now() WHERE id = %s",
        (tries, RETRY_DELAYS[tries - 1], _message(error), attempt.id))
    return "retry"


def _fail(conn: psycopg.Connection, attempt: Attempt, failure: Failure) -> str:
    log.warning("auto top-up %s of org %s failed: %s (%s)", attempt.id, attempt.org_id,
                failure.code, failure.decline_code or "-")
    conn.execute("UPDATE auto_topup_attempts SET tries = tries + 1 WHERE id = %s",
                 (attempt.id,))
    return finish(conn, attempt.id, "failed", failure)


