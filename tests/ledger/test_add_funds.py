"""POST /add-funds: exact amounts, validation, and retries that never pay twice."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.plugins.service import TokenFactory

ADD_FUNDS = "/api/billing/add-funds"


def _post_raw(client: FlaskClient, headers: dict, body: str, **extra: str):  # type: ignore[no-untyped-def]
    return client.post(ADD_FUNDS, data=body, headers={**headers, **extra},
                       content_type="application/json")


def _balance(client: FlaskClient, auth: TokenFactory, org: uuid.UUID) -> Decimal:
    return client.get("/api/billing/balance", headers=auth("member", org)).get_json()["balance"]


def test_add_funds_credits_and_answers_contract_shape(client: FlaskClient, auth: TokenFactory,
                                                      org: uuid.UUID) -> None:
    response = client.post(ADD_FUNDS, headers=auth("admin"),
                           json={"amount": "100.00", "orgId": str(org),
                                 "description": "Added $100 credits"})
    assert response.status_code == 201
    body = response.get_json()
    assert set(body) == {"message", "transactionId", "balance", "formatted"}
    assert body["message"] == "Credits added successfully"
    assert uuid.UUID(body["transactionId"])
    assert body["balance"] == Decimal("100.00")
    assert body["formatted"] == "$100.00"
    assert _balance(client, auth, org) == Decimal("100")


def test_json_numbers_stay_exact_end_to_end(client: FlaskClient, auth: TokenFactory,
                                            org: uuid.UUID) -> None:
    # 0.1 + 0.2 is 0.30000000000000004 in floats; the ledger must say 0.30.
    for amount in ("0.10", "0.20"):
        _post_raw(client, auth("admin"), f'{{"amount": {amount}, "orgId": "{org}"}}')
    raw = client.get("/api/billing/balance", headers=auth("member", org)).get_data(as_text=True)
    assert raw == '{"balance":0.30,"formatted":"$0.30","currency":"usd","smsPrice":0.0075}'


def test_admin_credits_own_org_from_token(client: FlaskClient, auth: TokenFactory,
                                          org: uuid.UUID) -> None:
    response = client.post(ADD_FUNDS, headers=auth("admin", org), json={"amount": 7})
    assert response.status_code == 201
    assert _balance(client, auth, org) == Decimal("7")


@pytest.mark.parametrize("credit_type", ["purchase", "bonus", "adjustment", "refund"])
def test_each_credit_type_is_recorded(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                                      credit_type: str) -> None:
    client.post(ADD_FUNDS, headers=auth("admin"),
                json={"amount": 3, "orgId": str(org), "type": credit_type})
    rows = client.get("/api/billing/transactions", headers=auth("member", org)).get_json()
    assert [t["type"] for t in rows["transactions"]] == [credit_type]


@pytest.mark.parametrize(
    "raw_amount",
    ["NaN", "Infinity", "-Infinity", "1e309", "-1", "0", "0.00", "0.001", "1.005",
     "1e10", "99999999999999999999", '"abc"', '"NaN"', '"Infinity"', '"1e400"', '""', "null",
     "true", "false", "[]", "{}", '"-5"', '"0.001"', "1" + "0" * 5000, '" 3 "'],
)
def test_invalid_amounts_are_400_and_write_nothing(client: FlaskClient, auth: TokenFactory,
                                                   org: uuid.UUID, raw_amount: str) -> None:
    response = _post_raw(client, auth("admin"), f'{{"amount": {raw_amount}, "orgId": "{org}"}}')
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json()["error"]["code"] == "validation_error"
    assert _balance(client, auth, org) == 0


@pytest.mark.parametrize("raw_amount,expected",
                         [("12.5", "12.50"), ('"12.50"', "12.50"), ("1000000000", "1000000000.00"),
                          ("0.01", "0.01"), ('"3"', "3.00"), ("5E+1", "50.00")])
def test_valid_amount_forms(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                            raw_amount: str, expected: str) -> None:
    response = _post_raw(client, auth("admin"), f'{{"amount": {raw_amount}, "orgId": "{org}"}}')
    assert response.status_code == 201, response.get_data(as_text=True)
    assert _balance(client, auth, org) == Decimal(expected)


def test_missing_amount_names_the_field(client: FlaskClient, auth: TokenFactory,
                                        org: uuid.UUID) -> None:
    response = client.post(ADD_FUNDS, headers=auth("admin"), json={"orgId": str(org)})
    assert response.status_code == 400
    assert "amount" in response.get_json()["error"]["fields"]


@pytest.mark.parametrize("body", [{"amount": 1, "type": "sms_send"},
                                  {"amount": 1, "type": "reversal"},
                                  {"amount": 1, "orgId": "not-a-uuid"},
                                  {"amount": 1, "paymentMethod": "x" * 51},
                                  {"amount": 1, "description": "x" * 1001},
                                  {"amount": 1, "unexpected": True}])
def test_invalid_fields_are_400(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                                body: dict) -> None:
    response = client.post(ADD_FUNDS, headers=auth("admin", org), json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["fields"]


@pytest.mark.parametrize("body", ["{", "not json", '{"amount": 1,}', "[1, 2", "\xff"])
def test_malformed_json_is_400(client: FlaskClient, auth: TokenFactory, body: str) -> None:
    response = _post_raw(client, auth("admin"), body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"


def test_body_that_is_not_an_object_is_400(client: FlaskClient, auth: TokenFactory) -> None:
    response = _post_raw(client, auth("admin"), "[1, 2, 3]")
    assert response.status_code == 400


def test_body_over_one_mib_is_413(client: FlaskClient, auth: TokenFactory,
                                  org: uuid.UUID) -> None:
    body = '{"amount": 1, "description": "' + "x" * (1024 * 1024) + '"}'
    response = _post_raw(client, auth("admin", org), body)
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "payload_too_large"
    assert _balance(client, auth, org) == 0


def test_repeated_payment_intent_replays_original(client: FlaskClient, auth: TokenFactory,
                                                  org: uuid.UUID) -> None:
    body = {"amount": "25.00", "orgId": str(org), "paymentIntentId": "pi_3Abc",
            "paymentMethod": "stripe"}
    first = client.post(ADD_FUNDS, headers=auth("admin"), json=body)
    client.post(ADD_FUNDS, headers=auth("admin"), json={"amount": 5, "orgId": str(org)})
    again = client.post(ADD_FUNDS, headers=auth("admin"), json=body)
    assert first.status_code == again.status_code == 201
    assert again.get_json()["transactionId"] == first.get_json()["transactionId"]
    assert again.get_json()["balance"] == Decimal("25.00")
    assert _balance(client, auth, org) == Decimal("30.00")


def test_payment_intent_with_another_amount_is_409(client: FlaskClient, auth: TokenFactory,
                                                   org: uuid.UUID) -> None:
    body = {"amount": "25.00", "orgId": str(org), "paymentIntentId": "pi_amount"}
    client.post(ADD_FUNDS, headers=auth("admin"), json=body)
    response = client.post(ADD_FUNDS, headers=auth("admin"), json={**body, "amount": "26.00"})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "idempotency_conflict"
    assert _balance(client, auth, org) == Decimal("25.00")


def test_payment_intent_of_another_org_is_409(client: FlaskClient, auth: TokenFactory,
                                              org: uuid.UUID, other_org: uuid.UUID) -> None:
    client.post(ADD_FUNDS, headers=auth("admin"),
                json={"amount": 9, "orgId": str(org), "paymentIntentId": "pi_shared"})
    response = client.post(ADD_FUNDS, headers=auth("admin"),
                           json={"amount": 9, "orgId": str(other_org),
                                 "paymentIntentId": "pi_shared"})
    assert response.status_code == 409
    assert _balance(client, auth, other_org) == 0


def test_payment_intent_on_a_bonus_is_not_deduplicated(client: FlaskClient, auth: TokenFactory,
                                                       org: uuid.UUID) -> None:
    # Only purchases are keyed on the PaymentIntent; a bonus citing it is its own credit.
    body = {"amount": 2, "orgId": str(org), "paymentIntentId": "pi_bonus", "type": "bonus"}
    client.post(ADD_FUNDS, headers=auth("admin"), json=body)
    client.post(ADD_FUNDS, headers=auth("admin"), json=body)
    assert _balance(client, auth, org) == Decimal("4")


def test_idempotency_key_replays_the_first_answer(client: FlaskClient, auth: TokenFactory,
                                                  org: uuid.UUID) -> None:
    headers = {**auth("admin"), "Idempotency-Key": "retry-1"}
    body = {"amount": "10.00", "orgId": str(org)}
    first = client.post(ADD_FUNDS, headers=headers, json=body)
    second = client.post(ADD_FUNDS, headers=headers, json=body)
    assert second.status_code == 201
    assert second.get_data() == first.get_data()
    assert second.headers["Idempotent-Replayed"] == "true"
    assert _balance(client, auth, org) == Decimal("10.00")


def test_idempotency_key_with_another_body_is_409(client: FlaskClient, auth: TokenFactory,
                                                  org: uuid.UUID) -> None:
    headers = {**auth("admin"), "Idempotency-Key": "retry-2"}
    client.post(ADD_FUNDS, headers=headers, json={"amount": 10, "orgId": str(org)})
    response = client.post(ADD_FUNDS, headers=headers, json={"amount": 11, "orgId": str(org)})
    assert response.status_code == 409
    assert response.get_json()["error"]["code"] == "idempotency_conflict"
    assert _balance(client, auth, org) == Decimal("10")


def test_idempotency_key_for_another_org_is_409(client: FlaskClient, auth: TokenFactory,
                                                org: uuid.UUID, other_org: uuid.UUID) -> None:
    headers = {**auth("admin"), "Idempotency-Key": "retry-3"}
    client.post(ADD_FUNDS, headers=headers, json={"amount": 10, "orgId": str(org)})
    response = client.post(ADD_FUNDS, headers=headers, json={"amount": 10, "orgId": str(other_org)})
    assert response.status_code == 409
    assert _balance(client, auth, other_org) == 0


def test_idempotency_keys_are_per_caller(client: FlaskClient, auth: TokenFactory,
                                         org: uuid.UUID) -> None:
    body = {"amount": 1, "orgId": str(org)}
    for subject in ("admin-a", "admin-b"):
        headers = {**auth("admin", subject=subject), "Idempotency-Key": "same"}
        assert client.post(ADD_FUNDS, headers=headers, json=body).status_code == 201
    assert _balance(client, auth, org) == Decimal("2")


def test_failed_request_leaves_its_key_free(client: FlaskClient, auth: TokenFactory,
                                            org: uuid.UUID, other_org: uuid.UUID) -> None:
    client.post(ADD_FUNDS, headers=auth("admin"),
                json={"amount": 1, "orgId": str(other_org), "paymentIntentId": "pi_taken"})
    headers = {**auth("admin"), "Idempotency-Key": "after-failure"}
    body = {"amount": 1, "orgId": str(org), "paymentIntentId": "pi_taken"}
    assert client.post(ADD_FUNDS, headers=headers, json=body).status_code == 409
    fixed = {"amount": 1, "orgId": str(org), "paymentIntentId": "pi_free"}
    # The key was not consumed by the failure, but it is bound to nothing: any body may use it.
    assert client.post(ADD_FUNDS, headers=headers, json=fixed).status_code == 201


@pytest.mark.parametrize("key", ["", "k" * 256, "tab\there"])
def test_invalid_idempotency_key_is_400(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                                        key: str) -> None:
    headers = {**auth("admin"), "Idempotency-Key": key}
    response = client.post(ADD_FUNDS, headers=headers, json={"amount": 1, "orgId": str(org)})
    assert response.status_code == 400


def test_concurrent_retries_with_one_key_credit_once(app: Flask, auth: TokenFactory,
                                                     org: uuid.UUID,
                                                     owner_conn: psycopg.Connection) -> None:
    headers = {**auth("admin"), "Idempotency-Key": "storm"}
    body = {"amount": "3.00", "orgId": str(org)}

    def send(_: int) -> tuple[int, str]:
        response = app.test_client().post(ADD_FUNDS, headers=headers, json=body)
        return response.status_code, response.get_json()["transactionId"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = list(pool.map(send, range(20)))
    assert {status for status, _ in results} == {201}
    assert len({tx for _, tx in results}) == 1
    count = owner_conn.execute("SELECT count(*) FROM billing_transactions WHERE org_id = %s",
                               (org,)).fetchone()
    assert count == (1,)


def test_concurrent_payment_intent_credits_once(app: Flask, auth: TokenFactory, org: uuid.UUID,
                                                owner_conn: psycopg.Connection) -> None:
    body = {"amount": "40.00", "orgId": str(org), "paymentIntentId": "pi_race"}

    def send(_: int) -> int:
        return app.test_client().post(ADD_FUNDS, headers=auth("admin"), json=body).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = list(pool.map(send, range(20)))
    assert set(statuses) == {201}
    total = owner_conn.execute("SELECT sum(amount) FROM billing_transactions WHERE org_id = %s",
                               (org,)).fetchone()
    assert total == (Decimal("40.0000"),)
