"""Fixtures of auto top-up tests: an org with a card saved the way customers save one (a
Checkout payment with saveCard, then its payment_intent.succeeded), and the worker's
connection and Stripe client."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import psycopg
import pytest
import responses
import stripe
from flask.testing import FlaskClient

from billing_gateway.autotopup import attempts
from billing_gateway.platform.config import Settings
from billing_gateway.topups import stripe_client
from tests import stripe_objects as so
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import deliver

STRIPE = "https://api.stripe.com/v1"
AUTO_TOP_UP = "/api/billing/auto-top-up"


@pytest.fixture
def worker_stripe(settings: Settings) -> stripe.StripeClient:
    """The worker's StripeClient (its HTTP stubbed by `stripe_api`)."""
    return stripe_client.make_client(settings)


@pytest.fixture
def run_worker(worker_conn: psycopg.Connection, settings: Settings,
               worker_stripe: stripe.StripeClient) -> Callable[[], list[str]]:
    """Attempt every due auto top-up once, as the worker's loop does; their outcomes."""
    def run() -> list[str]:
        outcomes = []
        while (outcome := attempts.attempt_next(worker_conn, settings, worker_stripe)):
            outcomes.append(outcome)
        return outcomes
    return run


def save_card(client: FlaskClient, auth: TokenFactory, mock: responses.RequestsMock,
              org: uuid.UUID, *, created: int = so.CREATED, last4: str = "4242",
              exp_year: int = 2030) -> dict[str, Any]:
    """Pay a Checkout top-up of 25.00 with saveCard, and deliver its succeeded payment: the
    card is on file. The PaymentIntent."""
    customer = f"cus_{org.hex[:14]}"
    method = so.payment_method(customer=customer, last4=last4, exp_year=exp_year)
    made = {"id": customer, "object": "customer", "metadata": so.ours(org)}
    mock.add(responses.POST, f"{STRIPE}/customers", json=made)
    mock.add(responses.GET, f"{STRIPE}/customers/{customer}", json=made)
    mock.add(responses.POST, f"{STRIPE}/checkout/sessions", json=so.checkout_session(
        org=org, amount_total=2500, status="open", payment_status="unpaid"))
    mock.add(responses.GET, f"{STRIPE}/payment_methods/{method['id']}", json=method)
    answer = client.post("/api/billing/create-checkout", headers={
        **auth("member", org), "Idempotency-Key": f"save-{uuid.uuid4()}"},
        json={"amount": "25.00", "saveCard": True})
    assert answer.status_code == 201, answer.get_json()
    intent = {**so.payment_intent(org=org, amount=2500), "customer": customer,
              "payment_method": method["id"], "setup_future_usage": "off_session",
              "created": created}
    assert deliver(client, so.event("payment_intent.succeeded", intent)).status_code == 200
    return intent


def turn_on(client: FlaskClient, auth: TokenFactory, org: uuid.UUID, threshold: str = "10.00",
            target: str = "50.00") -> dict[str, Any]:
    """PUT enabled with a threshold and a target as the org's member; the answer."""
    answer = client.put(AUTO_TOP_UP, headers=auth("member", org), json={
        "enabled": True, "threshold": threshold, "targetBalance": target})
    assert answer.status_code == 200, answer.get_json()
    return answer.get_json()


def charge(client: FlaskClient, auth: TokenFactory, org: uuid.UUID, amount: str,
           message_id: str | None = None) -> Any:
    """One /deduct by the SMS sender."""
    return client.post("/api/billing/deduct", headers=auth("service"), json={
        "orgId": str(org), "smsCount": 1, "costPerSms": amount,
        "messageId": message_id or str(uuid.uuid4())})


def attempts_of(owner_conn: psycopg.Connection, org: uuid.UUID) -> list[dict[str, Any]]:
    """The org's attempts, oldest first."""
    with owner_conn.cursor(row_factory=psycopg.rows.dict_row) as cur:
        return cur.execute("SELECT * FROM auto_topup_attempts WHERE org_id = %s"
                           " ORDER BY created_at", (org,)).fetchall()


def intents_posted(mock: responses.RequestsMock) -> list[responses.Call]:
    """The PaymentIntent creations sent to Stripe."""
    return [c for c in mock.calls if c.request.method == "POST"
            and c.request.url == f"{STRIPE}/payment_intents"]
