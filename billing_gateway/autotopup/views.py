"""GET/PUT /api/billing/auto-top-up and DELETE /api/billing/auto-top-up/card."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask import current_app

from billing_gateway.autotopup import cards, settings
from billing_gateway.autotopup.schemas import (
    AutoTopUpRequest,
    AutoTopUpResponse,
    CardRemoved,
)
from billing_gateway.platform.auth import ADMIN, MEMBER, current_caller, require_role, resolve_org
from billing_gateway.platform.db import get_db, tenant_transaction
from billing_gateway.platform.errors import NotFound
from billing_gateway.platform.http import blueprint
from billing_gateway.platform.schemas import OrgQuery
from billing_gateway.topups import start

blp = blueprint("auto-top-up", "Saved cards and auto top-up: off-session recharges.")


@blp.route("/auto-top-up", methods=["GET"])
@require_role(MEMBER, ADMIN)
@blp.arguments(OrgQuery, location="query", as_kwargs=True)
@blp.response(200, AutoTopUpResponse)
def get_auto_topup(org_id: UUID | None = None) -> dict[str, Any]:
    """Show the org's auto top-up, its saved card and its last attempt."""
    caller = current_caller()
    org = resolve_org(caller, org_id)
    with tenant_transaction(get_db(), org, caller.subject) as conn:
        return settings.read(conn, org)


@blp.route("/auto-top-up", methods=["PUT"])
@require_role(MEMBER, ADMIN)
@blp.arguments(AutoTopUpRequest)
@blp.response(200, AutoTopUpResponse)
def put_auto_topup(args: dict[str, Any]) -> dict[str, Any]:
    """Turn auto top-up on (needs a saved card) or off, and set its threshold and target.
    Turning it on again after a pause clears the failures; turned on below the threshold,
    a top-up starts at once."""
    caller = current_caller()
    org = resolve_org(caller, args.get("org_id"))
    with tenant_transaction(get_db(), org, caller.subject) as conn:
        settings.update(conn, current_app.config["BILLING_SETTINGS"], org,
                        enabled=args["enabled"], threshold=args["threshold"],
                        target=args["target_balance"])
        return settings.read(conn, org)


@blp.route("/auto-top-up/card", methods=["DELETE"])
@require_role(MEMBER, ADMIN)
@blp.arguments(OrgQuery, location="query", as_kwargs=True)
@blp.response(200, CardRemoved)
@blp.alt_response(404, description="The org has no saved card.")
def remove_card(org_id: UUID | None = None) -> dict[str, bool]:
    """Remove the saved card: detached at Stripe, forgotten here, auto top-up turned off."""
    caller = current_caller()
    org = resolve_org(caller, org_id)
    client = start.app_stripe_client(current_app.config["BILLING_SETTINGS"])
    if cards.remove(client, org, caller.subject) is None:
        raise NotFound("The org has no saved card")
    return {"removed": True}
