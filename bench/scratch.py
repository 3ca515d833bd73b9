"""A throwaway migrated database for benchmarks: embedded, or on DATABASE_URL's server."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
from psycopg import sql

from billing_gateway import embedded
from billing_gateway.config import Settings
from billing_gateway.migrations import migrate


@contextmanager
def scratch_database() -> Iterator[str]:
    """Create a migrated database for one run and drop it afterwards; yield its DSN."""
    server_dsn = os.environ.get("DATABASE_URL")
    server = None
    if not server_dsn:
        server = embedded.start_server(Path(tempfile.mkdtemp()) / "pgdata", cleanup_mode="delete")
        server_dsn = server.get_uri()
    name = f"billing_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(server_dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
        migrate(dsn)
        yield dsn
    finally:
        with psycopg.connect(server_dsn, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        if server is not None:
            server.cleanup()


def bench_settings(dsn: str) -> Settings:
    """Settings for an in-process app on the scratch database."""
    return Settings(database_url=dsn, environment="test", jwt_secret="b" * 40,
                    data_dir=Path(tempfile.mkdtemp()))


def percentile(samples: list[float], q: float) -> float:
    """Return the q-th percentile (0..100) of samples, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def succeeded_event(event_id: str, intent_id: str, org_id: object, amount: int = 500) -> str:
    """A tagged payment_intent.succeeded event (the fields the gateway reads), as JSON."""
    return json.dumps({
        "id": event_id, "object": "event", "type": "payment_intent.succeeded",
        "data": {"object": {
            "id": intent_id, "object": "payment_intent", "amount": amount,
            "amount_received": amount, "currency": "usd", "status": "succeeded",
            "metadata": {"source": "billing-gateway", "org_id": str(org_id)}}}})


def stripe_signature(body: bytes, secret: str, timestamp: int | None = None) -> str:
    """The Stripe-Signature header for body: t=...,v1=HMAC-SHA256(secret, "{t}.{body}")."""
    t = int(time.time()) if timestamp is None else timestamp
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={mac}"


@contextmanager
def embedded_database() -> Iterator[str]:
    """Start an embedded PostgreSQL of our own in a temporary folder (whatever DATABASE_URL
    says), migrate a database on it; yield its DSN, and delete the server afterwards."""
    server = embedded.start_server(Path(tempfile.mkdtemp(prefix="billing-bench-")) / "pgdata",
                                   cleanup_mode="delete")
    try:
        dsn = embedded.ensure_database(server.get_uri())
        migrate(dsn)
        yield dsn
    finally:
        server.cleanup()
