"""Recovery after a PostgreSQL restart. The service runs under gunicorn (2 workers x 4
threads, production settings) on its own embedded PostgreSQL while client threads send
charges, credits and signed webhooks; PostgreSQL is stopped for `--outage` seconds and
started again: with `-m fast`, then `-m immediate` (crash recovery), both under load, then
`-m fast` with no traffic at all (a quiet restart: idle pooled connections go stale).
For each restart it prints the time from PostgreSQL accepting connections to the service's
first 2xx and the 503s; then every write that got no 2xx is replayed (same Idempotency-Key,
messageId or event) and every acknowledged write must be in the ledger exactly once.

    python bench/db_restart.py                 # 16 s outages
    python bench/db_restart.py --outage 4      # in CI: tests/platform/test_database_restart.py

Exit status 0 when the service served again within 2 s of every restart, never answered
500, sent Retry-After with every 503, and the ledger holds every acknowledged write once.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import (
    Gateway,
    Write,
    acknowledged_in_ledger,
    gateway,
    gateway_writes,
    post_write,
    replay_unacknowledged,
)

# The contract: serving again within this many seconds of PostgreSQL accepting connections.
RECOVERY_SECONDS = 2.0
# How long to wait for a first 2xx before calling a restart unrecovered.
GIVE_UP_SECONDS = 60.0


@dataclass
class Answer:
    """One HTTP answer the clients got: when (monotonic), its status (0: none), Retry-After."""

    at: float
    status: int
    retry_after: bool


@dataclass
class Restart:
    """One stop and start of PostgreSQL, and what the clients saw."""

    mode: str
    quiet: bool
    stopped_at: float = 0.0
    accepting_at: float = 0.0
    first_2xx_at: float | None = None
    during_outage: Counter[int] = field(default_factory=Counter)
    after_accepting: Counter[int] = field(default_factory=Counter)

    @property
    def recovery(self) -> float | None:
        """Seconds from PostgreSQL accepting connections to the first 2xx."""
        return None if self.first_2xx_at is None else self.first_2xx_at - self.accepting_at

    def describe(self) -> str:
        """One line of figures."""
        recovery = "never" if self.recovery is None else f"{self.recovery:.2f} s"
        down = self.accepting_at - self.stopped_at
        return (f"{'quiet' if self.quiet else 'under load'}, -m {self.mode}: PostgreSQL down "
                f"{down:.1f} s; first 2xx {recovery} after it accepted connections; 503s "
                f"while down {self.during_outage[503]}, after it was back "
                f"{self.after_accepting[503]}; 500s {self.during_outage[500]}"
                f" + {self.after_accepting[500]}")


@dataclass
class Report:
    """Every restart, every answer's status, and the ledger check after replay."""

    restarts: list[Restart] = field(default_factory=list)
    statuses: Counter[int] = field(default_factory=Counter)
    unavailable_without_retry_after: int = 0
    sent: int = 0
    replayed: int = 0
    still_failing: int = 0
    expected: dict[str, int] = field(default_factory=dict)
    found: dict[str, int] = field(default_factory=dict)
    violations: list[str] = field(default_factory=list)

    @property
    def recovered(self) -> bool:
        """Every restart served a 2xx within RECOVERY_SECONDS of PostgreSQL accepting."""
        return all(r.recovery is not None and r.recovery <= RECOVERY_SECONDS
                   for r in self.restarts)

    @property
    def sound(self) -> bool:
        """Recovered in time, no 500, Retry-After on every 503, every write once."""
        return (bool(self.restarts) and self.recovered and self.statuses[500] == 0
                and self.unavailable_without_retry_after == 0 and self.still_failing == 0
                and self.found == self.expected and not self.violations)


class Load:
    """Client threads sending writes without pause (each sends its next write as soon as it
    has an answer, as a busy SMS sender does), recording every answer."""

    def __init__(self, service: Gateway, clients: int, seed: int) -> None:
        self._rng = random.Random(seed)  # noqa: S311  # picks the workload, not secrets
        self.service = service
        self._pending: list[Write] = []
        self.sent: list[Write] = []
        self.answers: list[Answer] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._flowing = threading.Event()
        self._flowing.set()
        self._busy = 0
        self._threads = [threading.Thread(target=self._client) for _ in range(clients)]
        for thread in self._threads:
            thread.start()

    def _client(self) -> None:
        session = requests.Session()
        while not self._stop.is_set():
            if not self._flowing.wait(timeout=0.1):
                continue
            with self._lock:
                if not self._flowing.is_set():
                    continue
                if not self._pending:  # made as needed: a run's length is not known
                    self._pending = gateway_writes(self.service, self._rng, 1000,
                                                   first=len(self.sent))[::-1]
                write = self._pending.pop()
                self.sent.append(write)
                self._busy += 1
            try:
                response = post_write(self.service.base, write, session)
                answer = Answer(time.monotonic(), response.status_code,
                                "Retry-After" in response.headers)
            except requests.RequestException:
                answer = Answer(time.monotonic(), 0, False)
            with self._lock:
                self.answers.append(answer)
                self._busy -= 1

    def pause(self) -> None:
        """Stop sending and wait for every request in flight to be answered."""
        self._flowing.clear()
        while True:
            with self._lock:
                if self._busy == 0:
                    return
            time.sleep(0.01)

    def resume(self) -> None:
        """Send again."""
        self._flowing.set()

    def first_2xx_after(self, moment: float) -> float | None:
        """When the first 2xx answered after `moment` arrived, if one has."""
        with self._lock:
            times = [a.at for a in self.answers if 200 <= a.status < 300 and a.at > moment]
        return min(times, default=None)

    def finish(self) -> None:
        """Stop every client thread."""
        self._stop.set()
        for thread in self._threads:
            thread.join()


