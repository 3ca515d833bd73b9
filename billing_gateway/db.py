"""Connection pool, the per-request connection and tenant-scoped transactions."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from contextlib import contextmanager
from uuid import UUID

import psycopg
from flask import Flask, current_app, g
from psycopg_pool import ConnectionPool

from billing_gateway.errors import ServiceUnavailable

# The role that requests run under (created by sql/001_ledger.sql). RLS binds it.
APP_ROLE = "billing_app"


def as_app_role(conn: psycopg.Connection) -> None:
    """Drop to the RLS-bound role for the connection's whole life (the pool's, reconcile's)."""
    conn.execute(f"SET ROLE {APP_ROLE}")


def make_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 5.0
) -> ConnectionPool:
    """Build a pool whose connections run as the app role, in autocommit.

    Autocommit plus explicit `conn.transaction()` blocks is psycopg's recommended way to
    keep transactions visible in the code: https://www.psycopg.org/psycopg3/docs/basic/transactions.html
    """
    return ConnectionPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        kwargs={"autocommit": True},
        configure=as_app_role,
        open=False,
        name="billing",
    )


@contextmanager
def tenant_transaction(
    conn: psycopg.Connection, org_id: UUID | None, caller: str = ""
) -> Iterator[psycopg.Connection]:
    """Run a transaction scoped to one org (and caller) by transaction-local settings.

    set_config(..., true) lasts until the transaction ends, commit or rollback, so the
    next user of this pooled connection starts with no tenant at all.
    """
    with conn.transaction():
        conn.execute(
            "SELECT set_config('billing.org_id', %s, true), set_config('billing.caller', %s, true)",
            ("" if org_id is None else str(org_id), caller),
        )
        yield conn


@contextmanager
def tenant_set_transaction(
    conn: psycopg.Connection, org_ids: Collection[UUID], caller: str = ""
) -> Iterator[psycopg.Connection]:
    """Run a transaction that may touch exactly these orgs (a bulk charge), and no other."""
    # The JSON object sql/003 tests membership in: {"<org id>": 1, ...}.
    orgs = "{" + ",".join(f'"{org}":1' for org in org_ids) + "}"
    with conn.transaction():
        conn.execute(
            "SELECT set_config('billing.org_set', %s, true),"
            " set_config('billing.caller', %s, true)",
            (orgs, caller),
        )
        yield conn


@contextmanager
def stripe_transaction(conn: psycopg.Connection) -> Iterator[psycopg.Connection]:
    """Run a transaction in the 'stripe' scope: Stripe's records (events, payments) are
    visible; an org's ledger only after enter_org() names it, as in any request."""
    with conn.transaction():
        conn.execute("SELECT set_config('billing.scope', 'stripe', true),"
                     " set_config('billing.caller', 'stripe', true)")
        yield conn


def enter_org(conn: psycopg.Connection, org_id: UUID) -> None:
    """Scope the rest of the current transaction's ledger work to one org."""
    conn.execute("SELECT set_config('billing.org_id', %s, true)", (str(org_id),))


def get_pool(app: Flask | None = None) -> ConnectionPool:
    """Return the app's pool, opening it on first use (never at import or create_app)."""
    app = app or current_app
    pool: ConnectionPool = app.extensions["billing_pool"]
    if pool.closed:
        pool.open(wait=False)
    return pool


def get_db() -> psycopg.Connection:
    """Return this request's connection, borrowed from the pool until teardown."""
    if "db" not in g:
        try:
            g.db = get_pool().getconn()
        except Exception as exc:  # PoolTimeout, OperationalError: answer 503, not 500
            raise ServiceUnavailable("The database is not reachable") from exc
    conn: psycopg.Connection = g.db
    return conn


def release_db() -> None:
    """Give this request's connection back to the pool now, before waiting on another service.

    A request that then needs the database again borrows a connection afresh (get_db).
    """
    conn = g.pop("db", None)
    if conn is not None:
        get_pool().putconn(conn)


def _return_connection(_exc: BaseException | None) -> None:
    release_db()


def init_app(app: Flask, dsn: str, *, min_size: int, max_size: int, timeout: float) -> None:
    """Attach a (closed) pool to the app and return connections at request teardown."""
    app.extensions["billing_pool"] = make_pool(
        dsn, min_size=min_size, max_size=max_size, timeout=timeout
    )
    app.teardown_appcontext(_return_connection)
