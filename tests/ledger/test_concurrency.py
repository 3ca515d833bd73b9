"""Money under concurrency, with real threads and real connections."""

from __future__ import annotations

import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import psycopg
from flask import Flask

from billing_gateway.ledger import credits
from billing_gateway.platform.db import get_pool, tenant_transaction
from billing_gateway.usage import charges


def _debit(app: Flask, org: uuid.UUID, amount: Decimal, message_id: str | None) -> str:
    with get_pool(app).connection() as conn, tenant_transaction(conn, org):
        return charges.charge_amount(conn, org, amount, sms_count=1, cost_per_sms=amount,
                            message_id=message_id).outcome


def _credit(app: Flask, org: uuid.UUID, amount: Decimal) -> str:
    with get_pool(app).connection() as conn, tenant_transaction(conn, org):
        return credits.credit(conn, org, amount, type="bonus").outcome


def _ledger_sum(owner: psycopg.Connection, org: uuid.UUID) -> tuple[Decimal, Decimal]:
    row = owner.execute(
        "SELECT o.sms_balance, (SELECT sum(amount) FROM billing_transactions WHERE org_id = o.id)"
        " FROM organizations o WHERE o.id = %s", (org,)).fetchone()
    assert row is not None
    return row[0], row[1]


def test_200_parallel_debits_of_1_against_50(app: Flask, org: uuid.UUID,
                                             owner_conn: psycopg.Connection) -> None:
    _credit(app, org, Decimal("50.00"))
    with ThreadPoolExecutor(max_workers=20) as pool:
        outcomes = Counter(pool.map(
            lambda i: _debit(app, org, Decimal("1.00"), f"msg-{i}"), range(200)))
    assert outcomes == {"charged": 50, "insufficient_funds": 150}
    balance, total = _ledger_sum(owner_conn, org)
    assert balance == Decimal("0") == total


def test_same_message_sent_concurrently_charges_once(app: Flask, org: uuid.UUID,
                                                     owner_conn: psycopg.Connection) -> None:
    _credit(app, org, Decimal("10.00"))
    with ThreadPoolExecutor(max_workers=10) as pool:
        outcomes = Counter(pool.map(
            lambda _: _debit(app, org, Decimal("0.0075"), "msg-same"), range(20)))
    assert outcomes == {"charged": 1, "duplicate": 19}
    assert _ledger_sum(owner_conn, org)[0] == Decimal("9.9925")


def test_racing_credits_and_debits_keep_balance_equal_to_sum(
    app: Flask, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    _credit(app, org, Decimal("1.00"))

    def work(i: int) -> str:
        if i % 3 == 0:
            return _credit(app, org, Decimal("0.50"))
        return _debit(app, org, Decimal("0.3333"), f"race-{i}")

    with ThreadPoolExecutor(max_workers=16) as pool:
        outcomes = Counter(pool.map(work, range(300)))
    assert outcomes["credited"] == 100
    assert outcomes["charged"] + outcomes["insufficient_funds"] == 200
    balance, total = _ledger_sum(owner_conn, org)
    assert balance == total
    assert balance == Decimal("1.00") + 100 * Decimal("0.50") - outcomes["charged"] * Decimal(
        "0.3333")


def test_sub_cent_prices_do_not_drift(app: Flask, org: uuid.UUID,
                                      owner_conn: psycopg.Connection) -> None:
    _credit(app, org, Decimal("10.00"))
    with get_pool(app).connection() as conn:
        for i in range(1000):
            with tenant_transaction(conn, org):
                charges.charge_amount(conn, org, Decimal("0.0075"), sms_count=1,
                             cost_per_sms=Decimal("0.0075"), message_id=f"m{i}")
    assert _ledger_sum(owner_conn, org) == (Decimal("2.5000"), Decimal("2.5000"))
