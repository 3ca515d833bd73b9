"""POST /create-checkout with "saveCard": the org's one Stripe Customer (made once, even
when two checkouts race) and a session that saves the card for off-session top-ups."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import parse_qs

import psycopg
import responses
from flask import Flask

from billing_gateway.topups import start
from tests import stripe_objects
from tests.plugins.service import TokenFactory

CHECKOUT = "/api/billing/create-checkout"
STRIPE_SESSIONS = "https://api.stripe.com/v1/checkout/sessions"
STRIPE_CUSTOMERS = "https://api.stripe.com/v1/customers"


def _stub(mock: responses.RequestsMock, org: uuid.UUID, customer: str = "cus_Sim0001") -> None:
    made = {"id": customer, "object": "customer", "metadata": {
        "source": "billing-gateway", "org_id": str(org)}}
    mock.add(responses.POST, STRIPE_CUSTOMERS, json=made)
    mock.add(responses.GET, f"{STRIPE_CUSTOMERS}/{customer}", json=made)
    mock.add(responses.POST, STRIPE_SESSIONS, json=stripe_objects.checkout_session(
        org=org, amount_total=2500, status="open", payment_status="unpaid"))


def _form(call: responses.Call) -> dict[str, list[str]]:
    return parse_qs(call.request.body)  # type: ignore[arg-type]  # the SDK sends a form


def _calls(mock: responses.RequestsMock, url: str) -> list[responses.Call]:
    return [call for call in mock.calls if call.request.url == url]


def test_save_card_makes_the_orgs_customer_once_and_asks_to_save_the_card(
        app: Flask, auth: TokenFactory, org: uuid.UUID, stripe_api: responses.RequestsMock,
        owner_conn: psycopg.Connection) -> None:
    _stub(stripe_api, org)
    for key in ("first", "second"):
        answer = app.test_client().post(
            CHECKOUT, headers={**auth("member", org), "Idempotency-Key": key},
            json={"amount": "25.00", "saveCard": True})
        assert answer.status_code == 201, answer.get_json()
    [made] = _calls(stripe_api, STRIPE_CUSTOMERS)  # the second checkout reused it
    assert made.request.headers["Idempotency-Key"] == f"billing-gateway-customer-{org}"
    assert _form(made) == {"metadata[source]": ["billing-gateway"], "metadata[org_id]": [str(org)]}
    for session in _calls(stripe_api, STRIPE_SESSIONS):
        form = _form(session)
        assert form["customer"] == ["cus_Sim0001"]
        assert form["payment_intent_data[setup_future_usage]"] == ["off_session"]
    assert owner_conn.execute("SELECT customer_id FROM stripe_customers WHERE org_id = %s",
                              (org,)).fetchall() == [("cus_Sim0001",)]


def test_without_save_card_no_customer_is_made(
        app: Flask, auth: TokenFactory, org: uuid.UUID, stripe_api: responses.RequestsMock,
        owner_conn: psycopg.Connection) -> None:
    _stub(stripe_api, org)
    answer = app.test_client().post(CHECKOUT, headers=auth("member", org),
                                    json={"amount": "25.00"})
    assert answer.status_code == 201
    assert _calls(stripe_api, STRIPE_CUSTOMERS) == []
    form = _form(_calls(stripe_api, STRIPE_SESSIONS)[0])
    assert "customer" not in form and "payment_intent_data[setup_future_usage]" not in form
    assert owner_conn.execute("SELECT count(*) FROM stripe_customers").fetchone() == (0,)


def test_two_checkouts_racing_leave_one_customer(
        app: Flask, auth: TokenFactory, org: uuid.UUID, stripe_api: responses.RequestsMock,
        owner_conn: psycopg.Connection) -> None:
    _stub(stripe_api, org)

    def checkout(key: str) -> int:
        return app.test_client().post(
            CHECKOUT, headers={**auth("member", org), "Idempotency-Key": key},
            json={"amount": "25.00", "saveCard": True}).status_code

    # Two at once: BILLING_STRIPE_CONCURRENCY's default lets two wait on Stripe.
    with ThreadPoolExecutor(2) as pool:
        assert list(pool.map(checkout, ["a", "b"])) == [201, 201]
    # Every create that reached Stripe named the same key: Stripe makes one Customer.
    keys = {call.request.headers["Idempotency-Key"]
            for call in _calls(stripe_api, STRIPE_CUSTOMERS)}
    assert keys == {f"billing-gateway-customer-{org}"}
    assert owner_conn.execute("SELECT count(*) FROM stripe_customers WHERE org_id = %s",
                              (org,)).fetchone() == (1,)


def test_saving_the_card_is_another_stripe_request_for_the_same_key() -> None:
    """Stripe refuses one key with other parameters: saving the card gets its own key."""
    org = uuid.uuid4()
    plain = start.stripe_idempotency_key("member-1", org, "k1")
    saving = start.stripe_idempotency_key("member-1", org, "k1", save_card=True)
    assert plain != saving
    assert plain == start.stripe_idempotency_key("member-1", org, "k1", save_card=False)
    assert saving == start.stripe_idempotency_key("member-1", org, "k1", save_card=True)


def test_save_card_is_true_or_false_only(app: Flask, auth: TokenFactory, org: uuid.UUID,
                                         stripe_api: responses.RequestsMock) -> None:
    for value in (0, 1, "yes", "true", None):
        answer = app.test_client().post(CHECKOUT, headers=auth("member", org),
                                        json={"amount": "25.00", "saveCard": value})
        assert answer.status_code == 400, value
        assert "saveCard" in answer.get_json()["error"]["fields"]
    assert len(stripe_api.calls) == 0


def test_a_customer_stripe_no_longer_has_is_replaced_once(
        app: Flask, auth: TokenFactory, org: uuid.UUID, stripe_api: responses.RequestsMock,
        owner_conn: psycopg.Connection) -> None:
    _stub(stripe_api, org, customer="cus_Old")
    first = app.test_client().post(CHECKOUT, headers=auth("member", org),
                                   json={"amount": "25.00", "saveCard": True})
    assert first.status_code == 201
    # Stripe deleted it (or the deployment now has another account's keys).
    stripe_api.replace(responses.GET, f"{STRIPE_CUSTOMERS}/cus_Old", status=404, json={
        "error": {"type": "invalid_request_error", "code": "resource_missing",
                  "param": "id", "message": "No such customer: 'cus_Old'"}})
    stripe_api.replace(responses.POST, STRIPE_CUSTOMERS, json={
        "id": "cus_New", "object": "customer", "metadata": {
            "source": "billing-gateway", "org_id": str(org)}})
    again = app.test_client().post(CHECKOUT, headers=auth("member", org),
                                   json={"amount": "25.00", "saveCard": True})
    assert again.status_code == 201, again.get_json()
    made = _calls(stripe_api, STRIPE_CUSTOMERS)
    assert [c.request.headers["Idempotency-Key"] for c in made] == [
        f"billing-gateway-customer-{org}", f"billing-gateway-customer-{org}-after-cus_Old"]
    assert _form(_calls(stripe_api, STRIPE_SESSIONS)[-1])["customer"] == ["cus_New"]
    assert owner_conn.execute("SELECT customer_id FROM stripe_customers WHERE org_id = %s",
                              (org,)).fetchall() == [("cus_New",)]
