"""POST /stripe-webhook: the signature matrix, exactly-once credits, refunds, disputes, and
every order of events for one payment."""

from __future__ import annotations

import itertools
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests import stripe_objects as so
from tests.plugins.database import ledger_inserts_fail
from tests.plugins.service import WEBHOOK_SECRET, WEBHOOK_SECRET_OLD, TokenFactory
from tests.plugins.webhooks import WEBHOOK, balance, deliver, ledger_rows


def succeeded(org: uuid.UUID, amount: int = 5000, **kwargs: Any) -> dict[str, Any]:
    return so.event("payment_intent.succeeded", so.payment_intent(org=org, amount=amount,
                                                                 **kwargs))


# -- the signature matrix --------------------------------------------------------------------

def test_valid_signature_credits_once(client: FlaskClient, org: uuid.UUID,
                                      owner_conn: psycopg.Connection) -> None:
    evt = succeeded(org, 5000)
    response = deliver(client, evt)
    assert response.status_code == 200
    assert response.get_json() == {"received": True}
    assert balance(owner_conn, org) == Decimal("50.00")
    assert ledger_rows(owner_conn, org) == [
        ("purchase", Decimal("50.0000"), evt["data"]["object"]["id"])]
    stored = owner_conn.execute("SELECT type, outcome, processed_at IS NOT NULL, attempts"
                                " FROM stripe_events WHERE id = %s", (evt["id"],)).fetchone()
    assert stored == ("payment_intent.succeeded", "credited", True, 1)


def _refused(response: Any, owner_conn: psycopg.Connection, org: uuid.UUID) -> None:
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["code"] == "validation_error"
    assert balance(owner_conn, org) == 0
    assert owner_conn.execute("SELECT count(*) FROM stripe_events").fetchone() == (0,)


def test_body_changed_by_one_byte_is_400(client: FlaskClient, org: uuid.UUID,
                                         owner_conn: psycopg.Connection) -> None:
    payload = so.body(succeeded(org, 5000))
    header = so.sign(payload, WEBHOOK_SECRET)
    tampered = payload.replace(b'"amount_received": 5000', b'"amount_received": 9000')
    assert len(tampered) == len(payload)
    _refused(deliver(client, {}, raw=tampered, header=header), owner_conn, org)
    one_byte = payload[:-1] + b" "
    _refused(deliver(client, {}, raw=one_byte, header=header), owner_conn, org)


def test_wrong_secret_is_400(client: FlaskClient, org: uuid.UUID,
                             owner_conn: psycopg.Connection) -> None:
    _refused(deliver(client, succeeded(org), secret="whsec_somebody_else"), owner_conn, org)


@pytest.mark.parametrize("age", [301, 3600, -301])
def test_timestamp_outside_tolerance_is_400(client: FlaskClient, org: uuid.UUID,
                                            owner_conn: psycopg.Connection, age: int) -> None:
    payload = so.body(succeeded(org))
    header = so.sign(payload, WEBHOOK_SECRET, timestamp=int(time.time()) - age)
    response = deliver(client, {}, raw=payload, header=header)
    if age < 0:
        # Stripe's scheme bounds only the age: a timestamp from the future still verifies.
        assert response.status_code == 200
    else:
        _refused(response, owner_conn, org)


def test_timestamp_within_tolerance_is_accepted(client: FlaskClient, org: uuid.UUID,
                                                owner_conn: psycopg.Connection) -> None:
    payload = so.body(succeeded(org))
    header = so.sign(payload, WEBHOOK_SECRET, timestamp=int(time.time()) - 280)
    assert deliver(client, {}, raw=payload, header=header).status_code == 200


def test_missing_header_is_400(client: FlaskClient, org: uuid.UUID,
                               owner_conn: psycopg.Connection) -> None:
    payload = so.body(succeeded(org))
    response = client.post(WEBHOOK, data=payload, content_type="application/json")
    _refused(response, owner_conn, org)


