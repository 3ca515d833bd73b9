"""A slow, silent or failing Stripe delays top-ups and nothing else: no pooled connection
or transaction is held while Stripe is waited on, calls time out in seconds, a bounded
number wait at once, and a crash between the steps is settled by a retry or reconcile."""

from __future__ import annotations

import datetime as dt
import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import psycopg
import pytest
import responses
from flask import Flask

from billing_gateway import create_app
from billing_gateway.platform.config import Settings
from billing_gateway.topups import reconcile, stripe_client
from tests import stripe_objects
from tests.plugins.service import TokenFactory

CHECKOUT = "/api/billing/create-checkout"
STRIPE_SESSIONS = "https://api.stripe.com/v1/checkout/sessions"


@pytest.fixture
def make_app(settings: Settings) -> Iterator[Callable[..., Flask]]:
    """Apps with their own settings (pool size, Stripe bounds); closed after the test."""
    apps: list[Flask] = []

    def build(**overrides: Any) -> Flask:
        app = create_app(settings.with_overrides(**overrides))
        apps.append(app)
        return app

    yield build
    for app in apps:
        app.extensions["billing_pool"].close()



def _session(org: uuid.UUID, request_key: str | None = None) -> dict[str, Any]:
    session = stripe_objects.checkout_session(org=org, amount_total=5000, status="open",
                                              payment_status="unpaid")
    if request_key:
        session["metadata"]["checkout_request"] = request_key
    return session


def _stripe_answers_after(mock: responses.RequestsMock, session: dict[str, Any],
                          during: Callable[[], None]) -> None:
    """Stripe answers with `session` after `during()` has run (while the request waits)."""

    def answer(_request: Any) -> tuple[int, dict[str, str], str]:
        during()
        return 200, {}, json.dumps(session)

    mock.add_callback(responses.POST, STRIPE_SESSIONS, callback=answer)


def test_no_connection_or_transaction_is_held_while_stripe_answers(
        make_app: Callable[..., Flask], auth: TokenFactory, credit, org: uuid.UUID,
        other_org: uuid.UUID, owner_conn: psycopg.Connection,
        stripe_api: responses.RequestsMock) -> None:
    """With a pool of ONE connection, another caller's balance read and charge succeed
    while a checkout waits on Stripe; PostgreSQL shows no open transaction of the app."""
    app = make_app(pool_min_size=1, pool_max_size=1, pool_timeout=0.5)
    credit(other_org, "5.00")
    seen: dict[str, Any] = {}

    def meanwhile() -> None:
        def other_callers() -> None:
            client = app.test_client()
            seen["balance"] = client.get(f"/api/billing/balance?orgId={other_org}",
                                         headers=auth("service")).status_code
            seen["deduct"] = client.post("/api/billing/deduct", headers=auth("service"), json={
                "orgId": str(other_org), "smsCount": 1, "messageId": "during-checkout"},
            ).status_code
        thread = threading.Thread(target=other_callers)
        thread.start()
        thread.join(10)
        seen["open_transactions"] = owner_conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND xact_start IS NOT NULL AND pid <> pg_backend_pid()").fetchone()[0]

    session = _session(org)
    _stripe_answers_after(stripe_api, session, meanwhile)
    response = app.test_client().post(CHECKOUT, headers=auth("member", org),
                                      json={"amount": "50.00"})
    assert response.status_code == 201, response.get_json()
    assert seen == {"balance": 200, "deduct": 201, "open_transactions": 0}
    status = owner_conn.execute(
        "SELECT status, session_id FROM checkout_requests WHERE org_id = %s", (org,)).fetchone()
    assert status == ("created", session["id"])


