"""POST /deduct/bulk: many charges across orgs, each applied or refused on its own."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from tests.plugins.service import TokenFactory

BULK = "/api/billing/deduct/bulk"


def _item(org: uuid.UUID, message_id: str, sms_count: int = 1, **extra: Any) -> dict[str, Any]:
    return {"orgId": str(org), "smsCount": sms_count, "messageId": message_id, **extra}


def _bulk(client: FlaskClient, auth: TokenFactory, charges: list[Any],
          **headers: str) -> Any:
    return client.post(BULK, headers={**auth("service"), **headers}, json={"charges": charges})


def _balance(client: FlaskClient, auth: TokenFactory, org: uuid.UUID) -> Decimal:
    return client.get(f"/api/billing/balance?orgId={org}", headers=auth("service")).get_json()[
        "balance"]


def _ledger_rows(owner_conn: psycopg.Connection, org: uuid.UUID) -> list[tuple]:
    return owner_conn.execute(
        "SELECT seq, type_seq, message_id, amount, balance_before, balance_after"
        " FROM billing_transactions WHERE org_id = %s AND type = 'sms_send' ORDER BY seq",
        (org,)).fetchall()


def test_outcomes_in_request_order_across_orgs(client: FlaskClient, auth: TokenFactory, credit,
                                               org: uuid.UUID, other_org: uuid.UUID) -> None:
    credit(org, "1.00")
    credit(other_org, "0.10")
    response = _bulk(client, auth, [
        _item(org, "a1", costPerSms="0.40"),
        _item(other_org, "b1", costPerSms="0.20"),     # more than 0.10: refused
        _item(org, "a2", 2, costPerSms="0.25"),
        {"orgId": "not-a-uuid", "smsCount": 1, "messageId": "x"},
        _item(other_org, "b2", costPerSms="0.10"),     # fits after b1's refusal
        _item(org, "a3", costPerSms="0.20"),           # 0.10 left: refused
    ])
    assert response.status_code == 200
    body = response.get_json()
    outcomes = [(r["index"], r["outcome"], r.get("balance")) for r in body["results"]]
    assert outcomes == [
        (0, "charged", Decimal("0.60")),
        (1, "insufficient_funds", Decimal("0.10")),
        (2, "charged", Decimal("0.10")),
        (3, "invalid", None),
        (4, "charged", Decimal("0.00")),
        (5, "insufficient_funds", Decimal("0.10")),
    ]
    assert body["summary"] == {"charged": 3, "duplicate": 0, "insufficientFunds": 2,
                               "invalid": 1}
    assert "orgId" in body["results"][3]["fields"]
    assert body["results"][1]["transactionId"] is None
    assert _balance(client, auth, org) == Decimal("0.10")
    assert _balance(client, auth, other_org) == Decimal("0.00")


def test_rows_chain_in_request_order(client: FlaskClient, auth: TokenFactory, credit,
                                     org: uuid.UUID, owner_conn: psycopg.Connection) -> None:
    credit(org, "5.00")
    client.post("/api/billing/deduct", headers=auth("service"),
                json=_item(org, "single", costPerSms="1.00"))
    response = _bulk(client, auth, [_item(org, f"m{i}", costPerSms="0.50") for i in range(3)])
    ids = [r["transactionId"] for r in response.get_json()["results"]]
    rows = _ledger_rows(owner_conn, org)
    # seq 1 is the credit, 2 the single charge; the batch follows in order, each row chained.
    assert [(seq, type_seq, message) for seq, type_seq, message, *_ in rows] == [
        (2, 1, "single"), (3, 2, "m0"), (4, 3, "m1"), (5, 4, "m2")]
    assert [(before, after) for *_, before, after in rows[1:]] == [
        (Decimal("4.00"), Decimal("3.50")), (Decimal("3.50"), Decimal("3.00")),
        (Decimal("3.00"), Decimal("2.50"))]
    stored = owner_conn.execute(
        "SELECT id::text FROM billing_transactions WHERE org_id = %s AND message_id LIKE 'm%%'"
        " ORDER BY seq", (org,)).fetchall()
    assert [row[0] for row in stored] == ids
    history = client.get("/api/billing/transactions?type=sms_send",
                         headers=auth("member", org)).get_json()
    assert history["pagination"]["total"] == 4


def test_messages_already_charged_are_duplicates(client: FlaskClient, auth: TokenFactory, credit,
                                                 org: uuid.UUID) -> None:
    credit(org, "1.00")
    first = client.post("/api/billing/deduct", headers=auth("service"),
                        json=_item(org, "sent-before", costPerSms="0.10")).get_json()
    response = _bulk(client, auth, [
        _item(org, "sent-before", costPerSms="0.10"),
        _item(org, "new", costPerSms="0.10"),
        _item(org, "new", costPerSms="0.10"),          # repeated within the batch
    ])
    results = response.get_json()["results"]
    assert [r["outcome"] for r in results] == ["duplicate", "charged", "duplicate"]
    assert results[0]["transactionId"] == first["transactionId"]
    assert results[0]["balance"] == Decimal("0.90")
    assert results[2]["transactionId"] == results[1]["transactionId"]
    assert _balance(client, auth, org) == Decimal("0.80")
    again = _bulk(client, auth, [_item(org, "new", costPerSms="0.10")]).get_json()
    assert again["results"][0]["transactionId"] == results[1]["transactionId"]
    assert _balance(client, auth, org) == Decimal("0.80")


def test_a_refused_message_repeated_in_the_batch_stays_refused(
    client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID
) -> None:
    credit(org, "0.05")
    results = _bulk(client, auth, [_item(org, "big", costPerSms="1.00"),
                                   _item(org, "small", costPerSms="0.05"),
                                   _item(org, "big", costPerSms="1.00")]).get_json()["results"]
    assert [r["outcome"] for r in results] == ["insufficient_funds", "charged",
                                               "insufficient_funds"]
    assert _balance(client, auth, org) == Decimal("0.00")


def test_thousand_sub_cent_charges_cost_exactly_7_50(client: FlaskClient, auth: TokenFactory,
                                                     credit, org: uuid.UUID) -> None:
    credit(org, "10.00")
    body = _bulk(client, auth, [_item(org, f"m{i}") for i in range(1000)]).get_json()
    assert body["summary"]["charged"] == 1000
    assert body["results"][-1]["balance"] == Decimal("2.50")
    assert _balance(client, auth, org) == Decimal("2.50")


def test_price_is_the_items_then_the_orgs_then_the_default(
    client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID, other_org: uuid.UUID,
    owner_conn: psycopg.Connection,
) -> None:
    credit(org, "1.00")
    credit(other_org, "1.00")
    owner_conn.execute("UPDATE organizations SET sms_price = 0.02 WHERE id = %s", (org,))
    _bulk(client, auth, [_item(org, "own", 2), _item(other_org, "default", 2),
                         _item(org, "given", 1, costPerSms="0.3")])
    assert _balance(client, auth, org) == Decimal("0.66")          # 1 - 0.04 - 0.30
    assert _balance(client, auth, other_org) == Decimal("0.985")   # 1 - 2 x 0.0075
    prices = owner_conn.execute(
        "SELECT message_id, cost_per_sms FROM billing_transactions WHERE type = 'sms_send'"
        " ORDER BY message_id").fetchall()
    assert prices == [("default", Decimal("0.0075")), ("given", Decimal("0.3")),
                      ("own", Decimal("0.02"))]


@pytest.mark.parametrize("bad,field", [
    ({"smsCount": 0}, "smsCount"), ({"smsCount": True}, "smsCount"),
    ({"smsCount": "2"}, "smsCount"), ({"smsCount": 1_000_001}, "smsCount"),
    ({"costPerSms": "abc"}, "costPerSms"), ({"costPerSms": "0.00001"}, "costPerSms"),
    ({"costPerSms": None}, "costPerSms"), ({"costPerSms": "NaN"}, "costPerSms"),
    ({"messageId": ""}, "messageId"), ({"messageId": 7}, "messageId"),
    ({"messageId": "x" * 256}, "messageId"), ({"campaignId": ""}, "campaignId"),
    ({"orgId": None}, "orgId"), ({"balance": 100}, "balance"),
    ({"smsCount": 1_000_000, "costPerSms": 5000}, "costPerSms"),
])
def test_an_invalid_item_fails_only_itself(client: FlaskClient, auth: TokenFactory, credit,
                                           org: uuid.UUID, bad: dict, field: str) -> None:
    credit(org, "1.00")
    response = _bulk(client, auth, [{**_item(org, "bad"), **bad}, _item(org, "good")])
    assert response.status_code == 200
    bad_result, good_result = response.get_json()["results"]
    assert bad_result["outcome"] == "invalid"
    assert field in bad_result["fields"] and field in bad_result["reason"]
    assert good_result["outcome"] == "charged"
    assert _balance(client, auth, org) == Decimal("0.9925")


def test_items_that_are_not_objects_or_lack_fields_are_invalid(
    client: FlaskClient, auth: TokenFactory
) -> None:
    results = _bulk(client, auth, ["x", 3, None, {}]).get_json()["results"]
    assert [r["outcome"] for r in results] == ["invalid"] * 4
    assert set(results[3]["fields"]) == {"orgId", "smsCount", "messageId"}


@pytest.mark.parametrize("body", [
    {"charges": []}, {"charges": "x"}, {}, {"charges": [{}], "extra": 1}, [],
])
def test_malformed_requests_are_400(client: FlaskClient, auth: TokenFactory, body: Any) -> None:
    response = client.post(BULK, headers=auth("service"), json=body)
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"


def test_more_than_1000_charges_is_400_and_charges_nothing(
    client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID
) -> None:
    credit(org, "100.00")
    response = _bulk(client, auth, [_item(org, f"m{i}") for i in range(1001)])
    assert response.status_code == 400
    assert "charges" in response.get_json()["error"]["fields"]
    assert _balance(client, auth, org) == Decimal("100.00")


@pytest.mark.parametrize("role", ["member", "admin"])
def test_only_the_service_role_charges_in_bulk(client: FlaskClient, auth: TokenFactory, credit,
                                               org: uuid.UUID, role: str) -> None:
    credit(org, "1.00")
    response = client.post(BULK, headers=auth(role, org), json={"charges": [_item(org, "m")]})
    assert response.status_code == 403
    assert _balance(client, auth, org) == Decimal("1.00")


def test_idempotency_key_replays_the_whole_answer(client: FlaskClient, auth: TokenFactory,
                                                  credit, org: uuid.UUID) -> None:
    credit(org, "1.00")
    charges = [_item(org, "k1"), _item(org, "k2")]
    first = _bulk(client, auth, charges, **{"Idempotency-Key": "batch-1"})
    again = _bulk(client, auth, charges, **{"Idempotency-Key": "batch-1"})
    assert again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert [r["outcome"] for r in again.get_json()["results"]] == ["charged", "charged"]
    other = _bulk(client, auth, [_item(org, "k3")], **{"Idempotency-Key": "batch-1"})
    assert other.status_code == 409
    assert _balance(client, auth, org) == Decimal("0.985")


def test_the_batch_cannot_reach_an_org_outside_its_tenant_set(
    app: Flask, org: uuid.UUID, other_org: uuid.UUID
) -> None:
    from billing_gateway.platform.db import get_pool, tenant_set_transaction

    with get_pool(app).connection() as conn, pytest.raises(
        psycopg.errors.InsufficientPrivilege
    ), tenant_set_transaction(conn, [org]) as tx:
        tx.execute("SELECT * FROM charge_sms_bulk(%s::uuid[], '{1}', '{1}', 1,"
                   " '{m}', '{NULL}', '{d}', 'test')", ([other_org],))


def test_bulk_batches_racing_single_charges_and_credits_keep_the_ledger_sound(
    app: Flask, auth: TokenFactory, credit, org: uuid.UUID, other_org: uuid.UUID,
    owner_conn: psycopg.Connection,
) -> None:
    credit(org, "20.00")
    credit(other_org, "20.00")
    service, admin = auth("service"), auth("admin")

    def work(i: int) -> int:
        client = app.test_client()
        if i % 3 == 0:  # orgs named in both orders: locking by id keeps it deadlock-free
            orgs = (org, other_org) if i % 2 else (other_org, org)
            charges = [_item(orgs[j % 2], f"b{i}-{j}", costPerSms="0.05") for j in range(40)]
            return client.post(BULK, headers=service, json={"charges": charges}).status_code
        if i % 3 == 1:
            return client.post("/api/billing/deduct", headers=service,
                               json=_item(org, f"s{i}", costPerSms="0.30")).status_code
        return client.post("/api/billing/add-funds", headers=admin,
                           json={"orgId": str(org), "amount": "0.10"}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        statuses = Counter(pool.map(work, range(90)))
    assert set(statuses) <= {200, 201, 402}
    assert statuses[200] == 30
    for which in (org, other_org):
        balance, total = owner_conn.execute(
            "SELECT o.sms_balance, sum(t.amount) FROM organizations o"
            " JOIN billing_transactions t ON t.org_id = o.id WHERE o.id = %s"
            " GROUP BY o.sms_balance", (which,)).fetchone()
        assert balance == total >= 0
    # The autouse ledger_is_sound fixture then checks every chain and counter.


@pytest.mark.parametrize("item", [
    {"smsCount": 1, "messageId": "m"},                                      # no org
    {"orgId": "not-a-uuid", "smsCount": 1, "messageId": "m"},
    {"orgId": "{org}", "smsCount": 0, "messageId": "m"},
    {"orgId": "{org}", "smsCount": "1", "messageId": "m"},
    {"orgId": "{org}", "smsCount": True, "messageId": "m"},
    {"orgId": "{org}", "smsCount": 1_000_001, "messageId": "m"},
    {"orgId": "{org}", "smsCount": 1, "messageId": "m", "costPerSms": "0_01"},
    {"orgId": "{org}", "smsCount": 1, "messageId": "m", "costPerSms": 1001},
    {"orgId": "{org}", "smsCount": 1},                                      # no messageId
    {"orgId": "{org}", "smsCount": 1, "messageId": "x" * 256},
    {"orgId": "{org}", "smsCount": 1, "messageId": "m", "description": ""},
    {"orgId": "{org}", "smsCount": 1, "messageId": "m", "balance": 5},
])
def test_deduct_and_a_bulk_item_refuse_a_charge_by_the_same_rules(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID, item: dict) -> None:
    """The rules of a charge are defined once (usage.items.parse_charge): the same field
    errors for POST /deduct and for an item of /deduct/bulk."""
    body = {k: (str(org) if v == "{org}" else v) for k, v in item.items()}
    single = client.post("/api/billing/deduct", headers=auth("service"), json=body)
    bulk = client.post("/api/billing/deduct/bulk", headers=auth("service"),
                       json={"charges": [body]})
    assert single.status_code == 400
    result = bulk.get_json()["results"][0]
    assert result["outcome"] == "invalid"
    assert single.get_json()["error"]["fields"] == result["fields"]
