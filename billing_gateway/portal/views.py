"""POST /api/billing/portal-sessions: the platform asks for a link to the billing page."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import current_app

from billing_gateway.platform.auth import (
    ADMIN,
    MEMBER,
    SERVICE,
    current_caller,
    require_role,
    resolve_org,
)
from billing_gateway.platform.db import get_db, tenant_transaction
from billing_gateway.platform.http import blueprint
from billing_gateway.portal import links
from billing_gateway.portal.schemas import PortalSessionRequest, PortalSessionResponse

blp = blueprint("portal_sessions", "Links to the customer billing page, as Stripe's "
                "customer portal hands them out.")


@blp.route("/portal-sessions", methods=["POST"])
@require_role(MEMBER, ADMIN, SERVICE)
# The body is optional: a member's link needs nothing but the token.
@blp.arguments(PortalSessionRequest, required=False)
@blp.response(201, PortalSessionResponse)
def create_portal_session(args: dict[str, Any]) -> dict[str, Any]:
    """Make a one-time link that signs this member's browser in to the org's billing page.

    The link works once, within BILLING_PORTAL_LINK_TTL seconds (default 300); only its
    hash is stored. A member gets one for their own org; admin and service name `orgId`.
    """
    caller = current_caller()
    org = resolve_org(caller, args.get("org_id"))
    settings = current_app.config["BILLING_SETTINGS"]
    with tenant_transaction(get_db(), org, caller.subject) as conn:
        link = links.create_link(conn, org, caller.subject, return_url=args.get("return_url"),
                                 lifetime=dt.timedelta(seconds=settings.portal_link_ttl))
    return {"url": f"{settings.public_url}/billing/portal/{link.token}",
            "expires_at": link.expires_at}
