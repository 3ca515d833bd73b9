"""POST /add-funds: manual credits by platform admins."""

from __future__ import annotations

from typing import Any

from flask import Response

from billing_gateway import ledger
from billing_gateway.api import blueprint
from billing_gateway.api.ledger_write import ledger_write
from billing_gateway.auth import ADMIN, current_caller, require_role, resolve_org
from billing_gateway.schemas import AddFundsRequest, AddFundsResponse

blp = blueprint("funds", "Manual credits, bonuses and adjustments by platform admins.")
_RESPONSE = AddFundsResponse()


@blp.route("/add-funds", methods=["POST"])
@require_role(ADMIN)
@blp.arguments(AddFundsRequest)
@blp.response(201, AddFundsResponse)
def add_funds(args: dict[str, Any]) -> Response:
    """Credit an org. Replays the first answer for a repeated paymentIntentId or Idempotency-Key."""
    caller = current_caller()
    org = resolve_org(caller, args.get("org_id"))
    with ledger_write(org) as write:
        if write.replay is not None:
            return write.replay
        result = ledger.credit(
            write.conn, org, args["amount"],
            type=args["type"],
            payment_method=args["payment_method"],
            payment_intent_id=args.get("payment_intent_id"),
            description=args.get("description"),
            created_by=caller.subject,
        )
        return write.created(result, _RESPONSE, message="Credits added successfully")
