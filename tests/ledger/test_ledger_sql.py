"""The seed's SQL functions and the constraints beneath them, called directly."""

from __future__ import annotations

import uuid
from decimal import Decimal

import psycopg
import pytest
from flask import Flask

from billing_gateway.ledger import credits
from billing_gateway.platform.db import get_pool, tenant_transaction
from billing_gateway.usage import charges


@pytest.mark.parametrize("amount", ["NaN", "0", "-1", "Infinity", "1e15"])
@pytest.mark.parametrize("function", ["add_credits", "charge_sms"])
def test_functions_refuse_impossible_amounts(app: Flask, org: uuid.UUID, function: str,
                                             amount: str) -> None:
    with get_pool(app).connection() as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue), tenant_transaction(conn, org):
            conn.execute(f"SELECT {function}(%s, %s::numeric)", (org, amount))


def test_add_credits_refuses_debit_types(app: Flask, org: uuid.UUID) -> None:
    with get_pool(app).connection() as conn:
        with pytest.raises(psycopg.errors.InvalidParameterValue), tenant_transaction(conn, org):
            conn.execute("SELECT add_credits(%s, 1, 'sms_send')", (org,))


def test_balance_functions(app: Flask, org: uuid.UUID) -> None:
    with get_pool(app).connection() as conn, tenant_transaction(conn, org):
        assert credits.get_balance(conn, org) == 0
        credits.credit(conn, org, Decimal("12.50"))
        assert credits.get_balance(conn, org) == Decimal("12.50")
        assert credits.has_sufficient_balance(conn, org, Decimal("12.50"))
        assert not credits.has_sufficient_balance(conn, org, Decimal("12.5001"))


def test_debit_beyond_balance_writes_nothing(app: Flask, org: uuid.UUID,
                                             owner_conn: psycopg.Connection) -> None:
    with get_pool(app).connection() as conn, tenant_transaction(conn, org):
        credits.credit(conn, org, Decimal("1.00"))
        result = charges.charge_amount(conn, org, Decimal("1.0001"), message_id="too-much")
    assert (result.outcome, result.transaction_id, result.balance) == (
        "insufficient_funds", None, Decimal("1.0000"))
    rows = owner_conn.execute("SELECT count(*) FROM billing_transactions WHERE org_id = %s",
                              (org,)).fetchone()
    assert rows == (1,)


def test_balance_check_holds_even_for_the_owner(owner_conn: psycopg.Connection,
                                                org: uuid.UUID) -> None:
    owner_conn.execute("INSERT INTO organizations (id) VALUES (%s)", (org,))
    for value in ("-0.0001", "NaN"):
        with pytest.raises(psycopg.errors.CheckViolation):
            owner_conn.execute("UPDATE organizations SET sms_balance = %s::numeric WHERE id = %s",
                               (value, org))
