"""Charges, usage refunds and prices: the SMS sender's and admins' endpoints."""

from __future__ import annotations

from collections import Counter
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
from flask import Response, current_app, request

from billing_gateway.ledger.schemas import LedgerWriteResponse
from billing_gateway.ledger.writes import LedgerWrite, ledger_write
from billing_gateway.platform import metrics, money
from billing_gateway.platform.auth import (
    ADMIN,
    MEMBER,
    SERVICE,
    current_caller,
    require_role,
    resolve_org,
)
from billing_gateway.platform.db import get_db, tenant_transaction
from billing_gateway.platform.errors import InsufficientFunds, NotFound, ValidationFailed
from billing_gateway.platform.http import blueprint
from billing_gateway.usage import charges, pricing, summary
from billing_gateway.usage.charges import ChargeOutcome, RefundOutcome
from billing_gateway.usage.items import Charge, InvalidCharge
from billing_gateway.usage.schemas import (
    BulkChargeRequest,
    BulkChargeResponse,
    DeductRequest,
    DeductResponse,
    PricingRequest,
    PricingResponse,
    UsageRefundRequest,
    UsageSummaryQuery,
    UsageSummaryResponse,
)

usage_blp = blueprint("usage", "SMS usage charged to an organization's balance.")
_RESPONSE = DeductResponse()
_REFUND_RESPONSE = LedgerWriteResponse()


@usage_blp.route("/deduct", methods=["POST"])
@require_role(SERVICE)
@usage_blp.arguments(DeductRequest)
@usage_blp.response(201, DeductResponse)
@usage_blp.alt_response(
    402, description="The balance does not cover the charge; nothing is charged.")
def charge_messages(args: dict[str, Any]) -> Response:
    """Charge smsCount x costPerSms once per messageId; never below zero."""
    settings = current_app.config["BILLING_SETTINGS"]
    org, caller = args["org_id"], current_caller().subject

    def charge(conn: psycopg.Connection) -> charges.ChargeResult:
        result = charges.charge(
            conn, org, caller=caller, sms_count=args["sms_count"],
            cost_per_sms=args.get("cost_per_sms"), default_price=settings.default_sms_price,
            message_id=args["message_id"], campaign_id=args.get("campaign_id"),
            description=args.get("description"))
        # Counted when PostgreSQL answers: a keyed request whose commit then fails is counted
        # though it charged nothing (rare; the ledger is the exact record).
        metrics.charged(result.outcome, result.amount)
        if result.outcome is ChargeOutcome.TOO_LARGE:
            raise ValidationFailed("The charge is too large",
                                   fields={"smsCount": ["smsCount x costPerSms is too large."]})
        if result.outcome is ChargeOutcome.INSUFFICIENT_FUNDS:
            # Nothing was written; with an Idempotency-Key, raising also frees the key.
            raise InsufficientFunds(
                f"Balance {money.format_number(result.balance)} does not cover "
                f"the charge of {money.format_number(result.amount or Decimal(0))}")
        return result

    if request.headers.get("Idempotency-Key") is None:
        # The hot path: one statement on the autocommit connection (api_charge).
        return LedgerWrite(conn=get_db(), caller=caller, key=None).created(
            charge(get_db()), _RESPONSE)
    try:
        with ledger_write(org) as write:
            if write.replay is not None:
                return write.replay
            return write.created(charge(write.conn), _RESPONSE)
    except InsufficientFunds:
        # The refusal rolled back to free the key, and with it the refusal's
        # balance.depleted: decided again, under the org's lock, in a transaction of its own.
        with tenant_transaction(get_db(), org, caller) as conn:
            charges.note_refused(conn, org)
        raise


def _bulk_result(index: int, item: Charge | InvalidCharge,
                 outcome: charges.BulkOutcome | None) -> dict[str, Any]:
    if isinstance(item, InvalidCharge):
        return {"index": index, "outcome": "invalid", "transactionId": None,
                "reason": item.reason, "fields": item.fields}
    assert outcome is not None
    if outcome.outcome is ChargeOutcome.TOO_LARGE:
        return {"index": index, "outcome": "invalid", "transactionId": None,
                "balance": money.to_number(outcome.balance),
                "reason": "smsCount x costPerSms is too large.",
                "fields": {"smsCount": ["smsCount x costPerSms is too large."]}}
    return {"index": index, "outcome": str(outcome.outcome),
            "transactionId": outcome.transaction_id,
            "balance": money.to_number(outcome.balance)}


def _named_amount(item: Charge | InvalidCharge) -> Decimal | None:
    """Return the item's amount when the request names its price, else None."""
    # The org's price or the default is applied in SQL, and charge_sms_bulk does not return
    # the amount: such items are counted without one (docs/operations.md).
    if isinstance(item, Charge) and item.cost_per_sms is not None:
        return item.sms_count * item.cost_per_sms
    return None


