"""GET/PUT /api/billing/orgs/<orgId>/alerts: an org's low-balance threshold and emails."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from flask import current_app

from billing_gateway.notifications import alerts
from billing_gateway.notifications.schemas import AlertSettingsRequest, AlertSettingsResponse
from billing_gateway.platform.auth import ADMIN, MEMBER, current_caller, require_role, resolve_org
from billing_gateway.platform.db import get_db, tenant_transaction
from billing_gateway.platform.http import blueprint

blp = blueprint("alerts", "Per-organization alert settings: low-balance threshold and emails.")


def _answer(org: UUID, found: alerts.AlertSettings) -> dict[str, Any]:
    return {"org_id": org, "low_balance_threshold": found.low_balance_threshold,
            "emails": found.emails, "source": found.source}


@blp.route("/orgs/<uuid:org_id>/alerts", methods=["GET"])
@require_role(MEMBER, ADMIN)
@blp.response(200, AlertSettingsResponse)
def get_alerts(org_id: UUID) -> dict[str, Any]:
    """Show the org's alert settings (a member: its own org only)."""
    caller = current_caller()
    org = resolve_org(caller, org_id)
    default = current_app.config["BILLING_SETTINGS"].low_balance_default
    with tenant_transaction(get_db(), org, caller.subject) as conn:
        return _answer(org, alerts.alert_settings(conn, org, default_threshold=default))


@blp.route("/orgs/<uuid:org_id>/alerts", methods=["PUT"])
@require_role(MEMBER, ADMIN)
@blp.arguments(AlertSettingsRequest)
@blp.response(200, AlertSettingsResponse)
def put_alerts(args: dict[str, Any], org_id: UUID) -> dict[str, Any]:
    """Replace the org's alert settings (lowBalanceThreshold null: the default again)."""
    caller = current_caller()
    org = resolve_org(caller, org_id)
    default = current_app.config["BILLING_SETTINGS"].low_balance_default
    # One address once, in the order given, compared case-insensitively.
    emails = list({e.lower(): e for e in reversed(args["emails"])}.values())[::-1]
    with tenant_transaction(get_db(), org, caller.subject) as conn:
        alerts.set_alert_settings(conn, org, threshold=args["low_balance_threshold"],
                                  emails=emails, updated_by=caller.subject)
        return _answer(org, alerts.alert_settings(conn, org, default_threshold=default))