def _wait_until_accepting(dsn: str, started: threading.Event, out: list[float]) -> None:
    started.set()
    deadline = time.monotonic() + GIVE_UP_SECONDS
    while time.monotonic() < deadline:
        try:
            psycopg.connect(dsn, connect_timeout=1).close()
        except psycopg.OperationalError:
            time.sleep(0.01)
            continue
        out.append(time.monotonic())
        return


def restart(load: Load, mode: str, outage: float, *, quiet: bool, settle: float,
            say: Any = print) -> Restart:
    """Stop PostgreSQL with `mode`, keep it down `outage` seconds, start it, and wait for
    the service's first 2xx after PostgreSQL accepts connections (plus `settle` seconds)."""
    service = load.service
    record = Restart(mode, quiet)
    if quiet:
        load.pause()
    record.stopped_at = time.monotonic()
    service.pg_ctl("-w", "-m", mode, "stop")
    say(f"pg_ctl -m {mode} stop took {time.monotonic() - record.stopped_at:.1f} s")
    time.sleep(outage)
    # A direct connection every 10 ms says when PostgreSQL accepts connections again.
    accepting: list[float] = []
    probing = threading.Event()
    probe = threading.Thread(target=_wait_until_accepting, args=(service.dsn, probing, accepting))
    probe.start()
    probing.wait()
    service.server.ensure_postgres_running()
    probe.join()
    if not accepting:
        raise RuntimeError("PostgreSQL did not accept connections again")
    record.accepting_at = accepting[0]
    if quiet:
        load.resume()
    deadline = record.accepting_at + GIVE_UP_SECONDS
    while (first := load.first_2xx_after(record.accepting_at)) is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.02)
    record.first_2xx_at = first
    time.sleep(settle)
    return record


def run(outage: float = 16.0, clients: int = 8, settle: float = 3.0, seed: int = 11,
        say: Any = print) -> Report:
    """Restart PostgreSQL three times under the service, replay, verify; return the figures."""
    report = Report()
    with gateway("restart") as service:
        load = Load(service, clients, seed)
        try:
            time.sleep(settle)
            for mode, quiet in (("fast", False), ("immediate", False), ("fast", True)):
                record = restart(load, mode, outage, quiet=quiet, settle=settle, say=say)
                report.restarts.append(record)
                say(f"PostgreSQL restarted (-m {mode}, {'quiet' if quiet else 'under load'})")
        finally:
            load.finish()
        for record in report.restarts:
            end = record.first_2xx_at or float("inf")
            for answer in load.answers:
                if record.stopped_at < answer.at <= record.accepting_at:
                    record.during_outage[answer.status] += 1
                elif record.accepting_at < answer.at <= end:
                    record.after_accepting[answer.status] += 1
            say(record.describe())
        report.statuses = Counter(a.status for a in load.answers)
        report.unavailable_without_retry_after = sum(
            1 for a in load.answers if a.status == 503 and not a.retry_after)
        report.sent = len(load.sent)
        report.replayed, report.still_failing = replay_unacknowledged(service.base, load.sent)
        report.expected, report.found, report.violations = acknowledged_in_ledger(
            service, load.sent)
    return report


def main() -> int:
    """Run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outage", type=float, default=16.0,
                        help="seconds PostgreSQL stays stopped (default 16)")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    report = run(args.outage, args.clients)
    statuses = ", ".join(f"{'no answer' if status == 0 else status}: {count}"
                         for status, count in sorted(report.statuses.items()))
    print(f"answers by status {{{statuses}}}; 503s without Retry-After "
          f"{report.unavailable_without_retry_after}")
    print(f"sent {report.sent}, replayed {report.replayed}, still failing after replay "
          f"{report.still_failing}")
    print(f"acknowledged writes by kind {report.expected}; found in the ledger {report.found}")
    print(f"verify-ledger: {'clean' if not report.violations else report.violations}")
    print(f"served again within {RECOVERY_SECONDS:.0f} s of every restart:",
          "yes" if report.recovered else "NO")
    print("database restart:", "OK" if report.sound else "FAILED")
    return 0 if report.sound else 1


if __name__ == "__main__":
    sys.exit(main())
