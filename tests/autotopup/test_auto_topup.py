"""Auto top-up end to end at the unit level: Stripe stubbed with `responses` in its real
shapes, everything else real (PostgreSQL, the webhook path, the worker's job)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from urllib.parse import parse_qs

import psycopg
import responses
from flask import Flask
from flask.testing import FlaskClient

from tests import stripe_objects as so
from tests.autotopup.conftest import (
    AUTO_TOP_UP,
    STRIPE,
    attempts_of,
    charge,
    intents_posted,
    save_card,
    turn_on,
)
from tests.notifications.test_money_events import events, types
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import balance, deliver, ledger_rows


def _form(call: responses.Call) -> dict[str, list[str]]:
    return parse_qs(call.request.body)  # type: ignore[arg-type]  # the SDK sends a form


def _succeeded(org: uuid.UUID, call: responses.Call, intent_id: str) -> dict:
    """The PaymentIntent Stripe made for a posted auto top-up, succeeded."""
    form = _form(call)
    return {**so.payment_intent(org=org, amount=int(form["amount"][0]), intent_id=intent_id,
                                metadata={k[9:-1]: v[0] for k, v in form.items()
                                          if k.startswith("metadata[")}),
            "customer": form["customer"][0], "payment_method": form["payment_method"][0]}


def test_a_card_saved_by_a_checkout_payment_is_on_file(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock) -> None:
    save_card(client, auth, stripe_api, org, last4="4242", exp_year=2030)
    answer = client.get(AUTO_TOP_UP, headers=auth("member", org)).get_json()
    assert answer["paymentMethod"] == {"brand": "visa", "last4": "4242", "expMonth": 12,
                                       "expYear": 2030}
    assert answer["enabled"] is False and answer["lastAttempt"] is None
    # A newer card replaces it; an older event arriving late does not.
    save_card(client, auth, stripe_api, org, created=so.CREATED + 60, last4="1881")
    save_card(client, auth, stripe_api, org, created=so.CREATED - 60, last4="0005")
    answer = client.get(AUTO_TOP_UP, headers=auth("member", org)).get_json()
    assert answer["paymentMethod"]["last4"] == "1881"


def test_a_card_on_another_customer_is_not_recorded(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock) -> None:
    intent = save_card(client, auth, stripe_api, org)
    stranger = so.payment_method(customer="cus_Stranger")
    stripe_api.add(responses.GET, f"{STRIPE}/payment_methods/{stranger['id']}", json=stranger)
    evt = so.event("payment_intent.succeeded", {
        **intent, "id": "pi_other", "customer": "cus_Stranger",
        "payment_method": stranger["id"], "created": so.CREATED + 600})
    assert deliver(client, evt).status_code == 200
    answer = client.get(AUTO_TOP_UP, headers=auth("member", org)).get_json()
    assert answer["paymentMethod"]["last4"] == "4242"


def test_settings_are_validated(client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
                                other_org: uuid.UUID,
                                stripe_api: responses.RequestsMock) -> None:
    headers = auth("member", org)
    no_card = client.put(AUTO_TOP_UP, headers=headers, json={
        "enabled": True, "threshold": "10.00", "targetBalance": "50.00"})
    assert no_card.status_code == 400
    assert "enabled" in no_card.get_json()["error"]["fields"]
    save_card(client, auth, stripe_api, org)
    for body, field in [
        ({"enabled": True, "threshold": "10.00", "targetBalance": "10.00"}, "targetBalance"),
        ({"enabled": True, "threshold": "10.00", "targetBalance": "12.00"}, "targetBalance"),
        ({"enabled": True, "threshold": "10.00", "targetBalance": "20000.00"}, "targetBalance"),
        ({"enabled": True, "threshold": "10.001", "targetBalance": "50.00"}, "threshold"),
        ({"enabled": True, "threshold": "-1", "targetBalance": "50.00"}, "threshold"),
        ({"enabled": True, "threshold": "10.00"}, "targetBalance"),
        ({"enabled": 1, "threshold": "10.00", "targetBalance": "50.00"}, "enabled"),
        ({"threshold": "10.00", "targetBalance": "50.00"}, "enabled"),
    ]:
        answer = client.put(AUTO_TOP_UP, headers=headers, json=body)
        assert answer.status_code == 400, (body, answer.get_json())
        assert answer.get_json()["error"]["code"] == "validation_error"
        assert field in answer.get_json()["error"]["fields"], (body, answer.get_json())
    assert client.get(AUTO_TOP_UP, headers=headers).get_json()["enabled"] is False
    other = client.get(AUTO_TOP_UP, headers=headers, query_string={"orgId": str(other_org)})
    assert other.status_code == 403
    on = turn_on(client, auth, org, "10.00", "50.00")
    amounts = (Decimal("10.00"), Decimal("50.00"))
    assert (on["enabled"], on["threshold"], on["targetBalance"]) == (True, *amounts)
    # Off keeps the amounts; an admin names the org.
    off = client.put(AUTO_TOP_UP, headers=auth("admin"), json={
        "enabled": False, "orgId": str(org)}).get_json()
    assert (off["enabled"], off["threshold"], off["targetBalance"]) == (False, *amounts)


def test_a_charge_below_the_threshold_tops_up_once_through_the_webhook(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]]) -> None:
    save_card(client, auth, stripe_api, org)  # 25.00 credited
    turn_on(client, auth, org, "10.00", "50.00")
    assert charge(client, auth, org, "14.9925").status_code == 201  # 10.0075: not below
    assert attempts_of(owner_conn, org) == []
    assert charge(client, auth, org, "0.01").status_code == 201  # 9.9975: below
    [attempt] = attempts_of(owner_conn, org)
    assert (attempt["status"], attempt["amount"], attempt["balance_at_trigger"]) == (
        "pending", Decimal("40.0025"), Decimal("9.9975"))
    stripe_api.add(responses.POST, f"{STRIPE}/payment_intents", json=so.payment_intent(
        org=org, amount=4001, intent_id="pi_auto1"))
    assert run_worker() == ["submitted"]
    [posted] = intents_posted(stripe_api)
    assert posted.request.headers["Idempotency-Key"] == str(attempt["id"])
    form = _form(posted)
    assert {k: v[0] for k, v in form.items() if k != "description"} == {
        "amount": "4001", "currency": "usd", "customer": f"cus_{org.hex[:14]}",
        "payment_method": attempt["payment_method_id"], "off_session": "true",
        "confirm": "true", "metadata[source]": "billing-gateway",
        "metadata[org_id]": str(org), "metadata[auto_topup_attempt]": str(attempt["id"])}
    assert attempts_of(owner_conn, org)[0]["status"] == "submitted"
    assert balance(owner_conn, org) == Decimal("9.9975")  # nothing without the webhook
    # The succeeded webhook, delivered twice (and as two events): one credit.
    intent = _succeeded(org, posted, "pi_auto1")
    for _ in range(2):
        assert deliver(client, so.event("payment_intent.succeeded", intent)).status_code == 200
    assert balance(owner_conn, org) == Decimal("50.0075")
    purchases = [r for r in ledger_rows(owner_conn, org) if r[0] == "purchase"]
    assert len(purchases) == 2  # the Checkout top-up and the auto top-up
    [done] = attempts_of(owner_conn, org)
    assert (done["status"], done["payment_intent_id"]) == ("succeeded", "pi_auto1")
    assert types(owner_conn, org).count("auto_topup.succeeded") == 1
    succeeded = dict(events(owner_conn, org))["auto_topup.succeeded"]
    assert succeeded["amount"] == 40.01 and succeeded["attemptId"] == str(attempt["id"])
    answer = client.get(AUTO_TOP_UP, headers=auth("member", org)).get_json()
    assert answer["lastAttempt"]["status"] == "succeeded"
    assert answer["lastAttempt"]["amount"] == Decimal("40.01")


def test_fifty_concurrent_charges_crossing_the_threshold_make_one_payment_intent(
        app: Flask, client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]]) -> None:
    save_card(client, auth, stripe_api, org)  # 25.00
    turn_on(client, auth, org, "10.00", "50.00")

    def one(i: int) -> int:
        return charge(app.test_client(), auth, org, "0.40", f"burst-{i}").status_code

    with ThreadPoolExecutor(max_workers=16) as pool:
        assert set(pool.map(one, range(50))) == {201}  # 25.00 - 20.00 = 5.00
    [attempt] = attempts_of(owner_conn, org)
    assert attempt["status"] == "pending"
    assert Decimal("5.00") <= attempt["balance_at_trigger"] < Decimal("10.00")
    stripe_api.add(responses.POST, f"{STRIPE}/payment_intents", json=so.payment_intent(
        org=org, amount=4500, intent_id="pi_burst"))
    assert run_worker() == ["submitted"]
    assert len(intents_posted(stripe_api)) == 1
    # While it is in flight, more charges start nothing.
    assert charge(client, auth, org, "1.00").status_code == 201
    assert run_worker() == []
    assert len(attempts_of(owner_conn, org)) == 1


def test_a_worker_dying_after_stripe_answered_retries_with_the_same_key(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection,
        run_worker: Callable[[], list[str]], monkeypatch) -> None:
    from billing_gateway.topups import stripe_client

    save_card(client, auth, stripe_api, org)
    turn_on(client, auth, org, "10.00", "50.00")
    assert charge(client, auth, org, "20.00").status_code == 201
    # Stripe keeps the first answer for a key and gives it again (idempotency).
    stripe_api.add(responses.POST, f"{STRIPE}/payment_intents", json=so.payment_intent(
        org=org, amount=4500, intent_id="pi_once"))
    real = stripe_client.create_off_session_payment

    class Killed(BaseException):
        """The process dying between Stripe's answer and the commit that records it."""

    def answered_then_killed(*args, **kwargs):  # type: ignore[no-untyped-def]
        real(*args, **kwargs)
        raise Killed

    monkeypatch.setattr(stripe_client, "create_off_session_payment", answered_then_killed)
    try:
        run_worker()
    except Killed:
        pass
    [attempt] = attempts_of(owner_conn, org)
    assert (attempt["status"], attempt["tries"]) == ("pending", 0)  # nothing recorded
    monkeypatch.setattr(stripe_client, "create_off_session_payment", real)
    assert run_worker() == ["submitted"]
    first, second = intents_posted(stripe_api)
    assert first.request.headers["Idempotency-Key"] == second.request.headers[
        "Idempotency-Key"] == str(attempt["id"])
    assert first.request.body == second.request.body
    intent = _succeeded(org, second, "pi_once")
    assert deliver(client, so.event("payment_intent.succeeded", intent)).status_code == 200
    assert balance(owner_conn, org) == Decimal("50.00")
    assert attempts_of(owner_conn, org)[0]["status"] == "succeeded"


