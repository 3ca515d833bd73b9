"""Crash consistency: charges, credits and webhooks under load while a gunicorn worker is
SIGKILLed and PostgreSQL is stopped with an immediate shutdown (no checkpoint; recovery
replays the WAL) and started again. Then every request that got no 2xx is replayed, as
clients (same Idempotency-Key, same messageId) and Stripe (same event) do, and every
acknowledged write must be in the ledger exactly once, with every invariant holding.

    python bench/crash_test.py                 # 20 s of load
    python bench/crash_test.py --seconds 6     # in CI: tests/system/test_crash_consistency.py

It always starts its own embedded PostgreSQL (it has to be able to crash it).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import (
    Write,
    acknowledged_in_ledger,
    gateway,
    gateway_writes,
    replay_unacknowledged,
    send_write,
)


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


def run(seconds: float = 20.0, clients: int = 8, seed: int = 7,
        say: Any = print) -> Report:
    """Load, crash, replay, verify; return the counts."""
    report = Report()
    rng = random.Random(seed)  # noqa: S311  # picks the workload, not secrets
    with gateway("crash") as service:
        base = service.base
        pending = gateway_writes(service, rng, count=200_000)
        lock = threading.Lock()
        stop = threading.Event()
        cursor = iter(pending)
        sent: list[Write] = []

        def client() -> None:
            session = requests.Session()
            while not stop.is_set():
                with lock:
                    request = next(cursor)
                    sent.append(request)
                outcome = send_write(base, request, session)
                if outcome != "ok":
                    with lock:
                        report.failed_first_time[outcome] += 1

        threads = [threading.Thread(target=client) for _ in range(clients)]
        for thread in threads:
            thread.start()
        time.sleep(seconds / 3)
        workers = psutil.Process(service.gunicorn.pid).children()
        if workers:
            report.worker_killed = workers[0].pid
            os.kill(workers[0].pid, signal.SIGKILL)
            say(f"SIGKILL gunicorn worker {workers[0].pid}")
        time.sleep(seconds / 3)
        service.pg_ctl("-w", "-m", "immediate", "stop")
        say("PostgreSQL stopped with -m immediate")
        time.sleep(1.0)
        service.server.ensure_postgres_running()
        report.postgres_restarted = True
        say("PostgreSQL started again (crash recovery)")
        time.sleep(seconds / 3)
        stop.set()
        for thread in threads:
            thread.join()

        report.sent = len(sent)
        report.acknowledged_first_time = sum(r.acknowledged for r in sent)
        # Clients and Stripe retry what got no 2xx.
        report.replayed, report.still_failing = replay_unacknowledged(base, sent)
        report.expected, report.found, report.violations = acknowledged_in_ledger(
            service, sent)
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