@pytest.mark.parametrize("header", ["", "garbage", "t=abc,v1=00", "v1=deadbeef",
                                    "t=1700000000"])
def test_malformed_headers_are_400(client: FlaskClient, org: uuid.UUID,
                                   owner_conn: psycopg.Connection, header: str) -> None:
    _refused(deliver(client, succeeded(org), header=header), owner_conn, org)


def test_v0_signature_only_is_400(client: FlaskClient, org: uuid.UUID,
                                  owner_conn: psycopg.Connection) -> None:
    payload = so.body(succeeded(org))
    v0 = so.sign(payload, WEBHOOK_SECRET, scheme="v0")
    _refused(deliver(client, {}, raw=payload, header=v0), owner_conn, org)


def test_two_v1_signatures_one_valid_is_accepted(client: FlaskClient, org: uuid.UUID,
                                                 owner_conn: psycopg.Connection) -> None:
    payload = so.body(succeeded(org))
    t = int(time.time())
    good = so.sign(payload, WEBHOOK_SECRET, timestamp=t).split(",")[1]
    bad = so.sign(payload, "whsec_rolled", timestamp=t).split(",")[1]
    response = deliver(client, {}, raw=payload, header=f"t={t},{bad},{good}")
    assert response.status_code == 200
    assert balance(owner_conn, org) == Decimal("50.00")


def test_rotated_secret_is_accepted(client: FlaskClient, org: uuid.UUID,
                                    owner_conn: psycopg.Connection) -> None:
    assert deliver(client, succeeded(org), secret=WEBHOOK_SECRET_OLD).status_code == 200
    assert balance(owner_conn, org) == Decimal("50.00")


def test_signed_but_not_an_event_is_400(client: FlaskClient, org: uuid.UUID,
                                        owner_conn: psycopg.Connection) -> None:
    for raw in (b"[]", b"not json", b'{"id": "evt_1"}', b"\xff\xfe"):
        _refused(deliver(client, {}, raw=raw), owner_conn, org)


def test_no_webhook_secret_configured_is_503(settings: Any, org: uuid.UUID) -> None:
    from billing_gateway import create_app

    app = create_app(settings.with_overrides(stripe_webhook_secrets=()))
    try:
        response = deliver(app.test_client(), succeeded(org))
        assert response.status_code == 503
        assert response.get_json()["error"]["code"] == "stripe_not_configured"
    finally:
        app.extensions["billing_pool"].close()


# -- exactly once ------------------------------------------------------------------------------

def test_redelivery_changes_nothing(client: FlaskClient, org: uuid.UUID,
                                    owner_conn: psycopg.Connection) -> None:
    evt = succeeded(org, 1234)
    for _ in range(3):
        assert deliver(client, evt).status_code == 200
    assert balance(owner_conn, org) == Decimal("12.34")
    assert len(ledger_rows(owner_conn, org)) == 1


def test_same_event_20_times_concurrently(app: Flask, org: uuid.UUID,
                                          owner_conn: psycopg.Connection) -> None:
    evt = succeeded(org, 2000)
    payload = so.body(evt)

    def send(_: int) -> int:
        return deliver(app.test_client(), {}, raw=payload).status_code

    with ThreadPoolExecutor(max_workers=20) as pool:
        statuses = Counter(pool.map(send, range(20)))
    assert statuses == {200: 20}
    assert ledger_rows(owner_conn, org) == [
        ("purchase", Decimal("20.0000"), evt["data"]["object"]["id"])]


def test_payment_intent_and_session_events_credit_once(client: FlaskClient, org: uuid.UUID,
                                                       owner_conn: psycopg.Connection) -> None:
    intent = so.payment_intent(org=org, amount=7500)
    session = so.checkout_session(org=org, amount_total=7500, payment_intent=intent["id"])
    assert deliver(client, so.event("checkout.session.completed", session)).status_code == 200
    assert deliver(client, so.event("payment_intent.succeeded", intent)).status_code == 200
    assert balance(owner_conn, org) == Decimal("75.00")
    outcomes = owner_conn.execute("SELECT type, outcome FROM stripe_events ORDER BY received_at"
                                  ).fetchall()
    assert outcomes == [("checkout.session.completed", "credited"),
                        ("payment_intent.succeeded", "duplicate")]


