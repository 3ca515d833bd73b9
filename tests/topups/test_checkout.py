"""POST /create-checkout: a Checkout Session created through Stripe's API (stubbed with
responses), with exactly the parameters a top-up needs."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from urllib.parse import parse_qs

import psycopg
import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient

from billing_gateway import create_app
from billing_gateway.platform.config import Settings
from tests import stripe_objects
from tests.plugins.service import STRIPE_TEST_KEY, TokenFactory

CHECKOUT = "/api/billing/create-checkout"
STRIPE_SESSIONS = "https://api.stripe.com/v1/checkout/sessions"



def _session_reply(mock: responses.RequestsMock, org: uuid.UUID, amount: int,
                   url: str = STRIPE_SESSIONS, status: int = 200) -> dict:
    session = stripe_objects.checkout_session(org=org, amount_total=amount, status="open",
                                              payment_status="unpaid")
    mock.add(responses.POST, url, json=session, status=status)
    return session


def _form(call: responses.Call) -> dict[str, list[str]]:
    return parse_qs(call.request.body)  # type: ignore[arg-type]  # the SDK sends a form


def test_checkout_sends_what_a_top_up_needs(client: FlaskClient, auth: TokenFactory,
                                            stripe_api: responses.RequestsMock, org: uuid.UUID,
                                            owner_conn: psycopg.Connection) -> None:
    session = _session_reply(stripe_api, org, 5000)
    response = client.post(CHECKOUT, headers={**auth("member", org), "Idempotency-Key": "k1"},
                           json={"amount": "50.00"})
    assert response.status_code == 201, response.get_json()
    assert response.get_json() == {"sessionId": session["id"], "url": session["url"]}
    call = stripe_api.calls[0]
    assert call.request.headers["Authorization"] == f"Bearer {STRIPE_TEST_KEY}"
    assert call.request.headers["Idempotency-Key"].startswith("billing-gateway-checkout-")
    form = _form(call)
    # An hour to pay (Stripe's default is 24): test_checkout_expiry.py
    expires_at = int(form.pop("expires_at")[0])
    assert expires_at == pytest.approx(time.time() + 3600, abs=60)
    assert form == {
        "mode": ["payment"],
        "line_items[0][quantity]": ["1"],
        "line_items[0][price_data][currency]": ["usd"],
        "line_items[0][price_data][unit_amount]": ["5000"],
        "line_items[0][price_data][product_data][name]": ["SMS credits"],
        "success_url": ["http://localhost:8000/billing?success=true"
                        "&session_id={CHECKOUT_SESSION_ID}"],
        "cancel_url": ["http://localhost:8000/billing?canceled=true"],
        "client_reference_id": [f"billing-gateway:{org}"],
        "metadata[source]": ["billing-gateway"],
        "metadata[org_id]": [str(org)],
        "metadata[checkout_request]": [call.request.headers["Idempotency-Key"]],
        "payment_intent_data[metadata][source]": ["billing-gateway"],
        "payment_intent_data[metadata][org_id]": [str(org)],
    }
    recorded = owner_conn.execute(
        "SELECT org_id, amount, currency, status, created_by FROM checkout_sessions"
        " WHERE id = %s", (session["id"],)).fetchone()
    assert recorded == (org, Decimal("50.0000"), "usd", "open", "test-member")


def test_same_idempotency_key_replays_and_reuses_stripes_key(
    client: FlaskClient, auth: TokenFactory, stripe_api: responses.RequestsMock, org: uuid.UUID
) -> None:
    _session_reply(stripe_api, org, 1000)
    headers = {**auth("member", org), "Idempotency-Key": "top-up-7"}
    first = client.post(CHECKOUT, headers=headers, json={"amount": 10})
    again = client.post(CHECKOUT, headers=headers, json={"amount": 10})
    assert again.get_data() == first.get_data()
    assert len(stripe_api.calls) == 1  # the replay did not call Stripe again
    other = client.post(CHECKOUT, headers=headers, json={"amount": 11})
    assert other.status_code == 409


def test_without_a_key_each_request_gets_its_own_stripe_key(
    client: FlaskClient, auth: TokenFactory, stripe_api: responses.RequestsMock, org: uuid.UUID
) -> None:
    _session_reply(stripe_api, org, 1000)
    for _ in range(2):
        assert client.post(CHECKOUT, headers=auth("member", org),
                           json={"amount": 10}).status_code == 201
    keys = {call.request.headers["Idempotency-Key"] for call in stripe_api.calls}
    assert len(keys) == 2


@pytest.mark.parametrize("amount", ["4.99", "10000.01", "10.001", "0", "-5", "abc", None])
def test_amount_out_of_bounds_or_not_whole_cents_is_400(
    client: FlaskClient, auth: TokenFactory, stripe_api: responses.RequestsMock,
    org: uuid.UUID, amount: object,
) -> None:
    response = client.post(CHECKOUT, headers=auth("member", org), json={"amount": amount})
    assert response.status_code == 400
    assert "amount" in response.get_json()["error"]["fields"]
    assert len(stripe_api.calls) == 0


@pytest.mark.parametrize("amount", ["5.00", "10000.00"])
def test_bounds_are_inclusive(client: FlaskClient, auth: TokenFactory,
                              stripe_api: responses.RequestsMock, org: uuid.UUID,
                              amount: str) -> None:
    _session_reply(stripe_api, org, int(Decimal(amount) * 100))
    assert client.post(CHECKOUT, headers=auth("member", org),
                       json={"amount": amount}).status_code == 201


def test_service_role_may_not_start_checkouts(client: FlaskClient, auth: TokenFactory,
                                              org: uuid.UUID) -> None:
    assert client.post(CHECKOUT, headers=auth("service"),
                       json={"amount": "10.00", "orgId": str(org)}).status_code == 403


def test_member_cannot_top_up_another_org(client: FlaskClient, auth: TokenFactory,
                                          org: uuid.UUID, other_org: uuid.UUID) -> None:
    response = client.post(CHECKOUT, headers=auth("member", org),
                           json={"amount": "10.00", "orgId": str(other_org)})
    assert response.status_code == 403


def test_admin_names_the_org(client: FlaskClient, auth: TokenFactory,
                             stripe_api: responses.RequestsMock, org: uuid.UUID) -> None:
    _session_reply(stripe_api, org, 2500)
    response = client.post(CHECKOUT, headers=auth("admin"),
                           json={"amount": "25.00", "orgId": str(org)})
    assert response.status_code == 201
    assert _form(stripe_api.calls[0])["metadata[org_id]"] == [str(org)]


def test_stripe_error_is_502_with_stripes_message(client: FlaskClient, auth: TokenFactory,
                                                  stripe_api: responses.RequestsMock,
                                                  org: uuid.UUID,
                                                  owner_conn: psycopg.Connection) -> None:
    stripe_api.add(responses.POST, STRIPE_SESSIONS, status=400, json={"error": {
        "type": "invalid_request_error", "code": "amount_too_large", "param": "line_items",
        "message": "Amount must be no more than $999,999.99",
        "doc_url": "https://docs.stripe.com/error-codes/amount-too-large"}})
    response = client.post(CHECKOUT, headers=auth("member", org), json={"amount": "10.00"})
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["code"] == "payment_provider_error"
    assert "Amount must be no more than $999,999.99" in error["message"]
    assert owner_conn.execute("SELECT count(*) FROM checkout_sessions").fetchone() == (0,)


def test_without_a_stripe_key_it_is_503(settings: Settings, auth: TokenFactory,
                                        org: uuid.UUID) -> None:
    app = create_app(settings.with_overrides(stripe_secret_key=None))
    try:
        response = app.test_client().post(CHECKOUT, headers=auth("member", org),
                                          json={"amount": "10.00"})
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "stripe_not_configured"
    finally:
        app.extensions["billing_pool"].close()


def test_stripe_api_base_is_honoured(settings: Settings, auth: TokenFactory,
                                     stripe_api: responses.RequestsMock,
                                     org: uuid.UUID) -> None:
    base = "http://127.0.0.1:12111"  # where stripe-mock listens, say
    _session_reply(stripe_api, org, 1000, url=f"{base}/v1/checkout/sessions")
    app: Flask = create_app(settings.with_overrides(stripe_api_base=base))
    try:
        response = app.test_client().post(CHECKOUT, headers=auth("member", org),
                                          json={"amount": "10.00"})
        assert response.status_code == 201
        assert stripe_api.calls[0].request.url.startswith(base)
    finally:
        app.extensions["billing_pool"].close()
