"""Connection pool, the per-request connection and tenant-scoped transactions."""

from __future__ import annotations

import functools
from collections.abc import Collection, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from contextvars import ContextVar
from decimal import Decimal
from time import monotonic
from uuid import UUID

import psycopg
from flask import Flask, current_app, g
from psycopg_pool import ConnectionPool, PoolTimeout

from billing_gateway.platform.errors import ServiceUnavailable

# The role that requests run under (created by sql/001_ledger.sql). RLS binds it.
APP_ROLE = "billing_app"

# The longest gap between two connection attempts while a request waits for a connection.
# psycopg_pool retries a failed attempt after 1 s, then 2, 4, 8, ... for `reconnect_timeout`
# (300 s by default): after a 16 s outage the service measured 11.6 s with no connection
# once PostgreSQL was back. See BillingPool and docs/reliability.md.
RECONNECT_INTERVAL = 0.5


class BillingPool(ConnectionPool[psycopg.Connection]):
    """A pool that lends only connections that answered just now and, while a request waits
    during an outage, tries to connect again every RECONNECT_INTERVAL seconds.

    How the retry pace is bounded, with documented behaviour only
    (https://www.psycopg.org/psycopg3/docs/api/pool.html): `reconnect_timeout` is
    RECONNECT_INTERVAL, so a connection attempt that fails is retried once after that
    interval and then abandoned instead of backing off for minutes; a request waiting for a
    connection asks the pool again every RECONNECT_INTERVAL, and each ask starts a new
    attempt when none is under way (the pool grows on demand). Without waiting requests
    the pool makes no attempts; the next request starts one.
    """

    def getconn(self, timeout: float | None = None) -> psycopg.Connection:
        """Lend a checked connection, or raise PoolTimeout after `timeout` seconds."""
        wait = self.timeout if timeout is None else timeout
        deadline = monotonic() + wait
        while (remaining := deadline - monotonic()) > 0:
            try:
                conn = super().getconn(timeout=min(remaining, RECONNECT_INTERVAL))
            except PoolTimeout:
                continue  # ask again: that starts a new connection attempt if none runs
            try:
                # One round trip. A connection idle in the pool across a PostgreSQL restart
                # is dead, and psycopg only finds out when it is used.
                self.check_connection(conn)
            except psycopg.Error:
                # Closed, it is discarded and replaced by the pool; the next one is tried
                # at once (the pool's own `check` would sleep 1 s between two stale ones).
                conn.close()
                self.putconn(conn)
                continue
            except BaseException:
                self.putconn(conn)  # interrupted: give it back, do not leak it
                raise
            return conn
        raise PoolTimeout(f"couldn't get a connection after {wait:.2f} sec")


def as_app_role(conn: psycopg.Connection, low_balance_default: Decimal | None = None) -> None:
    """Drop to the RLS-bound role for the connection's whole life (the pool's, reconcile's),
    and tell its balance changes the deployment's low-balance threshold (low_balance_default()
    in SQL, read by the threshold trigger of sql/functions/60_notifications.sql)."""
    conn.execute(f"SET ROLE {APP_ROLE}")
    if low_balance_default is not None:
        conn.execute("SELECT set_config('billing.low_balance_default', %s, false)",
                     (str(low_balance_default),))


def make_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, timeout: float = 5.0,
    low_balance_default: Decimal | None = None,
) -> BillingPool:
    """Build a pool whose connections run as the app role, in autocommit.

    Autocommit plus explicit `conn.transaction()` blocks is psycopg's recommended way to
    keep transactions visible in the code: https://www.psycopg.org/psycopg3/docs/basic/transactions.html
    """
    return BillingPool(
        dsn,
        min_size=min_size,
        max_size=max_size,
        timeout=timeout,
        kwargs={"autocommit": True},
        configure=functools.partial(as_app_role, low_balance_default=low_balance_default),
        # A failed attempt is retried once, then abandoned; waiting requests start the
        # next one (BillingPool.getconn), so attempts stay RECONNECT_INTERVAL apart.
        reconnect_timeout=RECONNECT_INTERVAL,
        open=False,
        name="billing",
    )


class OutsideTenantScope(RuntimeError):
    """Tenant data touched outside a scope naming its org (a bug in the caller's code)."""


# The orgs the code running now may touch, set by the scopes below for their duration (per
# thread, so per request). Row level security would show another org's rows as none at
# all; require_tenant turns that silent nothing into an error that names the mistake.
_TENANTS: ContextVar[frozenset[UUID] | None] = ContextVar("billing_tenants", default=None)


