"""Stripe's API as this service uses it: a configured client, Checkout sessions, tags."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from decimal import Decimal
from typing import Any

import stripe
from stripe._base_address import BaseAddresses

from billing_gateway.platform import money
from billing_gateway.platform.config import Settings
from billing_gateway.platform.errors import (
    BillingError,
    IdempotencyConflict,
    PaymentProviderError,
    StripeNotConfigured,
)

# What marks a payment as ours: metadata {"source": SOURCE, "org_id": "<uuid>"} on the
# Checkout Session and on its PaymentIntent, and client_reference_id "billing-gateway:<org>".
SOURCE = "billing-gateway"
PRODUCT_NAME = "SMS credits"
# Session metadata naming the request that created it (checkout_requests).
CHECKOUT_REQUEST_KEY = "checkout_request"
# PaymentIntent metadata naming the auto top-up attempt it pays (auto_topup_attempts).
AUTO_TOPUP_KEY = "auto_topup_attempt"

# The Stripe API version this service speaks, sent as Stripe-Version on every request: the
# version the installed stripe-python (16.1.0) was generated for (stripe.api_version), so
# the SDK's types and Stripe's answers agree. Within one release ("endive") Stripe's monthly
# versions add fields but break nothing, so a later stripe 16.x (pyproject.toml) still
# speaks it; a new SDK major brings a new release, and this pin must move with it, on
# purpose (tests/topups/test_stripe_version.py fails until it does).
# Webhook events are rendered in the version of the webhook endpoint, not this one: create
# the endpoint with this version (docs/stripe.md, "Setting up in test mode").
# https://docs.stripe.com/api/versioning, https://docs.stripe.com/webhooks/versioning
STRIPE_API_VERSION = "2026-10-28.endive"

# How long a Checkout Session takes payments: an hour, not Stripe's default of 24 (30
# minutes to 24 hours are allowed). A customer pays within minutes or not at all, and a
# payment link that works for a day is a day in which a forgotten tab can still pay.
# https://docs.stripe.com/api/checkout/sessions/create#create_checkout_session-expires_at
CHECKOUT_LIFETIME_SECONDS = 3600

log = logging.getLogger("billing_gateway.stripe")


def make_client(settings: Settings) -> stripe.StripeClient:
    """A StripeClient for this deployment's key (never the global stripe.api_key).

    STRIPE_API_BASE points it at a Stripe-compatible server (stripe-mock, a local stub).
    """
    if not settings.stripe_secret_key:
        raise StripeNotConfigured("Stripe is not configured (STRIPE_SECRET_KEY is not set)")
    base: BaseAddresses | None = (
        {"api": settings.stripe_api_base} if settings.stripe_api_base else None)
    # The SDK's own timeout is 80 s; a top-up that Stripe cannot answer in a few seconds
    # should fail fast and be retried by the customer, not hold a thread for minutes.
    http_client = stripe.RequestsClient(timeout=settings.stripe_timeout)
    # The SDK retries network failures and 409/429/5xx itself, with the idempotency key
    # of the first attempt: https://docs.stripe.com/api/idempotent_requests
    return stripe.StripeClient(settings.stripe_secret_key, base_addresses=base,
                               stripe_version=STRIPE_API_VERSION,
                               max_network_retries=settings.stripe_max_retries,
                               http_client=http_client)


def tag(org_id: uuid.UUID) -> dict[str, str]:
    """Metadata that marks a payment as this service's, for this org."""
    return {"source": SOURCE, "org_id": str(org_id)}


def tagged_org(metadata: Any) -> uuid.UUID | None:
    """The org of a payment tagged as ours, or None for anybody else's payment."""
    if not isinstance(metadata, dict) or metadata.get("source") != SOURCE:
        return None
    try:
        return uuid.UUID(str(metadata.get("org_id")))
    except ValueError:
        return None


def create_checkout_session(
    client: stripe.StripeClient, settings: Settings, org_id: uuid.UUID, amount: Decimal,
    idempotency_key: str, *, requested_at: dt.datetime | None = None,
    customer: str | None = None,
) -> dict[str, Any]:
    """Create a one-item Checkout Session in payment mode for `amount` of credits.

    The org is tagged on the session and on its PaymentIntent: Checkout's own metadata
    does not reach the PaymentIntent, and payment_intent.succeeded carries only the latter.
    The session also names the idempotency key of its request, so reconciliation can find
    a session whose creation was never recorded (billing_gateway.topups.checkout). It
    expires CHECKOUT_LIFETIME_SECONDS after `requested_at` (when the request was first
    recorded, so every retry of it sends the same parameters; default: now).
    https://docs.stripe.com/api/checkout/sessions/create
    """
    currency = settings.currency
    params: dict[str, Any] = {
        "mode": "payment",
        "line_items": [{
            "quantity": 1,
            "price_data": {
                "currency": currency,
                "unit_amount": money.to_minor_units(amount, currency),
                "product_data": {"name": PRODUCT_NAME},
            },
        }],
        "success_url": (f"{settings.public_url}/billing?success=true"
                        "&session_id={CHECKOUT_SESSION_ID}"),
        "cancel_url": f"{settings.public_url}/billing?canceled=true",
        "client_reference_id": f"{SOURCE}:{org_id}",
        "metadata": {**tag(org_id), CHECKOUT_REQUEST_KEY: idempotency_key},
        "payment_intent_data": {"metadata": tag(org_id)},
        # From our clock: a few minutes of skew against Stripe's stay well inside the bounds.
        "expires_at": int((requested_at.timestamp() if requested_at is not None
                           else time.time()) + CHECKOUT_LIFETIME_SECONDS),
    }
    if customer is not None:
        # Save the card to the org's Customer for later off-session top-ups.
        # https://docs.stripe.com/payments/checkout/save-during-payment
        params["customer"] = customer
        params["payment_intent_data"]["setup_future_usage"] = "off_session"
    try:
        session = client.v1.checkout.sessions.create(
            params,  # type: ignore[arg-type]  # a plain dict is what the SDK sends
            {"idempotency_key": idempotency_key},
        )
    except stripe.StripeError as exc:
        raise provider_error(exc) from exc
    result: dict[str, Any] = session.to_dict()
    return result


