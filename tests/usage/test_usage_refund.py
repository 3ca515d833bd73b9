"""POST /usage/refund: a message's charge given back once, never more than was charged."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.plugins.service import TokenFactory

REFUND = "/api/billing/usage/refund"


@pytest.fixture
def charged(client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID) -> dict:
    """An org with 1.00 and one charge of 3 x 0.05 for message 'sent-1'."""
    credit(org, "1.00")
    response = client.post("/api/billing/deduct", headers=auth("service"), json={
        "orgId": str(org), "smsCount": 3, "costPerSms": "0.05", "messageId": "sent-1",
        "campaignId": "spring"})
    assert response.status_code == 201
    return response.get_json()


def _refund(client: FlaskClient, auth: TokenFactory, org: uuid.UUID, role: str = "service",
            **body: object):  # type: ignore[no-untyped-def]
    return client.post(REFUND, headers=auth(role),
                       json={"orgId": str(org), "messageId": "sent-1", **body})


def _balance(client: FlaskClient, auth: TokenFactory, org: uuid.UUID) -> Decimal:
    return client.get(f"/api/billing/balance?orgId={org}", headers=auth("service")).get_json()[
        "balance"]


@pytest.mark.parametrize("role", ["service", "admin"])
def test_refund_gives_back_the_whole_charge_once(client: FlaskClient, auth: TokenFactory,
                                                 charged: dict, org: uuid.UUID,
                                                 role: str) -> None:
    response = _refund(client, auth, org, role)
    assert response.status_code == 201
    body = response.get_json()
    assert body["balance"] == Decimal("1.00")
    again = _refund(client, auth, org, role)
    assert again.status_code == 201
    assert again.get_json()["transactionId"] == body["transactionId"]
    assert _balance(client, auth, org) == Decimal("1.00")
    row = client.get("/api/billing/transactions?type=refund&limit=1",
                     headers=auth("member", org)).get_json()["transactions"][0]
    assert (row["amount"], row["message_id"], row["sms_count"], row["campaign_id"]) == (
        Decimal("0.15"), "sent-1", 3, "spring")


def test_partial_refund_then_no_second_refund(client: FlaskClient, auth: TokenFactory,
                                              charged: dict, org: uuid.UUID) -> None:
    assert _refund(client, auth, org, amount="0.05").get_json()["balance"] == Decimal("0.90")
    again = _refund(client, auth, org, amount="0.10")
    assert again.status_code == 201
    assert again.get_json()["balance"] == Decimal("0.90")
    assert _balance(client, auth, org) == Decimal("0.90")


def test_refund_above_the_charge_is_400(client: FlaskClient, auth: TokenFactory,
                                        charged: dict, org: uuid.UUID) -> None:
    response = _refund(client, auth, org, amount="0.1501")
    assert response.status_code == 400
    assert "amount" in response.get_json()["error"]["fields"]
    assert _balance(client, auth, org) == Decimal("0.85")
    assert _refund(client, auth, org, amount="0.15").status_code == 201


def test_message_never_charged_is_404(client: FlaskClient, auth: TokenFactory, charged: dict,
                                      org: uuid.UUID, other_org: uuid.UUID) -> None:
    assert _refund(client, auth, org, messageId="never-sent").status_code == 404
    # A message id of another org is not this org's charge.
    response = _refund(client, auth, other_org)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    assert _balance(client, auth, org) == Decimal("0.85")


def test_members_cannot_refund(client: FlaskClient, auth: TokenFactory, charged: dict,
                               org: uuid.UUID) -> None:
    response = client.post(REFUND, headers=auth("member", org),
                           json={"orgId": str(org), "messageId": "sent-1"})
    assert response.status_code == 403
    assert _balance(client, auth, org) == Decimal("0.85")


@pytest.mark.parametrize("body", [{"messageId": ""}, {"orgId": "x"}, {"amount": "0"},
                                  {"amount": "-1"}, {"amount": "0.00001"}, {"extra": 1}])
def test_invalid_refunds_are_400(client: FlaskClient, auth: TokenFactory, charged: dict,
                                 org: uuid.UUID, body: dict) -> None:
    assert _refund(client, auth, org, **body).status_code == 400
    assert _balance(client, auth, org) == Decimal("0.85")


def test_concurrent_refunds_of_one_message_refund_once(app: Flask, auth: TokenFactory,
                                                       charged: dict, org: uuid.UUID) -> None:
    headers = auth("service")

    def send(_: int) -> tuple[int, str]:
        response = app.test_client().post(REFUND, headers=headers,
                                          json={"orgId": str(org), "messageId": "sent-1"})
        return response.status_code, response.get_json()["transactionId"]

    with ThreadPoolExecutor(max_workers=10) as pool:
        results = list(pool.map(send, range(20)))
    assert {status for status, _ in results} == {201}
    assert len({tx for _, tx in results}) == 1
    assert _balance(app.test_client(), auth, org) == Decimal("1.00")


def test_a_bulk_charge_can_be_refunded(client: FlaskClient, auth: TokenFactory, credit,
                                       org: uuid.UUID) -> None:
    credit(org, "1.00")
    client.post("/api/billing/deduct/bulk", headers=auth("service"), json={"charges": [
        {"orgId": str(org), "smsCount": 2, "costPerSms": "0.10", "messageId": "bulk-1"}]})
    response = _refund(client, auth, org, messageId="bulk-1")
    assert response.status_code == 201
    assert response.get_json()["balance"] == Decimal("1.00")
