"""POST /deduct: exact SMS charges, never below zero, never twice for one message."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.plugins.service import TokenFactory

DEDUCT = "/api/billing/deduct"


def _charge(client: FlaskClient, auth: TokenFactory, org: uuid.UUID, message_id: str,
            sms_count: int = 1, **extra: object):  # type: ignore[no-untyped-def]
    body = {"orgId": str(org), "smsCount": sms_count, "messageId": message_id, **extra}
    return client.post(DEDUCT, headers=auth("service"), json=body)


def _balance(client: FlaskClient, auth: TokenFactory, org: uuid.UUID) -> Decimal:
    return client.get(f"/api/billing/balance?orgId={org}", headers=auth("service")).get_json()[
        "balance"]


def test_charge_answers_contract_shape(client: FlaskClient, auth: TokenFactory, credit,
                                       org: uuid.UUID) -> None:
    credit(org, "10.00")
    response = _charge(client, auth, org, "msg-1", 3, costPerSms="0.0100", campaignId="c1")
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"transactionId", "balance", "formatted"}
    assert body["balance"] == Decimal("9.97")
    assert body["formatted"] == "$9.97"
    row = client.get("/api/billing/transactions?limit=1", headers=auth("member", org)).get_json()[
        "transactions"][0]
    assert (row["type"], row["amount"], row["sms_count"], row["cost_per_sms"], row["message_id"],
            row["campaign_id"]) == ("sms_send", Decimal("-0.03"), 3, Decimal("0.01"), "msg-1", "c1")


@pytest.mark.parametrize("role", ["member", "admin"])
def test_only_the_service_role_charges(client: FlaskClient, auth: TokenFactory, credit,
                                       org: uuid.UUID, role: str) -> None:
    credit(org, "1.00")
    response = client.post(DEDUCT, headers=auth(role, org),
                           json={"orgId": str(org), "smsCount": 1, "messageId": "m"})
    assert response.status_code == 403
    assert _balance(client, auth, org) == Decimal("1.00")


def test_thousand_sub_cent_charges_cost_exactly_7_50(client: FlaskClient, auth: TokenFactory,
                                                     credit, org: uuid.UUID) -> None:
    credit(org, "10.00")
    for i in range(1000):
        assert _charge(client, auth, org, f"m{i}", costPerSms="0.0075").status_code == 201
    assert _balance(client, auth, org) == Decimal("2.50")


def test_default_price_then_org_price(client: FlaskClient, auth: TokenFactory, credit,
                                      org: uuid.UUID, owner_conn: psycopg.Connection) -> None:
    credit(org, "1.00")
    _charge(client, auth, org, "default-priced")  # BILLING_DEFAULT_SMS_PRICE 0.0075
    assert _balance(client, auth, org) == Decimal("0.9925")
    owner_conn.execute("UPDATE organizations SET sms_price = 0.02 WHERE id = %s", (org,))
    _charge(client, auth, org, "org-priced", 2)
    assert _balance(client, auth, org) == Decimal("0.9525")
    _charge(client, auth, org, "request-priced", 1, costPerSms="0.5")
    assert _balance(client, auth, org) == Decimal("0.4525")


def test_insufficient_balance_is_402_and_charges_nothing(client: FlaskClient, auth: TokenFactory,
                                                         credit, org: uuid.UUID) -> None:
    credit(org, "0.05")
    response = _charge(client, auth, org, "too-much", 10, costPerSms="0.01")
    assert response.status_code == 402
    assert response.get_json()["error"]["code"] == "insufficient_funds"
    assert _balance(client, auth, org) == Decimal("0.05")
    # The refused message may be charged later, once funds arrive.
    credit(org, "1.00")
    assert _charge(client, auth, org, "too-much", 10, costPerSms="0.01").status_code == 201


def test_unknown_org_has_nothing_to_charge(client: FlaskClient, auth: TokenFactory,
                                           org: uuid.UUID) -> None:
    assert _charge(client, auth, org, "m").status_code == 402


def test_repeated_message_returns_original_charge(client: FlaskClient, auth: TokenFactory,
                                                  credit, org: uuid.UUID) -> None:
    credit(org, "1.00")
    first = _charge(client, auth, org, "once", 2, costPerSms="0.10")
    _charge(client, auth, org, "other", 1, costPerSms="0.10")
    again = _charge(client, auth, org, "once", 2, costPerSms="0.10")
    assert again.status_code == 201
    assert again.get_json()["transactionId"] == first.get_json()["transactionId"]
    assert again.get_json()["balance"] == Decimal("0.80")
    assert _balance(client, auth, org) == Decimal("0.70")


@pytest.mark.parametrize("body", [
    {"smsCount": 0}, {"smsCount": -1}, {"smsCount": 1.5}, {"smsCount": "3"}, {"smsCount": True},
    {"smsCount": 1_000_001}, {"costPerSms": "0.00001"}, {"costPerSms": 0}, {"costPerSms": "NaN"},
    {"messageId": ""}, {"messageId": None}, {"orgId": "acme"},
    {"smsCount": 1_000_000, "costPerSms": 5000},
])
def test_invalid_charges_are_400(client: FlaskClient, auth: TokenFactory, credit,
                                 org: uuid.UUID, body: dict) -> None:
    credit(org, "1.00")
    payload = {"orgId": str(org), "smsCount": 1, "messageId": "m", **body}
    response = client.post(DEDUCT, headers=auth("service"), json=payload)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["fields"]
    assert _balance(client, auth, org) == Decimal("1.00")


def test_200_parallel_charges_of_1_against_50_over_http(app: Flask, auth: TokenFactory, credit,
                                                        org: uuid.UUID,
                                                        owner_conn: psycopg.Connection) -> None:
    credit(org, "50.00")
    headers = auth("service")

    def send(i: int) -> int:
        return app.test_client().post(DEDUCT, headers=headers, json={
            "orgId": str(org), "smsCount": 1, "costPerSms": "1.00",
            "messageId": f"p{i}"}).status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        statuses = Counter(pool.map(send, range(200)))
    assert statuses == {201: 50, 402: 150}
    balance, total = owner_conn.execute(
        "SELECT sms_balance, (SELECT sum(amount) FROM billing_transactions WHERE org_id = %s)"
        " FROM organizations WHERE id = %s", (org, org)).fetchone()
    assert balance == total == Decimal("0")


def test_same_message_sent_concurrently_over_http_charges_once(
    app: Flask, auth: TokenFactory, credit, org: uuid.UUID
) -> None:
    credit(org, "5.00")
    headers = auth("service")

    def send(_: int) -> tuple[int, str]:
        response = app.test_client().post(DEDUCT, headers=headers, json={
            "orgId": str(org), "smsCount": 1, "costPerSms": "0.25", "messageId": "dup"})
        return response.status_code, response.get_json()["transactionId"]

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(send, range(20)))
    assert {status for status, _ in results} == {201}
    assert len({tx for _, tx in results}) == 1
    assert _balance(app.test_client(), auth, org) == Decimal("4.75")


@pytest.mark.parametrize("required,sufficient", [("12.50", True), ("12.5001", False),
                                                 ("0.0001", True)])
def test_balance_answers_whether_it_covers_an_amount(client: FlaskClient, auth: TokenFactory,
                                                     credit, org: uuid.UUID, required: str,
                                                     sufficient: bool) -> None:
    credit(org, "12.50")
    body = client.get(f"/api/billing/balance?orgId={org}&required={required}",
                      headers=auth("service")).get_json()
    assert body["sufficient"] is sufficient
    assert body["balance"] == Decimal("12.50")


@pytest.mark.parametrize("required", ["0", "-1", "NaN", "abc", "0.00001"])
def test_invalid_required_amount_is_400(client: FlaskClient, auth: TokenFactory,
                                        org: uuid.UUID, required: str) -> None:
    response = client.get(f"/api/billing/balance?orgId={org}&required={required}",
                          headers=auth("service"))
    assert response.status_code == 400
    assert "required" in response.get_json()["error"]["fields"]


def test_plain_balance_has_no_sufficient_field(client: FlaskClient, auth: TokenFactory,
                                               org: uuid.UUID) -> None:
    body = client.get(f"/api/billing/balance?orgId={org}", headers=auth("service")).get_json()
    assert "sufficient" not in body
