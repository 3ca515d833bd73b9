"""stripe-sim: the gateway's normal Stripe code, pointed at it by STRIPE_API_BASE, makes a
Checkout Session; "Pay" sends Stripe's two signed events back and the credit lands once;
"Cancel" returns to the cancel URL; reconcile reads its PaymentIntents; refused in
production."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal

import psycopg
import pytest
import requests

from billing_gateway import cli, create_app
from billing_gateway.platform.config import Settings
from billing_gateway.platform.local_server import LocalServer
from billing_gateway.topups import reconcile, stripe_sim
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import balance

SIM_SECRET = "whsec_sim_test_0123456789abcdef"  # a throwaway test secret


@dataclass
class Flow:
    """A gateway served on a local port and the stripe-sim it talks to."""

    gateway: str
    sim: str
    settings: Settings


@pytest.fixture
def flow(settings: Settings) -> Iterator[Flow]:
    gateway, sim = LocalServer(), LocalServer()
    sim.serve(stripe_sim.StripeSim(
        sim.url, f"{gateway.url}/api/billing/stripe-webhook", SIM_SECRET).app())
    served = settings.with_overrides(stripe_api_base=sim.url, stripe_webhook_secrets=(SIM_SECRET,),
                                     public_url=gateway.url)
    app = create_app(served)
    gateway.serve(app)
    try:
        yield Flow(gateway.url, sim.url, served)
    finally:
        gateway.stop()
        sim.stop()
        app.extensions["billing_pool"].close()


def _checkout(flow: Flow, auth: TokenFactory, org: uuid.UUID, amount: str,
              key: str | None = None) -> dict:
    headers = {**auth("member", org), **({"Idempotency-Key": key} if key else {})}
    answer = requests.post(f"{flow.gateway}/api/billing/create-checkout", json={
        "amount": amount}, headers=headers, timeout=10)
    assert answer.status_code == 201, answer.text
    return answer.json()


def test_paying_on_stripe_sim_credits_once(flow: Flow, auth: TokenFactory, org: uuid.UUID,
                                           owner_conn: psycopg.Connection) -> None:
    session = _checkout(flow, auth, org, "25.00")
    assert session["url"] == f"{flow.sim}/pay/{session['sessionId']}"
    page = requests.get(session["url"], timeout=10)
    assert page.status_code == 200 and "$25.00" in page.text and "TEST MODE" in page.text
    paid = requests.post(f"{session['url']}/pay", allow_redirects=False, timeout=10)
    assert paid.status_code == 303
    assert paid.headers["Location"] == (
        f"{flow.gateway}/billing?success=true&session_id={session['sessionId']}")
    assert balance(owner_conn, org) == Decimal("25.00")
    # Both events were delivered and processed; paying again sends nothing more.
    outcomes = owner_conn.execute(
        "SELECT type, outcome FROM stripe_events WHERE org_id = %s OR payment_intent_id IN"
        " (SELECT payment_intent_id FROM stripe_payments WHERE org_id = %s) ORDER BY type",
        (org, org)).fetchall()
    assert outcomes == [("checkout.session.completed", "credited"),
                        ("payment_intent.succeeded", "duplicate")]
    requests.post(f"{session['url']}/pay", allow_redirects=False, timeout=10)
    assert balance(owner_conn, org) == Decimal("25.00")
    assert owner_conn.execute("SELECT status, payment_status FROM checkout_sessions"
                              " WHERE id = %s", (session["sessionId"],)).fetchone() == (
        "complete", "paid")


def test_the_same_idempotency_key_gets_the_same_session(
        flow: Flow, auth: TokenFactory, org: uuid.UUID) -> None:
    first = _checkout(flow, auth, org, "10.00", key="sim-key-1")
    again = _checkout(flow, auth, org, "10.00", key="sim-key-1")
    assert again == first


def test_cancel_returns_to_the_cancel_url(flow: Flow, auth: TokenFactory, org: uuid.UUID,
                                          owner_conn: psycopg.Connection) -> None:
    session = _checkout(flow, auth, org, "10.00")
    canceled = requests.post(f"{session['url']}/cancel", allow_redirects=False, timeout=10)
    assert canceled.headers["Location"] == f"{flow.gateway}/billing?canceled=true"
    assert balance(owner_conn, org) == 0


def test_reconcile_reads_stripe_sims_payment_intents(
        flow: Flow, auth: TokenFactory, org: uuid.UUID, database_url: str) -> None:
    session = _checkout(flow, auth, org, "12.00")
    requests.post(f"{session['url']}/pay", allow_redirects=False, timeout=10)
    lines: list[str] = []
    report = reconcile.run(flow.settings, database_url, dt.timedelta(days=1), lines.append)
    assert report.checked == 1 and report.repaired == [] and report.unrepaired == []


def test_stripe_sim_is_refused_in_production(monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("BILLING_ENV", "production")
    monkeypatch.setenv("BILLING_JWT_SECRET", "p" * 40)
    assert cli.main(["stripe-sim", "--webhook-secret", "whsec_x"]) == 2
    assert "refused with BILLING_ENV=production" in capsys.readouterr().err


def test_stripe_forms_are_read_back_into_objects() -> None:
    form = [("line_items[0][quantity]", "1"), ("line_items[0][price_data][currency]", "usd"),
            ("line_items[0][price_data][unit_amount]", "2500"), ("metadata[org_id]", "o"),
            ("payment_intent_data[metadata][source]", "billing-gateway"), ("mode", "payment")]
    assert stripe_sim._nested(form) == {
        "line_items": [{"quantity": "1", "price_data": {"currency": "usd",
                                                        "unit_amount": "2500"}}],
        "metadata": {"org_id": "o"},
        "payment_intent_data": {"metadata": {"source": "billing-gateway"}},
        "mode": "payment"}
