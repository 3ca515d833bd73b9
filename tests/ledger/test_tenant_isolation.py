"""Tenant isolation in depth: RLS binds the role requests run under, whatever the DSN."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
import pytest
from flask import Flask

from billing_gateway import create_app
from billing_gateway.ledger import credits, history
from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import (
    OutsideTenantScope,
    enter_org,
    get_pool,
    stripe_transaction,
    tenant_transaction,
)
from billing_gateway.usage import charges, pricing
from tests.plugins.service import TokenFactory


@pytest.fixture
def two_orgs(credit, org: uuid.UUID, other_org: uuid.UUID) -> dict[uuid.UUID, set[str]]:  # type: ignore[no-untyped-def]
    """Both orgs with a few credits each; maps org to its transaction ids."""
    ids: dict[uuid.UUID, set[str]] = {org: set(), other_org: set()}
    for n in range(1, 4):
        ids[org].add(credit(org, n)["transactionId"])
        ids[other_org].add(credit(other_org, n * 10)["transactionId"])
    ids[other_org].add(credit(other_org, 5, paymentIntentId="pi_other")["transactionId"])
    return ids


def test_requests_run_as_a_role_rls_binds(app: Flask) -> None:
    with get_pool(app).connection() as conn:
        user, superuser, bypass = conn.execute(
            "SELECT current_user, rolsuper, rolbypassrls FROM pg_roles"
            " WHERE rolname = current_user").fetchone()
        owners = {row[0] for row in conn.execute(
            "SELECT tableowner FROM pg_tables WHERE tablename IN"
            " ('organizations', 'billing_transactions', 'idempotency_keys')")}
        forced = conn.execute(
            "SELECT bool_and(relrowsecurity AND relforcerowsecurity) FROM pg_class WHERE relname IN"
            " ('organizations', 'billing_transactions', 'billing_transaction_counts',"
            "  'idempotency_keys')").fetchone()
    assert user == "billing_app"
    assert (superuser, bypass) == (False, False)
    assert user not in owners
    assert forced == (True,)


def test_query_without_org_filter_sees_only_current_org(
    app: Flask, two_orgs: dict[uuid.UUID, set[str]], org: uuid.UUID
) -> None:
    with get_pool(app).connection() as conn, tenant_transaction(conn, org):
        rows = {str(r[0]) for r in conn.execute("SELECT id FROM billing_transactions")}
        orgs = [r[0] for r in conn.execute("SELECT id FROM organizations")]
        counts = conn.execute("SELECT DISTINCT org_id FROM billing_transaction_counts").fetchall()
    assert rows == two_orgs[org]
    assert orgs == [org]
    assert counts == [(org,)]


def test_no_tenant_setting_sees_nothing(app: Flask, two_orgs: dict) -> None:
    with get_pool(app).connection() as conn:
        assert conn.execute("SELECT count(*) FROM billing_transactions").fetchone() == (0,)
        assert conn.execute("SELECT count(*) FROM organizations").fetchone() == (0,)


def test_tenant_setting_ends_with_the_transaction(app: Flask, org: uuid.UUID) -> None:
    with get_pool(app).connection() as conn:
        with tenant_transaction(conn, org):
            pass
        setting = conn.execute("SELECT current_setting('billing.org_id', true)").fetchone()
    assert setting in (("",), (None,))


def test_cannot_write_into_another_org(app: Flask, org: uuid.UUID, other_org: uuid.UUID) -> None:
    with get_pool(app).connection() as conn:
        # First wall: the service function refuses an org outside the scope, by name.
        with pytest.raises(OutsideTenantScope, match=str(other_org)), \
                tenant_transaction(conn, org):
            credits.credit(conn, other_org, Decimal("100"))
        # Second wall: row level security refuses the same write made in SQL.
        with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(conn, org):
            conn.execute("SELECT add_credits(%s, 100, 'bonus', NULL, NULL, NULL, NULL, NULL)",
                         (other_org,))
        with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(conn, org):
            conn.execute("INSERT INTO organizations (id, sms_balance) VALUES (%s, 1000000)",
                         (other_org,))


def test_ledger_rows_cannot_be_changed(app: Flask, two_orgs: dict, org: uuid.UUID,
                                       owner_conn: psycopg.Connection) -> None:
    with get_pool(app).connection() as conn:
        with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(conn, org):
            conn.execute("UPDATE billing_transactions SET amount = 1000")
        with pytest.raises(psycopg.errors.InsufficientPrivilege), tenant_transaction(conn, org):
            conn.execute("DELETE FROM billing_transactions")
    # Even the owner is refused by the append-only trigger.
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        owner_conn.execute("UPDATE billing_transactions SET description = 'edited'")


def test_thousand_alternating_requests_over_two_connections_leak_nothing(
    settings: Settings, auth: TokenFactory, two_orgs: dict[uuid.UUID, set[str]],
    org: uuid.UUID, other_org: uuid.UUID,
) -> None:
    small = settings.with_overrides(pool_min_size=2, pool_max_size=2)
    app = create_app(small)
    orgs = [org, other_org]
    headers = {o: auth("member", o) for o in orgs}
    failing_at = 500

    def request(i: int) -> tuple[int, uuid.UUID, int, set[str], int]:
        client = app.test_client()
        if i == failing_at:
            # Fails mid-transaction: set_config and the org's row update have run when the
            # unique index refuses another org's PaymentIntent; everything rolls back.
            response = client.post("/api/billing/add-funds", headers=auth("admin"),
                                   json={"amount": 5, "orgId": str(org),
                                         "paymentIntentId": "pi_other"})
            return i, org, response.status_code, set(), -1
        target = orgs[i % 2]
        response = client.get("/api/billing/transactions?limit=100", headers=headers[target])
        body = response.get_json()
        ids = {t["id"] for t in body["transactions"]}
        return i, target, response.status_code, ids, body["pagination"]["total"]

    try:
        with ThreadPoolExecutor(max_workers=4) as pool:
            results = list(pool.map(request, range(1000)))
        with get_pool(app).connection() as conn:
            leftover = conn.execute("SELECT current_setting('billing.org_id', true)").fetchone()
        stats = get_pool(app).get_stats()
    finally:
        app.extensions["billing_pool"].close()

    assert stats["pool_size"] == 2
    assert next(r for r in results if r[0] == failing_at)[2] == 409
    served = [r for r in results if r[0] != failing_at]
    assert len(served) == 999
    for _, target, status, ids, total in served:
        assert status == 200
        assert ids == two_orgs[target]
        assert total == len(two_orgs[target])
    assert leftover in (("",), (None,))


@pytest.mark.parametrize("call", [
    lambda conn, org: credits.credit(conn, org, Decimal("1")),
    lambda conn, org: credits.get_balance(conn, org),
    lambda conn, org: history.history(conn, org, limit=20, offset=0),
    lambda conn, org: charges.charge_amount(conn, org, Decimal("1"), message_id="m"),
    lambda conn, org: charges.refund_usage(conn, org, "m"),
    lambda conn, org: pricing.set_sms_price(conn, org, Decimal("0.01")),
], ids=["credit", "get_balance", "history", "charge_amount", "refund_usage", "set_sms_price"])
def test_tenant_data_outside_a_tenant_scope_is_an_error_not_nothing(
        app: Flask, org: uuid.UUID, call) -> None:  # type: ignore[no-untyped-def]
    """Without a scope, row level security would show an empty ledger; the service
    functions say what is wrong instead."""
    with get_pool(app).connection() as conn:
        with pytest.raises(OutsideTenantScope, match="outside the current tenant scope"):
            call(conn, org)
        with tenant_transaction(conn, org):
            assert credits.get_balance(conn, org) == 0  # inside its scope it works


def test_entering_an_org_outside_any_scope_is_refused(app: Flask, org: uuid.UUID) -> None:
    """enter_org only narrows a scope (stripe_transaction); alone it would leak the org into
    whatever this thread does next."""
    with get_pool(app).connection() as conn:
        with pytest.raises(OutsideTenantScope, match="outside a transaction scope"):
            enter_org(conn, org)
        with stripe_transaction(conn):
            enter_org(conn, org)
            assert credits.get_balance(conn, org) == 0
        with pytest.raises(OutsideTenantScope):  # the scope's end took the org away
            credits.get_balance(conn, org)
