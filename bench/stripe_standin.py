"""A local Stripe stand-in that is slow or silent, for proving a slow Stripe stops nothing else.

Modes, for POST /v1/checkout/sessions:

- ``slow``: read the request, wait ``delay`` seconds, then answer 200 with a Checkout
  Session shaped like Stripe's (tests/stripe_objects.py), for the org and amount asked;
- ``silent``: accept the connection, read the request, never answer.

It listens on 127.0.0.1 only, on a free port, and stops by itself after ``lifetime``
seconds; stopping it closes every connection it still holds. It counts the calls it got
and the most that were open at once (a call ends when answered or when the caller hangs
up), which is how many threads the service had waiting on Stripe.

    python bench/stripe_standin.py --mode silent --lifetime 300   # prints its base URL
"""

from __future__ import annotations

import argparse
import json
import select
import socket
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests import stripe_objects

SESSIONS_PATH = "/v1/checkout/sessions"
MODES = ("slow", "silent")
# How often a held call looks whether its caller hung up, or the stand-in is stopping.
POLL_SECONDS = 0.1


class StripeStandin:
    """A threaded HTTP server on 127.0.0.1 that answers Checkout late, or never."""

    def __init__(self, mode: str = "slow", delay: float = 12.0, lifetime: float = 120.0) -> None:
        self.mode, self.delay, self.lifetime = "slow", 0.0, lifetime
        self.calls = self.answered = self.abandoned = 0
        self.open_calls = self.peak_open_calls = 0
        self._lock = threading.Lock()
        self.behave(mode, delay)
        self._stopping = threading.Event()
        self._server = _Server(("127.0.0.1", 0), _Handler)
        self._server.standin = self
        self._serving: threading.Thread | None = None
        self._timer: threading.Timer | None = None

    def behave(self, mode: str, delay: float = 0.0) -> None:
        """Switch how calls from now on are answered (a warm-up runs with slow, 0 s)."""
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        with self._lock:
            self.mode, self.delay = mode, delay

    def reset_counts(self) -> None:
        """Forget the calls counted so far (the peak starts from the calls open now)."""
        with self._lock:
            self.calls = self.answered = self.abandoned = 0
            self.peak_open_calls = self.open_calls

    @property
    def base_url(self) -> str:
        """Where the service should send its Stripe calls (STRIPE_API_BASE)."""
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> StripeStandin:
        """Serve in a background thread until stop() or the end of the lifetime."""
        self._serving = threading.Thread(target=self._server.serve_forever,
                                         kwargs={"poll_interval": POLL_SECONDS},
                                         name="stripe-standin", daemon=True)
        self._serving.start()
        self._timer = threading.Timer(self.lifetime, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        """Release every held call (closing it unanswered) and stop listening; idempotent."""
        if self._stopping.is_set():
            return
        self._stopping.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._serving is not None:  # shutdown() waits for serve_forever() to return
            self._server.shutdown()
        self._server.server_close()
        # Held calls notice the stop within POLL_SECONDS; wait for them, boundedly.
        deadline = time.monotonic() + 5
        while self.open_calls and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS / 2)

    @property
    def stopping(self) -> bool:
        """Tell whether stop() was called (or the lifetime ran out)."""
        return self._stopping.is_set()

    def wait(self, seconds: float) -> bool:
        """Wait until stopped, at most `seconds`; tell whether it stopped."""
        return self._stopping.wait(seconds)

    def __enter__(self) -> StripeStandin:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stats(self) -> dict[str, Any]:
        """What Stripe saw: calls, answers, hang-ups and the most calls open at once."""
        with self._lock:
            return {"mode": self.mode, "delay_s": self.delay if self.mode == "slow" else None,
                    "calls": self.calls, "answered": self.answered,
                    "abandoned_by_caller": self.abandoned,
                    "peak_open_calls": self.peak_open_calls}

    def call_opened(self) -> tuple[str, float]:
        """Count a call; return the mode and delay it gets."""
        with self._lock:
            self.calls += 1
            self.open_calls += 1
            self.peak_open_calls = max(self.peak_open_calls, self.open_calls)
            return self.mode, self.delay

    def call_closed(self, *, answered: bool, abandoned: bool) -> None:
        """Count a call's end: answered, or left by its caller."""
        with self._lock:
            self.open_calls -= 1
            self.answered += answered
            self.abandoned += abandoned

    def hold(self, connection: socket.socket, seconds: float) -> bool:
        """Hold the call up to `seconds`; False when its caller hung up or we are stopping."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._stopping.is_set():
                return False
            readable, _, _ = select.select([connection], [], [], min(POLL_SECONDS, left))
            if readable:
                try:
                    if connection.recv(1, socket.MSG_PEEK) == b"":
                        return False  # the caller closed: its timeout fired
                except OSError:
                    return False
                # Bytes from the caller (it pipelines?): it is still there; keep holding.
                time.sleep(POLL_SECONDS)
        return not self._stopping.is_set()


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a held call must never keep the interpreter alive
    standin: StripeStandin


class _Handler(BaseHTTPRequestHandler):
    server: _Server

    def do_POST(self) -> None:
        """Hold a Checkout Session creation, then answer it late (slow) or never (silent)."""
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0] != SESSIONS_PATH:
            message = f"Unrecognized request URL (POST: {self.path})."
            self._reply(404, {"error": {"type": "invalid_request_error", "message": message}})
            return
        standin = self.server.standin
        mode, delay = standin.call_opened()
        answered = False
        try:
            held = standin.hold(self.connection, delay if mode == "slow" else standin.lifetime)
            if held and mode == "slow":
                self._reply(200, _session_for(body))
                answered = True
        finally:
            standin.call_closed(answered=answered, abandoned=not answered
                            and not standin.stopping)
        self.close_connection = True

    def _reply(self, status: int, payload: dict[str, Any]) -> None:
        data = json.dumps(payload).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Request-Id", f"req_{uuid.uuid4().hex[:14]}")
            self.end_headers()
            self.wfile.write(data)
        except OSError:
            pass  # the caller left between our check and the answer; nothing to tell

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: a benchmark prints its own figures."""


def _session_for(form: bytes) -> dict[str, Any]:
    """An open Checkout Session for the org and amount of a form-encoded create request."""
    fields = parse_qs(form.decode(errors="replace"))
    org_text = fields.get("metadata[org_id]", [""])[0]
    try:
        org: uuid.UUID | None = uuid.UUID(org_text)
    except ValueError:
        org = None
    amount_text = fields.get("line_items[0][price_data][unit_amount]", ["0"])[0]
    currency = fields.get("line_items[0][price_data][currency]", ["usd"])[0]
    return stripe_objects.checkout_session(
        org=org, amount_total=int(amount_text) if amount_text.isdigit() else 0,
        currency=currency, status="open", payment_status="unpaid")


def main() -> int:
    """Run a stand-in until its lifetime ends (or Ctrl-C) and print what it saw."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=MODES, default="slow")
    parser.add_argument("--delay", type=float, default=12.0, help="seconds, for slow")
    parser.add_argument("--lifetime", type=float, default=300.0, help="seconds before it stops")
    args = parser.parse_args()
    standin = StripeStandin(args.mode, args.delay, args.lifetime).start()
    print(f"STRIPE_API_BASE={standin.base_url}  ({args.mode}; stops in {args.lifetime:g} s)",
          flush=True)
    try:
        standin.wait(args.lifetime)
    except KeyboardInterrupt:
        pass
    standin.stop()
    print(json.dumps(standin.stats()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
