"""Outbound webhooks: the admin API of endpoints, and deliveries as the worker makes them
(signed per Standard Webhooks, retried with the same webhook-id, 410 and Retry-After
honoured, a receiver failing for 5 days disabled)."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import psycopg
import pytest
from flask import Flask
from flask.testing import FlaskClient

from billing_gateway import create_app
from billing_gateway.notifications import deliveries, signing
from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import as_app_role
from tests.plugins.receiver import Receiver
from tests.plugins.service import TokenFactory

ENDPOINTS = "/api/billing/webhook-endpoints"


def add_endpoint(client: FlaskClient, auth: TokenFactory, url: str,
                 events: list[str] | None = None) -> dict[str, Any]:
    """Create an endpoint as an admin; the 201 body."""
    answer = client.post(ENDPOINTS, headers=auth("admin"), json={
        "url": url, "events": events or ["balance.low", "balance.depleted"],
        "description": "platform"})
    assert answer.status_code == 201, answer.get_json()
    return answer.get_json()


def go_low(client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID) -> None:
    """Credit 10.00 and charge 6.00: one balance.low."""
    credit(org, "10.00")
    answer = client.post("/api/billing/deduct", headers=auth("service"), json={
        "orgId": str(org), "smsCount": 1, "costPerSms": "6.00", "messageId": "go-low"})
    assert answer.status_code == 201


def work(conn: psycopg.Connection, settings: Settings) -> str | None:
    """What one round of the worker does: dispatch, then attempt one due delivery."""
    deliveries.dispatch(conn, settings)
    return deliveries.attempt_next(conn, settings, random.Random(7))  # noqa: S311  # jitter


def attempts(outcome: str) -> float:
    """billing_webhook_deliveries_total{outcome} of this process (no multiprocess dir here)."""
    from prometheus_client import REGISTRY

    value = REGISTRY.get_sample_value("billing_webhook_deliveries_total", {"outcome": outcome})
    return value or 0.0


def make_due(owner_conn: psycopg.Connection) -> None:
    """Skip the backoff wait: every pending delivery is due now."""
    owner_conn.execute("UPDATE deliveries SET next_attempt_at = now() WHERE status = 'pending'")


# -- the admin API ---------------------------------------------------------------------------

def test_the_secret_is_shown_once_and_only_admins_manage_endpoints(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID) -> None:
    created = add_endpoint(client, auth, "https://platform.example/hooks")
    assert created["secret"].startswith("whsec_")
    assert created["events"] == ["balance.low", "balance.depleted"] and created["enabled"]
    listed = client.get(ENDPOINTS, headers=auth("admin")).get_json()["endpoints"]
    assert [e["id"] for e in listed] == [created["id"]]
    assert "secret" not in listed[0]
    for role in ("member", "service"):
        assert client.get(ENDPOINTS, headers=auth(role, org)).status_code == 403
        assert client.post(ENDPOINTS, headers=auth(role, org), json={
            "url": "https://x.example", "events": ["balance.low"]}).status_code == 403
    assert client.delete(f"{ENDPOINTS}/{created['id']}", headers=auth("admin")).status_code == 204
    assert client.delete(f"{ENDPOINTS}/{created['id']}", headers=auth("admin")).status_code == 404
    assert client.get(ENDPOINTS, headers=auth("admin")).get_json() == {"endpoints": []}


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "https://x.example", "events": []}, "events"),
    ({"url": "https://x.example", "events": ["balance.lowish"]}, "events"),
    ({"url": "ftp://x.example/hook", "events": ["balance.low"]}, "url"),
    ({"url": "https://user:pw@x.example/hook", "events": ["balance.low"]}, "url"),
    ({"url": "", "events": ["balance.low"]}, "url"),
    ({"events": ["balance.low"]}, "url"),
    ({"url": "https://x.example", "events": ["balance.low"], "description": "d" * 201},
     "description"),
])
def test_bad_endpoints_are_refused(client: FlaskClient, auth: TokenFactory,
                                   body: dict[str, Any], field: str) -> None:
    answer = client.post(ENDPOINTS, headers=auth("admin"), json=body)
    assert answer.status_code == 400, answer.get_json()
    assert field in answer.get_json()["error"]["fields"]
    assert client.get(ENDPOINTS, headers=auth("admin")).get_json() == {"endpoints": []}


@pytest.fixture
def strict_app(settings: Settings) -> Iterator[Flask]:
    """The app as production runs it: private and loopback receivers refused."""
    application = create_app(settings.with_overrides(webhook_allow_private=False))
    yield application
    application.extensions["billing_pool"].close()


@pytest.mark.parametrize("url", [
    "http://127.0.0.1:8080/hook", "http://localhost/hook", "http://[::1]/hook",
    "http://10.1.2.3/hook", "http://169.254.169.254/latest/meta-data",
    "http://192.168.0.10/hook", "http://[::ffff:127.0.0.1]/hook", "http://0.0.0.0/hook",
])
def test_private_and_loopback_receivers_are_refused(strict_app: Flask, auth: TokenFactory,
                                                    url: str) -> None:
    answer = strict_app.test_client().post(ENDPOINTS, headers=auth("admin"), json={
        "url": url, "events": ["balance.low"]})
    assert answer.status_code == 400, answer.get_json()
    assert "url" in answer.get_json()["error"]["fields"]


# -- deliveries ------------------------------------------------------------------------------

def test_a_receiver_failing_twice_gets_one_delivery_with_one_webhook_id(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        receiver: Receiver, worker_conn: psycopg.Connection, owner_conn: psycopg.Connection,
        settings: Settings) -> None:
    receiver.answer_with(500, 500, 200)
    endpoint = add_endpoint(client, auth, receiver.url)
    go_low(client, auth, credit, org)
    before = {outcome: attempts(outcome) for outcome in ("failed", "delivered")}
    assert work(worker_conn, settings) == "pending"
    assert work(worker_conn, settings) is None  # not due yet: the backoff holds it
    make_due(owner_conn)
    assert work(worker_conn, settings) == "pending"
    make_due(owner_conn)
    assert work(worker_conn, settings) == "delivered"
    make_due(owner_conn)
    assert work(worker_conn, settings) is None
    seen = receiver.wait_for(3)
    assert len(receiver.received) == 3
    ids = {r.headers["Webhook-Id"] for r in seen}
    assert len(ids) == 1
    body = json.loads(seen[0].body)
    assert body["id"] == ids.pop() and body["type"] == "balance.low"
    assert body["data"] == {"orgId": str(org), "balance": 4.0, "threshold": 5.0}
    assert {r.body for r in seen} == {seen[0].body}  # the same bytes every time
    for request in seen:
        signing.verify(endpoint["secret"], request.headers, request.body)
    log = client.get(f"{ENDPOINTS}/{endpoint['id']}/deliveries",
                     headers=auth("admin")).get_json()["deliveries"]
    assert len(log) == 1 and log[0]["status"] == "delivered" and log[0]["attempts"] == 3
    assert [a["statusCode"] for a in log[0]["log"]] == [500, 500, 200]
    assert log[0]["eventType"] == "balance.low" and log[0]["lastResponseMs"] >= 0
    assert attempts("failed") - before["failed"] == 2  # /metrics counts every attempt
    assert attempts("delivered") - before["delivered"] == 1


def test_only_subscribed_events_are_sent(client: FlaskClient, auth: TokenFactory,
                                         credit: Any, org: uuid.UUID, receiver: Receiver,
                                         worker_conn: psycopg.Connection,
                                         settings: Settings) -> None:
    add_endpoint(client, auth, receiver.url, ["topup.succeeded"])
    go_low(client, auth, credit, org)
    assert work(worker_conn, settings) is None
    assert receiver.received == []


def test_410_disables_the_endpoint(client: FlaskClient, auth: TokenFactory, credit: Any,
                                   org: uuid.UUID, receiver: Receiver,
                                   worker_conn: psycopg.Connection,
                                   settings: Settings) -> None:
    receiver.answer_with(410)
    endpoint = add_endpoint(client, auth, receiver.url)
    go_low(client, auth, credit, org)
    assert work(worker_conn, settings) == "failed"
    [listed] = client.get(ENDPOINTS, headers=auth("admin")).get_json()["endpoints"]
    assert listed["id"] == endpoint["id"]
    assert listed["enabled"] is False and "410" in listed["disabledReason"]


def test_retry_after_is_honoured(client: FlaskClient, auth: TokenFactory, credit: Any,
                                 org: uuid.UUID, receiver: Receiver,
                                 worker_conn: psycopg.Connection,
                                 owner_conn: psycopg.Connection, settings: Settings) -> None:
    receiver.answer_with((503, {"Retry-After": "3600"}))
    add_endpoint(client, auth, receiver.url)
    go_low(client, auth, credit, org)
    assert work(worker_conn, settings) == "pending"
    wait = owner_conn.execute(
        "SELECT extract(epoch FROM next_attempt_at - last_attempt_at) FROM deliveries"
    ).fetchone()
    assert wait is not None and 3600 <= wait[0] < 3700  # not the schedule's 5 s


@pytest.mark.parametrize("answer", [
    (500, {}, b"oops\x00binary"),  # a NUL, which PostgreSQL text cannot hold
    (503, {"Retry-After": "Mon, 01 Jan 99999999999 00:00:00 GMT"}, b"later"),  # no datetime
])
def test_a_strange_answer_is_recorded_and_retried_later_not_at_once(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        receiver: Receiver, worker_conn: psycopg.Connection, owner_conn: psycopg.Connection,
        settings: Settings, answer: tuple[int, dict[str, str], bytes]) -> None:
    status, headers, body = answer
    receiver.answer_with((status, headers))
    receiver.body = body
    add_endpoint(client, auth, receiver.url)
    go_low(client, auth, credit, org)
    assert work(worker_conn, settings) == "pending"
    assert work(worker_conn, settings) is None  # not due again at once
    row = owner_conn.execute("SELECT attempts, last_status, last_error,"
                             " next_attempt_at > now() FROM deliveries").fetchone()
    assert row is not None and row[:2] == (1, status) and row[3] is True
    assert row[2].startswith(f"HTTP {status}: ") and "\x00" not in row[2]
    assert len(receiver.received) == 1


def test_an_endpoint_failing_for_five_days_is_disabled(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        receiver: Receiver, worker_conn: psycopg.Connection, owner_conn: psycopg.Connection,
        settings: Settings) -> None:
    receiver.answer_with(500)
    endpoint = add_endpoint(client, auth, receiver.url)
    go_low(client, auth, credit, org)
    assert work(worker_conn, settings) == "pending"
    owner_conn.execute("UPDATE webhook_endpoints SET failing_since = now() - interval '4 days'")
    make_due(owner_conn)
    assert work(worker_conn, settings) == "pending"
    assert client.get(ENDPOINTS, headers=auth("admin")).get_json()["endpoints"][0]["enabled"]
    owner_conn.execute(
        "UPDATE webhook_endpoints SET failing_since = now() - interval '5 days 1 minute'")
    make_due(owner_conn)
    assert work(worker_conn, settings) == "pending"
    [listed] = client.get(ENDPOINTS, headers=auth("admin")).get_json()["endpoints"]
    assert listed["id"] == endpoint["id"] and listed["enabled"] is False
    make_due(owner_conn)
    assert work(worker_conn, settings) == "skipped"  # nothing more is sent to it
    assert len(receiver.received) == 3


def test_a_manual_retry_sends_the_same_event_again(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        receiver: Receiver, worker_conn: psycopg.Connection, settings: Settings) -> None:
    endpoint = add_endpoint(client, auth, receiver.url)
    go_low(client, auth, credit, org)
    assert work(worker_conn, settings) == "delivered"
    [delivery] = client.get(f"{ENDPOINTS}/{endpoint['id']}/deliveries",
                            headers=auth("admin")).get_json()["deliveries"]
    retried = client.post(f"{ENDPOINTS}/{endpoint['id']}/deliveries/{delivery['id']}/retry",
                          headers=auth("admin"))
    assert retried.status_code == 202 and retried.get_json()["status"] == "pending"
    assert work(worker_conn, settings) == "delivered"
    first, second = receiver.wait_for(2)
    assert first.headers["Webhook-Id"] == second.headers["Webhook-Id"]
    missing = client.post(f"{ENDPOINTS}/{endpoint['id']}/deliveries/{uuid.uuid4()}/retry",
                          headers=auth("admin"))
    assert missing.status_code == 404
    assert client.get(f"{ENDPOINTS}/{uuid.uuid4()}/deliveries",
                      headers=auth("admin")).status_code == 404


def test_an_event_is_dispatched_once_whoever_dispatches(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        receiver: Receiver, worker_conn: psycopg.Connection, owner_conn: psycopg.Connection,
        settings: Settings, database_url: str) -> None:
    add_endpoint(client, auth, receiver.url)
    go_low(client, auth, credit, org)
    with psycopg.connect(database_url, autocommit=True) as second:
        as_app_role(second)
        assert deliveries.dispatch(worker_conn, settings) == 1
        assert deliveries.dispatch(second, settings) == 0
    assert owner_conn.execute("SELECT count(*) FROM deliveries").fetchone() == (1,)
    pending = owner_conn.execute(
        "SELECT count(*) FROM outbox_events WHERE dispatched_at IS NULL").fetchone()
    assert pending == (0,)


# -- alert emails ----------------------------------------------------------------------------

def test_low_and_depleted_are_emailed_to_the_orgs_billing_contacts(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        smtp_server: Any, worker_conn: psycopg.Connection, settings: Settings) -> None:
    put = client.put(f"/api/billing/orgs/{org}/alerts", headers=auth("member", org), json={
        "lowBalanceThreshold": None, "emails": ["billing@customer.example"]})
    assert put.status_code == 200
    mailing = settings.with_overrides(smtp_url=smtp_server.url,
                                      email_from="billing@gateway.example")
    go_low(client, auth, credit, org)  # 4.00: balance.low
    assert client.post("/api/billing/deduct", headers=auth("service"), json={
        "orgId": str(org), "smsCount": 1, "costPerSms": "4.00",
        "messageId": "to-zero"}).status_code == 201  # 0: balance.depleted
    assert work(worker_conn, mailing) == "delivered"
    assert work(worker_conn, mailing) == "delivered"
    assert work(worker_conn, mailing) is None
    low, depleted = smtp_server.wait_for(2)
    assert low.rcpt_tos == ["billing@customer.example"]
    assert low.mail_from == "billing@gateway.example"
    assert "$4.00" in low.message["Subject"] and "low" in low.message["Subject"].lower()
    assert "$0.00" in depleted.message.get_content() or "$0.00" in depleted.message["Subject"]


def test_without_an_smtp_url_nothing_is_emailed(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        worker_conn: psycopg.Connection, owner_conn: psycopg.Connection,
        settings: Settings) -> None:
    assert settings.smtp_url is None
    client.put(f"/api/billing/orgs/{org}/alerts", headers=auth("member", org), json={
        "lowBalanceThreshold": None, "emails": ["billing@customer.example"]})
    go_low(client, auth, credit, org)
    assert work(worker_conn, settings) is None
    assert owner_conn.execute("SELECT count(*) FROM deliveries").fetchone() == (0,)


def test_an_attempt_in_progress_is_never_claimed_by_a_second_worker(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        receiver: Receiver, worker_conn: psycopg.Connection, settings: Settings,
        database_url: str) -> None:
    receiver.answer_with(200, delay=2)
    add_endpoint(client, auth, receiver.url)
    go_low(client, auth, credit, org)
    with ThreadPoolExecutor(1) as first, psycopg.connect(database_url, autocommit=True) as other:
        as_app_role(other)
        attempt = first.submit(work, worker_conn, settings)
        assert receiver.arrived.wait(10)  # the first worker is mid-attempt, holding the row
        assert deliveries.attempt_next(other, settings) is None  # skipped, not waited for
        assert attempt.result(10) == "delivered"
    assert deliveries.attempt_next(worker_conn, settings) is None  # delivered: nothing due
    assert len(receiver.received) == 1


@pytest.mark.parametrize("url", ["http://169.254.169.254/latest/meta-data",
                                 "http://[fe80::1]/hook", "http://169.254.170.2/v2/credentials"])
def test_the_cloud_metadata_address_is_refused_even_when_private_ones_are_allowed(
        client: FlaskClient, auth: TokenFactory, settings: Settings, url: str) -> None:
    assert settings.webhook_allow_private
    answer = client.post(ENDPOINTS, headers=auth("admin"), json={
        "url": url, "events": ["balance.low"]})
    assert answer.status_code == 400, answer.get_json()
    assert "link-local" in answer.get_json()["error"]["fields"]["url"][0]


def test_loopback_stays_allowed_when_private_ones_are(client: FlaskClient, auth: TokenFactory,
                                                      receiver: Receiver) -> None:
    assert add_endpoint(client, auth, receiver.url)["url"] == receiver.url
