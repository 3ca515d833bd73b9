"""A lost dispute in another currency than its payment's is never taken back as if it were
in the payment's currency: it waits for a human (a log line, GET /payments/shortfalls,
reconcile's exit 1) until an admin marks it reviewed."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from decimal import Decimal
from typing import Any

import psycopg
import pytest
import responses
from flask.testing import FlaskClient

from billing_gateway import cli
from billing_gateway.platform.config import Settings
from billing_gateway.topups import reconcile
from tests import stripe_objects as so
from tests.plugins.service import STRIPE_TEST_KEY, TokenFactory
from tests.plugins.webhooks import balance, deliver, ledger_rows

SHORTFALLS = "/api/billing/payments/shortfalls"


def _reviewed(dispute_id: str) -> str:
    return f"/api/billing/payments/disputes/{dispute_id}/reviewed"


def _paid(client: FlaskClient, org: uuid.UUID, amount: int) -> dict[str, Any]:
    intent = so.payment_intent(org=org, amount=amount)
    assert deliver(client, so.event("payment_intent.succeeded", intent)).status_code == 200
    return intent


def _lost(client: FlaskClient, intent: dict[str, Any], amount: int,
          currency: str) -> tuple[dict[str, Any], dict[str, Any]]:
    dispute = so.dispute(intent=intent["id"], amount=amount, currency=currency)
    evt = so.event("charge.dispute.closed", dispute)
    assert deliver(client, evt).status_code == 200
    return dispute, evt


def _outcome(owner_conn: psycopg.Connection, evt: dict[str, Any]) -> str:
    return owner_conn.execute("SELECT outcome FROM stripe_events WHERE id = %s",
                              (evt["id"],)).fetchone()[0]


@pytest.fixture
def no_payment_intents(stripe_api: responses.RequestsMock) -> None:
    """Stripe's PaymentIntents list, empty: reconcile has nothing to credit."""
    stripe_api.add(responses.GET, "https://api.stripe.com/v1/payment_intents", json={
        "object": "list", "url": "/v1/payment_intents", "has_more": False, "data": []})


def test_a_dispute_in_another_currency_waits_for_a_human_until_reviewed(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, owner_conn: psycopg.Connection,
    settings: Settings, database_url: str, no_payment_intents: None,
    caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    intent = _paid(client, org, 5000)
    with caplog.at_level(logging.WARNING, logger="billing_gateway"):
        dispute, evt = _lost(client, intent, 4500, "eur")
    assert balance(owner_conn, org) == Decimal("50.00")  # 4500 eur cents are not 45.00 usd
    assert [row[0] for row in ledger_rows(owner_conn, org)] == ["purchase"]
    assert _outcome(owner_conn, evt) == "dispute_currency_mismatch"
    assert any(f"lost dispute {dispute['id']} of payment {intent['id']}" in r.getMessage()
               and "needs a human" in r.getMessage() for r in caplog.records)
    assert owner_conn.execute("SELECT disputed_minor, reversed_minor FROM stripe_payments"
                              ).fetchone() == (0, 0)

    listed = client.get(SHORTFALLS, headers=auth("admin")).get_json()
    assert listed["shortfalls"] == []
    [item] = listed["needsReview"]
    assert {k: v for k, v in item.items() if k != "createdAt"} == {
        "kind": "dispute_currency_mismatch", "disputeId": dispute["id"],
        "paymentIntentId": intent["id"], "orgId": str(org), "amountMinor": 4500,
        "currency": "eur", "paymentCurrency": "usd"}

    lines: list[str] = []
    report = reconcile.run(settings, database_url, dt.timedelta(hours=1), lines.append)
    assert report.unrepaired == [dispute["id"]]
    assert any(line.startswith(f"lost dispute {dispute['id']}") for line in lines)
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", STRIPE_TEST_KEY)
    monkeypatch.setenv("BILLING_JWT_SECRET", "x" * 40)
    assert cli.main(["reconcile", "--since", "1h"]) == 1
    assert dispute["id"] in capsys.readouterr().out

    assert client.post(_reviewed(dispute["id"]), headers=auth("member", org)).status_code == 403
    marked = client.post(_reviewed(dispute["id"]), headers=auth("admin"))
    assert marked.status_code == 200
    assert marked.get_json()["disputeId"] == dispute["id"]
    assert marked.get_json()["reviewedBy"] == "test-admin"
    again = client.post(_reviewed(dispute["id"]), headers=auth("admin", subject="other"))
    assert again.get_json() == marked.get_json()  # the first review stands
    assert client.get(SHORTFALLS, headers=auth("admin")).get_json()["needsReview"] == []
    assert reconcile.run(settings, database_url, dt.timedelta(hours=1),
                         lines.append).unrepaired == []
    assert cli.main(["reconcile", "--since", "1h"]) == 0
    assert balance(owner_conn, org) == Decimal("50.00")


def test_a_dispute_in_another_currency_seen_before_the_credit_is_held_when_it_lands(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, owner_conn: psycopg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    intent = so.payment_intent(org=org, amount=3000)
    dispute, evt = _lost(client, intent, 3000, "gbp")
    assert _outcome(owner_conn, evt) == "dispute_pending_credit"
    with caplog.at_level(logging.WARNING, logger="billing_gateway"):
        deliver(client, so.event("payment_intent.succeeded", intent))
    assert balance(owner_conn, org) == Decimal("30.00")
    assert any(f"lost dispute {dispute['id']}" in r.getMessage() for r in caplog.records)
    review = client.get(SHORTFALLS, headers=auth("admin")).get_json()["needsReview"]
    assert [item["disputeId"] for item in review] == [dispute["id"]]


def test_only_the_dispute_in_the_payments_currency_is_taken_back(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    intent = _paid(client, org, 8000)
    _, foreign = _lost(client, intent, 2000, "eur")
    _, own = _lost(client, intent, 1500, "USD")  # Stripe's currencies are lowercase; be sure
    assert (_outcome(owner_conn, foreign), _outcome(owner_conn, own)) == (
        "dispute_currency_mismatch", "reversed")
    assert balance(owner_conn, org) == Decimal("65.00")
    assert owner_conn.execute("SELECT disputed_minor, reversed_minor FROM stripe_payments"
                              ).fetchone() == (1500, 1500)
    # The same dispute delivered again changes nothing, whichever currency.
    deliver(client, foreign)
    deliver(client, own)
    assert balance(owner_conn, org) == Decimal("65.00")


@pytest.mark.parametrize("dispute_id", ["du_unknown", "not-a-dispute", "du_" + "x" * 300,
                                        "du_%00"])
def test_marking_what_is_not_a_dispute_to_review_is_404(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, owner_conn: psycopg.Connection,
    dispute_id: str,
) -> None:
    intent = _paid(client, org, 1000)
    own, _ = _lost(client, intent, 1000, "usd")  # in the payment's currency: nothing to review
    for candidate in (dispute_id, own["id"]):
        response = client.post(_reviewed(candidate), headers=auth("admin"))
        assert response.status_code == 404
        assert response.get_json()["error"]["code"] == "not_found"
