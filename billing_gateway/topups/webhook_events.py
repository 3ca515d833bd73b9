"""Stripe webhook events: verified over the raw body, stored once, processed once.

An event is claimed (stored) and processed in one database transaction with its ledger
effect: it is either fully applied and marked processed, or not applied at all. A failure
rolls back, is recorded on the event (processed_at NULL, error), and answers 500 so that
Stripe retries; the retry, or `billing-gateway reconcile`, processes it then, once.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import psycopg
import stripe
from psycopg.types.json import Jsonb

from billing_gateway.platform.db import enter_org, stripe_transaction
from billing_gateway.platform.errors import StripeNotConfigured, ValidationFailed
from billing_gateway.topups import auto_payments, payments, saved_cards
from billing_gateway.topups.stripe_client import STRIPE_API_VERSION, tagged_org

log = logging.getLogger("billing_gateway.stripe")

# Stripe's default: a signature older than 5 minutes is refused (replay protection).
# https://docs.stripe.com/webhooks#verify-official-libraries
TOLERANCE_SECONDS = 300

# The events that change the ledger or a recorded session; docs/stripe.md lists them.
HANDLED_EVENTS = (
    "payment_intent.succeeded",
    "payment_intent.payment_failed",
    "checkout.session.completed",
    "checkout.session.async_payment_succeeded",
    "checkout.session.async_payment_failed",
    "checkout.session.expired",
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refund.updated",
    "charge.dispute.closed",
)

# Events whose object is a Refund: each is applied by the refund's id and status, so the
# same change delivered by two of them (refund.failed and refund.updated both announce a
# failure) is applied once. https://docs.stripe.com/api/events/types
REFUND_EVENTS = ("refund.created", "refund.updated", "refund.failed", "charge.refund.updated")


def verify(raw_body: bytes, signature: str | None, secrets: tuple[str, ...]) -> dict[str, Any]:
    """Check the Stripe-Signature header against each secret; return the parsed event.

    Several secrets are accepted during a rotation. The HMAC covers the exact bytes
    received, so nothing may parse or re-encode the body before this.
    """
    if not secrets:
        raise StripeNotConfigured("Webhook secret not configured (STRIPE_WEBHOOK_SECRET)")
    if not signature:
        raise ValidationFailed("Missing Stripe-Signature header")
    for secret in secrets:
        try:
            stripe.WebhookSignature.verify_header(raw_body, signature, secret,
                                                  tolerance=TOLERANCE_SECONDS)
            break
        except (stripe.SignatureVerificationError, UnicodeDecodeError, ValueError):
            continue
    else:
        raise ValidationFailed("Stripe-Signature does not match the body for any webhook secret")
    try:
        event = json.loads(raw_body)
        if not (isinstance(event, dict) and isinstance(event.get("id"), str)
                and isinstance(event.get("type"), str)
                and isinstance(event.get("data", {}).get("object"), dict)):
            raise ValueError("not a Stripe event object")
    except (ValueError, AttributeError, RecursionError) as exc:
        raise ValidationFailed(f"The body is not a Stripe event: {exc}") from exc
    _check_api_version(event)
    return event


def _release(version: str) -> str:
    """The release of an API version: 'endive' of '2026-10-28.endive' ('' before acacia)."""
    return version.partition(".")[2]


def _check_api_version(event: dict[str, Any]) -> None:
    """Warn when an event is rendered in another API release than the one the service
    speaks: its objects may lack fields or carry values of another release (a Checkout
    Session's ui_mode was `hosted` before dahlia). Stripe renders an event in the webhook
    endpoint's API version (https://docs.stripe.com/webhooks/versioning), so the fix is the
    endpoint's setting (docs/stripe.md). The event is still processed: the fields the
    gateway reads (ids, amounts, currency, status, metadata) are long-standing ones, and
    refusing it would only pile up Stripe's retries until someone reads this line."""
    version = event.get("api_version")
    if isinstance(version, str) and _release(version) != _release(STRIPE_API_VERSION):
        log.warning("stripe event %s is rendered in API version %s, not %s: set the webhook "
                    "endpoint's API version to %s", event["id"], version, STRIPE_API_VERSION,
                    STRIPE_API_VERSION)


def _claim(conn: psycopg.Connection, event: dict[str, Any]) -> bool:
    """Store the event, or take up an earlier failed attempt; False if already processed.

    A concurrent delivery of the same event waits on the first one's row until it commits
    (then sees it processed) or rolls back (then claims it itself).
    """
    claimed = conn.execute(
        "INSERT INTO stripe_events (id, type, payload) VALUES (%s, %s, %s)"
        " ON CONFLICT (id) DO UPDATE SET attempts = stripe_events.attempts + 1"
        " WHERE stripe_events.processed_at IS NULL RETURNING 1",
        (event["id"], event["type"], Jsonb(event)),
    ).fetchone()
    return claimed is not None


def _minor_units(obj: dict[str, Any], field: str) -> int:
    """A Stripe amount: an integer of minor units. Anything else fails the event (stored,
    retried, reported by reconcile) rather than being truncated into a credit."""
    value = obj[field]
    if not isinstance(value, int) or isinstance(value, bool):
        raise ValueError(f"{field} is not an integer amount: {value!r}")
    return value


def _payment_intent_id(value: Any) -> str | None:
    """A PaymentIntent reference: an id, or an expanded object."""
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def _update_session(conn: psycopg.Connection, session: dict[str, Any], status: str) -> None:
    org = tagged_org(session.get("metadata"))
    if org is None:
        return
    enter_org(conn, org)
    conn.execute(
        "UPDATE checkout_sessions SET status = %s, payment_status = %s,"
        " payment_intent_id = coalesce(%s, payment_intent_id), updated_at = now()"
        " WHERE id = %s",
        (status, session.get("payment_status"), _payment_intent_id(session.get("payment_intent")),
         session["id"]))


def credit_intent(conn: psycopg.Connection, intent: dict[str, Any], settlement_currency: str,
                  origin: str, card: saved_cards.SavedCard | None = None) -> str:
    """Credit a succeeded PaymentIntent of ours once (the event, or reconcile finding it);
    end the auto top-up it pays, and keep the card it saved."""
    org = tagged_org(intent.get("metadata"))
    if org is None:
        return "ignored_not_ours"
    attempt = auto_payments.attempt_of(intent.get("metadata"))
    if attempt is not None:  # before the credit locks the org (auto_payments.lock)
        enter_org(conn, org)
        auto_payments.lock(conn, attempt)
    outcome = payments.credit_payment(
        conn, intent["id"], org, _minor_units(intent, "amount_received"), intent["currency"],
        settlement_currency=settlement_currency, origin=origin)
    if outcome in ("credited", "duplicate"):
        enter_org(conn, org)
        if attempt is not None:
            auto_payments.finish(conn, attempt, "succeeded", payment_intent_id=intent["id"])
        if card is not None:
            saved_cards.record(conn, org, card)
    return outcome


def apply(conn: psycopg.Connection, event: dict[str, Any], settlement_currency: str,
          card: saved_cards.SavedCard | None = None) -> tuple[str, str | None]:
    """Apply one event's effect; return its outcome and the PaymentIntent it concerns.
    `card`: the card the payment saved (saved_cards.card_to_save, read before the transaction)."""
    kind, obj = event["type"], event["data"]["object"]
    if kind == "payment_intent.succeeded":
        return credit_intent(conn, obj, settlement_currency, event["id"], card), obj.get("id")
    if kind == "payment_intent.payment_failed":
        org = tagged_org(obj.get("metadata"))
        attempt = auto_payments.attempt_of(obj.get("metadata"))
        if org is None or attempt is None:  # Checkout shows its own failures to the payer
            return "ignored_not_auto_topup", obj.get("id")
        enter_org(conn, org)
        ended = auto_payments.finish(conn, attempt, "failed", auto_payments.failure_of_intent(obj))
        return f"auto_topup_{ended}", obj.get("id")
    if kind in ("checkout.session.completed", "checkout.session.async_payment_succeeded"):
        org = tagged_org(obj.get("metadata"))
        intent = _payment_intent_id(obj.get("payment_intent"))
        if org is None:
            return "ignored_not_ours", intent
        _update_session(conn, obj, "complete")
        if obj.get("payment_status") != "paid" or intent is None:
            return "awaiting_payment", intent
        return payments.credit_payment(
            conn, intent, org, _minor_units(obj, "amount_total"), obj["currency"],
            settlement_currency=settlement_currency, origin=event["id"]), intent
    if kind in ("checkout.session.async_payment_failed", "checkout.session.expired"):
        _update_session(conn, obj, "expired" if kind.endswith("expired") else "payment_failed")
        return "session_updated", _payment_intent_id(obj.get("payment_intent"))
    if kind == "charge.refunded":
        intent = _payment_intent_id(obj.get("payment_intent"))
        if intent is None:
            return "ignored_no_payment_intent", None
        return payments.record_refund(conn, intent, _minor_units(obj, "amount_refunded")), intent
    if kind in REFUND_EVENTS:
        intent = _payment_intent_id(obj.get("payment_intent"))
        if intent is None:
            return "ignored_no_payment_intent", None
        status = obj.get("status")
        return payments.record_refund_object(
            conn, obj["id"], intent, _minor_units(obj, "amount"),
            status if isinstance(status, str) else None), intent
    if kind == "charge.dispute.closed":
        intent = _payment_intent_id(obj.get("payment_intent"))
        if obj.get("status") != "lost" or intent is None:
            return f"dispute_{obj.get('status')}", intent
        outcome = payments.record_lost_dispute(conn, obj["id"], intent,
                                               _minor_units(obj, "amount"), obj["currency"])
        return outcome, intent
    return "ignored_event_type", None


def process(conn: psycopg.Connection, event: dict[str, Any], settlement_currency: str,
            card: saved_cards.SavedCard | None = None) -> str:
    """Store and apply an event in one transaction; 'duplicate' if it was processed before.

    On failure the transaction rolls back, the failure is recorded, and the error is
    raised again (the webhook answers 500).
    """
    try:
        with stripe_transaction(conn):
            if not _claim(conn, event):
                return "duplicate"
            outcome, intent = apply(conn, event, settlement_currency, card)
            conn.execute(
                "UPDATE stripe_events SET processed_at = now(), outcome = %s, error = NULL,"
                " payment_intent_id = %s WHERE id = %s", (outcome, intent, event["id"]))
            return outcome
    except Exception as exc:
        _record_failure(conn, event, exc)
        raise


def _record_failure(conn: psycopg.Connection, event: dict[str, Any], exc: Exception) -> None:
    """Keep the failed event and its error for the retry and for reconcile (best effort)."""
    log.error("stripe event %s (%s) failed: %s", event.get("id"), event.get("type"), exc)
    try:
        with stripe_transaction(conn):
            conn.execute(
                "INSERT INTO stripe_events (id, type, payload, outcome, error)"
                " VALUES (%s, %s, %s, 'failed', %s)"
                " ON CONFLICT (id) DO UPDATE SET outcome = 'failed', error = excluded.error"
                " WHERE stripe_events.processed_at IS NULL",
                (event["id"], event["type"], Jsonb(event),
                 f"{type(exc).__name__}: {exc}"[:2000]))
    except Exception:  # the database itself may be what failed
        log.exception("could not record the failure of stripe event %s", event.get("id"))


def unprocessed(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Stored events whose processing failed, oldest first (their payloads)."""
    with stripe_transaction(conn):
        rows = conn.execute("SELECT payload FROM stripe_events WHERE processed_at IS NULL"
                            " ORDER BY received_at").fetchall()
    return [row[0] for row in rows]
