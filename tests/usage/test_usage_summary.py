"""GET /usage/summary: SMS usage per UTC day or campaign, net of usage refunds, exact; and
usage_daily, the rollup it reads, equal to the ledger after every kind of charge."""

from __future__ import annotations

import datetime as dt
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from billing_gateway.ledger.invariants import find_violations
from billing_gateway.platform.db import get_pool, tenant_transaction
from billing_gateway.usage.summary import usage_summary
from tests.plugins.service import TokenFactory

SUMMARY = "/api/billing/usage/summary"


def _today() -> dt.date:
    return dt.datetime.now(dt.UTC).date()


def _charge(client: FlaskClient, auth: TokenFactory, org: uuid.UUID, message: str,
            sms: int = 1, price: str = "0.0075", campaign: str | None = None) -> None:
    body: dict[str, object] = {"orgId": str(org), "smsCount": sms, "costPerSms": price,
                               "messageId": message}
    if campaign is not None:
        body["campaignId"] = campaign
    response = client.post("/api/billing/deduct", headers=auth("service"), json=body)
    assert response.status_code == 201, response.get_json()


def _bulk(client: FlaskClient, auth: TokenFactory, org: uuid.UUID, n: int, prefix: str,
          campaign: str | None = None) -> None:
    charges = [{"orgId": str(org), "smsCount": 1, "costPerSms": "0.0075",
                "messageId": f"{prefix}-{i}", **({"campaignId": campaign} if campaign else {})}
               for i in range(n)]
    response = client.post("/api/billing/deduct/bulk", headers=auth("service"),
                           json={"charges": charges})
    assert response.status_code == 200
    assert response.get_json()["summary"]["charged"] == n


def _summary(client: FlaskClient, auth: TokenFactory, org: uuid.UUID, query: str = "",
             role: str = "member") -> dict:
    response = client.get(f"{SUMMARY}?{query}", headers=auth(role, org))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def _rollup(owner_conn: psycopg.Connection, org: uuid.UUID) -> list[tuple]:
    return owner_conn.execute(
        "SELECT day, campaign_id, sms_count, amount FROM usage_daily WHERE org_id = %s"
        " ORDER BY campaign_id NULLS FIRST", (org,)).fetchall()


def test_a_thousand_charges_at_0_0075_are_7_5000_exactly(
        client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID) -> None:
    credit(org, "100.00")
    _bulk(client, auth, org, 1000, "m")
    body = _summary(client, auth, org)
    assert body["total"] == {"smsCount": 1000, "amount": Decimal("7.5")}
    assert body["items"][-1] == {"date": _today().isoformat(), "smsCount": 1000,
                                 "amount": Decimal("7.5")}
    assert body["currency"] == "usd"
    assert body["groupBy"] == "day"


def test_usage_refunds_are_netted_and_other_credits_are_not(
        client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID) -> None:
    credit(org, "10.00")
    _charge(client, auth, org, "a", sms=3, price="0.0075", campaign="spring")
    _charge(client, auth, org, "b", sms=1, price="0.0075", campaign="spring")
    refund = client.post("/api/billing/usage/refund", headers=auth("service"),
                         json={"orgId": str(org), "messageId": "a", "amount": "0.0050"})
    assert refund.status_code == 201
    credit(org, "1.00", type="refund")  # credits given back, not usage: not netted
    body = _summary(client, auth, org, "groupBy=campaign")
    # 4 SMS charged 0.0300; 0.0050 of it given back: 0.0250, and the SMS stay counted.
    assert body["items"] == [{"campaignId": "spring", "smsCount": 4, "amount": Decimal("0.025")}]
    assert body["total"] == {"smsCount": 4, "amount": Decimal("0.025")}


def test_by_day_every_day_of_the_range_with_zeros(
        client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID) -> None:
    credit(org, "10.00")
    _charge(client, auth, org, "a", sms=2, price="0.01")
    body = _summary(client, auth, org)  # the default: the last 30 days, today included
    today = _today()
    assert [item["date"] for item in body["items"]] == [
        (today - dt.timedelta(days=29 - n)).isoformat() for n in range(30)]
    assert body["from"] == (today - dt.timedelta(days=29)).isoformat()
    assert body["to"] == today.isoformat()
    assert all(item == {"date": item["date"], "smsCount": 0, "amount": Decimal("0.00")}
               for item in body["items"][:-1])
    assert body["items"][-1]["amount"] == Decimal("0.02")


