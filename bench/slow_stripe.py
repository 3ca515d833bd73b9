"""A slow Stripe must never stop SMS charging: measured from outside, over HTTP.

Starts its own embedded PostgreSQL and the service under gunicorn (bench/run.py's
start_service: the production configuration module, gthread), with STRIPE_API_BASE on a
local Stripe stand-in (bench/stripe_standin.py). After a warm-up with Stripe answering at
once (each worker imports the SDK and fills its pool), the stand-in answers Checkout late
(`slow`) or never (`silent`), and for a fixed time:

- customers of `--checkouts` orgs (one member token each), arriving over the first second,
  keep a checkout in flight: each starts a new POST /create-checkout, on a new connection,
  as soon as the last one ended (after a 503, once its Retry-After has passed, as a
  browser or our client would);
- the SMS sender (role `service`) charges those orgs, pre-credited through POST /add-funds,
  with POST /deduct (a new messageId each), and members read GET /balance, both at a
  steady rate.

It prints count, statuses and p50/p99/max latency of each, the checkouts that took longer
than STRIPE_TIMEOUT x (STRIPE_MAX_RETRIES + 1) + a margin (as the service reads them from
the environment), and what the stand-in saw. Exit 1 when charging or reading was slowed
(p99 >= 100 ms) or failed, or a checkout hung.

    python bench/slow_stripe.py                        # slow: Checkout answers after 12 s
    python bench/slow_stripe.py --stripe silent        # Checkout never answers
    STRIPE_TIMEOUT=2 python bench/slow_stripe.py --seconds 10 --delay 1.5 --json
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from unittest import mock

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import SECRET, start_service
from bench.scratch import (
    bench_settings,
    embedded_database,
    free_port,
    percentile,
    stop_process,
)
from bench.stripe_standin import StripeStandin
from billing_gateway.platform.auth import issue_token
from billing_gateway.platform.config import Settings, load_settings

API = "/api/billing"
# The issue's bound for charges and balance reads while Stripe is slow.
P99_BOUND_MS = 100.0
# Never wait longer than this on a 503's Retry-After: the run is short.
MAX_RETRY_AFTER = 5.0
# Rounds of each request before measuring (Stripe answering at once meanwhile).
WARM_UP_ROUNDS = 3


@dataclass
class Latencies:
    """Answers of one kind of request: status counts and latencies."""

    statuses: Counter[str] = field(default_factory=Counter)
    samples_ms: list[float] = field(default_factory=list)

    def add(self, status: str, ms: float) -> None:
        """Record one answer (or a timeout, which counts with the time waited)."""
        self.statuses[status] += 1
        self.samples_ms.append(ms)

    @property
    def count(self) -> int:
        """Requests that ended, answered or not."""
        return len(self.samples_ms)

    @property
    def not_2xx(self) -> int:
        """Requests not answered 2xx (errors, timeouts, refused connections)."""
        return sum(n for status, n in self.statuses.items() if not status.startswith("2"))

    def p(self, q: float) -> float:
        """The q-th percentile in ms (0 when nothing was measured)."""
        return percentile(self.samples_ms, q) if self.samples_ms else 0.0

    def summary(self) -> dict[str, Any]:
        """Count, statuses and p50/p99/max in ms."""
        return {"count": self.count, "statuses": dict(sorted(self.statuses.items())),
                "p50_ms": round(self.p(50), 2), "p99_ms": round(self.p(99), 2),
                "max_ms": round(max(self.samples_ms, default=0.0), 2)}


@dataclass
class Report:
    """What one run measured, with the settings the service ran with."""

    stripe: str
    delay: float
    seconds: float
    checkouts: int
    workers: int
    threads: int
    stripe_timeout: float
    stripe_max_retries: int
    stripe_concurrency: int
    checkout_limit_s: float
    deduct: Latencies = field(default_factory=Latencies)
    balance: Latencies = field(default_factory=Latencies)
    checkout: Latencies = field(default_factory=Latencies)
    checkout_over_limit: int = 0
    checkout_503_without_retry_after: int = 0
    missed_slots: int = 0
    standin: dict[str, Any] = field(default_factory=dict)
    load_before: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)

    def problems(self) -> list[str]:
        """What breaks "a slow Stripe never stops SMS charging" (empty when nothing)."""
        found = []
        for name, kind in (("POST /deduct", self.deduct), ("GET /balance", self.balance)):
            if kind.count == 0:
                found.append(f"{name}: nothing measured")
            if kind.p(99) >= P99_BOUND_MS:
                found.append(f"{name}: p99 {kind.p(99):.0f} ms >= {P99_BOUND_MS:.0f} ms")
            if kind.not_2xx:
                found.append(f"{name}: {kind.not_2xx} answers not 2xx {dict(kind.statuses)}")
        unexpected = {s: n for s, n in self.checkout.statuses.items()
                      if not s.startswith("2") and s not in ("502", "503")}
        if unexpected:
            found.append(f"POST /create-checkout: unexpected answers {unexpected}")
        if self.checkout_over_limit:
            found.append(f"POST /create-checkout: {self.checkout_over_limit} took longer than"
                         f" {self.checkout_limit_s:g} s")
        if self.checkout_503_without_retry_after:
            found.append(f"POST /create-checkout: {self.checkout_503_without_retry_after}"
                         " answers 503 without Retry-After")
        return found

    def as_dict(self) -> dict[str, Any]:
        """The report as JSON-ready data."""
        return {
            "stripe": self.stripe, "delay_s": self.delay, "seconds": self.seconds,
            "checkouts": self.checkouts,
            "gunicorn": {"workers": self.workers, "threads": self.threads},
            "service_settings": {"stripe_timeout": self.stripe_timeout,
                                 "stripe_max_retries": self.stripe_max_retries,
                                 "stripe_concurrency": self.stripe_concurrency},
            "deduct": self.deduct.summary(), "balance": self.balance.summary(),
            "checkout": {**self.checkout.summary(), "limit_s": self.checkout_limit_s,
                         "over_limit": self.checkout_over_limit,
                         "503_without_retry_after": self.checkout_503_without_retry_after},
            "missed_slots": self.missed_slots, "stripe_standin": self.standin,
            "load_average": {"before": self.load_before, "after": self.load_after,
                             "cpus": os.cpu_count()},
            "problems": self.problems(),
        }


def _status(send: Callable[[], requests.Response]) -> tuple[str, requests.Response | None]:
    """Send; return the status (or why nothing came back) and the response."""
    try:
        response = send()
    except requests.Timeout:
        return "timeout", None
    except requests.ConnectionError:
        return "connection error", None
    except requests.RequestException as exc:  # a broken answer: name it, keep measuring
        return type(exc).__name__, None
    return str(response.status_code), response


def _retry_after(response: requests.Response | None) -> float | None:
    """Seconds a 503 asks us to wait, or None when it does not say."""
    value = response.headers.get("Retry-After") if response is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def run(stripe: str = "slow", delay: float = 12.0, seconds: float = 20.0,
        checkouts: int = 32, workers: int = 2, threads: int = 4, *,
        deduct_rate: float = 40.0, balance_rate: float = 20.0, senders: int = 4,
        readers: int = 4, request_timeout: float = 30.0, margin: float = 3.0,
        say: Callable[[str], object] = print) -> Report:
    """Start PostgreSQL, the stand-in and gunicorn; load them for `seconds`; measure."""
    # The rate limiter is off, as in crash_test.py: a 429 would be the limiter's answer to
    # our pace, not Stripe's effect, and this measures the latter.
    environment = {"WEB_CONCURRENCY": str(workers), "BILLING_THREADS": str(threads),
                   "STRIPE_SECRET_KEY": "sk_test_x", "BILLING_RATE_LIMIT": "off"}
    # The Stripe settings exactly as the service will read them (STRIPE_TIMEOUT & co.
    # come from our environment, which start_service passes on).
    service_settings: Settings = load_settings({**os.environ, **environment,
                                                "BILLING_JWT_SECRET": SECRET})
    limit = (service_settings.stripe_timeout * (service_settings.stripe_max_retries + 1)
             + margin)
    report = Report(stripe=stripe, delay=delay, seconds=seconds, checkouts=checkouts,
                    workers=workers, threads=threads,
                    stripe_timeout=service_settings.stripe_timeout,
                    stripe_max_retries=service_settings.stripe_max_retries,
                    stripe_concurrency=service_settings.stripe_concurrency,
                    checkout_limit_s=limit)
    # Long enough for the whole run; it stops earlier, when the run ends.
    lifetime = seconds + 3 * request_timeout + 120
    # Stripe answers at once during the warm-up; _load makes it slow or silent after.
    with embedded_database() as dsn, StripeStandin("slow", 0.0, lifetime) as standin:
        port = free_port()
        with mock.patch.dict(os.environ, {**environment, "STRIPE_API_BASE": standin.base_url}):
            service = start_service(dsn, port)
        try:
            _load(report, standin, f"http://127.0.0.1:{port}", bench_settings(dsn)
                  .with_overrides(jwt_secret=SECRET), deduct_rate=deduct_rate,
                  balance_rate=balance_rate, senders=senders, readers=readers,
                  request_timeout=request_timeout, say=say)
            report.standin = standin.stats()
            standin.stop()  # before gunicorn: its threads held by Stripe come free now
        finally:
            stop_process(service, timeout=20)
    return report


def _warm_up(base: str, parallel: int, checkout: dict[str, str], charge: dict[str, str],
             read: dict[str, str], org: uuid.UUID) -> None:
    """Send every kind of request, `parallel` at once on new connections, a few times over:
    each worker imports the Stripe SDK and fills its pool before anything is measured."""
    def one() -> None:
        for _ in range(WARM_UP_ROUNDS):
            _status(functools.partial(requests.post, f"{base}{API}/create-checkout",
                                      headers=checkout, json={"amount": "10.00"}, timeout=10))
            _status(functools.partial(
                requests.post, f"{base}{API}/deduct", headers=charge, timeout=10,
                json={"orgId": str(org), "smsCount": 1, "costPerSms": "0.0075",
                      "messageId": f"warm-up-{uuid.uuid4()}"}))
            _status(functools.partial(requests.get, f"{base}{API}/balance", headers=read,
                                      timeout=10))

    threads = [threading.Thread(target=one) for _ in range(parallel)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=WARM_UP_ROUNDS * 3 * 10 + 5)


def _load(report: Report, standin: StripeStandin, base: str, settings: Settings, *,
          deduct_rate: float, balance_rate: float, senders: int, readers: int,
          request_timeout: float, say: Callable[[str], object]) -> None:
    """Credit the orgs and warm up, make Stripe slow or silent, then run customers, the SMS
    sender and readers for report.seconds."""
    orgs = [uuid.uuid4() for _ in range(report.checkouts)]

    def bearer(role: str, subject: str, org: uuid.UUID | None = None) -> dict[str, str]:
        token = issue_token(settings, org_id=org, role=role, subject=subject)
        return {"Authorization": f"Bearer {token}"}

    admin = bearer("admin", "slow-stripe-admin")
    with requests.Session() as http:
        for org in orgs:
            answer = http.post(f"{base}{API}/add-funds", headers=admin, timeout=10,
                               json={"amount": "1000.00", "orgId": str(org), "type": "bonus"})
            if answer.status_code != 201:
                raise RuntimeError(f"add-funds answered {answer.status_code}: {answer.text}")
    service = bearer("service", "slow-stripe-sms-sender")
    customers = [bearer("member", f"customer-{i}", org) for i, org in enumerate(orgs)]
    members = [bearer("member", f"reader-{i}", orgs[i % len(orgs)]) for i in range(readers)]
    _warm_up(base, report.workers * report.threads, customers[0], service, members[0],
             orgs[0])
    standin.behave(report.stripe, report.delay)
    standin.reset_counts()
    run_id = uuid.uuid4().hex[:8]
    lock = threading.Lock()
    report.load_before = os.getloadavg()
    say(f"{report.checkouts} customers checking out, Stripe {report.stripe}"
        f"{f' ({report.delay:g} s)' if report.stripe == 'slow' else ''}, for"
        f" {report.seconds:g} s; load average {report.load_before[0]:.2f}")
    started = time.monotonic()
    deadline = started + report.seconds

    def customer(i: int) -> None:
        # A new connection per checkout, as from a browser: gthread workers keep a
        # keep-alive connection to themselves, so reused ones would pin every customer to
        # whichever worker accepted first, and leave the other worker's threads alone.
        # Customers arrive spread over the first second, not all in the same millisecond.
        time.sleep(i / report.checkouts)
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            status, response = _status(lambda: requests.post(
                f"{base}{API}/create-checkout", headers=customers[i],
                json={"amount": "10.00"}, timeout=request_timeout))
            took = time.monotonic() - t0
            wait = _retry_after(response) if status == "503" else None
            with lock:
                report.checkout.add(status, took * 1000)
                report.checkout_over_limit += took > report.checkout_limit_s
                report.checkout_503_without_retry_after += status == "503" and wait is None
            if wait is not None:
                time.sleep(max(0.0, min(wait, MAX_RETRY_AFTER, deadline - time.monotonic())))

    def steady(kind: Latencies, interval: float, offset: float,
               send: Callable[[requests.Session, int], requests.Response]) -> None:
        # One request every `interval`; a slot missed while the last request was still
        # waiting is skipped (and counted), not sent late in a burst.
        slot = started + offset
        with requests.Session() as http:
            for n in range(int(report.seconds / interval) + 2):  # bounded by the run's slots
                if slot >= deadline:
                    break
                time.sleep(max(0.0, slot - time.monotonic()))
                t0 = time.monotonic()
                status, _ = _status(functools.partial(send, http, n))
                with lock:
                    kind.add(status, (time.monotonic() - t0) * 1000)
                following = slot + interval
                slot = max(following, time.monotonic())
                with lock:
                    report.missed_slots += int((slot - following) / interval)

    def deduct(sender: int) -> Callable[[requests.Session, int], requests.Response]:
        def send(http: requests.Session, n: int) -> requests.Response:
            return http.post(f"{base}{API}/deduct", headers=service, timeout=request_timeout,
                             json={"orgId": str(orgs[(sender + n * senders) % len(orgs)]),
                                   "smsCount": 1, "costPerSms": "0.0075",
                                   "messageId": f"slow-stripe-{run_id}-{sender}-{n}"})
        return send

    def balance(reader: int) -> Callable[[requests.Session, int], requests.Response]:
        def send(http: requests.Session, _n: int) -> requests.Response:
            return http.get(f"{base}{API}/balance", headers=members[reader],
                            timeout=request_timeout)
        return send

    workers = [threading.Thread(target=customer, args=(i,)) for i in range(report.checkouts)]
    deduct_every, balance_every = senders / deduct_rate, readers / balance_rate
    workers += [threading.Thread(target=steady, args=(
        report.deduct, deduct_every, j * deduct_every / senders, deduct(j)))
        for j in range(senders)]
    workers += [threading.Thread(target=steady, args=(
        report.balance, balance_every, j * balance_every / readers, balance(j)))
        for j in range(readers)]
    for worker in workers:
        worker.start()
    # Every request ends within request_timeout of the deadline (plus a Retry-After pause).
    finish_by = deadline + request_timeout + MAX_RETRY_AFTER + 5
    for worker in workers:
        worker.join(timeout=max(0.1, finish_by - time.monotonic()))
    if any(worker.is_alive() for worker in workers):
        raise RuntimeError("load threads still running past their bound")
    report.load_after = os.getloadavg()


def render(report: Report) -> str:
    """The figures as a small table."""
    d = report.as_dict()
    lines = [
        f"Stripe {report.stripe}"
        + (f" (Checkout answers after {report.delay:g} s)" if report.stripe == "slow"
           else " (accepts, reads, never answers)")
        + f"; {report.seconds:g} s; {report.checkouts} customers checking out;"
        f" gunicorn {report.workers} workers x {report.threads} threads (gthread);"
        f" service reads STRIPE_TIMEOUT={report.stripe_timeout:g} s,"
        f" STRIPE_MAX_RETRIES={report.stripe_max_retries},"
        f" BILLING_STRIPE_CONCURRENCY={report.stripe_concurrency}",
        f"load average before {report.load_before[0]:.2f}, after {report.load_after[0]:.2f}"
        f" ({os.cpu_count()} CPUs)",
        "",
        f"{'':24}{'count':>7}{'p50 ms':>10}{'p99 ms':>10}{'max ms':>10}  statuses",
    ]
    for name, key in (("POST /deduct (service)", "deduct"), ("GET /balance (member)", "balance"),
                      ("POST /create-checkout", "checkout")):
        s = d[key]
        lines.append(f"{name:24}{s['count']:>7}{s['p50_ms']:>10.1f}{s['p99_ms']:>10.1f}"
                     f"{s['max_ms']:>10.1f}  {s['statuses']}")
    lines += [
        "",
        f"checkouts longer than {report.checkout_limit_s:g} s (timeout x (retries + 1) +"
        f" margin): {report.checkout_over_limit}; 503 without Retry-After:"
        f" {report.checkout_503_without_retry_after}; charge/read slots missed while"
        f" waiting: {report.missed_slots}",
        f"Stripe stand-in: {report.standin}",
        "",
        "a slow Stripe stopped nothing" if not report.problems() else
        "a slow Stripe slowed or stopped the service:\n  " + "\n  ".join(report.problems()),
    ]
    return "\n".join(lines)


def main() -> int:
    """Parse flags, run, print (or print JSON)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stripe", choices=("slow", "silent"), default="slow")
    parser.add_argument("--delay", type=float, default=12.0,
                        help="seconds before a slow Stripe answers (default 12)")
    parser.add_argument("--seconds", type=float, default=20.0, help="load duration")
    parser.add_argument("--checkouts", type=int, default=32, help="customers checking out")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--threads", type=int, default=4, help="gunicorn threads per worker")
    parser.add_argument("--deduct-rate", type=float, default=40.0, help="charges per second")
    parser.add_argument("--balance-rate", type=float, default=20.0, help="reads per second")
    parser.add_argument("--request-timeout", type=float, default=30.0,
                        help="client timeout of every request, seconds")
    parser.add_argument("--json", action="store_true", help="print JSON only")
    args = parser.parse_args()
    report = run(args.stripe, args.delay, args.seconds, args.checkouts, args.workers,
                 args.threads, deduct_rate=args.deduct_rate, balance_rate=args.balance_rate,
                 request_timeout=args.request_timeout,
                 say=lambda line: print(line, file=sys.stderr, flush=True))
    print(json.dumps(report.as_dict(), indent=2) if args.json else render(report))
    return 0 if not report.problems() else 1


if __name__ == "__main__":
    sys.exit(main())