def test_top_ups_beyond_the_bound_are_refused_at_once_with_retry_after(
        make_app: Callable[..., Flask], auth: TokenFactory, org: uuid.UUID,
        other_org: uuid.UUID, owner_conn: psycopg.Connection,
        stripe_api: responses.RequestsMock) -> None:
    app = make_app(stripe_concurrency=1)
    entered, release = threading.Event(), threading.Event()

    def hold_stripe() -> None:
        entered.set()
        release.wait(10)

    _stripe_answers_after(stripe_api, _session(org), hold_stripe)
    first: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: first.update(response=app.test_client().post(
        CHECKOUT, headers=auth("member", org), json={"amount": "50.00"})))
    thread.start()
    try:
        assert entered.wait(10)
        started = time.monotonic()
        refused = app.test_client().post(CHECKOUT, headers=auth("member", other_org),
                                         json={"amount": "25.00"})
        elapsed = time.monotonic() - started
        balance = app.test_client().get("/api/billing/balance",
                                        headers=auth("member", other_org))
    finally:
        release.set()
        thread.join(10)
    assert refused.status_code == 503
    assert refused.get_json()["error"]["code"] == "service_unavailable"
    assert int(refused.headers["Retry-After"]) >= 1
    assert elapsed < 0.5
    assert balance.status_code == 200
    assert first["response"].status_code == 201
    # The refused top-up recorded nothing; the slot is free again afterwards.
    assert owner_conn.execute("SELECT count(*) FROM checkout_requests WHERE org_id = %s",
                              (other_org,)).fetchone()[0] == 0
    stripe_api.replace(responses.POST, STRIPE_SESSIONS, json=_session(other_org))
    again = app.test_client().post(CHECKOUT, headers=auth("member", other_org),
                                   json={"amount": "25.00"})
    assert again.status_code == 201


