"""A throwaway migrated database for benchmarks: embedded, or on DATABASE_URL's server."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import shutil
import signal
import socket
import subprocess
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


# nginx in front of a local service, with the shipped deploy/nginx.conf (bench/slow_clients.py,
# tests/test_serving.py).
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
        process.send_signal(signal.SIGTERM)  # fast shutdown: open connections are dropped
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
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
