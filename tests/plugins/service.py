"""Fixtures: settings, the app and its client, tokens, organizations, a credit helper and
Stripe's HTTP API stubbed."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient

from billing_gateway import create_app
from billing_gateway.platform.auth import issue_token
from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import as_app_role

TEST_SECRET = "test-secret-" + "x" * 40
STRIPE_TEST_KEY = "sk_test_51BillingGatewayTestKey"
WEBHOOK_SECRET = "whsec_current_5b9d2a8f0c7e4d1b"
WEBHOOK_SECRET_OLD = "whsec_previous_e3a1f6c2d9b84a07"


@pytest.fixture(scope="session")
def settings(database_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings as the app reads them, with a fixed test secret."""
    return Settings(
        database_url=database_url,
        data_dir=tmp_path_factory.mktemp("data"),
        environment="test",
        jwt_secret=TEST_SECRET,
        stripe_secret_key=STRIPE_TEST_KEY,
        # The current webhook secret, then the one being rotated out.
        stripe_webhook_secrets=(WEBHOOK_SECRET, WEBHOOK_SECRET_OLD),
        # Off for the shared app (the suite sends thousands of requests as one subject);
        # tests/platform/test_rate_limits.py builds apps with limits on.
        rate_limit="off",
        # Webhook receivers in tests listen on loopback, which production refuses (SSRF);
        # tests/notifications/test_webhook_endpoints.py checks the refusal with it off.
        webhook_allow_private=True,
    )


@pytest.fixture(scope="session")
def app(settings: Settings) -> Iterator[Flask]:
    """The application, shared by the session (its pool too)."""
    application = create_app(settings)
    yield application
    application.extensions["billing_pool"].close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client of the shared app."""
    return app.test_client()


@pytest.fixture
def stripe_api() -> Iterator[responses.RequestsMock]:
    """Stripe's HTTP API, stubbed; any unexpected call fails the test."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def org() -> uuid.UUID:
    """A new organization id."""
    return uuid.uuid4()


@pytest.fixture
def other_org() -> uuid.UUID:
    """A second organization id, for isolation tests."""
    return uuid.uuid4()


TokenFactory = Callable[..., dict[str, str]]


@pytest.fixture
def auth(settings: Settings) -> TokenFactory:
    """Return Authorization headers for a role (and org)."""

    def headers(role: str = "member", org_id: uuid.UUID | None = None,
                subject: str | None = None) -> dict[str, str]:
        token = issue_token(settings, org_id=org_id, role=role,
                            subject=subject or f"test-{role}")
        return {"Authorization": f"Bearer {token}"}

    return headers


@pytest.fixture
def credit(client: FlaskClient, auth: TokenFactory) -> Callable[..., dict]:
    """Add funds to an org as an admin and return the JSON answer."""

    def add(org_id: uuid.UUID, amount: object, **body: object) -> dict:
        response = client.post("/api/billing/add-funds", headers=auth("admin"),
                               json={"amount": str(amount), "orgId": str(org_id), **body})
        assert response.status_code == 201, response.get_json()
        return response.get_json()

    return add


@pytest.fixture
def worker_conn(database_url: str, settings: Settings) -> Iterator[psycopg.Connection]:
    """A connection as the worker has: the app role, autocommit."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        as_app_role(conn, settings.low_balance_default)
        yield conn
