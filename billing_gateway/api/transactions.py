"""GET /transactions: an org's ledger history, newest first."""

from __future__ import annotations

from typing import Any

from billing_gateway import ledger
from billing_gateway.api import blueprint
from billing_gateway.auth import ADMIN, MEMBER, SERVICE, current_caller, require_role, resolve_org
from billing_gateway.db import get_db, tenant_transaction
from billing_gateway.schemas import TransactionsPage, TransactionsQuery

blp = blueprint("transactions", "Transaction history with exact totals at any size.")


@blp.route("/transactions", methods=["GET"])
@require_role(MEMBER, ADMIN, SERVICE)
@blp.arguments(TransactionsQuery, location="query")
@blp.response(200, TransactionsPage)
def list_transactions(args: dict[str, Any]) -> dict[str, Any]:
    """List the org's transactions, newest first, with limit/offset paging and a type filter."""
    caller = current_caller()
    org = resolve_org(caller, args.get("org_id"))
    with tenant_transaction(get_db(), org, caller.subject) as conn:
        page = ledger.history(
            conn, org, limit=args["limit"], offset=args["offset"], type=args.get("type")
        )
    return {
        "transactions": page.transactions,
        "pagination": {
            "total": page.total,
            "limit": args["limit"],
            "offset": args["offset"],
            "has_more": args["offset"] + len(page.transactions) < page.total,
        },
    }
