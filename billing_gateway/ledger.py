"""Credits, debits, balance and history: the money core, over the SQL functions in sql/."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from billing_gateway import json_codec
from billing_gateway.charges import Charge
from billing_gateway.errors import IdempotencyConflict

TRANSACTION_TYPES = ("purchase", "sms_send", "refund", "adjustment", "bonus", "reversal")
CREDIT_TYPES = ("purchase", "bonus", "adjustment", "refund")

# Raised by add_credits when a PaymentIntent is replayed with another amount (sql/001).
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


@dataclass(frozen=True)
class HistoryPage:
    """One page of an org's ledger, newest first, and the exact number of rows in all."""

    transactions: list[dict[str, Any]]
    total: int


def jsonb(value: dict[str, Any] | None) -> Jsonb | None:
    """Wrap a dict for a jsonb parameter, serialized with exact decimals."""
    return None if value is None else Jsonb(value, dumps=json_codec.dumps)


def get_balance(conn: psycopg.Connection, org_id: UUID) -> Decimal:
    """Return the org's balance (zero for an org never seen)."""
    row = conn.execute("SELECT get_org_balance(%s)", (org_id,)).fetchone()
    assert row is not None
    balance: Decimal = row[0]
    return balance


def get_account(
    conn: psycopg.Connection, org_id: UUID, caller: str
) -> tuple[Decimal, Decimal | None]:
    """Return the org's balance and own SMS price (zero and None for an org never seen).

    One statement: api_account (sql/005) sets the tenant itself, so this runs on an
    autocommit connection without BEGIN/COMMIT around it.
    """
    row = conn.execute("SELECT balance, sms_price FROM api_account(%s, %s)",
                       (org_id, caller)).fetchone()
    assert row is not None
    return row[0], row[1]


@dataclass(frozen=True, slots=True)
class ChargeResult(LedgerResult):
    """A charge's result (outcome debited, duplicate, insufficient_funds or too_large),
    with the price used and the amount it came to."""

    price: Decimal | None = None
    amount: Decimal | None = None


def charge(
    conn: psycopg.Connection,
    org_id: UUID,
    *,
    caller: str,
    sms_count: int,
    cost_per_sms: Decimal | None,
    default_price: Decimal,
    message_id: str,
    campaign_id: str | None = None,
    description: str | None = None,
) -> ChargeResult:
    """Charge sms_count messages in one statement (api_deduct, sql/005): price from the
    request, else the org, else default_price; never below zero; once per message_id."""
    row = conn.execute(
        "SELECT transaction_id, balance, outcome, price, amount"
        " FROM api_deduct(%s, %s, %s, %s, %s, %s, %s, %s)",
        (org_id, caller, sms_count, cost_per_sms, default_price, message_id, campaign_id,
         description),
    ).fetchone()
    assert row is not None
    return ChargeResult(*row)


def set_sms_price(conn: psycopg.Connection, org_id: UUID, price: Decimal | None) -> None:
    """Set the org's SMS price (None: back to the deployment default), creating the org."""
    conn.execute("SELECT lock_organization(%s)", (org_id,))
    conn.execute(
        "UPDATE organizations SET sms_price = %s, updated_at = now() WHERE id = %s",
        (price, org_id),
    )


def has_sufficient_balance(conn: psycopg.Connection, org_id: UUID, amount: Decimal) -> bool:
    """Tell whether the org's balance covers `amount`."""
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


def debit(
    conn: psycopg.Connection,
    org_id: UUID,
    amount: Decimal,
    *,
    sms_count: int | None = None,
    cost_per_sms: Decimal | None = None,
    message_id: str | None = None,
    campaign_id: str | None = None,
    description: str | None = None,
    created_by: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> LedgerResult:
    """Charge usage: never below zero ('insufficient_funds'), once per message_id ('duplicate')."""
    row = conn.execute(
        "SELECT transaction_id, balance, outcome"
        " FROM deduct_credits(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (org_id, amount, sms_count, cost_per_sms, message_id, campaign_id, description,
         created_by, jsonb(metadata)),
    ).fetchone()
    assert row is not None
    return LedgerResult(*row)


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """What one item of a bulk charge did (outcome charged, duplicate, insufficient_funds
    or too_large), with its transaction and the org's balance after it."""

    transaction_id: UUID | None
    balance: Decimal
    outcome: str


