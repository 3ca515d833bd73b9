"""An org's auto top-up settings: read with the card and the last attempt, and set."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

import psycopg
from psycopg.rows import dict_row

from billing_gateway.autotopup import cards
from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import require_tenant
from billing_gateway.platform.errors import ValidationFailed

# Why a paused auto top-up is paused, in the customer's words (the API and the page).
PAUSED_REASON = ("The last {failures} automatic top-ups failed, so they are paused. Pay once "
                 "with a card (saving it) to turn them back on.")


def read(conn: psycopg.Connection, org_id: uuid.UUID) -> dict[str, Any]:
    """The settings, the saved card and the last attempt (in the org's tenant transaction)."""
    require_tenant(org_id)
    with conn.cursor(row_factory=dict_row) as cur:
        org = cur.execute(
            "SELECT auto_topup_state AS state, auto_topup_threshold AS threshold,"
            " auto_topup_target AS target, auto_topup_failures AS failures,"
            " auto_topup_not_before AS not_before FROM organizations WHERE id = %s",
            (org_id,)).fetchone() or {"state": "off", "threshold": None, "target": None,
                                      "failures": 0, "not_before": None}
        last = cur.execute(
            "SELECT id, status, amount, balance_at_trigger, payment_intent_id, failure_code,"
            " decline_code, failure_message, created_at, finished_at"
            " FROM auto_topup_attempts WHERE org_id = %s ORDER BY created_at DESC LIMIT 1",
            (org_id,)).fetchone()
    card = cards.saved_card(conn, org_id)
    paused = org["state"] == "paused"
    return {
        "org_id": org_id,
        "enabled": org["state"] == "on",
        "paused": paused,
        "paused_reason": PAUSED_REASON.format(failures=org["failures"]) if paused else None,
        "threshold": org["threshold"],
        "target_balance": org["target"],
        "consecutive_failures": org["failures"],
        "next_attempt_not_before": org["not_before"] if org["failures"] else None,
        "payment_method": None if card is None else {
            "brand": card.brand, "last4": card.last4, "exp_month": card.exp_month,
            "exp_year": card.exp_year},
        "last_attempt": last,
    }


def check(settings: Settings, *, enabled: bool, threshold: Decimal | None,
          target: Decimal | None, has_card: bool) -> None:
    """The rules of the settings, each failure named by its field.

    Every top-up must be one Checkout could take: it charges target minus a balance below
    the threshold, so more than target - threshold and at most the target.
    """
    problems: dict[str, list[str]] = {}
    if enabled and not has_card:
        problems["enabled"] = ["Save a card first: pay once with saveCard true."]
    if enabled and threshold is None:
        problems["threshold"] = ["Required to turn auto top-up on."]
    if enabled and target is None:
        problems["targetBalance"] = ["Required to turn auto top-up on."]
    if target is not None and target > settings.max_topup:
        problems.setdefault("targetBalance", []).append(
            f"At most {settings.max_topup} (BILLING_MAX_TOPUP).")
    if threshold is not None and target is not None:
        if target <= threshold:
            problems.setdefault("targetBalance", []).append("Must be above the threshold.")
        elif target - threshold < settings.min_topup:
            problems.setdefault("targetBalance", []).append(
                f"Must be at least {settings.min_topup} above the threshold, the smallest "
                "top-up (BILLING_MIN_TOPUP).")
    if problems:
        raise ValidationFailed("Invalid auto top-up settings", fields=problems)


def update(conn: psycopg.Connection, settings: Settings, org_id: uuid.UUID, *,
           enabled: bool, threshold: Decimal | None, target: Decimal | None) -> None:
    """Set the org's auto top-up (amounts left out keep their values); turned on below the
    threshold, an attempt starts at once."""
    require_tenant(org_id)
    row = conn.execute("SELECT auto_topup_threshold, auto_topup_target FROM organizations"
                       " WHERE id = %s FOR UPDATE", (org_id,)).fetchone()
    threshold = threshold if threshold is not None else (row[0] if row else None)
    target = target if target is not None else (row[1] if row else None)
    check(settings, enabled=enabled, threshold=threshold, target=target,
          has_card=cards.saved_card(conn, org_id) is not None)
    conn.execute("SELECT set_auto_topup(%s, %s, %s, %s)", (org_id, enabled, threshold, target))
