"""A stateful model of the service: Hypothesis drives top-ups by signed webhook, manual
credits, charges, bulk charges, usage refunds, Stripe refunds, saved cards and auto
top-ups (settings, the worker charging the card with Stripe answering success or a card
error, Stripe's webhooks for it, the clock passing the retry delay) and replays of any
earlier request or event, against a Python model of every balance. After each step the
API's balance equals the model's, so do each org's money events (in order), its auto
top-up attempts and its auto top-up state, and every ledger invariant holds
(verify-ledger's checks)."""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import ROUND_CEILING, Decimal
from typing import Any
from urllib.parse import parse_qs

import psycopg
import pytest
import responses
from flask.testing import FlaskClient
from hypothesis import HealthCheck
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from billing_gateway.autotopup.attempts import attempt_next
from billing_gateway.ledger.invariants import find_violations
from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import as_app_role
from billing_gateway.topups.stripe_client import make_client
from tests import stripe_objects as so
from tests.autotopup.conftest import AUTO_TOP_UP, STRIPE
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import deliver

# Not in the everyday loop (-m "not slow"): hundreds of generated sequences of requests.
pytestmark = pytest.mark.slow

# How much CI explores; raise them for a longer hunt.
EXAMPLES = int(os.environ.get("BILLING_STATEFUL_EXAMPLES", "40"))
STEPS = int(os.environ.get("BILLING_STATEFUL_STEPS", "30"))

CENTS = st.integers(min_value=1, max_value=5000)           # top-ups and credits, in cents
PRICES = st.sampled_from([Decimal("0.0075"), Decimal("0.01"), Decimal("0.25"), Decimal("1")])
COUNTS = st.integers(min_value=1, max_value=400)
THRESHOLD = Decimal("5.00")  # BILLING_LOW_BALANCE_DEFAULT: the suite's orgs set none
# Auto top-up: a Checkout top-up saving the card is at least BILLING_MIN_TOPUP (5.00), and
# so is the target's lead on the threshold (the settings' rule). Thresholds and targets in
# cents (two decimals), near the balances the charges reach.
SAVED = st.integers(min_value=500, max_value=5000)
AUTO_THRESHOLDS = st.sampled_from([2500, 1000, 6000, 1, 4999])
AUTO_LEADS = st.sampled_from([2000, 500, 5001, 10000])
FAILURES_TO_PAUSE = 3
CENT = Decimal("0.01")


@dataclass
class Attempt:
    """An auto top-up as the model expects it."""

    status: str                  # pending, submitted, succeeded, failed, canceled
    amount: Decimal              # target - balance; rounded up to the cent once charged
    balance_at_trigger: Decimal
    intent: dict[str, Any] | None = None  # the PaymentIntent Stripe made, as it last was


@dataclass
class AutoTopUp:
    """An org's saved card and auto top-up as the model expects them."""

    cards: int = 0               # cards saved, each newer than the one before
    state: str = "off"           # off, on, paused
    threshold: Decimal = Decimal(0)
    target: Decimal = Decimal(0)
    failures: int = 0            # consecutive
    delayed: bool = False        # a failure's retry delay is running (auto_topup_not_before)
    attempts: list[Attempt] = field(default_factory=list)

    def in_flight(self) -> Attempt | None:
        return next((a for a in self.attempts if a.status in ("pending", "submitted")), None)


def _form(request: Any) -> dict[str, str]:
    """The form the Stripe SDK posted."""
    body = request.body.decode() if isinstance(request.body, bytes) else request.body
    return {key: values[0] for key, values in parse_qs(body).items()}


def _metadata(form: dict[str, str]) -> dict[str, str]:
    return {key[9:-1]: value for key, value in form.items() if key.startswith("metadata[")}


