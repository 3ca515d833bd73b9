"""Fixtures: a real PostgreSQL (embedded unless BILLING_TEST_DATABASE_URL names one), the app,
a client, tokens, and the ledger invariants checked after every test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import responses
from flask import Flask
from flask.testing import FlaskClient
from psycopg import sql

from billing_gateway import create_app
from billing_gateway.ledger.invariants import find_violations
from billing_gateway.platform import embedded
from billing_gateway.platform.auth import issue_token
from billing_gateway.platform.config import Settings
from billing_gateway.platform.migrations import migrate

TEST_SECRET = "test-secret-" + "x" * 40
STRIPE_TEST_KEY = "sk_test_51BillingGatewayTestKey"
WEBHOOK_SECRET = "whsec_current_5b9d2a8f0c7e4d1b"
WEBHOOK_SECRET_OLD = "whsec_previous_e3a1f6c2d9b84a07"

# Tables a test may leave rows in: every table of the schema but the migrations' record,
# read from the catalog so that a new table cannot be forgotten.
_DATA_TABLES = """
    SELECT string_agg(format('%I', tablename), ', ' ORDER BY tablename) FROM pg_tables
    WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"""


def empty_every_table(conn: psycopg.Connection) -> None:
    """Remove every row a test wrote (one TRUNCATE of every data table)."""
    tables = conn.execute(_DATA_TABLES).fetchone()[0]  # type: ignore[index]  # one row
    conn.execute(sql.SQL("TRUNCATE {}").format(sql.SQL(tables)))


@pytest.fixture(scope="session")
def server_dsn(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A PostgreSQL server we may create databases on."""
    external = os.environ.get("BILLING_TEST_DATABASE_URL")
    if external:
        yield external
        return
    pgdata: Path = tmp_path_factory.mktemp("embedded") / "pgdata"
    server = embedded.start_server(pgdata, cleanup_mode="delete")
    yield server.get_uri()
    server.cleanup()


@pytest.fixture(scope="session")
def database_url(server_dsn: str) -> Iterator[str]:
    """A fresh, migrated database for this test session, dropped at the end."""
    name = f"billing_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
    migrate(dsn)
    yield dsn
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


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
        # tests/test_rate_limits.py builds apps with limits on.
        rate_limit="off",
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


@pytest.fixture(scope="session")
def owner_conn(database_url: str) -> Iterator[psycopg.Connection]:
    """A connection as the migrating superuser: sees every org (for setup and checks)."""
    with psycopg.connect(database_url, autocommit=True) as conn:
        yield conn


@pytest.fixture(autouse=True)
def ledger_is_sound(request: pytest.FixtureRequest) -> Iterator[None]:
    """After every test that touched the database: invariants hold, then start clean."""
    if "database_url" not in request.fixturenames:
        yield
        return
    conn: psycopg.Connection = request.getfixturevalue("owner_conn")
    yield
    problems = find_violations(conn)
    empty_every_table(conn)
    assert problems == [], "ledger invariants broken:\n" + "\n".join(problems)


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


@contextmanager
def ledger_inserts_fail(owner_conn: psycopg.Connection, reason: str) -> Iterator[None]:
    """A real failure inside PostgreSQL: while open, every ledger insert raises `reason`."""
    owner_conn.execute(f"""
        CREATE FUNCTION test_insert_fails() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '{reason}'; END $$;
        CREATE TRIGGER test_insert_fails BEFORE INSERT ON billing_transactions
            FOR EACH ROW EXECUTE FUNCTION test_insert_fails();""".encode())
    try:
        yield
    finally:
        owner_conn.execute("DROP TRIGGER test_insert_fails ON billing_transactions;"
                           " DROP FUNCTION test_insert_fails();")