@pytest.fixture
def silent_stripe() -> Iterator[str]:
    """A Stripe that accepts connections and never answers (the kernel completes the
    handshake from the listen backlog; nothing ever reads or writes)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    listener.close()


def test_a_silent_stripe_answers_502_within_the_configured_timeout(
        make_app: Callable[..., Flask], auth: TokenFactory, org: uuid.UUID,
        owner_conn: psycopg.Connection, silent_stripe: str) -> None:
    """1 s timeout and 1 retry: the answer comes in about 2 s (the SDK's default would wait
    80 s twice over) and says nothing of our Stripe host."""
    app = make_app(stripe_api_base=silent_stripe, stripe_timeout=1.0, stripe_max_retries=1)
    started = time.monotonic()
    response = app.test_client().post(CHECKOUT, headers=auth("member", org),
                                      json={"amount": "50.00"})
    elapsed = time.monotonic() - started
    assert response.status_code == 502
    assert 1.9 < elapsed < 5.0
    message = response.get_json()["error"]["message"]
    assert response.get_json()["error"]["code"] == "payment_provider_error"
    assert "127.0.0.1" not in message and silent_stripe.rsplit(":", 1)[1] not in message
    # Stripe may have made the session: pending, for a retry with the key or reconcile.
    assert owner_conn.execute("SELECT status FROM checkout_requests WHERE org_id = %s",
                              (org,)).fetchone() == ("pending",)


def test_an_unreachable_stripe_is_502_without_our_stripe_host(
        make_app: Callable[..., Flask], auth: TokenFactory, org: uuid.UUID) -> None:
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there: connection refused
    app = make_app(stripe_api_base=f"http://127.0.0.1:{port}", stripe_max_retries=0)
    response = app.test_client().post(CHECKOUT, headers=auth("member", org),
                                      json={"amount": "50.00"})
    assert response.status_code == 502
    assert str(port) not in response.get_data(as_text=True)
    assert "127.0.0.1" not in response.get_data(as_text=True)


@pytest.fixture
def session_records_fail(owner_conn: psycopg.Connection) -> Iterator[Callable[[], None]]:
    """While armed, recording a Checkout Session fails inside PostgreSQL: a crash after
    Stripe created the session and before we recorded it."""
    owner_conn.execute("""
        CREATE FUNCTION test_session_insert_fails() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'crash before the session was recorded'; END $$;
        CREATE TRIGGER test_session_insert_fails BEFORE INSERT ON checkout_sessions
            FOR EACH ROW EXECUTE FUNCTION test_session_insert_fails();""")
    armed = [True]

    def disarm() -> None:
        if armed.pop():
            owner_conn.execute("DROP TRIGGER test_session_insert_fails ON checkout_sessions;"
                               " DROP FUNCTION test_session_insert_fails();")

    yield disarm
    if armed:
        disarm()


def test_a_crash_after_stripe_is_settled_by_a_retry_with_the_same_key(
        make_app: Callable[..., Flask], auth: TokenFactory, org: uuid.UUID,
        owner_conn: psycopg.Connection, stripe_api: responses.RequestsMock,
        session_records_fail: Callable[[], None], monkeypatch: pytest.MonkeyPatch) -> None:
    app = make_app()
    session = _session(org)
    stripe_api.add(responses.POST, STRIPE_SESSIONS, json=session)
    headers = {**auth("member", org), "Idempotency-Key": "topup-after-crash"}
    crashed = app.test_client().post(CHECKOUT, headers=headers, json={"amount": "50.00"})
    assert crashed.status_code == 500
    assert owner_conn.execute("SELECT status FROM checkout_requests WHERE org_id = %s",
                              (org,)).fetchall() == [("pending",)]
    session_records_fail()
    # The retry comes ten minutes later, by the clock the service reads.
    later = time.time() + 600
    monkeypatch.setattr(stripe_client.time, "time", lambda: later)
    retried = app.test_client().post(CHECKOUT, headers=headers, json={"amount": "50.00"})
    assert retried.status_code == 201
    assert retried.get_json()["sessionId"] == session["id"]
    keys = {call.request.headers["Idempotency-Key"] for call in stripe_api.calls}
    assert len(stripe_api.calls) == 2 and len(keys) == 1  # Stripe answers one key once
    # ...and only for the same parameters: the retry's expires_at is the first one's.
    bodies = {call.request.body for call in stripe_api.calls}
    assert len(bodies) == 1 and "expires_at" in str(bodies)
    assert owner_conn.execute(
        "SELECT r.status, count(s.id) FROM checkout_requests r"
        " LEFT JOIN checkout_sessions s ON s.id = r.session_id WHERE r.org_id = %s"
        " GROUP BY r.status", (org,)).fetchall() == [("created", 1)]
    replay = app.test_client().post(CHECKOUT, headers=headers, json={"amount": "50.00"})
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert len(stripe_api.calls) == 2


def test_reconcile_records_a_session_a_crash_left_and_abandons_what_stripe_never_saw(
        make_app: Callable[..., Flask], settings: Settings, database_url: str,
        auth: TokenFactory, org: uuid.UUID, other_org: uuid.UUID,
        owner_conn: psycopg.Connection, stripe_api: responses.RequestsMock,
        session_records_fail: Callable[[], None]) -> None:
    app = make_app()
    sent: list[str] = []

    def create(request: Any) -> tuple[int, dict[str, str], str]:
        key = parse_qs(request.body)["metadata[checkout_request]"][0]
        sent.append(key)
        return 200, {}, json.dumps(_session(org, key))

    stripe_api.add_callback(responses.POST, STRIPE_SESSIONS, callback=create)
    crashed = app.test_client().post(CHECKOUT, headers=auth("member", org),
                                     json={"amount": "50.00"})
    assert crashed.status_code == 500
    session_records_fail()
    # A request that never reached Stripe, made 20 minutes ago (then the process died).
    owner_conn.execute("INSERT INTO organizations (id) VALUES (%s)", (other_org,))
    owner_conn.execute(
        "INSERT INTO checkout_requests (stripe_idempotency_key, org_id, amount, currency,"
        " created_by, created_at, updated_at) VALUES ('never-sent', %s, 20, 'usd', 'm',"
        " now() - interval '20 minutes', now() - interval '20 minutes')", (other_org,))
    listed = _session(org, sent[0])
    stripe_api.add(responses.GET, "https://api.stripe.com/v1/payment_intents", json={
        "object": "list", "url": "/v1/payment_intents", "has_more": False, "data": []})
    stripe_api.add(responses.GET, STRIPE_SESSIONS, json={
        "object": "list", "url": "/v1/checkout/sessions", "has_more": False,
        "data": [_session(org, "someone-else"), listed]})
    lines: list[str] = []
    report = reconcile.run(settings, database_url, dt.timedelta(days=1), lines.append)
    assert report.recorded_sessions == [listed["id"]]
    assert report.repaired == []
    assert report.abandoned == ["never-sent"]
    assert report.unrepaired == []
    rows = owner_conn.execute(
        "SELECT stripe_idempotency_key, status, session_id FROM checkout_requests"
        " ORDER BY created_at").fetchall()
    assert rows == [("never-sent", "abandoned", None), (sent[0], "created", listed["id"])]
    # A second run does not list sessions again: nothing is pending.
    def session_lists() -> int:
        return sum(1 for c in stripe_api.calls
                   if c.request.method == "GET" and "checkout/sessions" in str(c.request.url))

    assert session_lists() == 1
    reconcile.run(settings, database_url, dt.timedelta(days=1), lines.append)
    assert session_lists() == 1


def test_a_definite_refusal_marks_the_request_failed_and_a_retry_takes_it_up(
        make_app: Callable[..., Flask], auth: TokenFactory, org: uuid.UUID,
        owner_conn: psycopg.Connection, stripe_api: responses.RequestsMock) -> None:
    app = make_app()
    stripe_api.add(responses.POST, STRIPE_SESSIONS, status=400, json={"error": {
        "type": "invalid_request_error", "message": "Your account cannot take payments."}})
    headers = {**auth("member", org), "Idempotency-Key": "refused-then-ok"}
    refused = app.test_client().post(CHECKOUT, headers=headers, json={"amount": "50.00"})
    assert refused.status_code == 502
    assert "cannot take payments" in refused.get_json()["error"]["message"]
    assert owner_conn.execute("SELECT status, error FROM checkout_requests WHERE org_id = %s",
                              (org,)).fetchone()[0] == "failed"
    session = _session(org)
    stripe_api.replace(responses.POST, STRIPE_SESSIONS, json=session)
    accepted = app.test_client().post(CHECKOUT, headers=headers, json={"amount": "50.00"})
    assert accepted.status_code == 201
    assert owner_conn.execute("SELECT status, session_id, error FROM checkout_requests"
                              " WHERE org_id = %s", (org,)).fetchone() == (
        "created", session["id"], None)


def test_the_same_key_for_another_amount_is_409_before_stripe(
        make_app: Callable[..., Flask], auth: TokenFactory, org: uuid.UUID,
        owner_conn: psycopg.Connection, stripe_api: responses.RequestsMock,
        session_records_fail: Callable[[], None]) -> None:
    """The first attempt's answer was never stored (a crash after Stripe): the key is not in
    idempotency_keys, but its request is, and Stripe's key does not cover the amount."""
    app = make_app()
    stripe_api.add(responses.POST, STRIPE_SESSIONS, json=_session(org))
    headers = {**auth("member", org), "Idempotency-Key": "one-key-two-amounts"}
    assert app.test_client().post(CHECKOUT, headers=headers,
                                  json={"amount": "50.00"}).status_code == 500
    session_records_fail()
    other = app.test_client().post(CHECKOUT, headers=headers, json={"amount": "75.00"})
    assert other.status_code == 409
    assert other.get_json()["error"]["code"] == "idempotency_conflict"
    assert len(stripe_api.calls) == 1
    assert owner_conn.execute("SELECT amount, status FROM checkout_requests WHERE org_id = %s",
                              (org,)).fetchall() == [(50, "pending")]


