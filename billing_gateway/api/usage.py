"""POST /deduct: the SMS sender charges a message to its organization's balance."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import Response, current_app

from billing_gateway import ledger, money
from billing_gateway.api import blueprint
from billing_gateway.api.ledger_write import ledger_write
from billing_gateway.auth import SERVICE, current_caller, require_role
from billing_gateway.errors import InsufficientFunds, ValidationFailed
from billing_gateway.schemas import DeductRequest, DeductResponse

blp = blueprint("usage", "SMS usage charged to an organization's balance.")
_RESPONSE = DeductResponse()


def sms_cost(sms_count: int, price: Decimal) -> Decimal:
    """Return the exact cost of sms_count messages at price (at most 4 decimals, no rounding)."""
    cost = price * sms_count
    if cost > money.MAX_AMOUNT:
        raise ValidationFailed("The charge is too large",
                               fields={"smsCount": ["smsCount x costPerSms is too large."]})
    return cost


@blp.route("/deduct", methods=["POST"])
@require_role(SERVICE)
@blp.arguments(DeductRequest)
@blp.response(201, DeductResponse)
@blp.alt_response(402, description="The balance does not cover the charge; nothing is charged.")
def deduct(args: dict[str, Any]) -> Response:
    """Charge smsCount x costPerSms once per messageId; never below zero."""
    default_price = current_app.config["BILLING_SETTINGS"].default_sms_price
    org = args["org_id"]
    with ledger_write(org) as write:
        if write.replay is not None:
            return write.replay
        price = (args.get("cost_per_sms") or ledger.get_sms_price(write.conn, org)
                 or default_price)
        cost = sms_cost(args["sms_count"], price)
        result = ledger.debit(
            write.conn, org, cost,
            sms_count=args["sms_count"], cost_per_sms=price,
            message_id=args["message_id"], campaign_id=args.get("campaign_id"),
            description=args.get("description") or f"Sent {args['sms_count']} SMS",
            created_by=current_caller().subject,
        )
        if result.outcome == "insufficient_funds":
            # Raising rolls the transaction back: nothing is charged, the key stays free.
            raise InsufficientFunds(
                f"Balance {money.format_number(result.balance)} does not cover "
                f"the charge of {money.format_number(cost)}")
        return write.created(result, _RESPONSE)
