"""GET /balance: an org's credit balance."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import current_app

from billing_gateway import ledger, money
from billing_gateway.api import blueprint
from billing_gateway.auth import ADMIN, MEMBER, SERVICE, current_caller, require_role, resolve_org
from billing_gateway.db import get_db
from billing_gateway.schemas import BalanceQuery, BalanceResponse

blp = blueprint("balance", "An organization's prepaid SMS credit balance.")


def balance_payload(balance: Any, currency: str) -> dict[str, Any]:
    """Shape a balance for JSON: exact number, display string, currency."""
    return {
        "balance": balance,
        "formatted": money.format_display(balance, currency),
        "currency": currency,
    }


@blp.route("/balance", methods=["GET"])
@require_role(MEMBER, ADMIN, SERVICE)
@blp.arguments(BalanceQuery, location="query", as_kwargs=True)
@blp.response(200, BalanceResponse)
def get_balance(org_id: Any = None, required: Decimal | None = None) -> dict[str, Any]:
    """Show the balance of the caller's org (admin and service: any org by orgId).

    With `required`, also say whether the balance covers it (the seed's has_sufficient_balance).
    """
    caller = current_caller()
    org = resolve_org(caller, org_id)
    settings = current_app.config["BILLING_SETTINGS"]
    # One statement on the autocommit connection: api_account sets the tenant itself.
    balance, sms_price = ledger.get_account(get_db(), org, caller.subject)
    payload = balance_payload(balance, settings.currency)
    payload["sms_price"] = sms_price or settings.default_sms_price
    if required is not None:
        payload["sufficient"] = balance >= required
    return payload
