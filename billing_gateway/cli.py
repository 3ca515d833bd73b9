"""Command line: migrate, serve, token."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg

from billing_gateway.ledger import invariants
from billing_gateway.platform import embedded
from billing_gateway.platform.auth import ADMIN, MEMBER, ROLES, SERVICE, issue_token
from billing_gateway.platform.config import ConfigError, Settings, load_settings, warn_if_dev_secret
from billing_gateway.platform.errors import BillingError
from billing_gateway.platform.local_server import LocalServer
from billing_gateway.platform.migrations import migrate
from billing_gateway.topups import reconcile

DEMO_ORG_FILE = "demo-org"


def database_url(settings: Settings) -> str:
    """Return DATABASE_URL, or start the embedded PostgreSQL and return its URL."""
    if settings.database_url:
        return settings.database_url
    server = embedded.start_server(settings.data_dir / "pgdata")
    print(f"Embedded PostgreSQL running from {(settings.data_dir / 'pgdata').resolve()}")
    return embedded.ensure_database(server.get_uri())


def demo_org(data_dir: Path) -> uuid.UUID:
    """Return the local demo organization's id, the same on every start."""
    path = data_dir / DEMO_ORG_FILE
    if path.exists():
        return uuid.UUID(path.read_text().strip())
    org = uuid.uuid4()
    data_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{org}\n")
    return org


def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    """Apply the migrations in sql/."""
    applied = migrate(database_url(settings))
    print(f"applied: {', '.join(applied)}" if applied else "database is up to date")
    return 0


def cmd_token(args: argparse.Namespace, settings: Settings) -> int:
    """Print a signed JWT for local use."""
    org = uuid.UUID(args.org) if args.org else None
    if args.role == MEMBER and org is None:
        print("a member token needs --org", file=sys.stderr)
        return 2
    print(issue_token(settings, org_id=org, role=args.role, subject=args.sub or f"dev-{args.role}",
                      lifetime=dt.timedelta(hours=args.hours)))
    return 0


def _print_quickstart(settings: Settings, bind: str) -> None:
    org = demo_org(settings.data_dir)
    member = issue_token(settings, org_id=org, role=MEMBER, subject="demo-member",
                         lifetime=dt.timedelta(days=7))
    admin = issue_token(settings, org_id=None, role=ADMIN, subject="demo-admin",
                        lifetime=dt.timedelta(days=7))
    sender = issue_token(settings, org_id=None, role=SERVICE, subject="demo-sms-sender",
                         lifetime=dt.timedelta(days=7))
    base = f"http://{bind}/api/billing"
    print(f"""
billing-gateway on http://{bind}   (OpenAPI: http://{bind}/openapi.json)
Demo organization: {org}
MEMBER_TOKEN={member}
ADMIN_TOKEN={admin}
SERVICE_TOKEN={sender}

Try:
  curl -s -H "Authorization: Bearer $ADMIN_TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"amount": 25.00, "orgId": "{org}"}}' {base}/add-funds
  curl -s -H "Authorization: Bearer $MEMBER_TOKEN" {base}/balance
  curl -s -H "Authorization: Bearer $MEMBER_TOKEN" '{base}/transactions?limit=10'
  curl -s -H "Authorization: Bearer $SERVICE_TOKEN" -H 'Content-Type: application/json' \\
       -d '{{"orgId": "{org}", "smsCount": 1, "messageId": "try-1"}}' {base}/deduct

The customer billing page: ask for a one-time link (valid 5 minutes) and open its "url":
  curl -s -X POST -H "Authorization: Bearer $MEMBER_TOKEN" {base}/portal-sessions
(tokens are valid for 7 days; `billing-gateway token --org ORG --role ROLE` makes more)
""", flush=True)


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    """Run the service under gunicorn, on the embedded database when DATABASE_URL is unset."""
    from gunicorn.app.base import BaseApplication

    from billing_gateway import create_app

    dsn = database_url(settings)
    migrate(dsn)
    warn_if_dev_secret(settings)
    bind = f"{args.host}:{args.port}"
    if "BILLING_PUBLIC_URL" not in os.environ:
        # Checkout returns the customer here: this very service unless told otherwise.
        settings = settings.with_overrides(public_url=f"http://{bind}")
    if not settings.stripe_secret_key and not settings.is_production:
        settings = _start_stripe_sim(settings, args.host, args.port)
    if settings.jwt_algorithm == "HS256":
        _print_quickstart(settings, bind)

    class Server(BaseApplication):
        def load_config(self) -> None:
            self.cfg.set("bind", bind)
            self.cfg.set("workers", args.workers)
            self.cfg.set("threads", args.threads)
            # gthread, answering gunicorn's own refusals (400, 414, 431) as the contract's JSON.
            self.cfg.set("worker_class", "billing_gateway.gunicorn_worker.JsonErrorsWorker")
            self.cfg.set("accesslog", "-")
            # Portal links carry a token in their path: redacted from every log line.
            self.cfg.set("logger_class", "billing_gateway.platform.access_log.RedactingLogger")
            self.cfg.set("graceful_timeout", 10)
            self.cfg.set("child_exit", _worker_exited)

        def load(self) -> Any:
            # Called in each worker after the fork: each builds its own app and pool.
            return create_app(settings, database_url=dsn)

    with _fresh_metrics_dir():
        # In the metrics directory too, so serve's /metrics counts its deliveries.
        worker = _start_worker(dsn, settings) if settings.database_url is None else None
        try:
            Server().run()
        finally:
            if worker is not None:
                worker.terminate()
                worker.wait(30)
    return 0


