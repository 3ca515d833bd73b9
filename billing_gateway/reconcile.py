"""`billing-gateway reconcile`: prove the ledger matches Stripe, and repair what it can.

Webhooks can be missed (an outage longer than Stripe's retries, a misconfigured
endpoint). This pages through Stripe's succeeded PaymentIntents, credits the tagged ones
the ledger lacks through the same idempotent path as the webhook, and processes again the
stored events whose processing failed.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg

from billing_gateway import payments, stripe_events, stripe_gateway
from billing_gateway.config import Settings
from billing_gateway.db import as_app_role, stripe_transaction

_SPAN = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_span(text: str) -> dt.timedelta:
    """Parse '3d', '12h', '30m' or '45s'."""
    match = _SPAN.match(text.strip())
    if not match:
        raise ValueError(f"--since {text!r}: use a number and s, m, h or d (for example 3d)")
    return dt.timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


@dataclass
class Report:
    """What a reconciliation found and did."""

    checked: int = 0
    repaired: list[str] = field(default_factory=list)
    reprocessed: list[str] = field(default_factory=list)
    unrepaired: list[str] = field(default_factory=list)


def run(settings: Settings, dsn: str, since: dt.timedelta,
        say: Callable[[str], None] = print) -> Report:
    """Reconcile the PaymentIntents created within `since`, then the failed events."""
    client = stripe_gateway.make_client(settings)
    report = Report()
    created_after = int(time.time() - since.total_seconds())
    with psycopg.connect(dsn, autocommit=True) as conn:
        as_app_role(conn)
        intents = client.v1.payment_intents.list({"created": {"gte": created_after},
                                                  "limit": 100})
        for intent in intents.auto_paging_iter():
            if intent.status != "succeeded":
                continue
            org = stripe_gateway.tagged_org(intent.metadata.to_dict())
            if org is None:
                continue
            report.checked += 1
            with stripe_transaction(conn):
                outcome = payments.credit_payment(
                    conn, intent.id, org, intent.amount_received, intent.currency,
                    settlement_currency=settings.currency, origin="reconcile")
            if outcome == "credited":
                report.repaired.append(intent.id)
                say(f"credited missed payment {intent.id}: {intent.amount_received} "
                    f"{intent.currency} minor units to org {org}")
            elif outcome != "duplicate":
                report.unrepaired.append(intent.id)
                say(f"NOT credited {intent.id} (org {org}): {outcome}")
        for event in stripe_events.unprocessed(conn):
            try:
                outcome = stripe_events.process(conn, event, settings.currency)
            except Exception as exc:
                report.unrepaired.append(event["id"])
                say(f"event {event['id']} ({event['type']}) still fails: {exc}")
                continue
            report.reprocessed.append(event["id"])
            say(f"processed stored event {event['id']} ({event['type']}): {outcome}")
    say(f"checked {report.checked} tagged succeeded payments since "
        f"{dt.datetime.fromtimestamp(created_after, dt.UTC):%Y-%m-%d %H:%M} UTC; "
        f"repaired {len(report.repaired)}, reprocessed {len(report.reprocessed)} events, "
        f"unrepaired {len(report.unrepaired)}")
    return report