def test_a_bulk_charge_across_orgs_starts_one_attempt_for_each_org_it_takes_below(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID, other_org: uuid.UUID,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection) -> None:
    for each in (org, other_org):
        save_card(client, auth, stripe_api, each)  # 25.00 each
        turn_on(client, auth, each, "10.00", "50.00")
    items = [{"orgId": str(each), "smsCount": 1, "costPerSms": "1.00",
              "messageId": f"bulk-{each}-{i}"} for i in range(20) for each in (org, other_org)]
    items += [{"orgId": str(other_org), "smsCount": 1, "costPerSms": "100.00",
               "messageId": "too-much"}]  # refused: no second attempt either
    answer = client.post("/api/billing/deduct/bulk", headers=auth("service"),
                         json={"charges": items})
    assert answer.status_code in (200, 201, 207), answer.get_json()
    for each in (org, other_org):
        [attempt] = attempts_of(owner_conn, each)
        assert (attempt["balance_at_trigger"], attempt["amount"]) == (
            Decimal("5.00"), Decimal("45.00"))


def test_a_bulk_item_refused_for_funds_starts_an_attempt_as_a_single_refusal_does(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection) -> None:
    # Found by the stateful model: a bulk refusal started one only below the alert threshold.
    save_card(client, auth, stripe_api, org)  # 25.00
    turn_on(client, auth, org, "10.00", "50.00")
    owner_conn.execute("UPDATE organizations SET auto_topup_state = 'off' WHERE id = %s",
                       (org,))  # a charge to 9.00 that starts nothing (the clock, in effect)
    assert charge(client, auth, org, "16.00").status_code == 201
    owner_conn.execute("UPDATE organizations SET auto_topup_state = 'on' WHERE id = %s",
                       (org,))
    assert attempts_of(owner_conn, org) == []
    answer = client.post("/api/billing/deduct/bulk", headers=auth("service"), json={
        "charges": [{"orgId": str(org), "smsCount": 1, "costPerSms": "20.00",
                     "messageId": "refused-in-bulk"}]})
    assert answer.get_json()["summary"]["insufficientFunds"] == 1
    [attempt] = attempts_of(owner_conn, org)
    assert (attempt["balance_at_trigger"], attempt["amount"]) == (Decimal("9.00"),
                                                                  Decimal("41.00"))
