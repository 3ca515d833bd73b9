"""Money events under load, measured from outside: /deduct latency with no receiver, a
fast receiver and one that sleeps; and how long an event takes from its commit to the
receiver.

Starts its own embedded PostgreSQL, the service under gunicorn (production settings), a
webhook endpoint on a local receiver, and `billing-gateway worker`. In each phase, for
`--seconds`:

- the SMS sender charges well-funded orgs with POST /deduct from `--senders` threads
  (a new messageId each): no threshold is crossed, this is the charge path everyone pays;
- a cycler moves a few small orgs across their 5.00 threshold and back (charge 2.00 from
  6.00, credit 2.00), so balance.low and balance.recovered events flow to the receiver.

Phases: `none` (events written, no endpoint, no worker), `fast` (the receiver answers at
once), `sleeping` (the receiver answers after `--sleep` seconds; attempts time out at 15 s).
It prints /deduct p50/p99 per phase, and for `fast` the delivery latency from the event's
createdAt (its transaction's time) to its arrival.

    python bench/money_events.py                     # 20 s per phase
    python bench/money_events.py --seconds 3         # the CI smoke
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests
from werkzeug.wrappers import Request, Response

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import Gateway, gateway, percentile
from billing_gateway.platform.local_server import LocalServer

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Receiver:
    """Records when each webhook-id first arrived and the event's own time."""

    sleep: float = 0.0
    arrivals: dict[str, tuple[float, float]] = field(default_factory=dict)

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Any:
        """Record, sleep if asked, answer 204."""
        request = Request(environ)
        now = time.time()
        body = json.loads(request.get_data())
        created = dt.datetime.fromisoformat(body["createdAt"].replace("Z", "+00:00"))
        self.arrivals.setdefault(request.headers["webhook-id"], (created.timestamp(), now))
        time.sleep(self.sleep)
        return Response(status=204)(environ, start_response)


@contextmanager
def worker_process(dsn: str, workdir: Path, log: Any = subprocess.DEVNULL
                   ) -> Iterator[subprocess.Popen[bytes]]:
    """`billing-gateway worker` on the gateway's database."""
    env = {**os.environ, "DATABASE_URL": dsn, "BILLING_WEBHOOK_ALLOW_PRIVATE": "true",
           "BILLING_DATA_DIR": str(workdir), "BILLING_WORKER_THREADS": "4"}
    process = subprocess.Popen(  # our own command
        [sys.executable, "-m", "billing_gateway.cli", "worker"], env=env, cwd=ROOT,
        stdout=log, stderr=log)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def _charges(service: Gateway, orgs: list[uuid.UUID], stop: threading.Event,
             latencies: list[float], errors: list[int], tag: str) -> None:
    session = requests.Session()
    headers = {"Authorization": f"Bearer {service.tokens['service']}"}
    n = 0
    while not stop.is_set():
        n += 1
        body = {"orgId": str(orgs[n % len(orgs)]), "smsCount": 1, "costPerSms": "0.0075",
                "messageId": f"{tag}-{threading.get_ident()}-{n}"}
        t0 = time.perf_counter()
        answer = session.post(f"{service.base}/api/billing/deduct", json=body, headers=headers,
                              timeout=10)
        latencies.append(time.perf_counter() - t0)
        if answer.status_code != 201:
            errors.append(answer.status_code)


def _cycle(service: Gateway, orgs: list[uuid.UUID], stop: threading.Event, tag: str) -> int:
    """Cross the threshold down and back up, again and again; the events caused."""
    session = requests.Session()
    admin = {"Authorization": f"Bearer {service.tokens['admin']}"}
    sender = {"Authorization": f"Bearer {service.tokens['service']}"}
    caused, n = 0, 0
    while not stop.is_set():
        for org in orgs:
            n += 1
            session.post(f"{service.base}/api/billing/deduct", headers=sender, timeout=10,
                         json={"orgId": str(org), "smsCount": 1, "costPerSms": "2.00",
                               "messageId": f"{tag}-cycle-{n}"}).raise_for_status()
            session.post(f"{service.base}/api/billing/add-funds", headers=admin, timeout=10,
                         json={"orgId": str(org), "amount": "2.00", "type": "bonus"}
                         ).raise_for_status()
            caused += 2  # balance.low, then balance.recovered
        time.sleep(0.05)
    return caused


