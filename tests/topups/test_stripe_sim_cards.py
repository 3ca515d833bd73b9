"""stripe-sim's saved cards and off-session charges, driven by the official SDK as the gateway
drives Stripe (make_client pointed at it by STRIPE_API_BASE): Customers, a card saved by
Checkout, off-session PaymentIntents under Idempotency-Keys, the charge script's failures in
Stripe's shapes, and the signed events, verified as the gateway verifies them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import requests
import stripe

from billing_gateway import create_app
from billing_gateway.platform.config import Settings
from billing_gateway.platform.local_server import LocalServer
from billing_gateway.topups import stripe_client, stripe_sim
from tests.plugins.receiver import Receiver
from tests.plugins.webhooks import balance

SIM_SECRET = "whsec_sim_cards_0123456789abcdef"  # a throwaway test secret
TAG = {"source": "billing-gateway", "org_id": "7d4c3e8a-0000-4000-8000-000000000001"}


@dataclass
class Sim:
    """A stripe-sim on a local port, a StripeClient pointed at it, and its webhook receiver."""

    url: str
    state: stripe_sim.StripeSim
    client: stripe.StripeClient
    hooks: Receiver

    def client_waiting(self, seconds: float) -> stripe.StripeClient:
        """A client that gives up after `seconds`, as STRIPE_TIMEOUT makes the gateway's."""
        return _client(self.url, seconds)

    def script(self, **body: Any) -> requests.Response:
        """POST /sim/next-charge."""
        return requests.post(f"{self.url}/sim/next-charge", json=body, timeout=10)

    def events(self, count: int) -> list[stripe.Event]:
        """The first `count` events delivered, each verified against the sim's secret."""
        return [stripe.Webhook.construct_event(r.body.decode(), r.headers["Stripe-Signature"],
                                               SIM_SECRET)
                for r in self.hooks.wait_for(count)]

    def no_more_events_than(self, count: int) -> None:
        """Fail if more than `count` events arrive (events follow answers, so wait a little)."""
        time.sleep(0.5)
        assert len(self.hooks.received) == count


def _client(url: str, timeout: float = 10.0) -> stripe.StripeClient:
    # No retries: each test sees what one request got (the SDK's retries are Stripe's own).
    return stripe_client.make_client(Settings(
        stripe_secret_key="sk_test_sim", stripe_api_base=url, stripe_timeout=timeout,
        stripe_max_retries=0))


@pytest.fixture
def sim(receiver: Receiver) -> Iterator[Sim]:
    server = LocalServer()
    state = stripe_sim.StripeSim(server.url, receiver.url, SIM_SECRET)
    server.serve(state.app())
    try:
        yield Sim(server.url, state, _client(server.url), receiver)
    finally:
        server.stop()


def _checkout(sim: Sim, **extra: Any) -> stripe.checkout.Session:
    return sim.client.v1.checkout.sessions.create({
        "mode": "payment",
        "line_items": [{"quantity": 1, "price_data": {
            "currency": "usd", "unit_amount": 2500, "product_data": {"name": "SMS credits"}}}],
        "success_url": "http://gateway.test/billing?success=true",
        "cancel_url": "http://gateway.test/billing?canceled=true",
        "payment_intent_data": {"metadata": TAG, **extra.pop("payment_intent_data", {})},
        **extra})


def _pay(session: stripe.checkout.Session) -> None:
    paid = requests.post(f"{session.url}/pay", allow_redirects=False, timeout=10)
    assert paid.status_code == 303


def _saved_card(sim: Sim) -> tuple[str, str]:
    """A Customer with a card saved through Checkout: (customer id, payment method id)."""
    customer = sim.client.v1.customers.create({"metadata": TAG})
    session = _checkout(sim, customer=customer.id,
                        payment_intent_data={"setup_future_usage": "off_session"})
    _pay(session)
    intent = sim.client.v1.payment_intents.retrieve(
        str(sim.client.v1.checkout.sessions.retrieve(session.id).payment_intent))
    sim.hooks.received.clear()  # Checkout's own two events were delivered before "Pay" ended
    return customer.id, str(intent.payment_method)


def _charge(client: stripe.StripeClient, customer: str, card: str, key: str,
            amount: int = 1500) -> stripe.PaymentIntent:
    return client.v1.payment_intents.create({
        "amount": amount, "currency": "usd", "customer": customer, "payment_method": card,
        "off_session": True, "confirm": True, "metadata": TAG}, {"idempotency_key": key})


