"""Start a Checkout top-up for a request: the steps POST /create-checkout and the billing
page share (bounds, the Stripe slot, recording before and after, no transaction held while
Stripe is waited on: billing_gateway.topups.checkout)."""

from __future__ import annotations

import datetime as dt
import hashlib
import time
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
import stripe
from flask import Response, current_app

from billing_gateway.platform import json_codec, money
from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import get_db, release_db, tenant_transaction
from billing_gateway.platform.errors import PaymentProviderError, ValidationFailed
from billing_gateway.topups import checkout, customers, stripe_client


def check_amount(settings: Settings, amount: Decimal) -> None:
    """Refuse a top-up amount outside BILLING_MIN_TOPUP..BILLING_MAX_TOPUP or not in cents."""
    if not settings.min_topup <= amount <= settings.max_topup:
        raise ValidationFailed("Top-up amount out of bounds", fields={"amount": [
            f"Must be between {money.format_number(settings.min_topup)} and "
            f"{money.format_number(settings.max_topup)}."]})
    try:
        money.to_minor_units(amount, settings.currency)
    except money.AmountError as exc:
        raise ValidationFailed("Top-up amount invalid", fields={"amount": [str(exc)]}) from exc


def stripe_idempotency_key(caller: str, org: uuid.UUID, key: str | None,
                           save_card: bool = False) -> str:
    """The key for Stripe's API: the caller's own key (scoped to caller and org, so two
    callers' keys never meet in our Stripe account), else a fresh one per request. Saving
    the card asks Stripe for other parameters, so it is another key."""
    if key is None:
        return f"{stripe_client.SOURCE}-checkout-{uuid.uuid4()}"
    scope = f"{caller}\0{org}\0{key}" + ("\0save-card" if save_card else "")
    digest = hashlib.sha256(scope.encode()).hexdigest()[:40]
    return f"{stripe_client.SOURCE}-checkout-{digest}"


def app_stripe_client(settings: Settings) -> stripe.StripeClient:
    """This app's StripeClient, built once: it keeps its HTTP connections to Stripe."""
    client: stripe.StripeClient | None = current_app.extensions.get("billing_stripe_client")
    if client is None:
        client = stripe_client.make_client(settings)
        current_app.extensions["billing_stripe_client"] = client
    return client


def create_session(
    settings: Settings,
    topup: checkout.TopUpRequest,
    *,
    replay: Callable[[psycopg.Connection], Response | None] | None = None,
) -> dict[str, Any] | Response:
    """Record the request, ask Stripe for the session and return it (or `replay`'s stored
    answer); the caller records the session (checkout.record_session)."""
    client = app_stripe_client(settings)  # 503 before any work when unconfigured
    slots: checkout.StripeSlots = current_app.extensions["billing_stripe_slots"]
    with slots.try_hold() as held:
        with tenant_transaction(get_db(), topup.org_id, topup.created_by) as conn:
            answer = replay(conn) if replay is not None else None  # needs no slot
            if answer is not None:
                return answer
            if not held:
                raise slots.busy()
            requested_at = checkout.record_request(conn, topup)
        release_db()
        try:
            customer = (customers.ensure_customer(client, topup.org_id, topup.created_by)
                        if topup.save_card else None)
            session = stripe_client.create_checkout_session(
                client, settings, topup.org_id, topup.amount, topup.stripe_idempotency_key,
                requested_at=requested_at, customer=customer)
        except stripe_client.StripeOutcomeUnknown:
            raise  # Stripe may have made the session: pending, for a retry or reconcile
        except PaymentProviderError as exc:
            with tenant_transaction(get_db(), topup.org_id, topup.created_by) as conn:
                checkout.record_failure(conn, topup, exc.message)
            raise
        _refuse_if_expired(topup, session)
        return session


def _refuse_if_expired(topup: checkout.TopUpRequest, session: dict[str, Any]) -> None:
    """Stripe answers a repeated idempotency key with its first answer for 24 hours
    (https://docs.stripe.com/api/idempotent_requests), and a session lives one: a retry of
    a request whose answer was never stored (a crash after Stripe) can get back a session
    that has expired since. It is recorded (the request is settled) and refused, as a
    stored answer would be (checkout.refuse_unpayable)."""
    expires_at = session.get("expires_at")
    if isinstance(expires_at, int) and expires_at <= time.time():
        with tenant_transaction(get_db(), topup.org_id, topup.created_by) as conn:
            checkout.record_session(conn, topup, session)
        raise checkout.expired(dt.datetime.fromtimestamp(expires_at, dt.UTC))


def payable_replay(conn: psycopg.Connection, org_id: uuid.UUID,
                   answer: Response | None) -> Response | None:
    """A stored /create-checkout answer, unless its session can no longer be paid (then
    checkout.CheckoutExpired: 409, start a new top-up with a new Idempotency-Key)."""
    if answer is not None and answer.status_code == 201:
        body = json_codec.loads(answer.get_data(as_text=True))
        session_id = body.get("sessionId") if isinstance(body, dict) else None
        if isinstance(session_id, str):
            checkout.refuse_unpayable(conn, org_id, session_id)
    return answer