def test_concurrent_retries_with_one_key_make_one_session_and_one_answer(
        make_app: Callable[..., Flask], auth: TokenFactory, org: uuid.UUID,
        owner_conn: psycopg.Connection, stripe_api: responses.RequestsMock) -> None:
    """Stripe answers a key still in use with 409: the second retry is told so (409), the
    first completes, and a later retry replays its answer."""
    app = make_app()
    session = _session(org)
    entered, release = threading.Event(), threading.Event()
    in_flight = threading.Lock()

    def create(_request: Any) -> tuple[int, dict[str, str], str]:
        if not in_flight.acquire(blocking=False):
            return 409, {}, json.dumps({"error": {"type": "idempotency_error", "message":
                "There is currently another in-progress request using this Idempotent Key."}})
        entered.set()
        release.wait(10)
        return 200, {}, json.dumps(session)

    stripe_api.add_callback(responses.POST, STRIPE_SESSIONS, callback=create)
    headers = {**auth("member", org), "Idempotency-Key": "double-click"}
    first: dict[str, Any] = {}
    thread = threading.Thread(target=lambda: first.update(response=app.test_client().post(
        CHECKOUT, headers=headers, json={"amount": "50.00"})))
    thread.start()
    try:
        assert entered.wait(10)
        second = app.test_client().post(CHECKOUT, headers=headers, json={"amount": "50.00"})
    finally:
        release.set()
        thread.join(10)
    assert second.status_code == 409
    assert "in progress" in second.get_json()["error"]["message"]
    assert first["response"].status_code == 201
    third = app.test_client().post(CHECKOUT, headers=headers, json={"amount": "50.00"})
    assert third.headers["Idempotent-Replayed"] == "true"
    assert third.get_json() == first["response"].get_json()
    assert owner_conn.execute(
        "SELECT count(*), min(status) FROM checkout_requests WHERE org_id = %s",
        (org,)).fetchone() == (1, "created")
    assert owner_conn.execute("SELECT count(*) FROM checkout_sessions WHERE org_id = %s",
                              (org,)).fetchone() == (1,)


