"""A stateful model of the service: Hypothesis drives top-ups by signed webhook, manual
credits, charges, bulk charges, usage refunds, Stripe refunds and replays of any earlier
request or event, against a Python model of every balance. After each step the API's
balance equals the model's and every ledger invariant holds (verify-ledger's checks)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from billing_gateway.ledger.invariants import find_violations
from tests import stripe_objects as so
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


def test_the_service_matches_a_model_of_every_balance(
    client: FlaskClient, auth: TokenFactory, owner_conn: psycopg.Connection
) -> None:
    admin, service = auth("admin"), auth("service")
    checked = {"steps": 0, "runs": 0}

    class Billing(RuleBasedStateMachine):
        """Two orgs, their balances, and everything that was sent."""

        @initialize()
        def setup(self) -> None:
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
            checked["runs"] += 1

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
            before = self.balance[org]
            self.balance[org] += Decimal(cents) / 100
            self.events[org].append("topup.succeeded")
            self._moved(org, before)
            self.payments[intent["id"]] = {"org": org, "credited": Decimal(cents) / 100,
                                           "refunded": Decimal(0), "disputed": Decimal(0),
                                           "reversed": Decimal(0)}
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
                expected, depleting = [], set()
                for org, message, count, price in charges:
                    expected.append(self._charge(org, message, count * price))
                    # A refusal depletes only when the balance is below the threshold then.
                    if expected[-1] == "insufficient_funds" and self.balance[org] < THRESHOLD:
                        depleting.add(org)
                # One balance change per org and batch, then its refusals.
                for org in self.orgs:
                    self._moved(org, before[org])
                    if org in depleting:
                        self._refused(org)
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

        @precondition(lambda self: bool(self.sent))
        @rule(data=st.data())
        def replay(self, data: st.DataObject) -> None:
            """Any earlier request or event again: the model does not move."""
            data.draw(st.sampled_from(self.sent))()

        # -- after every step ----------------------------------------------------------
        @invariant()
        def balances_match_and_the_ledger_is_sound(self) -> None:
            checked["steps"] += 1
            for org in self.orgs:
                answer = client.get(f"/api/billing/balance?orgId={org}", headers=service)
                assert answer.get_json()["balance"] == self.balance[org], org
                written = [kind for (kind,) in owner_conn.execute(
                    "SELECT type FROM outbox_events WHERE org_id = %s ORDER BY seq", (org,))]
                assert written == self.events[org], org
            assert find_violations(owner_conn) == []

    run_state_machine_as_test(Billing, settings=settings(
        max_examples=EXAMPLES, stateful_step_count=STEPS, deadline=None,
        suppress_health_check=list(HealthCheck)))
    # Reported in the test output (pytest -s) and docs/reliability.md.
    print(f"stateful model: {checked['runs']} runs, {checked['steps']} checked steps")
    assert checked["runs"] >= EXAMPLES and checked["steps"] > checked["runs"]
