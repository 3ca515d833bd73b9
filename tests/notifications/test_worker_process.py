"""`billing-gateway worker` as a process: it delivers, SIGTERM lets the attempt in hand
finish, and a worker SIGKILLed mid-delivery leaves the delivery to the next worker."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests
from flask.testing import FlaskClient

from tests.notifications.test_webhook_endpoints import add_endpoint, go_low
from tests.plugins.receiver import Receiver
from tests.plugins.servers import free_port
from tests.plugins.service import TokenFactory


class WorkerProcess:
    """`billing-gateway worker` against the test database."""

    def __init__(self, database_url: str, data_dir: Path, *args: str) -> None:
        env = {**os.environ, "DATABASE_URL": database_url, "BILLING_DATA_DIR": str(data_dir),
               "BILLING_WEBHOOK_ALLOW_PRIVATE": "true", "BILLING_WORKER_THREADS": "2"}
        self.proc = subprocess.Popen(  # noqa: S603  # our own command
            [sys.executable, "-m", "billing_gateway.cli", "worker", *args], env=env,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)

    def output(self) -> str:
        """Everything it printed (after it ended)."""
        assert self.proc.stdout is not None
        return self.proc.stdout.read().decode()


@pytest.fixture
def start_worker(database_url: str, tmp_path: Path) -> Iterator[Any]:
    started: list[WorkerProcess] = []

    def start(*args: str) -> WorkerProcess:
        started.append(WorkerProcess(database_url, tmp_path, *args))
        return started[-1]

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.proc.kill()
        worker.proc.wait(10)
        if worker.proc.stdout is not None:
            worker.proc.stdout.close()


def delivery(owner_conn: psycopg.Connection) -> tuple[str, int]:
    """The one delivery's status and attempts."""
    row = owner_conn.execute("SELECT status, attempts FROM deliveries").fetchone()
    assert row is not None
    return row[0], row[1]


def wait_until(check: Any, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_the_worker_delivers_an_event_soon_after_it_commits(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        receiver: Receiver, owner_conn: psycopg.Connection, start_worker: Any) -> None:
    add_endpoint(client, auth, receiver.url)
    metrics_port = free_port()
    worker = start_worker("--metrics-port", str(metrics_port))
    time.sleep(1.5)  # listening
    committed = time.time()
    go_low(client, auth, credit, org)
    [seen] = receiver.wait_for(1)
    assert seen.at - committed < 2.0  # woken by NOTIFY, not a long poll
    wait_until(lambda: delivery(owner_conn) == ("delivered", 1))
    scraped = requests.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5).text
    assert 'billing_webhook_deliveries_total{outcome="delivered"} 1.0' in scraped
    worker.proc.send_signal(signal.SIGTERM)
    assert worker.proc.wait(15) == 0


def test_sigterm_finishes_the_attempt_in_hand(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        receiver: Receiver, owner_conn: psycopg.Connection, start_worker: Any) -> None:
    receiver.answer_with(200, delay=3)
    add_endpoint(client, auth, receiver.url)
    go_low(client, auth, credit, org)
    worker = start_worker()
    assert receiver.arrived.wait(15)
    worker.proc.send_signal(signal.SIGTERM)  # mid-attempt: the receiver is still answering
    assert worker.proc.wait(15) == 0
    assert delivery(owner_conn) == ("delivered", 1)
    assert "finishing the attempts in hand" in worker.output()
    assert len(receiver.received) == 1


def test_a_worker_killed_mid_delivery_leaves_it_to_the_next(
        client: FlaskClient, auth: TokenFactory, credit: Any, org: uuid.UUID,
        receiver: Receiver, owner_conn: psycopg.Connection, start_worker: Any) -> None:
    receiver.answer_with(200, 200, delay=30)  # the first attempt never ends in time
    add_endpoint(client, auth, receiver.url)
    go_low(client, auth, credit, org)
    first = start_worker()
    assert receiver.arrived.wait(15)
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    assert delivery(owner_conn) == ("pending", 0)  # the attempt never committed
    receiver.answer_with(200)  # the next attempt is answered at once
    receiver.delay = 0
    second = start_worker()
    wait_until(lambda: delivery(owner_conn) == ("delivered", 1))
    ids = {r.headers["Webhook-Id"] for r in receiver.received}
    assert len(receiver.received) == 2 and len(ids) == 1  # at least once, one webhook-id
    second.proc.send_signal(signal.SIGTERM)
    assert second.proc.wait(15) == 0
