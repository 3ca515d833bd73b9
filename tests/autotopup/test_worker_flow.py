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
from tests.notifications.test_emails import body_of
from tests.notifications.test_money_events import events
from tests.plugins.browser import wait_until
from tests.plugins.webhooks import ledger_rows

if TYPE_CHECKING:  # imported by pytest below, as a plugin (its asserts rewritten)
    from tests.plugins.auto_topup_flow import FlowStack, HeldEvent, WorkerFactory
    from tests.plugins.smtp import LocalSmtpServer

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


def _killed_while_stripe_answers(stack: FlowStack, flow_worker: WorkerFactory,
                                 owner_conn: psycopg.Connection, org: uuid.UUID,
                                 delay: float) -> tuple[dict[str, Any], HeldEvent]:
    """Start an attempt, let a worker send it to a stripe-sim that charges the card, sends
    its webhook (held at the gate) and answers only after `delay` s, and SIGKILL the worker
    while stripe-sim sleeps: the charge made at Stripe, nothing recorded here. The attempt
    and the held payment_intent.succeeded."""
    _card_on_file_and_on(stack, org)
    stack.gate.hold()
    stack.script_charge(outcome="timeout", delay=delay)
    stack.charge(org, CHARGE)
    # Its own wait longer than stripe-sim's: it would still be waiting when killed.
    first = flow_worker(STRIPE_TIMEOUT=str(delay + 10))
    [succeeded] = stack.gate.wait_for_kept(1)  # sent just before stripe-sim's sleep
    assert succeeded.type == "payment_intent.succeeded"
    [sent] = stack.stripe_calls.intent_posts()
    assert sent.status is None, "stripe-sim answered before the kill"
    first.kill()
    attempt = _one_attempt(owner_conn, org)
    assert (attempt["status"], attempt["tries"], attempt["payment_intent_id"]) == (
        "pending", 0, None)  # the worker's transaction died with it
    assert sent.idempotency_key == str(attempt["id"])
    assert succeeded.object["metadata"]["auto_topup_attempt"] == str(attempt["id"])
    return attempt, succeeded