def test_the_service_matches_a_model_of_every_balance(
    client: FlaskClient, auth: TokenFactory, owner_conn: psycopg.Connection,
    stripe_api: responses.RequestsMock, settings: Settings, database_url: str
) -> None:
    admin, service = auth("admin"), auth("service")
    checked = {"steps": 0, "runs": 0, "attempts": 0, "auto_topup.succeeded": 0,
               "auto_topup.failed": 0, "paused": 0}

    # Stripe, answering each call from its own parameters: the org's Customer, a Checkout
    # Session, a saved card (`methods`: its Customer), and each off-session PaymentIntent
    # (its own id) succeeded or declined with the card error `stripe["answer"]` names.
    # `made`: the PaymentIntents made, by org.
    stripe = {"answer": "succeeded"}
    methods: dict[str, str] = {}
    made: dict[str, dict[str, Any]] = {}

    def customer(request: Any) -> tuple[int, dict[str, str], str]:
        org = uuid.UUID(_form(request)["metadata[org_id]"])
        return 200, {}, json.dumps({"id": f"cus_{org.hex[:14]}", "object": "customer",
                                    "metadata": so.ours(org)})

    def checkout_session(request: Any) -> tuple[int, dict[str, str], str]:
        form = _form(request)
        return 200, {}, json.dumps(so.checkout_session(
            org=uuid.UUID(form["metadata[org_id]"]), metadata=_metadata(form),
            amount_total=int(form["line_items[0][price_data][unit_amount]"]),
            status="open", payment_status="unpaid"))

    def payment_method(request: Any) -> tuple[int, dict[str, str], str]:
        method = request.path_url.rsplit("/", 1)[-1]
        return 200, {}, json.dumps(so.payment_method(customer=methods[method],
                                                     method_id=method))

    def payment_intent(request: Any) -> tuple[int, dict[str, str], str]:
        form = _form(request)
        org = form["metadata[org_id]"]
        intent = {**so.payment_intent(org=uuid.UUID(org), amount=int(form["amount"]),
                                      metadata=_metadata(form)),
                  "customer": form["customer"], "payment_method": form["payment_method"]}
        if stripe["answer"] == "succeeded":
            made[org] = intent
            return 200, {}, json.dumps(intent)
        declined = so.card_error(stripe["answer"], intent)
        made[org] = declined["error"]["payment_intent"]
        return 402, {}, json.dumps(declined)

    for method, path, callback in [
            (responses.POST, f"{STRIPE}/customers", customer),
            (responses.POST, f"{STRIPE}/checkout/sessions", checkout_session),
            (responses.GET, re.compile(rf"{re.escape(STRIPE)}/payment_methods/\w+"),
             payment_method),
            (responses.POST, f"{STRIPE}/payment_intents", payment_intent)]:
        stripe_api.add_callback(method, path, callback=callback,
                                content_type="application/json")
    # The worker's connection and Stripe client, as `billing-gateway worker` has them.
    worker_conn = psycopg.connect(database_url, autocommit=True)
    as_app_role(worker_conn, settings.low_balance_default)
    worker_stripe = make_client(settings)

    class Billing(RuleBasedStateMachine):
        """Two orgs, their balances, and everything that was sent."""

        @initialize(auto_topup=st.none() | st.tuples(SAVED, AUTO_THRESHOLDS, AUTO_LEADS,
                                                     st.integers(0, FAILURES_TO_PAUSE)))
        def setup(self, auto_topup: tuple[int, int, int, int] | None) -> None:
            self.orgs = [uuid.uuid4(), uuid.uuid4()]
            self.balance = {org: Decimal(0) for org in self.orgs}
            self.charges: dict[tuple[uuid.UUID, str], Decimal] = {}   # charged messages
            self.refunded: set[tuple[uuid.UUID, str]] = set()
            self.payments: dict[str, dict[str, Any]] = {}    # PaymentIntent -> state
            self.sent: list[Callable[[], None]] = []         # replays of earlier requests
            self.messages = 0
            # The money events each org must have, in order, and where its episode stands.
            self.events: dict[uuid.UUID, list[str]] = {org: [] for org in self.orgs}
            self.alert = {org: "ok" for org in self.orgs}
            # Each org's auto top-up, and what its auto_topup.* events must say: type,
            # amount, balance, consecutiveFailures, paused.
            self.auto = {org: AutoTopUp() for org in self.orgs}
            self.auto_events: dict[uuid.UUID, list[tuple[Any, ...]]] = {
                org: [] for org in self.orgs}
            checked["runs"] += 1
            if auto_topup is not None:
                # Half the runs start with the first org's auto top-up on, and maybe its card
                # declined up to three times in a row already (each next attempt started
                # after the delay by turning it on again, the third decline pausing it):
                # deep states, then random steps from there.
                cents, threshold, lead, declines = auto_topup
                self.save_card(0, cents, True, threshold, lead)
                for _ in range(declines):
                    if self.auto[self.orgs[0]].in_flight() is None:
                        break
                    self._run_worker("card_declined")
                    self._clock_passes(self.orgs[0])
                    self._set_auto_topup(self.orgs[0], True, threshold, lead)

        # -- the model's rules, one per kind of write ----------------------------------
        def _moved(self, org: uuid.UUID, before: Decimal) -> None:
            """The threshold events of a balance change (default threshold 5.00)."""
            after = self.balance[org]
            if after < before:
                if self.alert[org] == "ok" and after < THRESHOLD:
                    self.events[org].append("balance.low")
                    self.alert[org] = "low"
                if self.alert[org] != "depleted" and after == 0:
                    self.events[org].append("balance.depleted")
                    self.alert[org] = "depleted"
            elif after > before and self.alert[org] != "ok" and after >= THRESHOLD:
                self.events[org].append("balance.recovered")
                self.alert[org] = "ok"

        def _refused(self, org: uuid.UUID) -> None:
            """A charge refused for want of funds: depleted, once, when below the threshold."""
            if self.alert[org] != "depleted" and self.balance[org] < THRESHOLD:
                self.events[org].append("balance.depleted")
                self.alert[org] = "depleted"

        def _charge(self, org: uuid.UUID, message: str, cost: Decimal) -> str:
            if (org, message) in self.charges:
                return "duplicate"
            if self.balance[org] < cost:
                return "insufficient_funds"
            self.balance[org] -= cost
            self.charges[(org, message)] = cost
            return "charged"

        def _credited(self, org: uuid.UUID, intent: str, amount: Decimal) -> None:
            """A PaymentIntent credited by its webhook: it may be refunded or disputed."""
            before = self.balance[org]
            self.balance[org] += amount
            self.events[org].append("topup.succeeded")
            self._moved(org, before)
            self.payments[intent] = {"org": org, "credited": amount, "refunded": Decimal(0),
                                     "disputed": Decimal(0), "reversed": Decimal(0)}

        def _start_auto_topup(self, org: uuid.UUID) -> None:
            """After a charge took the balance down, or one was refused: an attempt starts
            if auto top-up is on, none is in flight, no retry delay runs and the balance is
            below the threshold. It is to bring the balance back to the target."""
            auto, balance = self.auto[org], self.balance[org]
            if (auto.state == "on" and auto.in_flight() is None and not auto.delayed
                    and balance < auto.threshold):
                auto.attempts.append(Attempt("pending", auto.target - balance, balance))
                checked["attempts"] += 1

        def _auto_topup_failed(self, org: uuid.UUID, attempt: Attempt) -> None:
            """auto_topup.failed; the retry delay starts; the third failure in a row
            pauses auto top-up (when on)."""
            auto = self.auto[org]
            attempt.status = "failed"
            auto.failures += 1
            auto.delayed = True
            if auto.state == "on" and auto.failures >= FAILURES_TO_PAUSE:
                auto.state = "paused"
                checked["paused"] += 1
            self.events[org].append("auto_topup.failed")
            self.auto_events[org].append(("auto_topup.failed", attempt.amount,
                                          self.balance[org], auto.failures,
                                          auto.state == "paused"))
            checked["auto_topup.failed"] += 1

        def _settle(self, intent: str) -> None:
            p = self.payments[intent]
            owed = min(p["credited"], p["refunded"] + p["disputed"]) - p["reversed"]
            if owed > 0:
                before = self.balance[p["org"]]
                taken = min(before, owed)
                if taken > 0:
                    self.events[p["org"]].append("topup.reversed")
                self.balance[p["org"]] -= taken
                self._moved(p["org"], before)
                p["reversed"] += owed

        # -- rules -------------------------------------------------------------------
        @rule(which=st.integers(0, 1), cents=CENTS, via_session=st.booleans())
        def top_up_by_webhook(self, which: int, cents: int, via_session: bool) -> None:
            org = self.orgs[which]
            intent = so.payment_intent(org=org, amount=cents)
            if via_session:
                evt = so.event("checkout.session.completed", so.checkout_session(
                    org=org, amount_total=cents, payment_intent=intent["id"]))
            else:
                evt = so.event("payment_intent.succeeded", intent)

            def send() -> None:
                assert deliver(client, evt).status_code == 200

            send()
            self._credited(org, intent["id"], Decimal(cents) / 100)
            self.sent.append(send)

        @rule(which=st.integers(0, 1), cents=CENTS,
              kind=st.sampled_from(["purchase", "bonus", "adjustment", "refund"]))
        def manual_credit(self, which: int, cents: int, kind: str) -> None:
            org = self.orgs[which]
            key = str(uuid.uuid4())
            body = {"amount": str(Decimal(cents) / 100), "orgId": str(org), "type": kind}

            def send() -> None:
                response = client.post("/api/billing/add-funds", json=body,
                                       headers={**admin, "Idempotency-Key": key})
                assert response.status_code == 201, response.get_json()

            send()
            before = self.balance[org]
            self.balance[org] += Decimal(cents) / 100
            self._moved(org, before)
            self.sent.append(send)

        @rule(which=st.integers(0, 1), count=COUNTS, price=PRICES)
        def charge(self, which: int, count: int, price: Decimal) -> None:
            org = self.orgs[which]
            self.messages += 1
            message = f"m{self.messages}"
            body = {"orgId": str(org), "smsCount": count, "costPerSms": str(price),
                    "messageId": message}

            def send() -> None:
                before = self.balance[org]
                expected = self._charge(org, message, count * price)
                self._moved(org, before)
                if expected == "insufficient_funds":
                    self._refused(org)
                if expected != "duplicate":
                    self._start_auto_topup(org)
                response = client.post("/api/billing/deduct", json=body, headers=service)
                assert response.status_code == (402 if expected == "insufficient_funds"
                                                else 201), (expected, response.get_json())

            send()
            self.sent.append(send)

        @rule(items=st.lists(st.tuples(st.integers(0, 1), COUNTS, PRICES, st.booleans()),
                             min_size=1, max_size=8))
        def bulk_charge(self, items: list[tuple[int, int, Decimal, bool]]) -> None:
            charges = []
            for which, count, price, reuse in items:
                org = self.orgs[which]
                earlier = [m for (o, m) in self.charges if o == org]
                if reuse and earlier:
                    message = earlier[0]
                else:
                    self.messages += 1
                    message = f"m{self.messages}"
                charges.append((org, message, count, price))
            body = {"charges": [{"orgId": str(org), "smsCount": count,
                                 "costPerSms": str(price), "messageId": message}
                                for org, message, count, price in charges]}

            def send() -> None:
                before = dict(self.balance)
                expected, depleting, refused = [], set(), set()
                for org, message, count, price in charges:
                    expected.append(self._charge(org, message, count * price))
                    if expected[-1] == "insufficient_funds":
                        refused.add(org)
                        # A refusal depletes only when the balance is below the threshold
                        # then.
                        if self.balance[org] < THRESHOLD:
                            depleting.add(org)
                # One balance change per org and batch, then its refusals.
                for org in self.orgs:
                    self._moved(org, before[org])
                    if org in depleting:
                        self._refused(org)
                    if self.balance[org] < before[org] or org in refused:
                        self._start_auto_topup(org)
                response = client.post("/api/billing/deduct/bulk", json=body, headers=service)
                assert response.status_code == 200
                got = [r["outcome"] for r in response.get_json()["results"]]
                assert got == expected

            send()
            self.sent.append(send)

        @precondition(lambda self: any(c not in self.refunded for c in self.charges))
        @rule(data=st.data())
        def usage_refund(self, data: st.DataObject) -> None:
            # Insertion order, not sorted ids: ids are random, draws must not depend on them.
            org, message = data.draw(st.sampled_from(
                [c for c in self.charges if c not in self.refunded]))
            body = {"orgId": str(org), "messageId": message}

            def send() -> None:
                response = client.post("/api/billing/usage/refund", json=body,
                                       headers=service)
                assert response.status_code == 201

            send()
            before = self.balance[org]
            self.balance[org] += self.charges[(org, message)]
            self._moved(org, before)
            self.refunded.add((org, message))
            self.sent.append(send)

        @precondition(lambda self: bool(self.payments))
        @rule(data=st.data(), share=st.integers(1, 100), dispute=st.booleans())
        def stripe_refund_or_dispute(self, data: st.DataObject, share: int,
                                     dispute: bool) -> None:
            intent = data.draw(st.sampled_from(list(self.payments)))
            p = self.payments[intent]
            cents = int(p["credited"] * 100)
            if dispute:
                evt = so.event("charge.dispute.closed",
                               so.dispute(intent=intent, amount=cents * share // 100 or 1))
                p["disputed"] += Decimal(cents * share // 100 or 1) / 100
            else:
                refunded = min(cents, int(p["refunded"] * 100) + max(1, cents * share // 100))
                evt = so.event("charge.refunded", so.charge(
                    intent=intent, amount=cents, amount_refunded=refunded))
                p["refunded"] = Decimal(refunded) / 100

            def send() -> None:
                assert deliver(client, evt).status_code == 200

            send()
            self._settle(intent)
            self.sent.append(send)

        @rule(which=st.integers(0, 1), cents=SAVED, turn_on=st.booleans(),
              threshold=AUTO_THRESHOLDS, lead=AUTO_LEADS)
        def save_card(self, which: int, cents: int, turn_on: bool, threshold: int,
                      lead: int) -> None:
            """A Checkout top-up with saveCard, paid: its card is on file, newer than any
            before it, which clears the failures and resumes a paused auto top-up. Then,
            maybe, auto top-up turned on."""
            org = self.orgs[which]
            auto = self.auto[org]
            if not auto.cards:  # makes the org's Stripe Customer; later ones only pay
                answer = client.post("/api/billing/create-checkout", headers={
                    **auth("member", org), "Idempotency-Key": str(uuid.uuid4())},
                    json={"amount": str(Decimal(cents) / 100), "saveCard": True})
                assert answer.status_code == 201, answer.get_json()
            auto.cards += 1
            method = f"pm_{uuid.uuid4().hex[:24]}"
            methods[method] = f"cus_{org.hex[:14]}"
            intent = {**so.payment_intent(org=org, amount=cents), "customer": methods[method],
                      "payment_method": method, "setup_future_usage": "off_session",
                      "created": so.CREATED + auto.cards}
            evt = so.event("payment_intent.succeeded", intent)

            def send() -> None:
                assert deliver(client, evt).status_code == 200

            send()
            self._credited(org, intent["id"], Decimal(cents) / 100)
            auto.failures, auto.delayed = 0, False
            if auto.state == "paused":
                auto.state = "on"
            self.sent.append(send)
            if turn_on:
                self._set_auto_topup(org, True, threshold, lead)

        @precondition(lambda self: any(auto.cards for auto in self.auto.values()))
        @rule(data=st.data(), enabled=st.sampled_from([True, True, True, False]),
              threshold=AUTO_THRESHOLDS, lead=AUTO_LEADS)
        def set_auto_topup(self, data: st.DataObject, enabled: bool, threshold: int,
                           lead: int) -> None:
            org = data.draw(st.sampled_from([o for o in self.orgs if self.auto[o].cards]))
            self._set_auto_topup(org, enabled, threshold, lead)

        def _set_auto_topup(self, org: uuid.UUID, enabled: bool, threshold: int,
                            lead: int) -> None:
            """PUT /auto-top-up by the org's member: on with a threshold and a target (from
            off or paused: failures and the retry delay cleared; below the threshold: an
            attempt at once), or off."""
            low = Decimal(threshold) / 100
            high = low + Decimal(lead) / 100
            body = ({"enabled": True, "threshold": str(low), "targetBalance": str(high)}
                    if enabled else {"enabled": False})

            def send() -> None:
                auto = self.auto[org]
                if enabled:
                    if auto.state != "on":
                        auto.failures, auto.delayed = 0, False
                    auto.state, auto.threshold, auto.target = "on", low, high
                    self._start_auto_topup(org)
                else:
                    auto.state = "off"
                answer = client.put(AUTO_TOP_UP, headers=auth("member", org), json=body)
                assert answer.status_code == 200, answer.get_json()
                shown = answer.get_json()
                assert (shown["enabled"], shown["paused"], shown["consecutiveFailures"]) == (
                    auto.state == "on", auto.state == "paused", auto.failures)

            send()
            self.sent.append(send)

        @precondition(lambda self: any(a.status == "pending" for auto in self.auto.values()
                                       for a in auto.attempts))
        @rule(webhook=st.sampled_from(["once", "same event twice", "new event too", "later"]))
        def worker_stripe_takes_the_payments(self, webhook: str) -> None:
            """The worker charges every pending attempt and Stripe takes each payment; its
            payment_intent.succeeded comes at once (maybe twice), or later."""
            for org, attempt in self._run_worker("succeeded"):
                if webhook != "later":
                    self._stripe_reports(org, attempt, succeeded=True, again=webhook)

        @precondition(lambda self: any(a.status == "pending" for auto in self.auto.values()
                                       for a in auto.attempts))
        @rule(code=st.sampled_from(list(so.CARD_ERRORS)))
        def worker_stripe_declines_the_cards(self, code: str) -> None:
            """The worker charges every pending attempt and Stripe declines each card."""
            self._run_worker(code)

        def _run_worker(self, answer: str) -> list[tuple[uuid.UUID, Attempt]]:
            """The worker's loop until nothing is due: each pending attempt charged
            off-session, Stripe answering `answer`, or canceled if auto top-up was turned
            off meanwhile. The attempts Stripe took."""
            stripe["answer"] = answer
            made.clear()
            outcomes = []
            while (outcome := attempt_next(worker_conn, settings, worker_stripe)):
                outcomes.append(outcome)
            expected, submitted = [], []
            for org in self.orgs:
                auto, attempt = self.auto[org], self.auto[org].in_flight()
                if attempt is None or attempt.status != "pending":
                    continue
                if auto.state != "on":
                    attempt.status = "canceled"
                    expected.append("canceled")
                    continue
                attempt.amount = attempt.amount.quantize(CENT, rounding=ROUND_CEILING)
                attempt.intent = made.pop(str(org))
                assert attempt.intent["amount"] == int(attempt.amount * 100)
                if answer == "succeeded":
                    attempt.status = "submitted"
                    expected.append("submitted")
                    submitted.append((org, attempt))
                else:
                    self._auto_topup_failed(org, attempt)
                    expected.append("failed")
            assert made == {}, "Stripe was asked for a payment the model did not expect"
            assert sorted(outcomes) == sorted(expected)
            return submitted

        @precondition(lambda self: any(a.status in ("submitted", "failed") and a.intent
                                       for auto in self.auto.values() for a in auto.attempts))
        @rule(data=st.data(), succeeded=st.booleans(),
              code=st.sampled_from(list(so.CARD_ERRORS)),
              again=st.sampled_from(["once", "same event twice", "new event too"]))
        def auto_topup_webhook(self, data: st.DataObject, succeeded: bool, code: str,
                               again: str) -> None:
            org, attempt = data.draw(st.sampled_from([
                (org, a) for org in self.orgs for a in self.auto[org].attempts
                if a.status in ("submitted", "failed") and a.intent]))
            self._stripe_reports(org, attempt, succeeded=succeeded, code=code, again=again)

        def _stripe_reports(self, org: uuid.UUID, attempt: Attempt, *, succeeded: bool,
                            code: str = "card_declined", again: str = "once") -> None:
            """Stripe tells how a submitted attempt went: payment_intent.succeeded (credited
            once, however often it comes) or payment_intent.payment_failed; for a declined
            one, payment_failed, which changes nothing more. Delivered once, or twice at
            once: the same event again, or a new event with the same PaymentIntent."""
            assert attempt.intent is not None
            auto, news = self.auto[org], attempt.status == "submitted"
            if news and succeeded:
                evt = so.event("payment_intent.succeeded", attempt.intent)
            else:
                if news:
                    attempt.intent = so.card_error(code, attempt.intent)["error"][
                        "payment_intent"]
                evt = so.event("payment_intent.payment_failed", attempt.intent)

            def send() -> None:
                assert deliver(client, evt).status_code == 200

            send()
            if again == "same event twice":
                send()
            elif again == "new event too":
                assert deliver(client, {**evt, "id": f"evt_{uuid.uuid4().hex}"}).status_code == 200
            if news and succeeded:
                attempt.status = "succeeded"
                auto.failures, auto.delayed = 0, False
                self._credited(org, attempt.intent["id"], attempt.amount)
                self.events[org].append("auto_topup.succeeded")
                self.auto_events[org].append(("auto_topup.succeeded", attempt.amount,
                                              self.balance[org], None, None))
                checked["auto_topup.succeeded"] += 1
            elif news:
                self._auto_topup_failed(org, attempt)
            self.sent.append(send)

        @precondition(lambda self: any(auto.delayed for auto in self.auto.values()))
        @rule(data=st.data())
        def retry_delay_passes(self, data: st.DataObject) -> None:
            """An hour goes by: the org's retry delay is over. The one write the model makes
            itself, standing for the clock."""
            self._clock_passes(data.draw(st.sampled_from(
                [o for o in self.orgs if self.auto[o].delayed])))

        def _clock_passes(self, org: uuid.UUID) -> None:
            owner_conn.execute("UPDATE organizations SET auto_topup_not_before = now()"
                               " - interval '1 second' WHERE id = %s", (org,))
            self.auto[org].delayed = False

        @precondition(lambda self: bool(self.sent))
        @rule(data=st.data())
        def replay(self, data: st.DataObject) -> None:
            """Any earlier request or event again: a webhook or a keyed request changes
            nothing; a charge or a settings change is decided again, as its send says."""
            data.draw(st.sampled_from(self.sent))()

        def teardown(self) -> None:
            """Leave no attempt pending for the next run's worker: turned off, the worker
            cancels them without asking Stripe."""
            pending = [org for org in self.orgs if any(
                a.status == "pending" for a in self.auto[org].attempts)]
            for org in pending:
                answer = client.put(AUTO_TOP_UP, headers=auth("member", org),
                                    json={"enabled": False})
                assert answer.status_code == 200, answer.get_json()
            while attempt_next(worker_conn, settings, worker_stripe):
                pass

        # -- after every step ----------------------------------------------------------
        @invariant()
        def balances_match_and_the_ledger_is_sound(self) -> None:
            checked["steps"] += 1
            for org in self.orgs:
                answer = client.get(f"/api/billing/balance?orgId={org}", headers=service)
                assert answer.get_json()["balance"] == self.balance[org], org
            written: dict[uuid.UUID, list[tuple[Any, ...]]] = {org: [] for org in self.orgs}
            for org, *event in owner_conn.execute(
                    "SELECT org_id, type, (data->>'amount')::numeric,"
                    " (data->>'balance')::numeric, (data->>'consecutiveFailures')::integer,"
                    " (data->>'paused')::boolean FROM outbox_events"
                    " WHERE org_id = ANY(%s) ORDER BY seq", (self.orgs,)):
                written[org].append(tuple(event))
            tried: dict[uuid.UUID, list[tuple[Any, ...]]] = {org: [] for org in self.orgs}
            for org, *attempt in owner_conn.execute(
                    "SELECT org_id, status, amount, balance_at_trigger FROM auto_topup_attempts"
                    " WHERE org_id = ANY(%s) ORDER BY created_at", (self.orgs,)):
                tried[org].append(tuple(attempt))
            states = {org: ("off", 0, False, False) for org in self.orgs}
            for org, *state in owner_conn.execute(
                    "SELECT id, auto_topup_state, auto_topup_failures,"
                    " auto_topup_attempt IS NOT NULL,"
                    " coalesce(auto_topup_not_before > now(), false)"
                    " FROM organizations WHERE id = ANY(%s)", (self.orgs,)):
                states[org] = tuple(state)
            for org in self.orgs:
                auto = self.auto[org]
                assert [kind for kind, *_ in written[org]] == self.events[org], org
                assert [e for e in written[org] if e[0].startswith("auto_topup.")] == (
                    self.auto_events[org]), org
                assert tried[org] == [(a.status, a.amount, a.balance_at_trigger)
                                      for a in auto.attempts], org
                assert sum(s in ("pending", "submitted") for s, *_ in tried[org]) <= 1, org
                assert states[org] == (auto.state, auto.failures, auto.in_flight() is not None,
                                       auto.delayed), org
            assert find_violations(owner_conn) == []

    with worker_conn:
        run_state_machine_as_test(Billing, settings=hypothesis_settings(
            max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
            suppress_health_check=list(HealthCheck)))
    # Reported in the test output (pytest -s) and docs/reliability.md.
    print(f"stateful model: {checked['runs']} runs, {checked['steps']} checked steps;"
          f" auto top-ups: {checked['attempts']} attempts, {checked['auto_topup.succeeded']}"
          f" succeeded, {checked['auto_topup.failed']} failed, {checked['paused']} pauses")
    assert checked["runs"] >= EXAMPLES and checked["steps"] > checked["runs"]
