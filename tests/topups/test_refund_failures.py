"""A refund that fails or is canceled gives back what its reversal took: once, whatever
order its events arrive in and however often; the ledger's invariants hold throughout
(checked after every test by the autouse ledger_is_sound fixture)."""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient

from billing_gateway.ledger import invariants
from tests import stripe_objects as so
from tests.plugins.database import empty_every_table
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import balance, deliver, ledger_rows


def _paid(client: FlaskClient, org: uuid.UUID, amount: int) -> dict[str, Any]:
    intent = so.payment_intent(org=org, amount=amount)
    assert deliver(client, so.event("payment_intent.succeeded", intent)).status_code == 200
    return intent


def _refunded(intent: dict[str, Any], amount_refunded: int) -> dict[str, Any]:
    """charge.refunded with the charge's cumulative amount_refunded."""
    return so.event("charge.refunded", so.charge(intent=intent["id"], amount=intent["amount"],
                                                 amount_refunded=amount_refunded))


def _refund_event(kind: str, refund: dict[str, Any], status: str,
                  previous: str | None = None) -> dict[str, Any]:
    return so.event(kind, {**so.refund(intent=refund["payment_intent"], amount=refund["amount"],
                                       status=status, refund_id=refund["id"])},
                    previous={"status": previous} if previous else None)


def _stored(owner_conn: psycopg.Connection, intent: dict[str, Any]) -> tuple:
    return owner_conn.execute(
        "SELECT refunded_minor, reversed_minor, shortfall FROM stripe_payments"
        " WHERE payment_intent_id = %s", (intent["id"],)).fetchone()


def _kinds(owner_conn: psycopg.Connection, org: uuid.UUID) -> list[tuple[str, Decimal]]:
    return [row[:2] for row in ledger_rows(owner_conn, org)]