def create_customer(client: stripe.StripeClient, org_id: uuid.UUID,
                    replacing: str | None = None) -> str:
    """Create the org's Stripe Customer, tagged; the key makes a concurrent or repeated
    call answer the same Customer (for Stripe's 24 hours of idempotency). `replacing`: the
    Customer Stripe no longer has, which makes the key another (and still one for racers)."""
    key = f"{SOURCE}-customer-{org_id}" + (f"-after-{replacing}" if replacing else "")
    try:
        customer = client.v1.customers.create({"metadata": tag(org_id)},
                                              {"idempotency_key": key})
    except stripe.StripeError as exc:
        raise provider_error(exc) from exc
    return str(customer.id)


def customer_exists(client: stripe.StripeClient, customer: str) -> bool:
    """Whether Stripe still has the Customer: not deleted, and known to this account (a
    deployment that moved to other keys, or stripe-sim restarted, knows none of the old)."""
    try:
        found = client.v1.customers.retrieve(customer)
    except stripe.InvalidRequestError as exc:
        if exc.http_status == 404 or exc.code == "resource_missing":
            return False
        raise provider_error(exc) from exc
    except stripe.StripeError as exc:
        raise provider_error(exc) from exc
    return not found.to_dict().get("deleted", False)


class StripeOutcomeUnknown(PaymentProviderError):
    """Stripe may or may not have acted: no answer in time, a 5xx, or a throttle."""


def provider_error(exc: stripe.StripeError) -> BillingError:
    """The caller's view of a Stripe failure: Stripe's own message when it answered; when
    it could not be reached, no more than that (the SDK's text names our Stripe host).

    https://docs.stripe.com/error-low-level: 409 is a key still in use by a request in
    progress (a concurrent retry), 429 and 5xx may be retried, other 4xx are final.
    """
    if isinstance(exc, stripe.APIConnectionError):
        log.warning("Stripe not reachable: %s", " ".join(str(exc).split()))  # one log line
        return StripeOutcomeUnknown(
            "Stripe could not be reached in time; nothing was charged, try again")
    if exc.http_status == 409:  # the SDK raises a plain APIError for it
        return IdempotencyConflict(
            "A request with this Idempotency-Key is still in progress; retry in a moment")
    if isinstance(exc, stripe.IdempotencyError):  # 400: the key was sent with other params
        return IdempotencyConflict("This Idempotency-Key was already used for another top-up")
    if isinstance(exc, (stripe.APIError, stripe.RateLimitError)):
        return StripeOutcomeUnknown(f"Stripe: {exc.user_message or exc}")
    return PaymentProviderError(f"Stripe: {exc.user_message or exc}")


def create_off_session_payment(
    client: stripe.StripeClient, settings: Settings, org_id: uuid.UUID, attempt_id: uuid.UUID,
    amount: Decimal, customer: str, payment_method: str,
) -> dict[str, Any]:
    """Charge the saved card for an auto top-up: a PaymentIntent confirmed at once with the
    customer away (off_session), tagged like every payment of ours plus the attempt, so its
    payment_intent.succeeded is credited by the same webhook path. The attempt's id is the
    idempotency key: every try of one attempt, even after a crash, is one PaymentIntent.

    https://docs.stripe.com/payments/save-during-payment#charge-saved-payment-method
    Raises stripe.CardError (declined, authentication_required, expired_card) as it is.
    """
    params: dict[str, Any] = {
        "amount": money.to_minor_units(amount, settings.currency),
        "currency": settings.currency,
        "customer": customer,
        "payment_method": payment_method,
        "off_session": True,
        "confirm": True,
        "description": f"Automatic top-up of {PRODUCT_NAME}",
        "metadata": {**tag(org_id), AUTO_TOPUP_KEY: str(attempt_id)},
    }
    intent = client.v1.payment_intents.create(
        params,  # type: ignore[arg-type]  # a plain dict is what the SDK sends
        {"idempotency_key": str(attempt_id)})
    result: dict[str, Any] = intent.to_dict()
    return result


def retrieve_payment_method(client: stripe.StripeClient, payment_method: str) -> dict[str, Any]:
    """A PaymentMethod as Stripe holds it (its card's brand, last4 and expiry)."""
    try:
        found = client.v1.payment_methods.retrieve(payment_method)
    except stripe.StripeError as exc:
        raise provider_error(exc) from exc
    result: dict[str, Any] = found.to_dict()
    return result


def detach_payment_method(client: stripe.StripeClient, payment_method: str) -> None:
    """Detach a saved card from its Customer: it can never be charged again. One Stripe no
    longer knows, or that is detached already, is as good as detached."""
    try:
        client.v1.payment_methods.detach(payment_method)
    except stripe.InvalidRequestError as exc:
        if exc.code in ("resource_missing", "payment_method_not_attached") or (
                exc.http_status == 400 and "not attached" in str(exc.user_message or "")):
            return
        raise provider_error(exc) from exc
    except stripe.StripeError as exc:
        raise provider_error(exc) from exc