@contextmanager
def _tenants(orgs: Iterable[UUID]) -> Iterator[None]:
    token = _TENANTS.set(frozenset(orgs))
    try:
        yield
    finally:
        _TENANTS.reset(token)


def require_tenant(*org_ids: UUID) -> None:
    """Raise OutsideTenantScope unless every org is in the current tenant scope."""
    scope = _TENANTS.get()
    for org_id in org_ids:
        if scope is None or org_id not in scope:
            raise OutsideTenantScope(
                f"org {org_id} is outside the current tenant scope; open "
                "tenant_transaction(conn, org) (or tenant_set_transaction, or enter_org in "
                "the stripe scope) first: row level security would show nothing")


@contextmanager
def tenant_transaction(
    conn: psycopg.Connection, org_id: UUID | None, caller: str = ""
) -> Iterator[psycopg.Connection]:
    """Run a transaction scoped to one org (and caller) by transaction-local settings.

    set_config(..., true) lasts until the transaction ends, commit or rollback, so the
    next user of this pooled connection starts with no tenant at all.
    """
    with conn.transaction(), _tenants(() if org_id is None else (org_id,)):
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
    # The JSON object the tenant-set policies test membership in: {"<org id>": 1, ...}.
    orgs = "{" + ",".join(f'"{org}":1' for org in org_ids) + "}"
    with conn.transaction(), _tenants(org_ids):
        conn.execute(
            "SELECT set_config('billing.org_set', %s, true),"
            " set_config('billing.caller', %s, true)",
            (orgs, caller),
        )
        yield conn


@contextmanager
def scope_transaction(conn: psycopg.Connection, scope: str,
                      caller: str) -> Iterator[psycopg.Connection]:
    """Run a transaction in a named scope (the tables its policies open to that scope); an
    org's ledger only after enter_org() names it, as in any request."""
    with conn.transaction(), _tenants(()):
        conn.execute("SELECT set_config('billing.scope', %s, true),"
                     " set_config('billing.caller', %s, true)", (scope, caller))
        yield conn


def stripe_transaction(conn: psycopg.Connection) -> AbstractContextManager[psycopg.Connection]:
    """The 'stripe' scope: Stripe's records (events, payments)."""
    return scope_transaction(conn, "stripe", "stripe")


def notifications_transaction(
        conn: psycopg.Connection, caller: str = "notifications",
) -> AbstractContextManager[psycopg.Connection]:
    """The 'notifications' scope: the outbox, webhook endpoints and deliveries (the worker,
    the admin API); no org's ledger."""
    return scope_transaction(conn, "notifications", caller)


def autotopup_transaction(conn: psycopg.Connection) -> AbstractContextManager[psycopg.Connection]:
    """The 'autotopup' scope: every org's auto top-up attempts (the worker finds due ones)."""
    return scope_transaction(conn, "autotopup", "autotopup")


def enter_org(conn: psycopg.Connection, org_id: UUID) -> None:
    """Scope the rest of the current transaction's ledger work to one org (inside a scope
    such as stripe_transaction, whose end undoes it)."""
    if _TENANTS.get() is None:
        raise OutsideTenantScope(f"enter_org({org_id}) outside a transaction scope")
    conn.execute("SELECT set_config('billing.org_id', %s, true)", (str(org_id),))
    _TENANTS.set(frozenset((org_id,)))


def get_pool(app: Flask | None = None) -> BillingPool:
    """Return the app's pool, opening it on first use (never at import or create_app)."""
    app = app or current_app
    pool: BillingPool = app.extensions["billing_pool"]
    if pool.closed:
        pool.open(wait=False)
    return pool


def get_db() -> psycopg.Connection:
    """Return this request's connection, borrowed from the pool until teardown."""
    if "db" not in g:
        try:
            g.db = get_pool().getconn()
        except Exception as exc:  # PoolTimeout, OperationalError: 503 + Retry-After, not 500
            raise ServiceUnavailable("The database is not reachable; retry the request") from exc
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


def init_app(app: Flask, dsn: str, *, min_size: int, max_size: int, timeout: float,
             low_balance_default: Decimal | None = None) -> None:
    """Attach a (closed) pool to the app and return connections at request teardown."""
    app.extensions["billing_pool"] = make_pool(
        dsn, min_size=min_size, max_size=max_size, timeout=timeout,
        low_balance_default=low_balance_default)
    app.teardown_appcontext(_return_connection)