def test_a_failed_refund_gives_back_what_its_reversal_took(
    client: FlaskClient, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    intent = _paid(client, org, 10000)
    refund = so.refund(intent=intent["id"], amount=3000)
    deliver(client, _refunded(intent, 3000))
    deliver(client, so.event("refund.created", refund))
    assert balance(owner_conn, org) == Decimal("70.00")
    failed = _refund_event("refund.failed", refund, "failed")
    assert deliver(client, failed).status_code == 200
    assert balance(owner_conn, org) == Decimal("100.00")
    assert _kinds(owner_conn, org) == [("purchase", Decimal("100.0000")),
                                       ("reversal", Decimal("-30.0000")),
                                       ("refund", Decimal("30.0000"))]
    given_back = owner_conn.execute(
        "SELECT payment_intent_id, payment_method, created_by, metadata FROM"
        " billing_transactions WHERE type = 'refund'").fetchone()
    assert given_back[:3] == (intent["id"], "stripe", "stripe")
    assert (given_back[3]["stripe_refund"], given_back[3]["refund_status"]) == (
        refund["id"], "failed")
    assert _stored(owner_conn, intent) == (0, 0, Decimal("0"))
    assert owner_conn.execute("SELECT outcome FROM stripe_events WHERE id = %s",
                              (failed["id"],)).fetchone() == ("restored",)


def test_every_announcement_and_redelivery_of_the_failure_gives_back_once(
    client: FlaskClient, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    """refund.failed, refund.updated and charge.refund.updated all announce one failure."""
    intent = _paid(client, org, 5000)
    refund = so.refund(intent=intent["id"], amount=5000)
    deliver(client, _refunded(intent, 5000))
    deliver(client, so.event("refund.created", refund))
    assert balance(owner_conn, org) == 0
    announcements = [_refund_event("refund.failed", refund, "failed"),
                     _refund_event("refund.updated", refund, "failed", previous="succeeded"),
                     _refund_event("charge.refund.updated", refund, "failed",
                                   previous="succeeded")]
    for evt in announcements + announcements:  # each one delivered twice
        assert deliver(client, evt).status_code == 200
    # A late event of the refund's earlier status changes nothing either.
    deliver(client, _refund_event("refund.updated", refund, "succeeded", previous="pending"))
    deliver(client, _refunded(intent, 5000))
    assert balance(owner_conn, org) == Decimal("50.00")
    assert [kind for kind, _ in _kinds(owner_conn, org)] == ["purchase", "reversal", "refund"]
    outcomes = [row[0] for row in owner_conn.execute(
        "SELECT outcome FROM stripe_events WHERE id = ANY(%s) ORDER BY received_at",
        ([evt["id"] for evt in announcements],))]
    assert outcomes == ["restored", "refund_already_recorded", "refund_already_recorded"]


def test_a_canceled_refund_gives_back_too(client: FlaskClient, org: uuid.UUID,
                                          owner_conn: psycopg.Connection) -> None:
    """A refund waiting on the customer (requires_action) that is canceled never paid out."""
    intent = _paid(client, org, 4000)
    refund = so.refund(intent=intent["id"], amount=1500, status="requires_action")
    deliver(client, so.event("refund.created", refund))
    deliver(client, _refunded(intent, 1500))
    assert balance(owner_conn, org) == Decimal("25.00")
    deliver(client, _refund_event("charge.refund.updated", refund, "canceled",
                                  previous="requires_action"))
    assert balance(owner_conn, org) == Decimal("40.00")


def test_a_failure_seen_before_the_refund_takes_nothing_back(
    client: FlaskClient, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    intent = _paid(client, org, 6000)
    refund = so.refund(intent=intent["id"], amount=6000)
    deliver(client, _refund_event("refund.failed", refund, "failed"))
    deliver(client, _refunded(intent, 6000))
    deliver(client, so.event("refund.created", refund))
    assert balance(owner_conn, org) == Decimal("60.00")
    assert _kinds(owner_conn, org) == [("purchase", Decimal("60.0000"))]


EVENTS = ("paid", "charge.refunded", "refund.created", "refund.failed")


@pytest.mark.parametrize("order", list(itertools.permutations(EVENTS)))
def test_every_order_of_payment_refund_and_failure_ends_where_it_began(
    client: FlaskClient, org: uuid.UUID, owner_conn: psycopg.Connection, order: tuple
) -> None:
    intent = so.payment_intent(org=org, amount=8000)
    refund = so.refund(intent=intent["id"], amount=2500, status="pending")
    events = {
        "paid": so.event("payment_intent.succeeded", intent),
        "charge.refunded": _refunded(intent, 2500),
        "refund.created": so.event("refund.created", refund),
        "refund.failed": _refund_event("refund.failed", refund, "failed"),
    }
    for name in order:
        assert deliver(client, events[name]).status_code == 200
    for name in order:  # and everything again
        assert deliver(client, events[name]).status_code == 200
    assert balance(owner_conn, org) == Decimal("80.00")
    rows = _kinds(owner_conn, org)
    assert sum(amount for _, amount in rows) == Decimal("80.0000")
    assert len(rows) in (1, 3)  # the purchase, and a reversal given back if it was taken
    assert _stored(owner_conn, intent) == (0, 0, Decimal("0"))


@pytest.mark.parametrize("r2_first", ["charge.refunded", "refund.created"])
def test_a_new_refund_after_a_failed_one_is_taken_back(
    client: FlaskClient, org: uuid.UUID, owner_conn: psycopg.Connection, r2_first: str
) -> None:
    """After R1 failed, the charge's amount_refunded is back at 0; R2 brings it to 30 again,
    which is no more than the largest seen: R2's own event is what counts it."""
    intent = _paid(client, org, 10000)
    r1 = so.refund(intent=intent["id"], amount=3000)
    deliver(client, _refunded(intent, 3000))
    deliver(client, so.event("refund.created", r1))
    deliver(client, _refund_event("refund.failed", r1, "failed"))
    assert balance(owner_conn, org) == Decimal("100.00")
    r2 = so.refund(intent=intent["id"], amount=3000)
    r2_events = {"charge.refunded": _refunded(intent, 3000),
                 "refund.created": so.event("refund.created", r2)}
    for name in (r2_first, *(n for n in r2_events if n != r2_first)):
        deliver(client, r2_events[name])
    assert balance(owner_conn, org) == Decimal("70.00")
    assert [kind for kind, _ in _kinds(owner_conn, org)] == [
        "purchase", "reversal", "refund", "reversal"]
    assert _stored(owner_conn, intent) == (3000, 3000, Decimal("0"))


def test_giving_back_forgives_the_shortfall_first(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    """20.00 paid, 15.00 spent, 10.00 refunded: the reversal takes the 5.00 left and owes
    5.00 (shortfall). The refund fails: 5.00 is forgiven and 5.00 given back, so the
    customer has the 5.00 they had before the refund."""
    intent = _paid(client, org, 2000)
    spent = client.post("/api/billing/deduct", headers=auth("service"), json={
        "orgId": str(org), "smsCount": 1, "costPerSms": "15.00", "messageId": "m"})
    assert spent.status_code == 201
    refund = so.refund(intent=intent["id"], amount=1000)
    deliver(client, _refunded(intent, 1000))
    deliver(client, so.event("refund.created", refund))
    assert balance(owner_conn, org) == 0
    assert _stored(owner_conn, intent) == (1000, 1000, Decimal("5.0000"))
    listed = client.get("/api/billing/payments/shortfalls", headers=auth("admin")).get_json()
    assert [s["paymentIntentId"] for s in listed["shortfalls"]] == [intent["id"]]
    deliver(client, _refund_event("refund.failed", refund, "failed"))
    assert balance(owner_conn, org) == Decimal("5.00")
    assert _stored(owner_conn, intent) == (0, 0, Decimal("0.0000"))
    metadata = owner_conn.execute("SELECT amount, metadata FROM billing_transactions"
                                  " WHERE type = 'refund'").fetchone()
    assert metadata[0] == Decimal("5.0000")
    assert (Decimal(str(metadata[1]["requested"])),
            Decimal(str(metadata[1]["forgiven_shortfall"]))) == (Decimal("10"), Decimal("5"))
    listed = client.get("/api/billing/payments/shortfalls", headers=auth("admin")).get_json()
    assert listed["shortfalls"] == []


def test_a_failure_wholly_within_the_shortfall_gives_nothing_back(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    intent = _paid(client, org, 2000)
    client.post("/api/billing/deduct", headers=auth("service"), json={
        "orgId": str(org), "smsCount": 1, "costPerSms": "20.00", "messageId": "all"})
    refund = so.refund(intent=intent["id"], amount=2000)
    deliver(client, so.event("refund.created", refund))
    assert _stored(owner_conn, intent) == (2000, 2000, Decimal("20.0000"))
    assert _kinds(owner_conn, org) == [("purchase", Decimal("20.0000")),
                                       ("sms_send", Decimal("-20.0000"))]
    deliver(client, _refund_event("refund.failed", refund, "failed"))
    assert balance(owner_conn, org) == 0
    assert len(_kinds(owner_conn, org)) == 2  # nothing was taken, nothing to give back
    assert _stored(owner_conn, intent) == (0, 0, Decimal("0.0000"))


def test_a_refund_object_without_a_payment_intent_is_ignored(
    client: FlaskClient, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    evt = so.event("refund.failed", {**so.refund(intent="pi_x", amount=100, status="failed"),
                                     "payment_intent": None})
    assert deliver(client, evt).status_code == 200
    assert owner_conn.execute("SELECT outcome FROM stripe_events").fetchone() == (
        "ignored_no_payment_intent",)


# -- the invariants that hold it -----------------------------------------------------------

@pytest.fixture
def tamper(owner_conn: psycopg.Connection) -> Iterator[Callable[[str, tuple], None]]:
    """Write as the superuser past the append-only trigger; leave an empty ledger."""

    def run(statement: str, params: tuple = ()) -> None:
        with owner_conn.transaction():
            owner_conn.execute("SET LOCAL session_replication_role = replica")
            owner_conn.execute(statement.encode(), params)

    yield run
    empty_every_table(owner_conn)


def _checks(owner_conn: psycopg.Connection) -> set[str]:
    return {v.check for v in invariants.iter_violations(owner_conn)}


def test_more_given_back_than_taken_is_a_violation(
    client: FlaskClient, org: uuid.UUID, owner_conn: psycopg.Connection, tamper: Callable
) -> None:
    intent = _paid(client, org, 1000)
    refund = so.refund(intent=intent["id"], amount=400)
    deliver(client, so.event("refund.created", refund))
    deliver(client, _refund_event("refund.failed", refund, "failed"))
    assert _checks(owner_conn) == set()
    tamper("INSERT INTO billing_transactions (org_id, seq, type_seq, type, amount,"
           " balance_before, balance_after, payment_intent_id, metadata)"
           " VALUES (%s, 4, 2, 'refund', 1, 10, 11, %s, '{\"stripe_refund\": \"re_x\"}')",
           (org, intent["id"]))
    assert {"reversals never exceed their purchase",
            "Stripe payment state matches the ledger"} <= _checks(owner_conn)


def test_an_admins_refund_naming_a_payment_is_not_taken_for_a_give_back(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, owner_conn: psycopg.Connection
) -> None:
    intent = _paid(client, org, 1000)
    response = client.post("/api/billing/add-funds", headers=auth("admin"), json={
        "amount": "3.00", "orgId": str(org), "type": "refund", "paymentMethod": "stripe",
        "paymentIntentId": intent["id"]})
    assert response.status_code == 201
    assert _checks(owner_conn) == set()
