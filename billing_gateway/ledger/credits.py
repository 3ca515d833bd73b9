"""Credits and balances over the ledger's SQL functions: the money core."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg.types.json import Jsonb

from billing_gateway.platform import json_codec
from billing_gateway.platform.db import require_tenant
from billing_gateway.platform.errors import IdempotencyConflict

TRANSACTION_TYPES = ("purchase", "sms_send", "refund", "adjustment", "bonus", "reversal")


CREDIT_TYPES = ("purchase", "bonus", "adjustment", "refund")


# Raised by add_credits when a PaymentIntent is replayed with another amount.
_SQLSTATE_CONFLICT = "BG409"


@dataclass(frozen=True)
class LedgerResult:
    """What one credit or debit did: its transaction, the balance after it, the outcome."""

    transaction_id: UUID | None
    balance: Decimal
    outcome: str

    @property
    def is_duplicate(self) -> bool:
        """Tell whether an earlier identical write answered instead of a new one."""
        return self.outcome == "duplicate"


def jsonb(value: dict[str, Any] | None) -> Jsonb | None:
    """Wrap a dict for a jsonb parameter, serialized with exact decimals."""
    return None if value is None else Jsonb(value, dumps=json_codec.dumps)


def get_balance(conn: psycopg.Connection, org_id: UUID) -> Decimal:
    """Return the org's balance (zero for an org never seen)."""
    require_tenant(org_id)
    row = conn.execute("SELECT get_org_balance(%s)", (org_id,)).fetchone()
    assert row is not None
    balance: Decimal = row[0]
    return balance


def get_account(
    conn: psycopg.Connection, org_id: UUID, caller: str
) -> tuple[Decimal, Decimal | None]:
    """Return the org's balance and own SMS price (zero and None for an org never seen).

    One statement: api_account (SQL) sets the tenant itself, so this runs on an
    autocommit connection without BEGIN/COMMIT around it.
    """
    row = conn.execute("SELECT balance, sms_price FROM api_account(%s, %s)",
                       (org_id, caller)).fetchone()
    assert row is not None
    return row[0], row[1]


def has_sufficient_balance(conn: psycopg.Connection, org_id: UUID, amount: Decimal) -> bool:
    """Tell whether the org's balance covers `amount`."""
    require_tenant(org_id)
    row = conn.execute("SELECT has_sufficient_balance(%s, %s)", (org_id, amount)).fetchone()
    assert row is not None
    return bool(row[0])


def credit(
    conn: psycopg.Connection,
    org_id: UUID,
    amount: Decimal,
    *,
    type: str = "purchase",
    payment_method: str | None = None,
    payment_intent_id: str | None = None,
    description: str | None = None,
    created_by: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> LedgerResult:
    """Add credits; a purchase whose PaymentIntent was already credited returns that credit."""
    require_tenant(org_id)
    try:
        row = conn.execute(
            "SELECT transaction_id, balance, outcome"
            " FROM add_credits(%s, %s, %s, %s, %s, %s, %s, %s)",
            (org_id, amount, type, payment_method, payment_intent_id, description,
             created_by, jsonb(metadata)),
        ).fetchone()
    except psycopg.errors.UniqueViolation as exc:
        # The unique index on payment_intent_id spans every org; RLS hides the other
        # org's row from add_credits' own lookup, so the index is what refuses it.
        raise IdempotencyConflict(
            f"Payment intent {payment_intent_id} is already credited to another organization"
        ) from exc
    except psycopg.Error as exc:
        if exc.sqlstate == _SQLSTATE_CONFLICT:
            raise IdempotencyConflict(
                f"Payment intent {payment_intent_id} was already credited with another amount"
            ) from exc
        raise
    assert row is not None
    return LedgerResult(*row)