@contextmanager
def _fresh_metrics_dir() -> Iterator[None]:
    """Give serve's workers a new, empty metrics directory, removed when serve ends."""
    # prometheus_client's multiprocess mode (docs/operations.md). Set before any worker
    # exists, so each imports prometheus_client with it (the metrics module imports it only
    # when a metric is first used, though the views that import the module are loaded here).
    previous = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    with tempfile.TemporaryDirectory(prefix="billing-gateway-metrics-") as directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
        try:
            yield
        finally:
            if previous is None:
                os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
            else:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = previous


def _worker_exited(server: Any, worker: Any) -> None:
    """gunicorn's child_exit: drop the dead worker's pool gauges from the metrics."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def _start_stripe_sim(settings: Settings, host: str, port: int) -> Settings:
    """No Stripe keys: run stripe-sim beside the service and point the service at it, so
    the whole payment flow can be tried. Said loudly: nothing here is a real payment."""
    from billing_gateway.topups import stripe_sim

    # On loopback only, whatever --host says: its "Pay" button credits for nothing, so it
    # must never be reachable from another machine.
    sim = LocalServer("127.0.0.1")
    sim_url = sim.url
    secret = f"whsec_sim_{secrets.token_hex(16)}"
    webhook_host = "127.0.0.1" if host in ("0.0.0.0", "::") else host  # noqa: S104
    sim.serve(stripe_sim.StripeSim(
        sim_url, f"http://{webhook_host}:{port}/api/billing/stripe-webhook", secret).app())
    print(f"""
