"""`billing-gateway reconcile`: prove the ledger matches Stripe, and repair what it can.

Webhooks can be missed (an outage longer than Stripe's retries, a misconfigured
endpoint). This pages through Stripe's succeeded PaymentIntents, credits the tagged ones
the ledger lacks through the same idempotent path as the webhook, and processes again the
stored events whose processing failed. It also settles top-up requests left pending by a
crash between recording them and recording Stripe's session (billing_gateway.topups.checkout),
and reports the lost disputes in another currency that no one has marked reviewed.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import psycopg
import stripe

from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import (
    as_app_role,
    autotopup_transaction,
    enter_org,
    stripe_transaction,
)
from billing_gateway.topups import (
    auto_payments,
    checkout,
    payments,
    saved_cards,
    stripe_client,
    webhook_events,
)

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
    recorded_sessions: list[str] = field(default_factory=list)
    abandoned: list[str] = field(default_factory=list)


def run(settings: Settings, dsn: str, since: dt.timedelta,
        say: Callable[[str], None] = print) -> Report:
    """Reconcile the PaymentIntents created within `since`, then the failed events."""
    client = stripe_client.make_client(settings)
    report = Report()
    created_after = int(time.time() - since.total_seconds())
    with psycopg.connect(dsn, autocommit=True) as conn:
        as_app_role(conn, settings.low_balance_default)
        intents = client.v1.payment_intents.list({"created": {"gte": created_after},
                                                  "limit": 100})
        for intent in intents.auto_paging_iter():
            if intent.status != "succeeded":
                continue
            org = stripe_client.tagged_org(intent.metadata.to_dict())
            if org is None:
                continue
            report.checked += 1
            found = intent.to_dict()
            card = saved_cards.card_to_save(lambda: client, found)
            with stripe_transaction(conn):
                outcome = webhook_events.credit_intent(conn, found, settings.currency,
                                                       "reconcile", card)
            if outcome == "credited":
                report.repaired.append(intent.id)
                say(f"credited missed payment {intent.id}: {intent.amount_received} "
                    f"{intent.currency} minor units to org {org}")
            elif outcome != "duplicate":
                report.unrepaired.append(intent.id)
                say(f"NOT credited {intent.id} (org {org}): {outcome}")
        for event in webhook_events.unprocessed(conn):
            try:
                card = saved_cards.card_to_save(lambda: client, event["data"]["object"])
                outcome = webhook_events.process(conn, event, settings.currency, card)
            except Exception as exc:
                report.unrepaired.append(event["id"])
                say(f"event {event['id']} ({event['type']}) still fails: {exc}")
                continue
            report.reprocessed.append(event["id"])
            say(f"processed stored event {event['id']} ({event['type']}): {outcome}")
        settle_checkout_requests(client, conn, created_after, report, say)
        settle_auto_topups(client, conn, settings.currency, report, say)
        with stripe_transaction(conn):
            to_review = payments.needs_review(conn)
        for item in to_review:  # however old: each stays until an admin marks it reviewed
            report.unrepaired.append(str(item["dispute_id"]))
            say(f"lost dispute {item['dispute_id']} of payment {item['payment_intent_id']} "
                f"(org {item['org_id']}) is {item['amount_minor']} {item['currency']} minor "
                f"units, the payment is in {item['payment_currency']}: not taken back; settle "
                "it by hand, then POST /api/billing/payments/disputes/<id>/reviewed")
    say(f"checked {report.checked} tagged succeeded payments since "
        f"{dt.datetime.fromtimestamp(created_after, dt.UTC):%Y-%m-%d %H:%M} UTC; "
        f"repaired {len(report.repaired)}, reprocessed {len(report.reprocessed)} events, "
        f"unrepaired {len(report.unrepaired)}; top-up requests: recorded "
        f"{len(report.recorded_sessions)} sessions, abandoned {len(report.abandoned)}")
    return report


def settle_checkout_requests(client: stripe.StripeClient, conn: psycopg.Connection,
                             created_after: int, report: Report,
                             say: Callable[[str], None]) -> None:
    """Record the session of each pending top-up request that Stripe has one for (found by
    the request's key in the session's metadata); mark the rest abandoned once they are
    too old to be in flight. Asks Stripe nothing when nothing is pending."""
    with stripe_transaction(conn):
        pending = checkout.pending_requests(conn)
    if not pending:
        return
    # `sent`: when the request was last sent to Stripe (a retry sends it again).
    waiting = {request.stripe_idempotency_key: (request, sent) for request, sent in pending}
    sessions = client.v1.checkout.sessions.list({"created": {"gte": created_after},
                                                 "limit": 100})
    for session in sessions.auto_paging_iter():
        found = session.to_dict()
        key = (found.get("metadata") or {}).get(stripe_client.CHECKOUT_REQUEST_KEY)
        if key not in waiting:
            continue
        request, _ = waiting.pop(key)
        with stripe_transaction(conn):
            enter_org(conn, request.org_id)
            checkout.record_session(conn, request, found)
        report.recorded_sessions.append(found["id"])
        say(f"recorded checkout session {found['id']} of org {request.org_id} "
            "(its creation was never recorded)")
    stale_before = time.time() - checkout.STALE_AFTER_SECONDS
    for request, sent in waiting.values():
        if sent.timestamp() > stale_before:
            continue  # may still be waiting on Stripe
        if sent.timestamp() < created_after:
            report.unrepaired.append(request.stripe_idempotency_key)
            say(f"top-up request {request.stripe_idempotency_key} of org {request.org_id} is "
                "pending since before --since: run with a longer --since")
            continue
        with stripe_transaction(conn):
            checkout.abandon(conn, request)
        report.abandoned.append(request.stripe_idempotency_key)
        say(f"abandoned top-up request {request.stripe_idempotency_key} of org "
            f"{request.org_id}: Stripe has no session for it")


def settle_auto_topups(client: stripe.StripeClient, conn: psycopg.Connection, currency: str,
                       report: Report, say: Callable[[str], None]) -> None:
    """End each auto top-up Stripe took (submitted) more than STALE_AFTER_SECONDS ago whose
    webhook never came, as its PaymentIntent now stands: credited if it succeeded, failed if
    Stripe gave up on it. Without this, a lost event would leave the attempt in flight and
    the org's auto top-up stopped for good."""
    with autotopup_transaction(conn):
        stale = conn.execute(
            "SELECT id, org_id, payment_intent_id FROM auto_topup_attempts"
            " WHERE status = 'submitted' AND updated_at < now() - make_interval(secs => %s)"
            " ORDER BY updated_at", (checkout.STALE_AFTER_SECONDS,)).fetchall()
    for attempt_id, org_id, intent_id in stale:
        intent = client.v1.payment_intents.retrieve(intent_id).to_dict()
        status = intent.get("status")
        with stripe_transaction(conn):
            if status == "succeeded":
                outcome = webhook_events.credit_intent(conn, intent, currency, "reconcile")
            elif status in ("requires_payment_method", "canceled"):
                enter_org(conn, org_id)
                outcome = auto_payments.finish(conn, attempt_id, "failed",
                                               auto_payments.failure_of_intent(intent))
            else:  # processing: Stripe has not decided yet
                continue
        report.repaired.append(intent_id)
        say(f"auto top-up {attempt_id} of org {org_id}: payment {intent_id} is {status}"
            f" ({outcome})")