def phase(service: Gateway, name: str, seconds: float, senders: int,
          cyclers: list[uuid.UUID]) -> tuple[list[float], list[int], int]:
    """Charge and cycle for `seconds`; /deduct latencies, errors, events caused."""
    stop = threading.Event()
    latencies: list[float] = []
    errors: list[int] = []
    funded = service.orgs[: len(service.orgs) - len(cyclers)]
    threads = [threading.Thread(target=_charges, args=(service, funded, stop, latencies,
                                                       errors, f"{name}-{i}"))
               for i in range(senders)]
    caused: list[int] = []
    if cyclers:
        threads.append(threading.Thread(
            target=lambda: caused.append(_cycle(service, cyclers, stop, name))))
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return latencies, errors, sum(caused)


def _pending(dsn: str) -> int:
    """Events not yet dispatched plus deliveries not yet made."""
    with psycopg.connect(dsn, autocommit=True) as owner:
        row = owner.execute(
            "SELECT (SELECT count(*) FROM outbox_events WHERE dispatched_at IS NULL)"
            " + (SELECT count(*) FROM deliveries WHERE status = 'pending')").fetchone()
    return int(row[0]) if row else 0


def main() -> int:
    """Run the three phases and print what they measured."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--senders", type=int, default=8)
    parser.add_argument("--sleep", type=float, default=30)
    args = parser.parse_args()
    receiver = Receiver()
    local = LocalServer().serve(receiver.wsgi)
    with gateway("events", orgs=12, workers=2, threads=4,
                 env={"BILLING_WEBHOOK_ALLOW_PRIVATE": "true"}) as service:
        cyclers = service.orgs[-4:]
        admin = {"Authorization": f"Bearer {service.tokens['admin']}"}
        with psycopg.connect(service.dsn, autocommit=True) as owner:
            for org in cyclers:  # down to 6.00: one charge of 2.00 then crosses 5.00
                with owner.transaction():
                    owner.execute("SELECT set_config('billing.org_id', %s, true)", (str(org),))
                    owner.execute("SELECT charge_sms(%s, 99994.00)", (org,))
        print(f"{'phase':<10}{'deduct/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'errors':>8}"
              f"{'events':>8}{'delivered':>11}{'lat p50 ms':>12}{'lat p99 ms':>12}", flush=True)
        latencies, errors, caused = phase(service, "none", args.seconds, args.senders,
                                          cyclers)
        _row("none", latencies, errors, args.seconds, caused)
        endpoint = requests.post(f"{service.base}/api/billing/webhook-endpoints", json={
            "url": f"{local.url}/hooks", "events": ["balance.low", "balance.recovered"]},
            headers=admin, timeout=10)
        endpoint.raise_for_status()
        with worker_process(service.dsn, Path(service.server.pgdata).parent):
            # The worker delivers what phase none wrote before fast's events are timed.
            drained, backlog = time.monotonic(), _pending(service.dsn)
            while _pending(service.dsn) and time.monotonic() - drained < 120:
                time.sleep(0.2)
            print(f"(the backlog of {backlog} events from phase none was delivered in "
                  f"{time.monotonic() - drained:.1f} s)", flush=True)
            started = time.time()
            latencies, errors, caused = phase(service, "fast", args.seconds, args.senders,
                                              cyclers)

            def waits() -> list[float]:
                return [arrived - created for created, arrived in receiver.arrivals.values()
                        if created >= started]

            deadline = time.monotonic() + 15
            while len(waits()) < caused and time.monotonic() < deadline:
                time.sleep(0.1)
            _row("fast", latencies, errors, args.seconds, caused, waits())
            receiver.sleep = args.sleep
            latencies, errors, caused = phase(service, "sleeping", args.seconds, args.senders,
                                              cyclers)
            _row("sleeping", latencies, errors, args.seconds, caused)
            receiver.sleep = 0  # let the worker's attempts end
    local.stop()
    return 0


def _row(name: str, latencies: list[float], errors: list[int], seconds: float,
         caused: int | None = None, waits: list[float] | None = None) -> None:
    line = (f"{name:<10}{len(latencies) / seconds:>10,.0f}{percentile(latencies, 50) * 1000:>9.2f}"
            f"{percentile(latencies, 99) * 1000:>9.2f}{len(errors):>8}")
    if caused is not None:
        line += f"{caused:>8}"
    if waits:
        line += (f"{len(waits):>11}{percentile(waits, 50) * 1000:>12.1f}"
                 f"{percentile(waits, 99) * 1000:>12.1f}")
    print(line, flush=True)


if __name__ == "__main__":
    sys.exit(main())
