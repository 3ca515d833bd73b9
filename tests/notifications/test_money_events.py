"""The outbox: every money event written by the ledger's own SQL in the transaction of its
change, threshold crossings decided under the org's row lock, once per crossing."""

from __future__ import annotations

import itertools
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg
from flask.testing import FlaskClient

from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import as_app_role
from tests import stripe_objects as so
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import balance, deliver

DEDUCT = "/api/billing/deduct"
_messages = itertools.count()


def events(owner_conn: psycopg.Connection, org: uuid.UUID) -> list[tuple[str, dict[str, Any]]]:
    """The org's events, oldest first: (type, data)."""
    return [(kind, data) for kind, data in owner_conn.execute(
        "SELECT type, data FROM outbox_events WHERE org_id = %s ORDER BY seq", (org,))]


def types(owner_conn: psycopg.Connection, org: uuid.UUID) -> list[str]:
    """The org's event types, oldest first."""
    return [kind for kind, _ in events(owner_conn, org)]


def charge(client: FlaskClient, auth: TokenFactory, org: uuid.UUID, amount: str,
           **headers: str) -> int:
    """Charge one SMS at `amount`; the status code."""
    return client.post(DEDUCT, headers={**auth("service"), **headers}, json={
        "orgId": str(org), "smsCount": 1, "costPerSms": amount,
        "messageId": f"m-{next(_messages)}"}).status_code


