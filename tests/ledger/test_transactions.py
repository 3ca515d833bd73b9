"""GET /transactions: newest first, exact totals, paging and type filter."""

from __future__ import annotations

import datetime as dt
import uuid
from decimal import Decimal

import psycopg
import pytest
from flask.testing import FlaskClient

from billing_gateway.ledger import history as ledger_history
from billing_gateway.platform.db import tenant_transaction
from billing_gateway.usage import charges
from tests.plugins.service import TokenFactory

TRANSACTIONS = "/api/billing/transactions"


@pytest.fixture
def history(credit, org: uuid.UUID, database_url: str) -> list[str]:  # type: ignore[no-untyped-def]
    """Seven credits and three debits on `org`; returns their ids oldest first."""
    ids = [credit(org, f"{n}.00", type="bonus" if n % 2 else "purchase")["transactionId"]
           for n in range(1, 8)]
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET ROLE billing_app")
        for n in range(3):
            with tenant_transaction(conn, org) as tx:
                result = charges.charge_amount(tx, org, Decimal("0.0075"), sms_count=1,
                                      cost_per_sms=Decimal("0.0075"), message_id=f"m{n}")
                ids.append(str(result.transaction_id))
    return ids


def _page(client: FlaskClient, auth: TokenFactory, org: uuid.UUID, query: str = "") -> dict:
    response = client.get(f"{TRANSACTIONS}{query}", headers=auth("member", org))
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_newest_first_with_seed_fields(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                                       history: list[str]) -> None:
    body = _page(client, auth, org)
    assert [t["id"] for t in body["transactions"]] == list(reversed(history))
    newest = body["transactions"][0]
    assert {"id", "type", "amount", "balance_before", "balance_after", "sms_count",
            "cost_per_sms", "payment_method", "description", "created_at"} <= set(newest)
    assert newest["type"] == "sms_send"
    assert newest["amount"] == Decimal("-0.0075")
    assert newest["cost_per_sms"] == Decimal("0.0075")
    assert newest["balance_before"] - newest["balance_after"] == Decimal("0.0075")
    assert newest["created_at"].endswith("Z")
    assert dt.datetime.fromisoformat(newest["created_at"]).utcoffset() == dt.timedelta(0)
    assert body["pagination"] == {"total": 10, "limit": 50, "offset": 0, "hasMore": False}


def test_sub_cent_amounts_serialize_as_exact_numbers(client: FlaskClient, auth: TokenFactory,
                                                     org: uuid.UUID, history: list[str]) -> None:
    raw = client.get(f"{TRANSACTIONS}?limit=1", headers=auth("member", org)).get_data(as_text=True)
    assert '"amount":-0.0075,' in raw
    assert '"balance_after":27.9775,' in raw


def test_limit_and_offset_page_through_everything(client: FlaskClient, auth: TokenFactory,
                                                  org: uuid.UUID, history: list[str]) -> None:
    seen: list[str] = []
    offset = 0
    while True:
        body = _page(client, auth, org, f"?limit=3&offset={offset}")
        seen += [t["id"] for t in body["transactions"]]
        assert body["pagination"]["total"] == 10
        if not body["pagination"]["hasMore"]:
            break
        offset += 3
    assert seen == list(reversed(history))
    assert offset == 9


def test_offset_past_the_end_is_an_empty_page(client: FlaskClient, auth: TokenFactory,
                                              org: uuid.UUID, history: list[str]) -> None:
    body = _page(client, auth, org, "?offset=10")
    assert body["transactions"] == []
    assert body["pagination"] == {"total": 10, "limit": 50, "offset": 10, "hasMore": False}


@pytest.mark.parametrize("kind,expected", [("purchase", 3), ("bonus", 4), ("sms_send", 3),
                                           ("refund", 0)])
def test_type_filter_has_exact_total(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                                     history: list[str], kind: str, expected: int) -> None:
    body = _page(client, auth, org, f"?type={kind}&limit=2")
    assert {t["type"] for t in body["transactions"]} <= {kind}
    assert len(body["transactions"]) == min(2, expected)
    assert body["pagination"]["total"] == expected
    assert body["pagination"]["hasMore"] == (expected > 2)


def test_type_filter_pages_newest_first(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                                        history: list[str]) -> None:
    body = _page(client, auth, org, "?type=bonus&limit=2&offset=1")
    amounts = [t["amount"] for t in body["transactions"]]
    assert amounts == [Decimal("5.00"), Decimal("3.00")]


def test_unknown_org_has_empty_history(client: FlaskClient, auth: TokenFactory,
                                       org: uuid.UUID) -> None:
    assert _page(client, auth, org)["pagination"]["total"] == 0


@pytest.mark.parametrize("query", ["?limit=0", "?limit=101", "?limit=abc", "?offset=-1",
                                   "?offset=1.5", "?type=gift", "?limit=", "?orgId=nope"])
def test_invalid_paging_is_400(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                               query: str) -> None:
    response = client.get(f"{TRANSACTIONS}{query}", headers=auth("admin", org))
    assert response.status_code == 400
    assert response.get_json()["error"]["code"] == "validation_error"
    assert response.get_json()["error"]["fields"]


def test_limit_bounds_are_inclusive(client: FlaskClient, auth: TokenFactory,
                                    org: uuid.UUID) -> None:
    for limit in (1, 100):
        assert _page(client, auth, org, f"?limit={limit}")["pagination"]["limit"] == limit


def test_deep_page_is_an_index_range_under_rls(app, history: list[str],  # type: ignore[no-untyped-def]
                                               org: uuid.UUID) -> None:
    # Regression guard: if the position bound stops being an index condition (it once was
    # a filter, because computed bounds are not leakproof under RLS), a page at offset N
    # reads N rows and history no longer scales.
    from billing_gateway.platform.db import get_pool

    with get_pool(app).connection() as conn, tenant_transaction(conn, org):
        plan = "\n".join(row[0] for row in conn.execute(
            "EXPLAIN " + ledger_history._PAGE_ALL, (org, 2, 3)))
        type_plan = "\n".join(row[0] for row in conn.execute(
            "EXPLAIN " + ledger_history._PAGE_OF_TYPE, (org, "bonus", 1, 2)))
    assert "seq >=" in plan and "Index Cond" in plan and "Filter: (seq" not in plan
    assert "type_seq >=" in type_plan and "Filter: (type_seq" not in type_plan
