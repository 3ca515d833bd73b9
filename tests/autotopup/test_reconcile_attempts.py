"""billing-gateway reconcile ends auto top-ups whose webhook never came, as Stripe now has
their PaymentIntent: credited if it succeeded, failed if Stripe gave up on it."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Callable
from decimal import Decimal

import psycopg
import pytest
import responses
from flask.testing import FlaskClient

from billing_gateway.platform.config import Settings
from billing_gateway.topups import reconcile
from tests import stripe_objects as so
from tests.autotopup.conftest import STRIPE, attempts_of, charge, save_card, turn_on
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import balance


@pytest.mark.parametrize("stripe_says", ["succeeded", "requires_payment_method", "processing"])
def test_a_submitted_attempt_whose_webhook_was_lost_is_settled(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID, stripe_says: str,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        settings: Settings, database_url: str, run_worker: Callable[[], list[str]]) -> None:
    save_card(client, auth, stripe_api, org)
    turn_on(client, auth, org, "10.00", "50.00")
    assert charge(client, auth, org, "20.00").status_code == 201
    [attempt] = attempts_of(owner_conn, org)
    metadata = {**so.ours(org), "auto_topup_attempt": str(attempt["id"])}
    submitted = so.payment_intent(org=org, amount=4500, intent_id="pi_lost", metadata=metadata)
    stripe_api.add(responses.POST, f"{STRIPE}/payment_intents",
                   json={**submitted, "status": "processing", "amount_received": 0})
    assert run_worker() == ["submitted"]
    owner_conn.execute("UPDATE auto_topup_attempts SET updated_at = now() - interval '20 min'"
                       " WHERE id = %s", (attempt["id"],))  # its events are long overdue
    now = {**submitted, "status": stripe_says}
    if stripe_says != "succeeded":
        now["amount_received"] = 0
    if stripe_says == "requires_payment_method":
        now["last_payment_error"] = so.card_error("card_declined", submitted)["error"][
            "payment_intent"]["last_payment_error"]
    stripe_api.add(responses.GET, f"{STRIPE}/payment_intents/pi_lost", json=now)
    stripe_api.add(responses.GET, f"{STRIPE}/payment_intents", json={
        "object": "list", "url": "/v1/payment_intents", "data": [], "has_more": False})
    lines: list[str] = []
    reconcile.run(settings, database_url, dt.timedelta(days=3), lines.append)
    [after] = attempts_of(owner_conn, org)
    if stripe_says == "succeeded":
        assert after["status"] == "succeeded"
        assert balance(owner_conn, org) == Decimal("50.00")
        assert any("pi_lost is succeeded (credited)" in line for line in lines), lines
    elif stripe_says == "requires_payment_method":
        assert (after["status"], after["failure_code"]) == ("failed", "card_declined")
        assert balance(owner_conn, org) == Decimal("5.00")
    else:  # Stripe has not decided: left as it is
        assert after["status"] == "submitted"
    # A second run changes nothing more.
    reconcile.run(settings, database_url, dt.timedelta(days=3), lines.append)
    assert attempts_of(owner_conn, org)[0]["status"] == after["status"]
