"""Slow clients (slowloris) against gunicorn directly, and through nginx with deploy/nginx.conf.

Starts PostgreSQL (embedded, or DATABASE_URL's server), the service under gunicorn with its
production settings (billing_gateway/gunicorn_conf.py) and nginx in front of it, then for
each target opens CONNECTIONS connections that send a charge's headers one byte every
half second, and meanwhile sends charges (POST /api/billing/deduct) one after another,
each with a time limit. Prints the charges' p50/p99 and errors per target.

    python bench/slow_clients.py                  # 120 slow connections, 10 s per target
    python bench/slow_clients.py --connections 200 --seconds 20
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import SECRET, start_service
from bench.scratch import bench_settings, free_port, nginx_in_front, percentile, scratch_database
from billing_gateway.platform.auth import issue_token

# The request line and the start of the headers go at once (so gunicorn commits a thread
# to the connection at once); then one byte of a header that never ends.
SLOW_REQUEST_START = (b"POST /api/billing/deduct HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                      b"Content-Type: application/json\r\nX-Slow: ")


class SlowClients:
    """`count` connections to 127.0.0.1:port, each sending one more header byte every
    `interval` seconds, for at most `limit` seconds."""

    def __init__(self, port: int, count: int = 120, interval: float = 0.5,
                 limit: float = 30.0) -> None:
        self.port, self.count, self.interval, self.limit = port, count, interval, limit
        self.sockets: list[socket.socket] = []
        self.connect_failures = 0
        self.send_failures = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._drip, daemon=True)

    def __enter__(self) -> SlowClients:
        for _ in range(self.count):
            try:
                conn = socket.create_connection(("127.0.0.1", self.port), timeout=2)
                conn.sendall(SLOW_REQUEST_START)
            except OSError:
                self.connect_failures += 1
                continue
            conn.setblocking(False)
            self.sockets.append(conn)
        self._thread.start()
        return self

    def _drip(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.wait(self.interval) and time.monotonic() < deadline:
            for conn in self.sockets:
                try:
                    conn.send(b"a")
                except OSError:  # the server gave up on it (or answered and closed)
                    self.send_failures += 1

    def still_waiting(self) -> int:
        """How many connections the server still holds open without having answered."""
        waiting = 0
        for conn in self.sockets:
            try:
                if conn.recv(1, socket.MSG_PEEK) == b"":
                    continue  # closed by the server
            except BlockingIOError:
                waiting += 1  # open, nothing sent back: still reading our headers
            except OSError:
                continue  # reset by the server
        return waiting

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        for conn in self.sockets:
            conn.close()


def fund(dsn: str, org: uuid.UUID, amount: int = 1_000_000) -> None:
    """Give org enough credit that no charge is refused for funds."""
    with psycopg.connect(dsn, autocommit=True) as owner, owner.transaction():
        owner.execute("SELECT set_config('billing.org_id', %s, true)", (str(org),))
        owner.execute("SELECT add_credits(%s, %s, 'bonus')", (org, amount))


def timed_charges(base: str, token: str, org: uuid.UUID, seconds: float,
                  timeout: float) -> tuple[list[float], list[str]]:
    """Charge one SMS at a time for `seconds`; return each charge's seconds and the errors
    (statuses other than 201, or exceptions), at most seconds / 0.02 + 1 charges."""
    latencies: list[float] = []
    errors: list[str] = []
    session = requests.Session()
    headers = {"Authorization": f"Bearer {token}"}
    run = uuid.uuid4().hex[:8]
    deadline = time.monotonic() + seconds
    for n in range(int(seconds / 0.02) + 1):
        if time.monotonic() >= deadline:
            break
        started = time.monotonic()
        try:
            response = session.post(
                f"{base}/api/billing/deduct", headers=headers, timeout=timeout,
                json={"orgId": str(org), "smsCount": 1, "costPerSms": "0.0075",
                      "messageId": f"slow-{run}-{n}"})
            if response.status_code != 201:
                errors.append(f"HTTP {response.status_code}: {response.text[:100]}")
        except requests.RequestException as exc:
            errors.append(type(exc).__name__)
        latencies.append(time.monotonic() - started)
        time.sleep(0.02)  # a steady trickle, not a load test
    session.close()
    return latencies, errors


def main() -> int:
    """Measure charges beside slow clients, at gunicorn and through nginx."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, default=120)
    parser.add_argument("--seconds", type=float, default=10.0, help="per target")
    parser.add_argument("--timeout", type=float, default=3.0, help="per charge")
    args = parser.parse_args()
    rows = []
    with scratch_database() as dsn:
        org = uuid.uuid4()
        fund(dsn, org)
        token = issue_token(bench_settings(dsn).with_overrides(jwt_secret=SECRET),
                            org_id=None, role="service", subject="bench-slow-clients")
        port = free_port()
        service = start_service(dsn, port)
        try:
            with nginx_in_front(f"127.0.0.1:{port}") as proxy_port:
                targets = [("through nginx, no slow clients", proxy_port, 0),
                           ("gunicorn directly", port, args.connections),
                           ("through nginx (deploy/nginx.conf)", proxy_port, args.connections)]
                for name, target, count in targets:
                    with SlowClients(target, count, limit=args.seconds + 5) as slow:
                        time.sleep(1)  # let the slow connections take their places
                        held_before = slow.still_waiting()
                        latencies, errors = timed_charges(
                            f"http://127.0.0.1:{target}", token, org, args.seconds,
                            args.timeout)
                        held_after = slow.still_waiting()
                    rows.append((name, count, held_before, held_after, len(latencies), len(errors),
                                 percentile(latencies, 50) * 1000,
                                 percentile(latencies, 99) * 1000,
                                 sorted(set(errors))[:3]))
                    time.sleep(2)  # gunicorn's threads come back once the sockets close
        finally:
            service.terminate()
            service.wait(timeout=20)
    print(f"\n{args.connections} slow connections (one header byte per 0.5 s), charges one"
          f" at a time for {args.seconds:.0f} s, {args.timeout:.0f} s limit per charge:\n")
    print("| target | slow connections | open before / after the charges | charges | errors |"
          " p50 ms | p99 ms | errors seen |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, count, before, after, sent, failed, p50, p99, seen in rows:
        print(f"| {name} | {count} | {before} / {after} | {sent} | {failed} | {p50:.1f} |"
              f" {p99:.1f} | {', '.join(seen) or '-'} |")
    print("\nnginx drops a connection whose headers are not complete 10 s after they began"
          " (client_header_timeout); gunicorn keeps it as long as bytes keep coming.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
