"""SMS usage charges, single and bulk, and usage refunds, in SQL."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any
from uuid import UUID

import psycopg

from billing_gateway.ledger.credits import LedgerResult, jsonb
from billing_gateway.platform.db import require_tenant
from billing_gateway.usage.items import Charge


class ChargeOutcome(StrEnum):
    """What a charge did, single or bulk: the same words from SQL to the API."""

    CHARGED = "charged"
    DUPLICATE = "duplicate"  # the message was charged before: the original charge answers
    INSUFFICIENT_FUNDS = "insufficient_funds"  # nothing charged
    TOO_LARGE = "too_large"  # smsCount x price above what one charge may be


class RefundOutcome(StrEnum):
    """What a usage refund did."""

    CREDITED = "credited"
    DUPLICATE = "duplicate"  # refunded before: the first refund answers
    NOT_CHARGED = "not_charged"  # no charge for this message in this org
    EXCEEDS_CHARGE = "exceeds_charge"  # more than was charged: nothing refunded


@dataclass(frozen=True, slots=True)
class ChargeResult(LedgerResult):
    """A charge's result, with the price used and the amount it came to."""

    outcome: ChargeOutcome
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
    """Charge sms_count messages in one statement (api_charge): price from the
    request, else the org, else default_price; never below zero; once per message_id."""
    row = conn.execute(
        "SELECT transaction_id, balance, outcome, price, amount"
        " FROM api_charge(%s, %s, %s, %s, %s, %s, %s, %s)",
        (org_id, caller, sms_count, cost_per_sms, default_price, message_id, campaign_id,
         description),
    ).fetchone()
    assert row is not None
    return ChargeResult(row[0], row[1], ChargeOutcome(row[2]), row[3], row[4])


def charge_amount(
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
) -> ChargeResult:
    """Charge an amount of usage: never below zero, once per message_id."""
    require_tenant(org_id)
    row = conn.execute(
        "SELECT transaction_id, balance, outcome"
        " FROM charge_sms(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
        (org_id, amount, sms_count, cost_per_sms, message_id, campaign_id, description,
         created_by, jsonb(metadata)),
    ).fetchone()
    assert row is not None
    return ChargeResult(row[0], row[1], ChargeOutcome(row[2]))


@dataclass(frozen=True, slots=True)
class RefundResult(LedgerResult):
    """A usage refund's result."""

    outcome: RefundOutcome


@dataclass(frozen=True, slots=True)
class BulkOutcome:
    """What one item of a bulk charge did, with its transaction and the org's balance
    after it."""

    transaction_id: UUID | None
    balance: Decimal
    outcome: ChargeOutcome


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
    require_tenant(*{c.org_id for c in charges})
    if not charges:
        return []
    rows = conn.execute(
        "SELECT transaction_id, balance, outcome"
        " FROM charge_sms_bulk(%s::uuid[], %s::integer[], %s::numeric[], %s,"
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
    return [BulkOutcome(row[0], row[1], ChargeOutcome(row[2])) for row in rows]


def refund_usage(
    conn: psycopg.Connection,
    org_id: UUID,
    message_id: str,
    amount: Decimal | None = None,
    *,
    description: str | None = None,
    created_by: str | None = None,
) -> RefundResult:
    """Give back a message's charge once (outcomes credited, duplicate, not_charged,
    exceeds_charge); `amount` defaults to the whole charge."""
    require_tenant(org_id)
    row = conn.execute(
        "SELECT transaction_id, balance, outcome FROM refund_usage(%s, %s, %s, %s, %s)",
        (org_id, message_id, amount, description, created_by),
    ).fetchone()
    assert row is not None
    return RefundResult(row[0], row[1], RefundOutcome(row[2]))


def note_refused(conn: psycopg.Connection, org_id: UUID) -> None:
    """Record that a charge of the org was refused for want of funds (balance.depleted,
    once per episode: sql/functions/60_notifications.sql)."""
    require_tenant(org_id)
    conn.execute("SELECT lock_organization(%s)", (org_id,))
    conn.execute("SELECT note_refused_charges(ARRAY[%s]::uuid[])", (org_id,))
