"""`billing-gateway worker`: threads that fan events out, attempt deliveries and charge auto
top-ups until stopped.

Stopping (SIGTERM, SIGINT) lets each thread finish the attempt in hand, then exit; nothing
is claimed after the signal. A LISTEN on billing_outbox wakes the threads when an event
commits; without it they look every POLL_SECONDS.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Callable

import psycopg

from billing_gateway.autotopup import attempts as auto_topups
from billing_gateway.notifications import deliveries
from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import as_app_role
from billing_gateway.topups import stripe_client

POLL_SECONDS = 1.0
log = logging.getLogger(__name__)


class Worker:
    """Delivery threads over their own connections, and one listener that wakes them."""

    def __init__(self, settings: Settings, dsn: str, *, threads: int | None = None,
                 on_attempt: Callable[[str], None] | None = None) -> None:
        self.settings, self.dsn = settings, dsn
        self.threads = threads or settings.worker_threads
        self.stop = threading.Event()
        self.wake = threading.Event()
        self.on_attempt = on_attempt
        # Auto top-ups charge through Stripe; without a key there is nothing to charge with.
        self.stripe = (stripe_client.make_client(settings) if settings.stripe_secret_key
                       else None)

    def run(self) -> None:
        """Work until `stop` is set, then wait for every attempt in hand to end."""
        workers = [threading.Thread(target=self._deliver, name=f"delivery-{i}", daemon=True)
                   for i in range(self.threads)]
        listener = threading.Thread(target=self._listen, name="outbox-listener", daemon=True)
        for thread in [*workers, listener]:
            thread.start()
        for thread in workers:
            thread.join()

    def _connect(self) -> psycopg.Connection:
        conn = psycopg.connect(self.dsn, autocommit=True, connect_timeout=5)
        as_app_role(conn, self.settings.low_balance_default)
        return conn

    def _deliver(self) -> None:
        rng = random.Random()  # noqa: S311  # jitter, not secrecy
        while not self.stop.is_set():
            try:
                with self._connect() as conn:
                    while not self.stop.is_set():
                        deliveries.dispatch(conn, self.settings)
                        if self.stop.is_set():  # told to stop while dispatching: claim nothing
                            break
                        outcome = deliveries.attempt_next(conn, self.settings, rng)
                        if outcome is None and self.stripe is not None:
                            outcome = auto_topups.attempt_next(conn, self.settings, self.stripe)
                        if outcome is not None:
                            if self.on_attempt is not None:
                                self.on_attempt(outcome)
                            continue
                        self.wake.wait(POLL_SECONDS)
                        self.wake.clear()
            except psycopg.OperationalError as exc:
                log.warning("worker lost its database connection: %s", exc)
                self.stop.wait(POLL_SECONDS)
            except Exception:
                # A thread that died would silently halve the worker: say it, go on.
                log.exception("delivery thread failed; starting again")
                self.stop.wait(POLL_SECONDS)

    def _listen(self) -> None:
        while not self.stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute("LISTEN billing_outbox")
                    while not self.stop.is_set():
                        for _ in conn.notifies(timeout=POLL_SECONDS, stop_after=1):
                            self.wake.set()
            except psycopg.OperationalError:
                self.stop.wait(POLL_SECONDS)


def stop_with_parent(worker: Worker, parent_pid: int) -> None:
    """Stop the worker when the process that started it is gone (serve's embedded worker)."""
    def watch() -> None:
        while not worker.stop.wait(POLL_SECONDS):
            if os.getppid() != parent_pid:
                worker.stop.set()
    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