*** TEST MODE: no STRIPE_SECRET_KEY, so Stripe is simulated by stripe-sim at {sim_url}.
*** Checkout "payments" there are not real. Set STRIPE_SECRET_KEY and STRIPE_WEBHOOK_SECRET
*** for Stripe itself.""", flush=True)
    # The key is only a name: stripe-sim checks none.
    # Its pay pages are where Checkout sends the browser: the billing page's CSP allows them.
    return settings.with_overrides(stripe_secret_key="sk_test_stripe_sim",  # noqa: S106
                                   stripe_webhook_secrets=(secret,), stripe_api_base=sim_url,
                                   checkout_origin=sim_url)


def cmd_stripe_sim(args: argparse.Namespace, settings: Settings) -> int:
    """Run stripe-sim alone (the gateway then needs STRIPE_API_BASE pointing at it)."""
    from billing_gateway.topups import stripe_sim

    if settings.is_production:
        print("stripe-sim is a test stand-in: refused with BILLING_ENV=production",
              file=sys.stderr)
        return 2
    if not args.webhook_secret:
        print("stripe-sim needs --webhook-secret (the gateway's STRIPE_WEBHOOK_SECRET)",
              file=sys.stderr)
        return 2
    running = LocalServer(args.host, args.port)
    url = running.url
    running.serve(stripe_sim.StripeSim(url, args.webhook_url, args.webhook_secret).app())
    print(f"stripe-sim on {url} (TEST MODE), webhooks to {args.webhook_url}; Ctrl-C stops it",
          flush=True)
    try:
        running.thread.join()
    except KeyboardInterrupt:
        running.stop()
    return 0


def cmd_reconcile(args: argparse.Namespace, settings: Settings) -> int:
    """Credit tagged payments the ledger lacks; process failed events again."""
    since = reconcile.parse_span(args.since)
    report = reconcile.run(settings, database_url(settings), since)
    return 1 if report.unrepaired else 0


def cmd_verify_ledger(args: argparse.Namespace, settings: Settings) -> int:
    """Check every invariant of the ledger; exit 1 with a report when one fails."""
    org = uuid.UUID(args.org) if args.org else None
    started = time.perf_counter()
    with psycopg.connect(database_url(settings), autocommit=True) as conn:
        invariants.require_full_view(conn)
        with conn.transaction():  # one snapshot: every check sees the same ledger
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            orgs, transactions = invariants.ledger_size(conn, org)
            failed = 0
            for violation in invariants.iter_violations(conn, org):
                failed += 1
                print(f"VIOLATION {violation}")
    elapsed = time.perf_counter() - started
    scope = f"org {org}" if org else f"{orgs:,} orgs"
    if failed:
        print(f"ledger NOT sound: {failed} violation(s) in {scope}, {transactions:,} "
              f"transactions ({elapsed:.2f} s)")
        return 1
    print(f"ledger sound: {scope}, {transactions:,} transactions, every invariant holds "
          f"({elapsed:.2f} s)")
    return 0


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    """Deliver outbound webhooks and emails until SIGTERM or SIGINT."""
    from billing_gateway.jobs.worker import Worker, stop_with_parent

    dsn = database_url(settings)
    worker = Worker(settings, dsn, threads=args.threads)

    def stop(signum: int, _frame: object) -> None:
        print(f"worker: {signal.Signals(signum).name}, finishing the attempts in hand",
              flush=True)
        worker.stop.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.parent_pid:
        stop_with_parent(worker, args.parent_pid)
    if args.metrics_port:
        from billing_gateway.platform import metrics

        metrics.serve_standalone(args.metrics_port)
        print(f"worker: metrics on http://127.0.0.1:{args.metrics_port}/metrics", flush=True)
    print(f"worker: delivering with {worker.threads} threads", flush=True)
    worker.run()
    print("worker: stopped", flush=True)
    return 0


def _start_worker(dsn: str, settings: Settings) -> subprocess.Popen[bytes]:
    """serve on the embedded database: one worker beside the web server, in its own
    process (not a thread of gunicorn's arbiter, whose forks would share its connections).
    It charges auto top-ups through the same Stripe as serve (stripe-sim, when serve runs
    one)."""
    stripe_env = {"STRIPE_SECRET_KEY": settings.stripe_secret_key or "",
                  "STRIPE_API_BASE": settings.stripe_api_base or ""}
    return subprocess.Popen(  # noqa: S603  # our own command, no shell
        [sys.executable, "-m", "billing_gateway.cli", "worker", "--parent-pid", str(os.getpid())],
        env={**os.environ, **{k: v for k, v in stripe_env.items() if v}, "DATABASE_URL": dsn})


def build_parser() -> argparse.ArgumentParser:
    """Describe the commands."""
    parser = argparse.ArgumentParser(prog="billing-gateway", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    migrate_cmd = sub.add_parser("migrate", help="apply sql/ migrations (idempotent)")
    migrate_cmd.set_defaults(func=cmd_migrate)

    serve = sub.add_parser(
        "serve", help="run the service (embedded PostgreSQL without DATABASE_URL)"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=2)
    serve.add_argument("--threads", type=int, default=4)
    serve.set_defaults(func=cmd_serve)

    reconcile_cmd = sub.add_parser(
        "reconcile", help="credit Stripe payments the ledger missed; retry failed events")
    reconcile_cmd.add_argument("--since", default="3d",
                               help="how far back to look: 3d (default), 12h, 30m")
    reconcile_cmd.set_defaults(func=cmd_reconcile)

    verify = sub.add_parser(
        "verify-ledger", help="check every ledger invariant; exit 1 with a report if one fails")
    verify.add_argument("--org", help="only this organization (UUID)")
    verify.set_defaults(func=cmd_verify_ledger)

    sim = sub.add_parser("stripe-sim", help="a local stand-in for Stripe's API (tests, trials)")
    sim.add_argument("--host", default="127.0.0.1")
    sim.add_argument("--port", type=int, default=12111)
    sim.add_argument("--webhook-url", default="http://127.0.0.1:8000/api/billing/stripe-webhook")
    sim.add_argument("--webhook-secret", help="the gateway's STRIPE_WEBHOOK_SECRET")
    sim.set_defaults(func=cmd_stripe_sim)

    worker = sub.add_parser("worker", help="deliver outbound webhooks and alert emails")
    worker.add_argument("--threads", type=int, default=None,
                        help="deliveries attempted at once (default BILLING_WORKER_THREADS, 4)")
    worker.add_argument("--metrics-port", type=int, default=None,
                        help="serve the worker's Prometheus metrics on 127.0.0.1:PORT")
    worker.add_argument("--parent-pid", type=int, default=None, help=argparse.SUPPRESS)
    worker.set_defaults(func=cmd_worker)

    token = sub.add_parser("token", help="print a signed JWT for local use")
    token.add_argument("--org", help="organization id (UUID)")
    token.add_argument("--role", choices=ROLES, default=MEMBER)
    token.add_argument("--sub", help="subject (default dev-ROLE)")
    token.add_argument("--hours", type=float, default=24.0)
    token.set_defaults(func=cmd_token)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command and return its exit code."""
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings()
        code: int = args.func(args, settings)
    except ConfigError as exc:
        print(f"configuration error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, BillingError, invariants.CannotSeeEverything) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return code


if __name__ == "__main__":
    sys.exit(main())
