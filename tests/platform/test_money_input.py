"""Money and counts written as text are read strictly: ASCII digits, one sign, one decimal
point, an optional exponent. Python's Decimal() and int() also take other scripts' digits
and "_" separators; before this, "0_01" as costPerSms was charged as 1.00."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest
from flask.testing import FlaskClient

from billing_gateway.platform import money
from billing_gateway.platform.config import ConfigError, load_settings
from tests.plugins.service import TokenFactory

# Each is accepted by Decimal() (or int()) and must be refused by the service.
GENEROUS = ["１００", "٥", "1_000", "0_01", "١٢٣", "१०", "٣.٥", " 100", "100 ", "1 00", "1.0 0",
            "\t5", "5\n", "+-5", "--5", "5..0", "1e", "e5", "0x10", "1,000", "", "½", "²",
            "NaN", "Infinity", "inf", "1" * 41]


@pytest.mark.parametrize("text", GENEROUS)
def test_parse_amount_refuses_generous_text(text: str) -> None:
    with pytest.raises(money.AmountError):
        money.parse_amount(text)


@pytest.mark.parametrize("text,expected", [
    ("100", "100.0000"), ("100.5", "100.5000"), ("0.0075", "0.0075"), ("+5", "5.0000"),
    ("5.", "5.0000"), (".5", "0.5000"), ("1e3", "1000.0000"), ("1E+2", "100.0000"),
    ("250E-2", "2.5000"), ("007", "7.0000"),
])
def test_parse_amount_reads_plain_decimals(text: str, expected: str) -> None:
    assert money.parse_amount(text) == Decimal(expected)


@pytest.mark.parametrize("text", ["10", "0", "007"])
def test_whole_number_reads_ascii_digits(text: str) -> None:
    assert money.parse_whole_number(text) == int(text)


@pytest.mark.parametrize("text", ["１０", "٥", "1_0", "+1", "-1", " 1", "1.0", "", "1e2"])
def test_whole_number_refuses_everything_else(text: str) -> None:
    with pytest.raises(money.AmountError):
        money.parse_whole_number(text)


@pytest.mark.parametrize("text", ["１００", "1_000", "٥"])
def test_add_funds_refuses_generous_amounts(client: FlaskClient, auth: TokenFactory,
                                            org: uuid.UUID, text: str) -> None:
    response = client.post("/api/billing/add-funds", headers=auth("admin"),
                           json={"amount": text, "orgId": str(org)})
    assert response.status_code == 400
    assert "amount" in response.get_json()["error"]["fields"]
    balance = client.get(f"/api/billing/balance?orgId={org}", headers=auth("admin"))
    assert balance.get_json()["balance"] == 0


def test_underscored_price_is_not_charged_as_a_whole_unit(
        client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID) -> None:
    credit(org, "10.00")
    response = client.post("/api/billing/deduct", headers=auth("service"), json={
        "orgId": str(org), "smsCount": 1, "costPerSms": "0_01", "messageId": "m-underscore"})
    assert response.status_code == 400
    assert "costPerSms" in response.get_json()["error"]["fields"]
    bulk = client.post("/api/billing/deduct/bulk", headers=auth("service"), json={"charges": [
        {"orgId": str(org), "smsCount": 1, "costPerSms": "0_01", "messageId": "m-bulk"}]})
    assert bulk.get_json()["results"][0]["outcome"] == "invalid"
    balance = client.get(f"/api/billing/balance?orgId={org}", headers=auth("admin"))
    assert balance.get_json()["balance"] == Decimal("10.00")


@pytest.mark.parametrize("path,body", [
    ("/api/billing/orgs/{org}/pricing", {"smsPrice": "0_01"}),
    ("/api/billing/usage/refund", {"orgId": "{org}", "messageId": "m", "amount": "١"}),
])
def test_prices_and_refund_amounts_refuse_generous_text(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID, path: str, body: dict) -> None:
    filled = {k: v.format(org=org) if isinstance(v, str) else v for k, v in body.items()}
    method = client.put if "pricing" in path else client.post
    response = method(path.format(org=org), headers=auth("admin"), json=filled)
    assert response.status_code == 400
    assert set(response.get_json()["error"]["fields"]) & {"smsPrice", "amount"}


@pytest.mark.parametrize("query", ["limit=１０", "limit=1_0", "offset=٥", "limit=+5"])
def test_history_query_numbers_are_ascii(client: FlaskClient, auth: TokenFactory,
                                         org: uuid.UUID, query: str) -> None:
    response = client.get(f"/api/billing/transactions?{query}", headers=auth("member", org))
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"


def test_balance_required_query_is_strict(client: FlaskClient, auth: TokenFactory,
                                          org: uuid.UUID) -> None:
    refused = client.get("/api/billing/balance?required=1_0", headers=auth("member", org))
    assert refused.status_code == 400
    plain = client.get("/api/billing/balance?required=10", headers=auth("member", org))
    assert plain.get_json()["sufficient"] is False


@pytest.mark.parametrize("name,value", [("BILLING_MIN_TOPUP", "5_00"),
                                        ("BILLING_DEFAULT_SMS_PRICE", "٠.٠١"),
                                        ("BILLING_DB_POOL_MAX", "1_0"),
                                        ("BILLING_DB_POOL_MAX", "１０"),
                                        ("STRIPE_TIMEOUT", "1_0"),
                                        ("STRIPE_TIMEOUT", "５"),
                                        ("BILLING_DB_POOL_TIMEOUT", "2s")])
def test_settings_read_numbers_strictly(name: str, value: str, tmp_path) -> None:
    with pytest.raises(ConfigError):
        load_settings({name: value, "BILLING_DATA_DIR": str(tmp_path)})