def test_to_is_included_and_a_range_without_usage_is_zero(
        client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID) -> None:
    credit(org, "10.00")
    _charge(client, auth, org, "a", sms=2, price="0.01")
    today, yesterday = _today(), _today() - dt.timedelta(days=1)
    only_today = _summary(client, auth, org, f"from={today}&to={today}")
    assert only_today["total"] == {"smsCount": 2, "amount": Decimal("0.02")}
    before = _summary(client, auth, org, f"from={yesterday - dt.timedelta(days=6)}"
                                         f"&to={yesterday}")
    assert len(before["items"]) == 7
    assert before["total"] == {"smsCount": 0, "amount": Decimal("0.00")}
    by_campaign = _summary(client, auth, org, f"from={yesterday}&to={yesterday}"
                                              "&groupBy=campaign")
    assert by_campaign["items"] == []
    assert by_campaign["total"] == {"smsCount": 0, "amount": Decimal("0.00")}


def test_by_campaign_with_usage_without_one_as_null(
        client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID) -> None:
    credit(org, "10.00")
    _charge(client, auth, org, "a", sms=10, price="0.01", campaign="big")
    _charge(client, auth, org, "b", sms=1, price="0.0075", campaign="small")
    _charge(client, auth, org, "c", sms=2, price="0.0075")
    _charge(client, auth, org, "d", sms=1, price="0.0075")
    body = _summary(client, auth, org, "groupBy=campaign")
    assert body["items"] == [
        {"campaignId": "big", "smsCount": 10, "amount": Decimal("0.10")},
        {"campaignId": None, "smsCount": 3, "amount": Decimal("0.0225")},
        {"campaignId": "small", "smsCount": 1, "amount": Decimal("0.0075")},
    ]
    assert body["total"] == {"smsCount": 14, "amount": Decimal("0.13")}


def test_member_reads_only_its_own_org_and_admin_names_any(
        client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID,
        other_org: uuid.UUID) -> None:
    credit(org, "10.00")
    _charge(client, auth, org, "a", sms=1, price="0.01")
    refused = client.get(f"{SUMMARY}?orgId={org}", headers=auth("member", other_org))
    assert refused.status_code == 403
    assert refused.get_json()["error"]["code"] == "forbidden"
    admin = client.get(f"{SUMMARY}?orgId={org}", headers=auth("admin"))
    assert admin.status_code == 200
    assert admin.get_json()["total"]["amount"] == Decimal("0.01")
    assert _summary(client, auth, other_org)["total"]["smsCount"] == 0
    assert client.get(SUMMARY, headers=auth("admin")).status_code == 400  # no orgId


@pytest.mark.parametrize(("query", "field"), [
    ("from=2026-02-01&to=2026-01-31", "from"),
    ("from=2025-01-01&to=2026-01-02", "to"),      # 367 days
    ("from=2999-01-01", "from"),                  # after today, the default `to`
    ("from=2026-1-1", "from"),
    ("from=20260101", "from"),
    ("to=2026-02-30", "to"),
    ("from=yesterday", "from"),
    ("groupBy=week", "groupBy"),
    ("orgId=nope", "orgId"),
])
def test_bad_parameters_are_400_with_fields(client: FlaskClient, auth: TokenFactory,
                                            org: uuid.UUID, query: str, field: str) -> None:
    response = client.get(f"{SUMMARY}?{query}", headers=auth("member", org))
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "validation_error"
    assert field in error["fields"], error


def test_the_edges_of_the_calendar_are_no_500(client: FlaskClient, auth: TokenFactory,
                                             org: uuid.UUID) -> None:
    first = _summary(client, auth, org, "to=0001-01-05")
    assert first["from"] == "0001-01-01"
    assert len(first["items"]) == 5
    last = _summary(client, auth, org, "from=9999-01-01&to=9999-12-31")
    assert len(last["items"]) == 365
    year = _summary(client, auth, org, "from=2024-01-01&to=2024-12-31")  # 366 days: allowed
    assert len(year["items"]) == 366