def charge_bulk(
    conn: psycopg.Connection,
    charges: list[Charge],
    *,
    default_price: Decimal,
    created_by: str | None = None,
) -> list[BulkOutcome]:
    """Charge many messages across orgs in one statement; outcomes in the order given.

    The orgs must be in the transaction's tenant set (db.tenant_set_transaction).
    """
    if not charges:
        return []
    rows = conn.execute(
        "SELECT transaction_id, balance, outcome"
        " FROM deduct_credits_bulk(%s::uuid[], %s::integer[], %s::numeric[], %s,"
        " %s::text[], %s::text[], %s::text[], %s)",
        (
            [c.org_id for c in charges],
            [c.sms_count for c in charges],
            [c.cost_per_sms for c in charges],
            default_price,
            [c.message_id for c in charges],
            [c.campaign_id for c in charges],
            [c.description or f"Sent {c.sms_count} SMS" for c in charges],
            created_by,
        ),
    ).fetchall()
    return [BulkOutcome(*row) for row in rows]


def refund_usage(
    conn: psycopg.Connection,
    org_id: UUID,
    message_id: str,
    amount: Decimal | None = None,
    *,
    description: str | None = None,
    created_by: str | None = None,
) -> LedgerResult:
    """Give back a message's charge once (outcomes credited, duplicate, not_charged,
    exceeds_charge); `amount` defaults to the whole charge."""
    row = conn.execute(
        "SELECT transaction_id, balance, outcome FROM refund_usage(%s, %s, %s, %s, %s)",
        (org_id, message_id, amount, description, created_by),
    ).fetchone()
    assert row is not None
    return LedgerResult(*row)


_COLUMNS = """id, type, amount, balance_before, balance_after, sms_count, cost_per_sms,
    payment_method, description, created_at, payment_intent_id, message_id, campaign_id,
    metadata"""

# The exact total comes from counters kept under the org's row lock, never COUNT(*).
_TOTAL_ALL = "SELECT transaction_count FROM organizations WHERE id = %s"
_TOTAL_OF_TYPE = "SELECT n FROM billing_transaction_counts WHERE org_id = %s AND type = %s"

# A page is the range of positions (seq, or type_seq) [total - offset - limit + 1,
# total - offset]: an index range scan, so offset 1,000,000 costs what offset 0 costs.
# The bounds are plain parameters on purpose: under RLS, PostgreSQL applies a qual ahead
# of the policy (as an index condition) only when it is leakproof, and a bound computed
# in SQL (subquery minus offset) is not, so it became a filter over every skipped row.
# https://www.postgresql.org/docs/current/ddl-rowsecurity.html (leakproof functions)
_PAGE_ALL = f"""SELECT {_COLUMNS} FROM billing_transactions
    WHERE org_id = %s AND seq BETWEEN %s AND %s ORDER BY seq DESC"""
_PAGE_OF_TYPE = f"""SELECT {_COLUMNS} FROM billing_transactions
    WHERE org_id = %s AND type = %s AND type_seq BETWEEN %s AND %s ORDER BY type_seq DESC"""


def history(
    conn: psycopg.Connection,
    org_id: UUID,
    *,
    limit: int,
    offset: int,
    type: str | None = None,
) -> HistoryPage:
    """Return a page of the org's transactions, newest first, with the exact total."""
    key = (org_id,) if type is None else (org_id, type)
    row = conn.execute(_TOTAL_ALL if type is None else _TOTAL_OF_TYPE, key).fetchone()
    total = row[0] if row else 0
    upper = total - offset
    if upper < 1:
        return HistoryPage(transactions=[], total=total)
    bounds = (max(1, upper - limit + 1), upper)
    with conn.cursor(row_factory=dict_row) as cur:
        transactions = cur.execute(_PAGE_ALL if type is None else _PAGE_OF_TYPE,
                                   (*key, *bounds)).fetchall()
    return HistoryPage(transactions=transactions, total=total)
