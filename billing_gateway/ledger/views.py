"""Balance, manual credits and history: the ledger's endpoints."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from flask import Response, current_app

from billing_gateway.ledger import credits, export, history
from billing_gateway.ledger.schemas import (
    AddFundsRequest,
    AddFundsResponse,
    BalanceQuery,
    BalanceResponse,
    TransactionsCsvQuery,
    TransactionsPage,
    TransactionsQuery,
)
from billing_gateway.ledger.writes import ledger_write
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
from billing_gateway.platform.http import blueprint

balance_blp = blueprint("balance", "An organization's prepaid SMS credit balance.")


def balance_payload(balance: Any, currency: str) -> dict[str, Any]:
    """Shape a balance for JSON: exact number, display string, currency."""
    return {
        "balance": balance,
        "formatted": money.format_display(balance, currency),
        "currency": currency,
    }


@balance_blp.route("/balance", methods=["GET"])
@require_role(MEMBER, ADMIN, SERVICE)
@balance_blp.arguments(BalanceQuery, location="query", as_kwargs=True)
@balance_blp.response(200, BalanceResponse)
def get_balance(org_id: Any = None, required: Decimal | None = None) -> dict[str, Any]:
    """Show the balance of the caller's org (admin and service: any org by orgId).

    With `required`, also say whether the balance covers it (the seed's has_sufficient_balance).
    """
    caller = current_caller()
    org = resolve_org(caller, org_id)
    settings = current_app.config["BILLING_SETTINGS"]
    # One statement on the autocommit connection: api_account sets the tenant itself.
    balance, sms_price = credits.get_account(get_db(), org, caller.subject)
    payload = balance_payload(balance, settings.currency)
    payload["sms_price"] = sms_price or settings.default_sms_price
    if required is not None:
        payload["sufficient"] = balance >= required
    return payload


funds_blp = blueprint("funds", "Manual credits, bonuses and adjustments by platform admins.")
_RESPONSE = AddFundsResponse()


@funds_blp.route("/add-funds", methods=["POST"])
@require_role(ADMIN)
@funds_blp.arguments(AddFundsRequest)
@funds_blp.response(201, AddFundsResponse)
def add_funds(args: dict[str, Any]) -> Response:
    """Credit an org. Replays the first answer for a repeated paymentIntentId or Idempotency-Key."""
    caller = current_caller()
    org = resolve_org(caller, args.get("org_id"))
    with ledger_write(org) as write:
        if write.replay is not None:
            return write.replay
        result = credits.credit(
            write.conn, org, args["amount"],
            type=args["type"],
            payment_method=args["payment_method"],
            payment_intent_id=args.get("payment_intent_id"),
            description=args.get("description"),
            created_by=caller.subject,
        )
        if not result.is_duplicate:  # a repeated paymentIntentId credits nothing again
            metrics.credited("admin", args["type"], args["amount"])
        return write.created(result, _RESPONSE, message="Credits added successfully")


transactions_blp = blueprint("transactions", "Transaction history with exact totals at any size.")


@transactions_blp.route("/transactions", methods=["GET"])
@require_role(MEMBER, ADMIN, SERVICE)
@transactions_blp.arguments(TransactionsQuery, location="query")
@transactions_blp.response(200, TransactionsPage)
def list_transactions(args: dict[str, Any]) -> dict[str, Any]:
    """List the org's transactions, newest first, with limit/offset paging and a type filter."""
    caller = current_caller()
    org = resolve_org(caller, args.get("org_id"))
    with tenant_transaction(get_db(), org, caller.subject) as conn:
        page = history.history(
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


@transactions_blp.route("/transactions.csv", methods=["GET"])
@require_role(MEMBER, ADMIN, SERVICE)
@transactions_blp.arguments(TransactionsCsvQuery, location="query")
@transactions_blp.response(200, {"type": "string"}, content_type="text/csv", description=(
    "Every transaction of the range, oldest first, one CSV row each with the fields of "
    "GET /transactions and a header row; streamed. Text cells that a spreadsheet would run "
    "as a formula begin with a single quote."))
def export_transactions(args: dict[str, Any]) -> Response:
    """Export the org's transactions as CSV: all of them, or UTC days from/to, one type."""
    caller = current_caller()
    org = resolve_org(caller, args.get("org_id"))
    return export.transactions_csv_response(org, caller.subject, start=args.get("start"),
                                            end=args.get("end"), type=args.get("type"))