def test_usage_summary_is_callable_in_a_tenant_transaction(
        app: Flask, client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID) -> None:
    credit(org, "10.00")
    _charge(client, auth, org, "a", sms=4, price="0.0075", campaign="c")
    pool = get_pool(app)
    with pool.connection() as conn, tenant_transaction(conn, org, "page") as tx:
        usage = usage_summary(tx, org, start=_today(), end=_today(), group_by="campaign")
    assert usage == {"items": [{"campaign_id": "c", "sms_count": 4,
                                "amount": Decimal("0.0300")}],
                     "total": {"sms_count": 4, "amount": Decimal("0.0300")}}


def test_rollup_equals_the_ledger_after_concurrent_charges(
        app: Flask, auth: TokenFactory, credit, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    credit(org, "100.00")
    headers = auth("service")

    def charge(n: int) -> int:
        body = {"orgId": str(org), "smsCount": 1 + n % 3, "costPerSms": "0.0075",
                "messageId": f"t{n}", "campaignId": ["x", "y", None][n % 3]}
        body = {k: v for k, v in body.items() if v is not None}
        return app.test_client().post("/api/billing/deduct", headers=headers,
                                      json=body).status_code

    with ThreadPoolExecutor(max_workers=12) as pool:
        assert set(pool.map(charge, range(300))) == {201}
    today = _today()
    assert _rollup(owner_conn, org) == [
        (today, None, 300, Decimal("2.2500")),   # 100 charges of 3 SMS
        (today, "x", 100, Decimal("0.7500")),
        (today, "y", 200, Decimal("1.5000")),
    ]
    assert find_violations(owner_conn, org) == []


def test_rollup_equals_the_ledger_after_a_bulk_charge_across_orgs(
        client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID,
        other_org: uuid.UUID, owner_conn: psycopg.Connection) -> None:
    credit(org, "100.00")
    credit(other_org, "0.02")  # covers 2 of its 3 charges
    charges = [{"orgId": str(o), "smsCount": 1, "costPerSms": "0.0075",
                "messageId": f"b{i}", "campaignId": "spring"}
               for i, o in enumerate([org, other_org] * 3)]
    charges.append({"orgId": str(org), "smsCount": 2, "costPerSms": "0.0075",
                    "messageId": "nocampaign"})
    charges.append(dict(charges[0]))  # a repeat: charged once
    response = client.post("/api/billing/deduct/bulk", headers=auth("service"),
                           json={"charges": charges})
    assert response.get_json()["summary"] == {"charged": 6, "duplicate": 1,
                                              "insufficientFunds": 1, "invalid": 0}
    today = _today()
    assert _rollup(owner_conn, org) == [(today, None, 2, Decimal("0.0150")),
                                        (today, "spring", 3, Decimal("0.0225"))]
    assert _rollup(owner_conn, other_org) == [(today, "spring", 2, Decimal("0.0150"))]
    assert find_violations(owner_conn) == []


def test_a_rollup_that_drifts_from_the_ledger_is_reported(
        client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    credit(org, "1.00")
    _charge(client, auth, org, "a", sms=1, price="0.0075", campaign="c")
    owner_conn.execute("UPDATE usage_daily SET amount = amount + 0.0001 WHERE org_id = %s",
                       (org,))
    problems = find_violations(owner_conn, org)
    assert len(problems) == 1
    assert problems[0].startswith("usage rollup matches the ledger")
    owner_conn.execute("UPDATE usage_daily SET amount = amount - 0.0001 WHERE org_id = %s",
                       (org,))
    owner_conn.execute("DELETE FROM usage_daily WHERE org_id = %s", (org,))
    assert len(find_violations(owner_conn, org)) == 1  # missing is reported too
    owner_conn.execute("INSERT INTO usage_daily VALUES (%s, %s, 'c', 1, 0.0075)",
                       (org, _today()))
    assert find_violations(owner_conn, org) == []


def test_usage_daily_is_isolated_by_row_level_security(
        client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID,
        other_org: uuid.UUID, database_url: str) -> None:
    credit(org, "1.00")
    _charge(client, auth, org, "a", sms=1, price="0.0075")
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET ROLE billing_app")
        with tenant_transaction(conn, other_org) as tx:
            assert tx.execute("SELECT count(*) FROM usage_daily").fetchone() == (0,)
        with tenant_transaction(conn, org) as tx:
            assert tx.execute("SELECT count(*) FROM usage_daily").fetchone() == (1,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                tx.execute("INSERT INTO usage_daily VALUES (%s, %s, NULL, 1, 1)",
                           (other_org, _today()))
