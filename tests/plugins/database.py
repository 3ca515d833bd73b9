"""Fixtures: a real PostgreSQL (embedded unless BILLING_TEST_DATABASE_URL names one), a migrated
database for the session, the owner's connection, and the ledger's invariants checked after
every test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from billing_gateway.ledger.invariants import find_violations
from billing_gateway.platform import embedded
from billing_gateway.platform.migrations import migrate

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