def test_unpaid_session_credits_nothing_until_async_success(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    intent = so.payment_intent(org=org, amount=1000, status="processing")
    session = so.checkout_session(org=org, amount_total=1000, payment_intent=intent["id"],
                                  payment_status="unpaid")
    deliver(client, so.event("checkout.session.completed", session))
    assert balance(owner_conn, org) == 0
    paid = {**session, "payment_status": "paid"}
    deliver(client, so.event("checkout.session.async_payment_succeeded", paid))
    assert balance(owner_conn, org) == Decimal("10.00")


def test_session_status_follows_its_events(client: FlaskClient, org: uuid.UUID,
                                           owner_conn: psycopg.Connection) -> None:
    sessions = [so.checkout_session(org=org, amount_total=1000, status="open",
                                    payment_status="unpaid") for _ in range(3)]
    for session in sessions:
        owner_conn.execute("INSERT INTO organizations (id) VALUES (%s) ON CONFLICT DO NOTHING",
                           (org,))
        owner_conn.execute("INSERT INTO checkout_sessions (id, org_id, amount, currency,"
                           " created_by) VALUES (%s, %s, 10, 'usd', 'm')", (session["id"], org))
    deliver(client, so.event("checkout.session.expired", {**sessions[0], "status": "expired"}))
    deliver(client, so.event("checkout.session.async_payment_failed",
                             {**sessions[1], "status": "complete"}))
    pi = so.payment_intent(org=org, amount=1000)
    deliver(client, so.event("checkout.session.completed",
                             {**sessions[2], "status": "complete", "payment_status": "paid",
                              "payment_intent": pi["id"]}))
    statuses = dict(owner_conn.execute("SELECT id, status FROM checkout_sessions").fetchall())
    assert [statuses[s["id"]] for s in sessions] == ["expired", "payment_failed", "complete"]
    assert balance(owner_conn, org) == Decimal("10.00")


def test_payments_not_ours_are_acknowledged_and_ignored(client: FlaskClient, org: uuid.UUID,
                                                        owner_conn: psycopg.Connection) -> None:
    for metadata in ({}, {"source": "another-app", "org_id": str(org)},
                     {"source": "billing-gateway", "org_id": "not-a-uuid"}):
        evt = succeeded(org, 5000, metadata=metadata)
        assert deliver(client, evt).status_code == 200
    assert balance(owner_conn, org) == 0
    assert owner_conn.execute("SELECT DISTINCT outcome FROM stripe_events").fetchall() == [
        ("ignored_not_ours",)]


def test_other_currency_is_stored_for_review_not_credited(
    client: FlaskClient, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    evt = succeeded(org, 5000, currency="eur")
    assert deliver(client, evt).status_code == 200
    assert balance(owner_conn, org) == 0
    assert owner_conn.execute("SELECT outcome FROM stripe_events WHERE id = %s",
                              (evt["id"],)).fetchone() == ("currency_mismatch",)


def test_unhandled_event_types_are_acknowledged(client: FlaskClient, org: uuid.UUID) -> None:
    evt = so.event("customer.created", {"id": "cus_1", "object": "customer"})
    assert deliver(client, evt).status_code == 200


# -- refunds and disputes ----------------------------------------------------------------------

def test_partial_refunds_take_back_only_the_new_part(client: FlaskClient, org: uuid.UUID,
                                                     owner_conn: psycopg.Connection) -> None:
    intent = so.payment_intent(org=org, amount=10000)
    deliver(client, so.event("payment_intent.succeeded", intent))
    first = so.event("charge.refunded", so.charge(intent=intent["id"], amount=10000,
                                                 amount_refunded=3000))
    deliver(client, first)
    deliver(client, first)  # redelivered
    deliver(client, so.event("charge.refunded", so.charge(intent=intent["id"], amount=10000,
                                                         amount_refunded=4500)))
    # An older refund event arriving late changes nothing: amount_refunded only grows.
    deliver(client, so.event("charge.refunded", so.charge(intent=intent["id"], amount=10000,
                                                         amount_refunded=3000)))
    assert balance(owner_conn, org) == Decimal("55.00")
    assert [row[:2] for row in ledger_rows(owner_conn, org)] == [
        ("purchase", Decimal("100.0000")), ("reversal", Decimal("-30.0000")),
        ("reversal", Decimal("-15.0000"))]


def test_lost_dispute_reverses_once_won_dispute_nothing(client: FlaskClient, org: uuid.UUID,
                                                       owner_conn: psycopg.Connection) -> None:
    intent = so.payment_intent(org=org, amount=4000)
    deliver(client, so.event("payment_intent.succeeded", intent))
    won = so.dispute(intent=intent["id"], amount=4000, status="won")
    deliver(client, so.event("charge.dispute.closed", won))
    assert balance(owner_conn, org) == Decimal("40.00")
    lost = so.dispute(intent=intent["id"], amount=4000)
    deliver(client, so.event("charge.dispute.closed", lost))
    deliver(client, so.event("charge.dispute.closed", lost))  # another event, same dispute
    assert balance(owner_conn, org) == 0
    assert [row[:2] for row in ledger_rows(owner_conn, org)] == [
        ("purchase", Decimal("40.0000")), ("reversal", Decimal("-40.0000"))]


def test_refund_plus_dispute_never_exceeds_the_purchase(client: FlaskClient, org: uuid.UUID,
                                                        owner_conn: psycopg.Connection) -> None:
    intent = so.payment_intent(org=org, amount=4000)
    deliver(client, so.event("payment_intent.succeeded", intent))
    deliver(client, so.event("charge.refunded", so.charge(intent=intent["id"], amount=4000,
                                                         amount_refunded=3000)))
    deliver(client, so.event("charge.dispute.closed",
                             so.dispute(intent=intent["id"], amount=4000)))
    assert balance(owner_conn, org) == 0
    reversed_total = owner_conn.execute(
        "SELECT sum(amount) FROM billing_transactions WHERE type = 'reversal'").fetchone()[0]
    assert reversed_total == Decimal("-40.0000")


def test_reversal_takes_what_is_there_and_records_the_shortfall(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    intent = so.payment_intent(org=org, amount=2000)
    deliver(client, so.event("payment_intent.succeeded", intent))
    spent = client.post("/api/billing/deduct", headers=auth("service"), json={
        "orgId": str(org), "smsCount": 1, "costPerSms": "15.00", "messageId": "m"})
    assert spent.status_code == 201
    deliver(client, so.event("charge.refunded", so.charge(intent=intent["id"], amount=2000,
                                                         amount_refunded=2000)))
    assert balance(owner_conn, org) == 0
    metadata = owner_conn.execute(
        "SELECT amount, metadata FROM billing_transactions WHERE type = 'reversal'").fetchone()
    assert metadata[0] == Decimal("-5.0000")
    assert (Decimal(str(metadata[1]["requested"])), Decimal(str(metadata[1]["shortfall"]))) == (
        Decimal("20"), Decimal("15"))
    listed = client.get("/api/billing/payments/shortfalls", headers=auth("admin")).get_json()
    assert listed["shortfalls"][0]["paymentIntentId"] == intent["id"]
    assert listed["shortfalls"][0]["shortfall"] == Decimal("15.00")
    assert client.get("/api/billing/payments/shortfalls",
                      headers=auth("member", org)).status_code == 403
    # A second refund event with nothing left to take writes no row, no shortfall twice.
    deliver(client, so.event("charge.refunded", so.charge(intent=intent["id"], amount=2000,
                                                         amount_refunded=2000)))
    assert owner_conn.execute("SELECT shortfall FROM stripe_payments").fetchone() == (
        Decimal("15.0000"),)


# -- order independence ------------------------------------------------------------------------

@pytest.mark.parametrize("order", list(itertools.permutations(("pi", "session", "refund"))))
def test_every_order_of_payment_session_and_partial_refund_ends_the_same(
    client: FlaskClient, org: uuid.UUID, owner_conn: psycopg.Connection, order: tuple
) -> None:
    intent = so.payment_intent(org=org, amount=8000)
    events = {
        "pi": so.event("payment_intent.succeeded", intent),
        "session": so.event("checkout.session.completed", so.checkout_session(
            org=org, amount_total=8000, payment_intent=intent["id"])),
        "refund": so.event("charge.refunded", so.charge(intent=intent["id"], amount=8000,
                                                       amount_refunded=2500)),
    }
    for name in order:
        assert deliver(client, events[name]).status_code == 200
    assert balance(owner_conn, org) == Decimal("55.00")
    assert sorted(row[:2] for row in ledger_rows(owner_conn, org)) == [
        ("purchase", Decimal("80.0000")), ("reversal", Decimal("-25.0000"))]


def test_dispute_before_the_credit_is_applied_when_it_lands(
    client: FlaskClient, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    intent = so.payment_intent(org=org, amount=3000)
    deliver(client, so.event("charge.dispute.closed", so.dispute(intent=intent["id"],
                                                                 amount=1000)))
    assert balance(owner_conn, org) == 0
    deliver(client, so.event("payment_intent.succeeded", intent))
    assert balance(owner_conn, org) == Decimal("20.00")


# -- failure and retry -------------------------------------------------------------------------

def test_database_failure_rolls_back_answers_500_then_the_retry_credits_once(
    client: FlaskClient, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    evt = succeeded(org, 4200)
    with ledger_inserts_fail(owner_conn, "disk full (simulated)"):
        response = deliver(client, evt)
        assert response.status_code == 500
        assert response.get_json()["error"]["code"] == "internal_error"
        assert balance(owner_conn, org) == 0
        stored = owner_conn.execute("SELECT outcome, processed_at, error FROM stripe_events"
                                    " WHERE id = %s", (evt["id"],)).fetchone()
        assert stored[0] == "failed" and stored[1] is None and "disk full" in stored[2]
    assert deliver(client, evt).status_code == 200
    assert deliver(client, evt).status_code == 200
    assert balance(owner_conn, org) == Decimal("42.00")
    assert owner_conn.execute("SELECT outcome, processed_at IS NOT NULL, attempts"
                              " FROM stripe_events WHERE id = %s", (evt["id"],)).fetchone() == (
        "credited", True, 2)


@pytest.mark.parametrize("currency,minor,expected", [("jpy", 5000, Decimal("5000")),
                                                     ("kwd", 12345, Decimal("12.345"))])
def test_minor_units_follow_the_currency_exponent(settings: Any, org: uuid.UUID,
                                                  owner_conn: psycopg.Connection,
                                                  currency: str, minor: int,
                                                  expected: Decimal) -> None:
    from billing_gateway import create_app

    app = create_app(settings.with_overrides(currency=currency))
    try:
        evt = succeeded(org, minor, currency=currency)
        assert deliver(app.test_client(), evt).status_code == 200
    finally:
        app.extensions["billing_pool"].close()
    assert balance(owner_conn, org) == expected


def test_an_amount_that_is_not_an_integer_is_never_credited(
    client: FlaskClient, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    evt = succeeded(org, 5000)
    evt["data"]["object"]["amount_received"] = 5000.9  # minor units are integers
    assert deliver(client, evt).status_code == 500
    assert balance(owner_conn, org) == 0
    owner_conn.execute("DELETE FROM stripe_events WHERE id = %s", (evt["id"],))
