"""Rate limits: 429 with Retry-After per caller; the SMS sender and signed webhooks exempt."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from decimal import Decimal

import psycopg
import pytest
from flask import Flask

from billing_gateway import create_app
from billing_gateway.platform.config import Settings
from tests import stripe_objects as so
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import balance, deliver


@pytest.fixture
def limited(settings: Settings) -> Iterator[Flask]:
    """An app allowing 5 requests per minute per caller."""
    app = create_app(settings.with_overrides(rate_limit="5/minute"))
    yield app
    app.extensions["billing_pool"].close()


def test_members_and_admins_get_429_with_retry_after(limited: Flask, auth: TokenFactory,
                                                     org: uuid.UUID) -> None:
    client = limited.test_client()
    member = auth("member", org, subject="member-a")
    answers = [client.get("/api/billing/balance", headers=member) for _ in range(6)]
    assert [a.status_code for a in answers] == [200] * 5 + [429]
    assert "Retry-After" not in answers[0].headers
    assert answers[0].headers["X-RateLimit-Remaining"] == "4"
    refused = client.get("/api/billing/balance", headers=member)
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) > 0
    # Another caller has its own budget; so does a POST by an admin.
    assert client.get("/api/billing/balance",
                      headers=auth("member", org, subject="member-b")).status_code == 200
    admin = auth("admin", subject="admin-a")
    posts = [client.post("/api/billing/add-funds", headers=admin,
                         json={"amount": "1.00", "orgId": str(org)}).status_code
             for _ in range(6)]
    assert posts == [201] * 5 + [429]


def test_the_sms_sender_is_never_limited(limited: Flask, auth: TokenFactory, credit,
                                         org: uuid.UUID) -> None:
    credit(org, "10.00")
    client = limited.test_client()
    service = auth("service", subject="sms-sender")
    statuses = {client.post("/api/billing/deduct", headers=service, json={
        "orgId": str(org), "smsCount": 1, "messageId": f"m{i}"}).status_code
        for i in range(12)}
    assert statuses == {201}


def test_requests_without_a_valid_token_count_per_address(limited: Flask) -> None:
    client = limited.test_client()
    statuses = [client.get("/api/billing/balance",
                           headers={"Authorization": "Bearer nope"}).status_code
                for _ in range(6)]
    assert statuses == [401] * 5 + [429]
    # Probes stay open.
    assert client.get("/healthz").status_code == 200


def test_signed_webhooks_are_not_limited_forged_ones_are(limited: Flask,
                                                         org: uuid.UUID) -> None:
    client = limited.test_client()
    for _ in range(8):
        assert deliver(client, so.event("payment_intent.succeeded", so.payment_intent(
            org=org, amount=500))).status_code == 200
    forged = [deliver(client, so.event("payment_intent.succeeded", so.payment_intent(
        org=org, amount=500)), secret="whsec_forged").status_code for _ in range(6)]
    assert forged == [400] * 5 + [429]
    refused = deliver(client, so.event("payment_intent.succeeded", so.payment_intent(
        org=org, amount=500)), secret="whsec_forged")
    assert refused.get_json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["Retry-After"]) > 0


def test_forged_deliveries_never_hold_back_signed_ones(
        limited: Flask, owner_conn: psycopg.Connection, org: uuid.UUID) -> None:
    """25 forged deliveries from one address, then Stripe's signed ones from the same
    address: every signed one is credited (the issue measured 429 and nothing credited)."""
    client = limited.test_client()
    forged = [deliver(client, so.event("payment_intent.succeeded", so.payment_intent(
        org=org, amount=500)), secret="whsec_forged").status_code for _ in range(25)]
    assert forged == [400] * 5 + [429] * 20
    signed = [deliver(client, so.event("payment_intent.succeeded", so.payment_intent(
        org=org, amount=700))).status_code for _ in range(3)]
    assert signed == [200, 200, 200]
    assert balance(owner_conn, org) == Decimal("21.00")
    # Still refused for forgers afterwards, with Retry-After.
    refused = deliver(client, so.event("payment_intent.succeeded", so.payment_intent(
        org=org, amount=500)), secret="whsec_forged")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) > 0


def test_forged_deliveries_count_per_client_address_behind_a_proxy(
        settings: Settings, org: uuid.UUID) -> None:
    """With one trusted proxy hop, X-Forwarded-For names the client: one forger's flood does
    not refuse another address (without ProxyFix every delivery shares the proxy's address)."""
    app = create_app(settings.with_overrides(rate_limit="5/minute", trusted_proxies=1))
    try:
        client = app.test_client()

        def forged_from(address: str) -> int:
            return deliver(client, so.event("payment_intent.succeeded", so.payment_intent(
                org=org, amount=500)), secret="whsec_forged",
                headers={"X-Forwarded-For": address}).status_code

        assert [forged_from("203.0.113.7") for _ in range(6)] == [400] * 5 + [429]
        assert forged_from("198.51.100.9") == 400
        # Only the hop the proxy appended counts: a forger cannot pick a fresh address by
        # putting one in front (X-Forwarded-For: <anything>, <its real address>).
        assert forged_from("192.0.2.1, 203.0.113.7") == 429
    finally:
        app.extensions["billing_pool"].close()


def test_off_disables_limits(settings: Settings, auth: TokenFactory, org: uuid.UUID) -> None:
    app = create_app(settings.with_overrides(rate_limit="off"))
    try:
        client = app.test_client()
        member = auth("member", org)
        assert {client.get("/api/billing/balance", headers=member).status_code
                for _ in range(20)} == {200}
    finally:
        app.extensions["billing_pool"].close()


def _redis_reachable() -> bool:
    import socket

    try:
        socket.create_connection(("127.0.0.1", 6379), timeout=0.5).close()
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _redis_reachable(), reason="no Redis on 127.0.0.1:6379 (CI has one)")
def test_counters_in_redis_are_shared_by_every_app(settings: Settings, auth: TokenFactory,
                                                   org: uuid.UUID) -> None:
    """Two apps (two workers, or two machines) on one Redis share one budget."""
    shared = settings.with_overrides(rate_limit="5/minute",
                                     ratelimit_storage_uri="redis://127.0.0.1:6379/15")
    apps = [create_app(shared), create_app(shared)]
    member = auth("member", org, subject=f"redis-{uuid.uuid4()}")
    try:
        statuses = [apps[i % 2].test_client().get("/api/billing/balance",
                                                  headers=member).status_code
                    for i in range(6)]
    finally:
        for app in apps:
            app.extensions["billing_pool"].close()
            app.extensions["billing_limiter"].storage.storage.close()  # the Redis client
    assert statuses == [200] * 5 + [429]
