"""Auto top-up with the real processes: the gateway over HTTP, stripe-sim as Stripe, and
`billing-gateway worker` as a subprocess charging the saved card off-session. A card saved
by paying, a charge below the threshold, the worker's PaymentIntent and stripe-sim's
webhook end with the balance at the target; a worker SIGKILLed while Stripe answers leaves
its attempt to the next worker, which sends the same idempotency key and makes no second
payment; a declined card is recorded, announced and emailed."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import psycopg

from tests.autotopup.conftest import attempts_of
from tests.notifications.test_money_events import events
from tests.plugins.browser import wait_until
from tests.plugins.webhooks import ledger_rows

if TYPE_CHECKING:  # imported by pytest below, as a plugin (its asserts rewritten)
    from tests.plugins.auto_topup_flow import FlowStack, WorkerFactory

pytest_plugins = ["tests.plugins.auto_topup_flow"]

THRESHOLD, TARGET = Decimal("10.00"), Decimal("50.00")
# 25.00 paid by Checkout less this: 9.9925, below the threshold by a fraction of a cent.
CHARGE = "15.0075"
LOW = Decimal("9.9925")
# The attempt's amount is 40.0075; a card is charged in whole cents, rounded up
# (attempts.charged_amount): 40.01, so the balance ends at the target to the cent.
CHARGED = Decimal("40.01")


def _card_on_file_and_on(stack: FlowStack, org: uuid.UUID) -> dict[str, Any]:
    """Pay 25.00 saving the card through stripe-sim, turn auto top-up on at 10.00 to 50.00;
    the settings as GET shows them."""
    stack.pay_saving_the_card(org, "25.00")
    assert stack.balance(org) == Decimal("25.00")
    answer = stack.api("PUT", "/auto-top-up", "member", org, json={
        "enabled": True, "threshold": "10.00", "targetBalance": "50.00"})
    assert answer.status_code == 200, answer.text
    return stack.auto_top_up(org)


def _one_attempt(owner_conn: psycopg.Connection, org: uuid.UUID) -> dict[str, Any]:
    [attempt] = attempts_of(owner_conn, org)
    return attempt


def _status(owner_conn: psycopg.Connection, org: uuid.UUID) -> str:
    return str(_one_attempt(owner_conn, org)["status"])


def _intents_of(stack: FlowStack, attempt_id: uuid.UUID) -> list[dict[str, Any]]:
    """The PaymentIntents stripe-sim holds for an attempt (its metadata names it)."""
    return [i for i in stack.sim_intents()
            if i["metadata"].get("auto_topup_attempt") == str(attempt_id)]


def _purchases(owner_conn: psycopg.Connection, org: uuid.UUID) -> list[tuple]:
    return [row for row in ledger_rows(owner_conn, org) if row[0] == "purchase"]


def _event_types(owner_conn: psycopg.Connection, org: uuid.UUID) -> list[str]:
    return [kind for kind, _ in events(owner_conn, org)]


def test_a_card_saved_by_paying_tops_up_to_the_target_through_the_worker_and_the_webhook(
        flow_stack: FlowStack, flow_worker: WorkerFactory, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    stack = flow_stack
    shown = _card_on_file_and_on(stack, org)
    assert shown["paymentMethod"] == {"brand": "visa", "last4": "4242", "expMonth": 12,
                                      "expYear": time.gmtime().tm_year + 3}
    assert (shown["enabled"], shown["threshold"], shown["targetBalance"]) == (
        True, THRESHOLD, TARGET)
    [checkout_intent] = stack.sim_intents()
    assert checkout_intent["setup_future_usage"] == "off_session"

    assert Decimal(str(stack.charge(org, CHARGE)["balance"])) == LOW
    attempt = _one_attempt(owner_conn, org)
    assert (attempt["status"], attempt["amount"]) == ("pending", TARGET - LOW)
    assert stack.sim_intents() == [checkout_intent]  # nothing charged before the worker

    worker = flow_worker()
    wait_until(lambda: _status(owner_conn, org) == "succeeded",
               lambda: f"attempt {_one_attempt(owner_conn, org)}\n{worker.output()}")

    # The balance is the target to the cent: LOW + 40.01, never short of it.
    assert stack.balance(org) == LOW + CHARGED == Decimal("50.0025")
    assert TARGET <= stack.balance(org) < TARGET + Decimal("0.01")
    # The worker asked once, under the attempt's id; stripe-sim made one PaymentIntent,
    # off-session on the saved card, and its webhook credited it once.
    [posted] = stack.stripe_calls.intent_posts()
    assert (posted.idempotency_key, posted.status) == (str(attempt["id"]), 200)
    [intent] = _intents_of(stack, attempt["id"])
    assert (intent["amount"], intent["status"], intent["customer"]) == (
        4001, "succeeded", checkout_intent["customer"])
    assert intent["payment_method"] == checkout_intent["payment_method"]
    assert _purchases(owner_conn, org) == [
        ("purchase", Decimal("25.00"), checkout_intent["id"]),
        ("purchase", CHARGED, intent["id"])]
    assert owner_conn.execute(
        "SELECT type, outcome FROM stripe_events WHERE payment_intent_id = %s",
        (intent["id"],)).fetchall() == [("payment_intent.succeeded", "credited")]
    assert ("payment_intent.succeeded", 200) in stack.gate.passed

    last = stack.auto_top_up(org)["lastAttempt"]
    assert (last["id"], last["status"], last["paymentIntentId"], last["amount"]) == (
        str(attempt["id"]), "succeeded", intent["id"], CHARGED)
    succeeded = [data for kind, data in events(owner_conn, org)
                 if kind == "auto_topup.succeeded"]
    assert len(succeeded) == 1
    assert (succeeded[0]["attemptId"], succeeded[0]["paymentIntentId"]) == (
        str(attempt["id"]), intent["id"])
    assert Decimal(str(succeeded[0]["amount"])) == CHARGED
    assert "auto_topup.failed" not in _event_types(owner_conn, org)
    assert worker.stop() == 0