def test_a_worker_killed_while_stripe_answers_leaves_the_attempt_to_the_next_with_one_payment(
        flow_stack: FlowStack, flow_worker: WorkerFactory, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    stack = flow_stack
    attempt, succeeded = _killed_while_stripe_answers(stack, flow_worker, owner_conn, org,
                                                      delay=3)
    # The next worker starts once stripe-sim has answered the dead one (while that request
    # runs, stripe-sim answers the same key 409: the other test below).
    [sent] = stack.stripe_calls.intent_posts()
    wait_until(lambda: sent.status is not None, lambda: "stripe-sim never answered")
    second = flow_worker()
    wait_until(lambda: _status(owner_conn, org) == "submitted",
               lambda: f"attempt {_one_attempt(owner_conn, org)}\n{second.output()}")
    # The same key, replayed by stripe-sim: one PaymentIntent for the attempt.
    posts = stack.stripe_calls.intent_posts()
    assert [(c.idempotency_key, c.status) for c in posts] == [(str(attempt["id"]), 200)] * 2
    [intent] = _intents_of(stack, attempt["id"])
    assert (intent["status"], intent["amount"]) == ("succeeded", 4001)
    assert _one_attempt(owner_conn, org)["payment_intent_id"] == intent["id"]
    assert stack.balance(org) == LOW  # credits come only from the webhook

    assert stack.gate.release() == [("payment_intent.succeeded", 200)]
    assert stack.balance(org) == LOW + CHARGED
    assert stack.gate.redeliver(succeeded) == 200  # Stripe's retry of it: nothing more
    assert stack.balance(org) == LOW + CHARGED
    assert _status(owner_conn, org) == "succeeded"
    assert [r for r in _purchases(owner_conn, org) if r[2] == intent["id"]] == [
        ("purchase", CHARGED, intent["id"])]
    assert _event_types(owner_conn, org).count("auto_topup.succeeded") == 1
    assert "auto_topup.failed" not in _event_types(owner_conn, org)
    assert second.stop() == 0


def test_a_declined_card_fails_the_attempt_announces_it_and_emails_the_billing_contacts(
        flow_stack: FlowStack, flow_worker: WorkerFactory, smtp_server: LocalSmtpServer,
        org: uuid.UUID, owner_conn: psycopg.Connection) -> None:
    stack = flow_stack
    _card_on_file_and_on(stack, org)
    alerts = stack.api("PUT", f"/orgs/{org}/alerts", "member", org, json={
        "lowBalanceThreshold": None, "emails": ["billing@customer.example"]})
    assert alerts.status_code == 200, alerts.text
    stack.script_charge(outcome="card_declined")
    stack.charge(org, CHARGE)
    worker = flow_worker(BILLING_SMTP_URL=smtp_server.url,
                         BILLING_EMAIL_FROM="billing@sms.example.com")
    wait_until(lambda: _status(owner_conn, org) == "failed",
               lambda: f"attempt {_one_attempt(owner_conn, org)}\n{worker.output()}")

    attempt = _one_attempt(owner_conn, org)
    [intent] = _intents_of(stack, attempt["id"])  # declined at stripe-sim, as Stripe does
    assert (intent["status"], intent["last_payment_error"]["code"]) == (
        "requires_payment_method", "card_declined")
    assert (attempt["failure_code"], attempt["decline_code"], attempt["failure_message"],
            attempt["payment_intent_id"]) == (
        "card_declined", "generic_decline", "Your card was declined.", intent["id"])
    # stripe-sim's payment_intent.payment_failed follows its 402: it finds the attempt
    # already failed and announces nothing more.
    wait_until(lambda: ("payment_intent.payment_failed", 200) in stack.gate.passed,
               lambda: f"the webhook never passed: {stack.gate.passed}")
    assert owner_conn.execute(
        "SELECT type, outcome FROM stripe_events WHERE payment_intent_id = %s",
        (intent["id"],)).fetchall() == [("payment_intent.payment_failed",
                                         "auto_topup_already_failed")]
    failed = [(data, ident) for kind, data, ident in owner_conn.execute(
        "SELECT type, data, id FROM outbox_events WHERE org_id = %s ORDER BY seq", (org,))
        if kind == "auto_topup.failed"]
    [(data, event_id)] = failed
    assert (data["attemptId"], data["code"], data["declineCode"], data["reason"],
            data["consecutiveFailures"], data["paused"]) == (
        str(attempt["id"]), "card_declined", "generic_decline", "Your card was declined.",
        1, False)
    assert stack.balance(org) == LOW and len(_purchases(owner_conn, org)) == 1
    shown = stack.auto_top_up(org)
    assert (shown["enabled"], shown["paused"], shown["consecutiveFailures"]) == (
        True, False, 1)
    assert (shown["lastAttempt"]["status"], shown["lastAttempt"]["failureCode"],
            shown["lastAttempt"]["declineCode"]) == ("failed", "card_declined",
                                                     "generic_decline")
    assert shown["nextAttemptNotBefore"] is not None

    [mail] = smtp_server.wait_for(1, timeout=15)
    assert mail.rcpt_tos == ["billing@customer.example"]
    assert mail.message["Subject"] == (
        "Automatic top-up failed: your SMS credit balance is $9.99")
    assert mail.message["X-Billing-Event-Id"] == str(event_id)
    body = body_of(mail)
    assert "Reason:          Your card was declined." in body
    assert "Top-up amount:   $40.01" in body
    wait_until(lambda: owner_conn.execute(
        "SELECT status FROM deliveries WHERE event_id = %s", (event_id,)).fetchall()
        == [("delivered",)], lambda: f"the email's delivery never ended\n{worker.output()}")
    assert len(smtp_server.messages) == 1  # the only email: nothing else was due one
    assert worker.stop() == 0


# Stripe's 409 (the key still in use by the first request) says nothing about the payment:
# the attempt is tried again later with the same key, never failed (attempts._charge).
def test_a_worker_meeting_the_killed_ones_request_still_running_tries_again_later(
        flow_stack: FlowStack, flow_worker: WorkerFactory, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    stack = flow_stack
    attempt, _ = _killed_while_stripe_answers(stack, flow_worker, owner_conn, org, delay=6)
    second = flow_worker()
    # While the dead worker's request sleeps, stripe-sim answers the same key 409 (and so
    # does the SDK's own retry of it).
    wait_until(lambda: _one_attempt(owner_conn, org)["tries"] > 0
               or _status(owner_conn, org) != "pending",
               lambda: f"attempt {_one_attempt(owner_conn, org)}\n{second.output()}")
    [sent, *again] = stack.stripe_calls.intent_posts()
    assert again and {(c.idempotency_key, c.status) for c in again} == {
        (str(attempt["id"]), 409)}
    assert sent.status is None  # the first request still runs
    found = _one_attempt(owner_conn, org)
    # Stripe took the payment; a key in use says nothing about it: try again later.
    assert (found["status"], found["failure_code"]) == ("pending", None), second.output()
    assert "auto_topup.failed" not in _event_types(owner_conn, org)
    wait_until(lambda: sent.status is not None, lambda: "stripe-sim never answered")
    owner_conn.execute("UPDATE auto_topup_attempts SET next_try_at = now() WHERE id = %s",
                       (attempt["id"],))  # the retry delay is over
    wait_until(lambda: _status(owner_conn, org) == "submitted",
               lambda: f"attempt {_one_attempt(owner_conn, org)}\n{second.output()}")
    assert stack.stripe_calls.intent_posts()[-1].status == 200  # the first answer, replayed
    assert len(_intents_of(stack, attempt["id"])) == 1
    assert stack.gate.release() == [("payment_intent.succeeded", 200)]
    assert stack.balance(org) == LOW + CHARGED
    assert _status(owner_conn, org) == "succeeded"
    assert _event_types(owner_conn, org).count("auto_topup.succeeded") == 1
    assert "auto_topup.failed" not in _event_types(owner_conn, org)
    assert second.stop() == 0


def test_a_stripe_slower_than_the_worker_waits_is_tried_again_not_failed(
        flow_stack: FlowStack, flow_worker: WorkerFactory, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    # The same bug with no crash at all: Stripe answers after STRIPE_TIMEOUT, the SDK's own
    # retry (STRIPE_MAX_RETRIES, same key) meets the first request still running.
    stack = flow_stack
    _card_on_file_and_on(stack, org)
    stack.gate.hold()
    stack.script_charge(outcome="timeout", delay=5)
    stack.charge(org, CHARGE)
    worker = flow_worker(STRIPE_TIMEOUT="1")
    wait_until(lambda: _one_attempt(owner_conn, org)["tries"] > 0
               or _status(owner_conn, org) != "pending",
               lambda: f"attempt {_one_attempt(owner_conn, org)}\n{worker.output()}")
    attempt = _one_attempt(owner_conn, org)
    [sent, *again] = stack.stripe_calls.intent_posts()
    assert sent.status is None and [c.status for c in again] == [409]
    assert (attempt["status"], attempt["failure_code"]) == ("pending", None), worker.output()
    assert "auto_topup.failed" not in _event_types(owner_conn, org)
    wait_until(lambda: sent.status is not None, lambda: "stripe-sim never answered")
    owner_conn.execute("UPDATE auto_topup_attempts SET next_try_at = now() WHERE id = %s",
                       (attempt["id"],))  # the retry delay is over
    wait_until(lambda: _status(owner_conn, org) == "submitted",
               lambda: f"attempt {_one_attempt(owner_conn, org)}\n{worker.output()}")
    assert len(_intents_of(stack, attempt["id"])) == 1
    assert stack.gate.release() == [("payment_intent.succeeded", 200)]
    assert stack.balance(org) == LOW + CHARGED
    assert _status(owner_conn, org) == "succeeded"
    assert worker.stop() == 0
