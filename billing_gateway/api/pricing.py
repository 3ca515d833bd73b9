"""PUT /orgs/<orgId>/pricing: an org's own SMS price, set by platform admins."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask import current_app

from billing_gateway import ledger
from billing_gateway.api import blueprint
from billing_gateway.auth import ADMIN, current_caller, require_role
from billing_gateway.db import get_db, tenant_transaction
from billing_gateway.schemas import PricingRequest, PricingResponse

blp = blueprint("pricing", "Per-organization SMS prices.")


@blp.route("/orgs/<uuid:org_id>/pricing", methods=["PUT"])
@require_role(ADMIN)
@blp.arguments(PricingRequest)
@blp.response(200, PricingResponse)
def set_pricing(args: dict[str, Any], org_id: UUID) -> dict[str, Any]:
    """Set the price charged per SMS when a charge names none (null: the default again).

    Charges already made keep the price they were made at.
    """
    price = args["sms_price"]
    with tenant_transaction(get_db(), org_id, current_caller().subject) as conn:
        ledger.set_sms_price(conn, org_id, price)
    default = current_app.config["BILLING_SETTINGS"].default_sms_price
    return {"org_id": org_id, "sms_price": price or default,
            "source": "default" if price is None else "org"}