def test_a_customer_keeps_its_metadata(sim: Sim) -> None:
    created = sim.client.v1.customers.create({"email": "ops@example.com", "metadata": TAG})
    found = sim.client.v1.customers.retrieve(created.id)
    assert found.id.startswith("cus_") and found.object == "customer"
    assert found.metadata.to_dict() == TAG and found.email == "ops@example.com"
    assert found.invoice_settings.default_payment_method is None


def test_the_same_idempotency_key_gets_the_same_customer(sim: Sim) -> None:
    first = sim.client.v1.customers.create({"metadata": TAG}, {"idempotency_key": "cus-1"})
    again = sim.client.v1.customers.create({"metadata": TAG}, {"idempotency_key": "cus-1"})
    other = sim.client.v1.customers.create({"metadata": TAG}, {"idempotency_key": "cus-2"})
    assert again.id == first.id != other.id
    assert len(sim.state.customers) == 2


def test_an_idempotency_key_with_other_parameters_is_refused(sim: Sim) -> None:
    sim.client.v1.customers.create({"metadata": TAG}, {"idempotency_key": "cus-1"})
    with pytest.raises(stripe.IdempotencyError) as refused:
        sim.client.v1.customers.create({"email": "x@example.com"},
                                       {"idempotency_key": "cus-1"})
    assert refused.value.http_status == 400
    assert len(sim.state.customers) == 1


def test_an_unknown_customer_is_resource_missing(sim: Sim) -> None:
    with pytest.raises(stripe.InvalidRequestError) as missing:
        sim.client.v1.customers.retrieve("cus_nobody")
    assert (missing.value.http_status, missing.value.code) == (404, "resource_missing")


def test_a_customer_update_merges_metadata_and_sets_the_default_card(sim: Sim) -> None:
    customer, card = _saved_card(sim)
    updated = sim.client.v1.customers.update(customer, {
        "metadata": {"org_id": "", "plan": "pro"},
        "invoice_settings": {"default_payment_method": card}})
    assert updated.metadata.to_dict() == {"source": "billing-gateway", "plan": "pro"}
    assert updated.invoice_settings.default_payment_method == card
    sim.client.v1.payment_methods.detach(card)
    found = sim.client.v1.customers.retrieve(customer)
    assert found.invoice_settings.default_payment_method is None


def test_paying_a_session_that_saves_the_card_attaches_it_to_the_customer(sim: Sim) -> None:
    customer = sim.client.v1.customers.create({"metadata": TAG})
    session = _checkout(sim, customer=customer.id,
                        payment_intent_data={"setup_future_usage": "off_session"})
    assert "saves it" in requests.get(str(session.url), timeout=10).text
    _pay(session)

    completed, succeeded = sim.events(2)
    assert completed.type == "checkout.session.completed"
    assert completed.data.object["customer"] == customer.id
    assert succeeded.type == "payment_intent.succeeded"
    intent = succeeded.data.object
    assert intent["id"] == completed.data.object["payment_intent"]
    assert (intent["customer"], intent["setup_future_usage"]) == (customer.id, "off_session")
    assert intent["payment_method"].startswith("pm_")

    card = sim.client.v1.payment_methods.retrieve(intent["payment_method"])
    assert (card.type, card.customer) == ("card", customer.id)
    assert (card.card.brand, card.card.last4, card.card.exp_month) == ("visa", "4242", 12)
    assert card.card.exp_year > time.gmtime().tm_year
    saved = sim.client.v1.customers.payment_methods.list(customer.id, {"type": "card"})
    assert [m.id for m in saved.data] == [card.id]


def test_a_session_that_saves_a_card_without_a_customer_makes_one(sim: Sim) -> None:
    session = _checkout(sim, payment_intent_data={"setup_future_usage": "off_session"})
    _pay(session)
    paid = sim.client.v1.checkout.sessions.retrieve(session.id)
    assert paid.customer is not None and paid.customer.startswith("cus_")
    intent = sim.client.v1.payment_intents.retrieve(str(paid.payment_intent))
    card = sim.client.v1.payment_methods.retrieve(str(intent.payment_method))
    assert card.customer == paid.customer


def test_a_session_that_does_not_save_leaves_the_card_unattached(sim: Sim) -> None:
    customer = sim.client.v1.customers.create({"metadata": TAG})
    session = _checkout(sim, customer=customer.id)
    _pay(session)
    intent = sim.events(2)[1].data.object
    assert sim.client.v1.payment_methods.retrieve(intent["payment_method"]).customer is None
    assert sim.client.v1.customers.payment_methods.list(customer.id).data == []