def test_low_fires_once_per_crossing_and_rearms_above_the_threshold(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    credit(org, "10.00")
    assert charge(client, auth, org, "4.00") == 201        # 6.00: above 5.00
    assert types(owner_conn, org) == []
    assert charge(client, auth, org, "1.50") == 201        # 4.50: crossed
    assert charge(client, auth, org, "1.00") == 201        # 3.50: still low
    assert types(owner_conn, org) == ["balance.low"]
    credit(org, "1.00")                                    # 4.50: below, not re-armed
    assert charge(client, auth, org, "0.50") == 201        # 4.00
    assert types(owner_conn, org) == ["balance.low"]
    credit(org, "1.00")                                    # 4.00 -> 5.00: at the threshold
    assert types(owner_conn, org) == ["balance.low", "balance.recovered"]
    assert charge(client, auth, org, "0.01") == 201        # 4.99: a new crossing
    low, _, again = events(owner_conn, org)
    assert low[1] == {"orgId": str(org), "balance": 4.5, "threshold": 5.0}
    assert again == ("balance.low", {"orgId": str(org), "balance": 4.99, "threshold": 5.0})


def test_depleted_fires_once_per_episode_at_zero_or_on_a_refused_charge(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        other_org: uuid.UUID, owner_conn: psycopg.Connection) -> None:
    credit(org, "10.00")
    assert charge(client, auth, org, "10.00") == 201       # 10.00 -> 0: low and depleted
    assert types(owner_conn, org) == ["balance.low", "balance.depleted"]
    assert charge(client, auth, org, "0.01") == 402
    assert types(owner_conn, org) == ["balance.low", "balance.depleted"]
    # A refusal below the threshold starts the episode's depletion, once, and is said so.
    credit(other_org, "6.00")
    assert charge(client, auth, other_org, "2.00") == 201  # 4.00: low
    assert charge(client, auth, other_org, "5.00") == 402
    assert charge(client, auth, other_org, "5.00", **{"Idempotency-Key": "k-1"}) == 402
    assert charge(client, auth, other_org, "1.00") == 201
    low, depleted = events(owner_conn, other_org)
    assert low[0] == "balance.low"
    assert depleted == ("balance.depleted", {"orgId": str(other_org), "balance": 4.0,
                                             "threshold": 5.0, "chargeRefused": True})


def test_a_refusal_above_the_threshold_is_no_depletion(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    credit(org, "50.00")
    assert charge(client, auth, org, "80.00") == 402
    assert types(owner_conn, org) == []


def test_a_refusal_with_an_idempotency_key_still_records_the_depletion(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    credit(org, "3.00")
    assert types(owner_conn, org) == []  # credits from nothing cross nothing
    assert charge(client, auth, org, "5.00", **{"Idempotency-Key": "refused-1"}) == 402
    assert types(owner_conn, org) == ["balance.depleted"]
    state = owner_conn.execute("SELECT alert_state FROM organizations WHERE id = %s",
                               (org,)).fetchone()
    assert state == ("depleted",)


def test_the_orgs_own_threshold_and_the_deployment_default(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        other_org: uuid.UUID, owner_conn: psycopg.Connection, settings: Settings) -> None:
    assert settings.low_balance_default == Decimal("5.00")
    put = client.put(f"/api/billing/orgs/{org}/alerts", headers=auth("member", org),
                     json={"lowBalanceThreshold": "20.00", "emails": []})
    assert put.status_code == 200
    credit(org, "25.00")
    credit(other_org, "25.00")
    assert charge(client, auth, org, "6.00") == 201
    assert charge(client, auth, other_org, "6.00") == 201
    assert events(owner_conn, org) == [
        ("balance.low", {"orgId": str(org), "balance": 19.0, "threshold": 20.0})]
    assert types(owner_conn, other_org) == []


def test_a_bulk_charge_crosses_once_per_org_and_names_its_last_row(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        other_org: uuid.UUID, owner_conn: psycopg.Connection) -> None:
    credit(org, "6.00")
    credit(other_org, "1.00")
    items = [{"orgId": str(org), "smsCount": 1, "costPerSms": "0.50", "messageId": f"b-{i}"}
             for i in range(14)]  # 6.00 covers 12: two refused
    items += [{"orgId": str(other_org), "smsCount": 1, "costPerSms": "0.10",
               "messageId": f"c-{i}"} for i in range(3)]  # 0.70 left: above nothing, below 5
    answer = client.post("/api/billing/deduct/bulk", headers=auth("service"),
                         json={"charges": items})
    assert answer.status_code == 200, answer.get_json()
    assert answer.get_json()["summary"]["insufficientFunds"] == 2
    assert types(owner_conn, org) == ["balance.low", "balance.depleted"]
    assert types(owner_conn, other_org) == ["balance.low"]
    # The low event names the batch's last row of the org, whose balance it carries.
    row = owner_conn.execute(
        "SELECT e.data->>'balance', t.balance_after FROM outbox_events e"
        " JOIN billing_transactions t ON t.org_id = e.org_id AND t.seq = e.ledger_seq"
        " WHERE e.org_id = %s AND e.type = 'balance.low'", (other_org,)).fetchone()
    assert row is not None and Decimal(row[0]) == row[1] == Decimal("0.70")


def test_a_rolled_back_change_leaves_no_event(credit: Any, org: uuid.UUID,
                                              owner_conn: psycopg.Connection,
                                              database_url: str) -> None:
    credit(org, "6.00")
    with psycopg.connect(database_url) as conn:  # not autocommit: one transaction
        as_app_role(conn)
        conn.execute("SELECT set_config('billing.org_id', %s, true)", (str(org),))
        conn.execute("SELECT charge_sms(%s, 5.00, 1, 5.00, 'rolled-back')", (org,))
        assert conn.execute("SELECT count(*) FROM pg_class").fetchone()  # still inside
        conn.rollback()
    assert types(owner_conn, org) == []
    assert balance(owner_conn, org) == Decimal("6.00")


def test_a_paid_top_up_and_its_refund_are_events(client: FlaskClient, org: uuid.UUID,
                                                 owner_conn: psycopg.Connection) -> None:
    intent = so.payment_intent(org=org, amount=1000)
    deliver(client, so.event("payment_intent.succeeded", intent))
    deliver(client, so.event("payment_intent.succeeded", intent))  # redelivered: one event
    deliver(client, so.event("charge.refunded", so.charge(intent=intent["id"], amount=1000,
                                                         amount_refunded=700)))
    assert events(owner_conn, org) == [
        ("topup.succeeded", {"orgId": str(org), "balance": 10.0, "amount": 10.0,
                             "paymentIntentId": intent["id"]}),
        ("topup.reversed", {"orgId": str(org), "balance": 3.0, "amount": 7.0,
                            "requested": 7.0, "paymentIntentId": intent["id"],
                            "reason": "refund"}),
        ("balance.low", {"orgId": str(org), "balance": 3.0, "threshold": 5.0})]


def test_a_hundred_concurrent_charges_cross_the_threshold_once(
        credit: Any, org: uuid.UUID, owner_conn: psycopg.Connection,
        database_url: str) -> None:
    credit(org, "10.00")

    def charge_one(i: int) -> str:
        with psycopg.connect(database_url, autocommit=True) as conn:
            as_app_role(conn)
            row = conn.execute("SELECT outcome FROM api_charge(%s, 'sender', 1, 0.10, 0.05,"
                               " %s, NULL, NULL)", (org, f"burst-{i}")).fetchone()
            assert row is not None
            return str(row[0])

    with ThreadPoolExecutor(max_workers=25) as pool:
        outcomes = Counter(pool.map(charge_one, range(100)))
    assert outcomes == {"charged": 100}
    assert balance(owner_conn, org) == 0
    assert Counter(types(owner_conn, org)) == {"balance.low": 1, "balance.depleted": 1}


def test_a_bulk_refusal_above_the_threshold_is_no_depletion_even_if_the_batch_goes_low(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    credit(org, "10.00")
    answer = client.post("/api/billing/deduct/bulk", headers=auth("service"), json={
        "charges": [{"orgId": str(org), "smsCount": 1, "costPerSms": "20.00",
                     "messageId": "big"},    # refused at 10.00: only too large
                    {"orgId": str(org), "smsCount": 1, "costPerSms": "6.00",
                     "messageId": "small"}]})  # charged: 4.00, below 5.00
    assert [r["outcome"] for r in answer.get_json()["results"]] == [
        "insufficient_funds", "charged"]
    assert types(owner_conn, org) == ["balance.low"]
    assert charge(client, auth, org, "4.00") == 201  # the real depletion still alerts
    assert types(owner_conn, org) == ["balance.low", "balance.depleted"]


def test_lowering_the_threshold_below_the_balance_ends_the_episode(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    credit(org, "8.00")
    assert charge(client, auth, org, "4.00") == 201  # 4.00: low against 5.00
    put = client.put(f"/api/billing/orgs/{org}/alerts", headers=auth("member", org),
                     json={"lowBalanceThreshold": "2.00", "emails": []})
    assert put.status_code == 200
    assert events(owner_conn, org)[-1] == (
        "balance.recovered", {"orgId": str(org), "balance": 4.0, "threshold": 2.0})
    assert charge(client, auth, org, "3.00") == 201  # 1.00: a new crossing of 2.00
    assert types(owner_conn, org) == ["balance.low", "balance.recovered", "balance.low"]