def test_checkout_requests_are_the_orgs_own(
        database_url: str, org: uuid.UUID, other_org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    """Row level security: another org sees and changes nothing; the 'stripe' scope reads
    every org's requests but may only mark one abandoned, and inserts none."""
    for tenant in (org, other_org):
        owner_conn.execute("INSERT INTO organizations (id) VALUES (%s)", (tenant,))
    owner_conn.execute(
        "INSERT INTO checkout_requests (stripe_idempotency_key, org_id, amount, currency,"
        " created_by) VALUES ('k-a', %s, 20, 'usd', 'm')", (org,))
    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("SET ROLE billing_app")
        with conn.transaction():
            conn.execute("SELECT set_config('billing.org_id', %s, true)", (str(other_org),))
            assert conn.execute("SELECT count(*) FROM checkout_requests").fetchone() == (0,)
            updated = conn.execute("UPDATE checkout_requests SET status = 'failed'")
            assert updated.rowcount == 0
        with conn.transaction():
            conn.execute("SELECT set_config('billing.scope', 'stripe', true)")
            assert conn.execute("SELECT count(*) FROM checkout_requests").fetchone() == (1,)
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute("UPDATE checkout_requests SET status = 'failed'")
        with conn.transaction():
            conn.execute("SELECT set_config('billing.scope', 'stripe', true)")
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(
                    "INSERT INTO checkout_requests (stripe_idempotency_key, org_id, amount,"
                    " currency, created_by) VALUES ('k-b', %s, 20, 'usd', 'm')", (org,))
        with conn.transaction():
            conn.execute("SELECT set_config('billing.scope', 'stripe', true)")
            assert conn.execute("UPDATE checkout_requests SET status = 'abandoned'"
                                ).rowcount == 1