def test_a_detached_card_leaves_the_customer_and_cannot_be_charged(sim: Sim) -> None:
    customer, card = _saved_card(sim)
    detached = sim.client.v1.payment_methods.detach(card)
    assert (detached.id, detached.customer) == (card, None)
    assert sim.client.v1.customers.payment_methods.list(customer).data == []
    with pytest.raises(stripe.InvalidRequestError) as refused:
        _charge(sim.client, customer, card, "after-detach")
    assert (refused.value.http_status, refused.value.param) == (400, "payment_method")
    with pytest.raises(stripe.InvalidRequestError):
        sim.client.v1.payment_methods.detach(card)


def test_an_off_session_charge_succeeds_and_sends_a_signed_event(sim: Sim) -> None:
    customer, card = _saved_card(sim)
    intent = _charge(sim.client, customer, card, "topup-1", amount=1500)
    assert (intent.status, intent.amount, intent.amount_received) == ("succeeded", 1500, 1500)
    assert (intent.customer, intent.payment_method) == (customer, card)
    assert intent.metadata.to_dict() == TAG

    [event] = sim.events(1)
    assert event.type == "payment_intent.succeeded"
    assert event.data.object["id"] == intent.id
    assert event.data.object["payment_method"] == card
    assert event.request.idempotency_key == "topup-1"
    assert sim.client.v1.payment_intents.retrieve(intent.id).status == "succeeded"


def test_a_replayed_off_session_charge_is_the_same_intent_charged_once(sim: Sim) -> None:
    customer, card = _saved_card(sim)
    intents_before = len(sim.state.intents)
    first = _charge(sim.client, customer, card, "topup-1")
    again = _charge(sim.client, customer, card, "topup-1")
    assert again.id == first.id
    assert again.last_response.headers["Idempotent-Replayed"] == "true"
    assert len(sim.state.intents) == intents_before + 1
    sim.events(1)
    sim.no_more_events_than(1)


@pytest.mark.parametrize(("outcome", "code", "decline_code", "message"), [
    ("card_declined", "card_declined", "generic_decline", "Your card was declined."),
    ("authentication_required", "authentication_required", "authentication_required",
     "Your card was declined. This transaction requires authentication."),
    ("expired_card", "expired_card", "expired_card", "Your card has expired."),
])
def test_a_scripted_card_failure_is_stripes_card_error(
        sim: Sim, outcome: str, code: str, decline_code: str, message: str) -> None:
    customer, card = _saved_card(sim)
    assert sim.script(outcome=outcome).status_code == 201
    with pytest.raises(stripe.CardError) as failed:
        _charge(sim.client, customer, card, "topup-1")
    error = failed.value
    assert (error.http_status, error.code, error.user_message) == (402, code, message)
    assert error.error is not None and error.error.type == "card_error"
    assert error.error.decline_code == decline_code
    intent = error.error.payment_intent
    assert intent is not None
    # Off-session, even a card that wants authentication needs a new payment method: the
    # customer is not there to authenticate.
    assert (intent.status, intent.amount_received, intent.payment_method) == (
        "requires_payment_method", 0, None)
    assert intent.last_payment_error is not None
    assert intent.last_payment_error.code == code
    assert intent.last_payment_error.payment_method.id == card

    [event] = sim.events(1)
    assert event.type == "payment_intent.payment_failed"
    assert event.data.object["id"] == intent.id
    assert event.data.object["last_payment_error"]["decline_code"] == decline_code


def test_a_replayed_decline_is_the_same_402_and_the_next_charge_succeeds(sim: Sim) -> None:
    customer, card = _saved_card(sim)
    sim.script(outcome="card_declined")
    with pytest.raises(stripe.CardError) as first:
        _charge(sim.client, customer, card, "topup-1")
    with pytest.raises(stripe.CardError) as again:
        _charge(sim.client, customer, card, "topup-1")
    assert again.value.json_body == first.value.json_body
    assert _charge(sim.client, customer, card, "topup-2").status == "succeeded"


def test_a_scripted_server_error_is_a_500_that_charges_nothing(sim: Sim) -> None:
    customer, card = _saved_card(sim)
    intents_before = len(sim.state.intents)
    sim.script(outcome="server_error")
    for _attempt in range(2):  # the retry with the same key gets the saved 500
        with pytest.raises(stripe.APIError) as failed:
            _charge(sim.client, customer, card, "topup-1")
        assert failed.value.http_status == 500
        assert failed.value.error is not None and failed.value.error.type == "api_error"
    assert len(sim.state.intents) == intents_before
    sim.no_more_events_than(0)
    assert _charge(sim.client, customer, card, "topup-2").status == "succeeded"


