"""What auto top-up does when the card or Stripe fails: each case as Stripe answers it,
recorded on the attempt, announced (auto_topup.failed), and paused after three in a row."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from decimal import Decimal

import psycopg
import pytest
import requests
import responses
from flask.testing import FlaskClient

from tests import stripe_objects as so
from tests.autotopup.conftest import (
    AUTO_TOP_UP,
    STRIPE,
    attempts_of,
    charge,
    intents_posted,
    save_card,
    turn_on,
)
from tests.notifications.test_money_events import events
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import balance, deliver

INTENTS = f"{STRIPE}/payment_intents"


def _ready(client: FlaskClient, auth: TokenFactory, stripe_api: responses.RequestsMock,
           org: uuid.UUID) -> None:
    """A saved card, auto top-up at 10.00 to 50.00, and a charge that starts an attempt."""
    save_card(client, auth, stripe_api, org)
    turn_on(client, auth, org, "10.00", "50.00")
    assert charge(client, auth, org, "20.00").status_code == 201


def _due_now(owner_conn: psycopg.Connection, org: uuid.UUID) -> None:
    """Let the clock pass: the retry delay of the org and of its pending attempt is over."""
    owner_conn.execute("UPDATE organizations SET auto_topup_not_before = now() - interval '1 s'"
                       " WHERE id = %s AND auto_topup_not_before IS NOT NULL", (org,))
    owner_conn.execute("UPDATE auto_topup_attempts SET next_try_at = now()"
                       " WHERE org_id = %s AND status = 'pending'", (org,))


def _tries(outcome: str) -> float:
    """billing_auto_topup_tries_total{outcome} of this process."""
    from prometheus_client import REGISTRY

    return REGISTRY.get_sample_value("billing_auto_topup_tries_total",
                                     {"outcome": outcome}) or 0.0


def _failed_events(owner_conn: psycopg.Connection, org: uuid.UUID) -> list[dict]:
    return [data for kind, data in events(owner_conn, org) if kind == "auto_topup.failed"]


@pytest.mark.parametrize(("code", "decline_code"), [
    ("card_declined", "insufficient_funds"),
    ("authentication_required", "authentication_required"),
    ("expired_card", None),
])
def test_a_card_error_fails_the_attempt_and_says_why(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID, code: str,
        decline_code: str | None, stripe_api: responses.RequestsMock,
        owner_conn: psycopg.Connection, run_worker: Callable[[], list[str]]) -> None:
    _ready(client, auth, stripe_api, org)
    intent = so.payment_intent(org=org, amount=4500, intent_id=f"pi_{code}")
    stripe_api.add(responses.POST, INTENTS, status=402, json=so.card_error(code, intent))
    assert run_worker() == ["failed"]
    [attempt] = attempts_of(owner_conn, org)
    assert (attempt["status"], attempt["failure_code"], attempt["decline_code"],
            attempt["payment_intent_id"]) == ("failed", code, decline_code, f"pi_{code}")
    assert attempt["failure_message"] == so.CARD_ERRORS[code][1]
    [failed] = _failed_events(owner_conn, org)
    assert (failed["code"], failed["declineCode"], failed["consecutiveFailures"],
            failed["paused"]) == (code, decline_code, 1, False)
    assert balance(owner_conn, org) == Decimal("5.00")  # no credit without a payment
    # Stripe's own payment_intent.payment_failed for it changes nothing more.
    failed_intent = so.card_error(code, intent)["error"]["payment_intent"]
    evt = so.event("payment_intent.payment_failed", {
        **failed_intent, "metadata": {**so.ours(org), "auto_topup_attempt": str(attempt["id"])}})
    assert deliver(client, evt).status_code == 200
    assert len(_failed_events(owner_conn, org)) == 1
    answer = client.get(AUTO_TOP_UP, headers=auth("member", org)).get_json()
    assert answer["lastAttempt"]["failureCode"] == code
    assert (answer["enabled"], answer["paused"], answer["consecutiveFailures"]) == (
        True, False, 1)
    # The next charge below the threshold waits out the delay: no attempt at once.
    assert charge(client, auth, org, "1.00").status_code == 201
    assert len(attempts_of(owner_conn, org)) == 1


def test_stripe_5xx_and_timeouts_retry_the_same_key_then_fail(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]]) -> None:
    _ready(client, auth, stripe_api, org)
    stripe_api.add(responses.POST, INTENTS, status=500, json={"error": {
        "type": "api_error", "message": "An unknown error occurred"}})
    stripe_api.add(responses.POST, INTENTS, body=requests.ConnectTimeout("timed out"))
    outcomes = []
    before = _tries("retry"), _tries("failed")
    for _ in range(4):
        outcomes += run_worker()
        _due_now(owner_conn, org)
    assert outcomes == ["retry", "retry", "retry", "failed"]
    assert (_tries("retry") - before[0], _tries("failed") - before[1]) == (3, 1)
    keys = {call.request.headers["Idempotency-Key"] for call in intents_posted(stripe_api)}
    [attempt] = attempts_of(owner_conn, org)
    assert keys == {str(attempt["id"])}  # every try (and the SDK's own retries): one key
    assert len(intents_posted(stripe_api)) >= 4
    assert (attempt["status"], attempt["failure_code"], attempt["tries"]) == (
        "failed", "stripe_unavailable", 4)
    assert [e["code"] for e in _failed_events(owner_conn, org)] == ["stripe_unavailable"]


def test_a_retry_that_stripe_then_answers_is_submitted(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]]) -> None:
    _ready(client, auth, stripe_api, org)
    failing = stripe_api.add(responses.POST, INTENTS, status=503, json={"error": {
        "type": "api_error", "message": "Service unavailable"}})
    assert run_worker() == ["retry"]
    stripe_api.remove(failing)
    stripe_api.add(responses.POST, INTENTS, json=so.payment_intent(org=org, amount=4500))
    _due_now(owner_conn, org)
    assert run_worker() == ["submitted"]
    assert attempts_of(owner_conn, org)[0]["tries"] == 2


def test_a_payment_intent_stripe_refuses_counts_as_a_failure(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]]) -> None:
    _ready(client, auth, stripe_api, org)
    stripe_api.add(responses.POST, INTENTS, status=400, json={"error": {
        "type": "invalid_request_error", "code": "resource_missing", "param": "payment_method",
        "message": "No such PaymentMethod: 'pm_gone'"}})
    assert run_worker() == ["failed"]
    [attempt] = attempts_of(owner_conn, org)
    assert (attempt["status"], attempt["failure_code"]) == ("failed", "resource_missing")
    assert [e["code"] for e in _failed_events(owner_conn, org)] == ["resource_missing"]


def test_three_failures_in_a_row_pause_until_the_customer_pays_with_a_card(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]]) -> None:
    _ready(client, auth, stripe_api, org)
    stripe_api.add_callback(responses.POST, INTENTS, callback=lambda _: (
        402, {}, json.dumps(so.card_error("card_declined", so.payment_intent(
            org=org, amount=4500)))))  # each attempt its own PaymentIntent, declined
    assert run_worker() == ["failed"]
    for n in (2, 3):
        _due_now(owner_conn, org)
        assert charge(client, auth, org, "0.10").status_code == 201
        assert run_worker() == ["failed"], n
    answer = client.get(AUTO_TOP_UP, headers=auth("member", org)).get_json()
    assert (answer["enabled"], answer["paused"], answer["consecutiveFailures"]) == (
        False, True, 3)
    assert "failed" in answer["pausedReason"]
    assert [e["paused"] for e in _failed_events(owner_conn, org)] == [False, False, True]
    # Paused: nothing more is tried, whatever the charges.
    _due_now(owner_conn, org)
    assert charge(client, auth, org, "0.10").status_code == 201
    assert run_worker() == [] and len(attempts_of(owner_conn, org)) == 3
    # Paying on-session with a new card saved turns it back on.
    save_card(client, auth, stripe_api, org, created=so.CREATED + 3600, last4="1881")
    answer = client.get(AUTO_TOP_UP, headers=auth("member", org)).get_json()
    assert (answer["enabled"], answer["paused"], answer["consecutiveFailures"]) == (
        True, False, 0)


def test_a_refused_charge_starts_the_next_attempt_once_the_delay_is_over(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]]) -> None:
    _ready(client, auth, stripe_api, org)  # balance 5.00
    stripe_api.add(responses.POST, INTENTS, status=402, json=so.card_error(
        "card_declined", so.payment_intent(org=org, amount=4500)))
    assert run_worker() == ["failed"]
    _due_now(owner_conn, org)
    refused = charge(client, auth, org, "9.00")  # more than the balance: refused
    assert refused.status_code == 402
    assert [a["status"] for a in attempts_of(owner_conn, org)] == ["failed", "pending"]


def test_removing_the_card_detaches_it_turns_auto_top_up_off_and_cancels_the_pending(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]]) -> None:
    _ready(client, auth, stripe_api, org)
    [attempt] = attempts_of(owner_conn, org)
    method = attempt["payment_method_id"]
    stripe_api.add(responses.POST, f"{STRIPE}/payment_methods/{method}/detach",
                   json=so.payment_method(customer=None, method_id=method))
    answer = client.delete(f"{AUTO_TOP_UP}/card", headers=auth("member", org))
    assert answer.status_code == 200 and answer.get_json() == {"removed": True}
    assert [c.request.url for c in stripe_api.calls
            if c.request.url.endswith("/detach")] == [
        f"{STRIPE}/payment_methods/{method}/detach"]
    shown = client.get(AUTO_TOP_UP, headers=auth("member", org)).get_json()
    assert (shown["paymentMethod"], shown["enabled"]) == (None, False)
    assert run_worker() == ["canceled"]
    assert intents_posted(stripe_api) == []
    assert attempts_of(owner_conn, org)[0]["status"] == "canceled"
    assert client.delete(f"{AUTO_TOP_UP}/card",
                         headers=auth("member", org)).status_code == 404