@usage_blp.route("/deduct/bulk", methods=["POST"])
@require_role(SERVICE)
@usage_blp.arguments(BulkChargeRequest)
@usage_blp.response(200, BulkChargeResponse)
def charge_messages_bulk(args: dict[str, Any]) -> Response:
    """Charge up to 1,000 messages, each for its own org, each applied or refused on its own.

    Items of one org apply in request order. A repeated messageId (earlier, or within the
    batch) is `duplicate` with the original charge; an invalid item fails only itself.
    """
    items: list[Charge | InvalidCharge] = args["charges"]
    valid = [item for item in items if isinstance(item, Charge)]
    with ledger_write(None, org_ids={charge.org_id for charge in valid}) as write:
        if write.replay is not None:
            return write.replay
        outcomes = iter(charges.charge_bulk(
            write.conn, valid,
            default_price=current_app.config["BILLING_SETTINGS"].default_sms_price,
            created_by=current_caller().subject,
        ))
        results = [
            _bulk_result(index, item, None if isinstance(item, InvalidCharge) else next(outcomes))
            for index, item in enumerate(items)
        ]
        metrics.charged_each((result["outcome"], _named_amount(item))
                             for item, result in zip(items, results, strict=True))
        summary = Counter(result["outcome"] for result in results)
        return write.respond(200, {
            "results": results,
            "summary": {"charged": summary["charged"], "duplicate": summary["duplicate"],
                        "insufficientFunds": summary["insufficient_funds"],
                        "invalid": summary["invalid"]},
        })


@usage_blp.route("/usage/refund", methods=["POST"])
@require_role(SERVICE, ADMIN)
@usage_blp.arguments(UsageRefundRequest)
@usage_blp.response(201, LedgerWriteResponse)
@usage_blp.alt_response(404, description="No charge for this messageId in this org.")
def refund_usage(args: dict[str, Any]) -> Response:
    """Give back the charge of a message (an undelivered SMS): once, never more than charged.

    A repeat returns the first refund and gives back nothing more.
    """
    org = args["org_id"]
    with ledger_write(org) as write:
        if write.replay is not None:
            return write.replay
        result = charges.refund_usage(
            write.conn, org, args["message_id"], args.get("amount"),
            description=args.get("description") or f"Refund of message {args['message_id']}",
            created_by=current_caller().subject,
        )
        if result.outcome is RefundOutcome.NOT_CHARGED:
            raise NotFound(f"No charge for message {args['message_id']} in this organization")
        if result.outcome is RefundOutcome.EXCEEDS_CHARGE:
            raise ValidationFailed(
                "The refund is larger than the charge",
                fields={"amount": ["Must not exceed the amount charged for this message."]})
        return write.created(result, _REFUND_RESPONSE)


@usage_blp.route("/usage/summary", methods=["GET"])
@require_role(MEMBER, ADMIN, SERVICE)
@usage_blp.arguments(UsageSummaryQuery, location="query")
@usage_blp.response(200, UsageSummaryResponse)
def summarize_usage(args: dict[str, Any]) -> dict[str, Any]:
    """Sum the org's SMS usage per UTC day or per campaign, net of usage refunds.

    `from` and `to` are UTC days, both included (default: the last 30 days, today
    included; at most 366 days). By day, every day of the range is an item, zeros included.
    """
    caller = current_caller()
    org = resolve_org(caller, args.get("org_id"))
    with tenant_transaction(get_db(), org, caller.subject) as conn:
        usage = summary.usage_summary(conn, org, start=args["start"], end=args["end"],
                                      group_by=args["group_by"])
    return {"currency": current_app.config["BILLING_SETTINGS"].currency,
            "group_by": args["group_by"], "start": args["start"], "end": args["end"], **usage}


pricing_blp = blueprint("pricing", "Per-organization SMS prices.")


@pricing_blp.route("/orgs/<uuid:org_id>/pricing", methods=["PUT"])
@require_role(ADMIN)
@pricing_blp.arguments(PricingRequest)
@pricing_blp.response(200, PricingResponse)
def set_pricing(args: dict[str, Any], org_id: UUID) -> dict[str, Any]:
    """Set the price charged per SMS when a charge names none (null: the default again).

    Charges already made keep the price they were made at.
    """
    price = args["sms_price"]
    with tenant_transaction(get_db(), org_id, current_caller().subject) as conn:
        pricing.set_sms_price(conn, org_id, price)
    default = current_app.config["BILLING_SETTINGS"].default_sms_price
    return {"org_id": org_id, "sms_price": price or default,
            "source": "default" if price is None else "org"}