def test_a_timeout_charges_though_the_client_gave_up(sim: Sim) -> None:
    customer, card = _saved_card(sim)
    sim.script(outcome="timeout", delay=3)
    with pytest.raises(stripe.APIConnectionError):
        _charge(sim.client_waiting(1), customer, card, "topup-1")
    [event] = sim.events(1)
    assert event.type == "payment_intent.succeeded"
    assert sim.state.intents[event.data.object["id"]]["status"] == "succeeded"


def test_a_retry_after_a_timeout_gets_409_then_the_same_intent(sim: Sim) -> None:
    customer, card = _saved_card(sim)
    sim.script(outcome="timeout", delay=2)
    with pytest.raises(stripe.APIConnectionError):
        _charge(sim.client_waiting(0.5), customer, card, "topup-1")
    with pytest.raises(stripe.APIError) as in_progress:
        _charge(sim.client, customer, card, "topup-1")
    assert in_progress.value.http_status == 409
    assert in_progress.value.error is not None
    assert in_progress.value.error.code == "idempotency_key_in_use"
    [event] = sim.events(1)
    time.sleep(2)
    assert _charge(sim.client, customer, card, "topup-1").id == event.data.object["id"]
    sim.no_more_events_than(1)


def test_times_scripts_that_many_charges(sim: Sim) -> None:
    customer, card = _saved_card(sim)
    assert sim.script(outcome="card_declined", times=2).json() == {"next": [
        {"outcome": "card_declined", "delay": 30.0}] * 2}
    for key in ("topup-1", "topup-2"):
        with pytest.raises(stripe.CardError):
            _charge(sim.client, customer, card, key)
    assert _charge(sim.client, customer, card, "topup-3").status == "succeeded"
    assert requests.get(f"{sim.url}/sim/next-charge", timeout=10).json() == {"next": []}


def test_the_charge_script_refuses_what_it_cannot_do_and_can_be_cleared(sim: Sim) -> None:
    assert sim.script(outcome="stolen_card").status_code == 400
    assert sim.script(outcome="card_declined", times=0).status_code == 400
    assert sim.script(outcome="timeout", delay="soon").status_code == 400
    sim.script(outcome="server_error", times=3)
    assert requests.delete(f"{sim.url}/sim/next-charge", timeout=10).json() == {"next": []}
    assert list(sim.state.next_charges) == []


@pytest.fixture
def gateway(settings: Settings, receiver: Receiver) -> Iterator[tuple[str, Sim]]:
    """The gateway served on a local port, its Stripe the sim (webhooks to the gateway)."""
    gateway_server, sim_server = LocalServer(), LocalServer()
    state = stripe_sim.StripeSim(sim_server.url,
                                 f"{gateway_server.url}/api/billing/stripe-webhook", SIM_SECRET)
    sim_server.serve(state.app())
    app = create_app(settings.with_overrides(stripe_api_base=sim_server.url,
                                             stripe_webhook_secrets=(SIM_SECRET,),
                                             public_url=gateway_server.url))
    gateway_server.serve(app)
    try:
        yield gateway_server.url, Sim(sim_server.url, state, _client(sim_server.url), receiver)
    finally:
        gateway_server.stop()
        sim_server.stop()
        app.extensions["billing_pool"].close()


def test_an_off_session_charge_is_credited_by_the_gateway_once(
        gateway: tuple[str, Sim], org: uuid.UUID, owner_conn: psycopg.Connection) -> None:
    _, sim = gateway
    customer = sim.client.v1.customers.create({"metadata": stripe_client.tag(org)})
    session = _checkout(sim, customer=customer.id, payment_intent_data={
        "setup_future_usage": "off_session", "metadata": stripe_client.tag(org)})
    _pay(session)
    card = sim.client.v1.customers.payment_methods.list(customer.id).data[0].id
    assert balance(owner_conn, org) == Decimal("25.00")

    intent = sim.client.v1.payment_intents.create({
        "amount": 1000, "currency": "usd", "customer": customer.id, "payment_method": card,
        "off_session": True, "confirm": True, "metadata": stripe_client.tag(org)},
        {"idempotency_key": "auto-topup-1"})
    deadline = time.monotonic() + 10
    while balance(owner_conn, org) != Decimal("35.00") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert balance(owner_conn, org) == Decimal("35.00")
    assert owner_conn.execute("SELECT outcome FROM stripe_events WHERE payment_intent_id = %s",
                              (intent.id,)).fetchall() == [("credited",)]
