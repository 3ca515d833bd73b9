"""Fixtures: the gateway served over HTTP, stripe-sim beside it with every API request it
gets recorded, a gate between stripe-sim's webhooks and the gateway that can hold them, and
`billing-gateway worker` processes charging auto top-ups at stripe-sim.

No `responses` here: every byte goes over a socket, the worker is a real process, and the
only stand-in is stripe-sim itself.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.wrappers import Request, Response

from billing_gateway import create_app
from billing_gateway.platform.auth import issue_token
from billing_gateway.platform.config import Settings
from billing_gateway.platform.json_codec import loads as json_loads
from billing_gateway.platform.local_server import LocalServer
from billing_gateway.topups import stripe_sim
from tests.plugins.browser import WAIT_SECONDS

SIM_SECRET = "whsec_worker_flow_3c9e1a7b5d"  # a throwaway test secret
WEBHOOK = "/api/billing/stripe-webhook"


@dataclass
class StripeCall:
    """One request stripe-sim received: recorded when it arrives, its status once answered."""

    method: str
    path: str
    idempotency_key: str | None
    status: int | None = None


@dataclass
class RecordedStripe:
    """WSGI middleware around stripe-sim: what the gateway and the workers asked of it, in
    the order it arrived, including requests still running and those answered 409."""

    app: Any
    calls: list[StripeCall] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        call = StripeCall(environ["REQUEST_METHOD"], environ["PATH_INFO"],
                          environ.get("HTTP_IDEMPOTENCY_KEY"))
        with self.lock:
            self.calls.append(call)

        def recording_start(status: str, headers: Any, *exc_info: Any) -> Any:
            call.status = int(status.split(" ", 1)[0])
            return start_response(status, headers, *exc_info)

        return self.app(environ, recording_start)

    def intent_posts(self) -> list[StripeCall]:
        """The PaymentIntent creations, oldest first."""
        with self.lock:
            return [c for c in self.calls
                    if c.method == "POST" and c.path == "/v1/payment_intents"]


@dataclass
class HeldEvent:
    """A Stripe event the gate kept: the exact bytes and signature stripe-sim sent."""

    body: bytes
    signature: str

    @property
    def type(self) -> str:
        return str(json.loads(self.body)["type"])

    @property
    def object(self) -> dict[str, Any]:
        found: dict[str, Any] = json.loads(self.body)["data"]["object"]
        return found


@dataclass
class WebhookGate:
    """Between stripe-sim and the gateway's webhook: passes each event on and answers with
    the gateway's answer, or, while held, keeps it and answers 200 (Stripe's delivery ends
    there) until `release` sends the kept ones on, byte for byte."""

    target: str
    held: bool = False
    kept: list[HeldEvent] = field(default_factory=list)
    passed: list[tuple[str, int]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def wsgi(self, environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
        request = Request(environ)
        event = HeldEvent(request.get_data(), request.headers.get("Stripe-Signature", ""))
        with self.changed:
            if self.held:
                self.kept.append(event)
                self.changed.notify_all()
                return Response(b"held", 200)(environ, start_response)
        status = self._forward(event)
        return Response(b"passed", status)(environ, start_response)

    def _forward(self, event: HeldEvent) -> int:
        answer = requests.post(self.target, data=event.body, timeout=10, headers={
            "Content-Type": "application/json; charset=utf-8",
            "Stripe-Signature": event.signature})
        with self.changed:
            self.passed.append((event.type, answer.status_code))
            self.changed.notify_all()
        return answer.status_code

    def hold(self) -> None:
        """Keep the events that arrive from now on."""
        with self.changed:
            self.held = True

    def wait_for_kept(self, count: int, seconds: float = WAIT_SECONDS) -> list[HeldEvent]:
        """The first `count` kept events, once they have arrived."""
        with self.changed:
            if not self.changed.wait_for(lambda: len(self.kept) >= count, seconds):
                raise AssertionError(f"{len(self.kept)} of {count} events reached the gate")
            return list(self.kept[:count])

    def release(self) -> list[tuple[str, int]]:
        """Pass events on again, and send the kept ones to the gateway: their answers."""
        with self.changed:
            self.held = False
            kept, self.kept = self.kept, []
        return [(event.type, self._forward(event)) for event in kept]

    def redeliver(self, event: HeldEvent) -> int:
        """Send an event to the gateway again, as Stripe's retry does: the gateway's status."""
        return self._forward(event)


@dataclass
class FlowStack:
    """The gateway on a local port, stripe-sim (recorded), and the gate between them."""

    url: str
    sim_url: str
    sim: stripe_sim.StripeSim
    stripe_calls: RecordedStripe
    gate: WebhookGate
    settings: Settings

    def headers(self, role: str, org: uuid.UUID | None = None) -> dict[str, str]:
        token = issue_token(self.settings, org_id=org, role=role, subject=f"flow-{role}")
        return {"Authorization": f"Bearer {token}"}

    def api(self, method: str, path: str, role: str = "member", org: uuid.UUID | None = None,
            headers: dict[str, str] | None = None, **kwargs: Any) -> requests.Response:
        """Call the JSON API as a role, with a bounded timeout."""
        return requests.request(method, f"{self.url}/api/billing{path}", timeout=10,
                                headers={**self.headers(role, org), **(headers or {})},
                                **kwargs)

    def json(self, answer: requests.Response) -> Any:
        """An answer's JSON with exact decimals (the API's amounts are JSON numbers)."""
        return json_loads(answer.content)

    def balance(self, org: uuid.UUID) -> Decimal:
        answer = self.api("GET", "/balance", "member", org)
        assert answer.status_code == 200, answer.text
        return Decimal(str(self.json(answer)["balance"]))

    def auto_top_up(self, org: uuid.UUID) -> dict[str, Any]:
        """GET /auto-top-up as the org's member."""
        answer = self.api("GET", "/auto-top-up", "member", org)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = self.json(answer)
        return found

    def charge(self, org: uuid.UUID, cost: str) -> dict[str, Any]:
        """One SMS at `cost`, charged as the SMS sender does (POST /deduct)."""
        answer = self.api("POST", "/deduct", "service", json={
            "orgId": str(org), "smsCount": 1, "costPerSms": cost,
            "messageId": f"flow-{uuid.uuid4()}"})
        assert answer.status_code == 201, answer.text
        found: dict[str, Any] = self.json(answer)
        return found

    def pay_saving_the_card(self, org: uuid.UUID, amount: str) -> dict[str, Any]:
        """A member's Checkout top-up with saveCard, paid on stripe-sim's page: the
        gateway's answer to create-checkout."""
        answer = self.api("POST", "/create-checkout", "member", org,
                          headers={"Idempotency-Key": f"flow-{uuid.uuid4()}"},
                          json={"amount": amount, "saveCard": True})
        assert answer.status_code == 201, answer.text
        session: dict[str, Any] = answer.json()
        assert "saves it" in requests.get(session["url"], timeout=10).text  # the pay page
        paid = requests.post(f"{session['url']}/pay", allow_redirects=False, timeout=10)
        assert paid.status_code == 303, paid.text
        return session

    def sim_intents(self) -> list[dict[str, Any]]:
        """Every PaymentIntent stripe-sim holds, as GET /v1/payment_intents lists them."""
        answer = requests.get(f"{self.sim_url}/v1/payment_intents", params={"limit": 100},
                              timeout=10)
        assert answer.status_code == 200, answer.text
        listed: dict[str, Any] = answer.json()
        assert listed["has_more"] is False
        return list(listed["data"])

    def script_charge(self, **body: Any) -> None:
        """POST /sim/next-charge: how stripe-sim ends the next API-confirmed charge."""
        answer = requests.post(f"{self.sim_url}/sim/next-charge", json=body, timeout=10)
        assert answer.status_code == 201, answer.text


@pytest.fixture
def flow_stack(settings: Settings) -> Iterator[FlowStack]:
    """The gateway over HTTP, paying through a recorded stripe-sim whose webhooks pass
    through a gate to the gateway; fresh for each test."""
    gateway, sim_server, gate_server = LocalServer(), LocalServer(), LocalServer()
    gate = WebhookGate(f"{gateway.url}{WEBHOOK}")
    sim = stripe_sim.StripeSim(sim_server.url, f"{gate_server.url}/stripe", SIM_SECRET)
    recorded = RecordedStripe(sim.app())
    sim_server.serve(recorded)
    gate_server.serve(gate.wsgi)
    served = settings.with_overrides(stripe_api_base=sim_server.url,
                                     stripe_webhook_secrets=(SIM_SECRET,),
                                     public_url=gateway.url, checkout_origin=sim_server.url)
    app = create_app(served)
    gateway.serve(app)
    try:
        yield FlowStack(gateway.url, sim_server.url, sim, recorded, gate, served)
    finally:
        gateway.stop()
        gate_server.stop()
        sim_server.stop()
        app.extensions["billing_pool"].close()


class WorkerProcess:
    """`billing-gateway worker` against the test database, charging at stripe-sim; its
    output goes to a file (a pipe nobody reads could fill and stall it)."""

    def __init__(self, env: dict[str, str], log: Path) -> None:
        self.log = log
        with log.open("wb") as output:
            self.proc = subprocess.Popen(  # our own command, no shell
                [sys.executable, "-m", "billing_gateway.cli", "worker"], env=env,
                stdout=output, stderr=subprocess.STDOUT)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def kill(self) -> None:
        """SIGKILL: no handler runs, nothing is finished or rolled forward."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        """SIGTERM, as a deployment stops it; its exit status."""
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(15)


WorkerFactory = Callable[..., WorkerProcess]


@pytest.fixture
def flow_worker(database_url: str, flow_stack: FlowStack, tmp_path: Path
                 ) -> Iterator[WorkerFactory]:
    """Start `billing-gateway worker` processes (extra environment as keyword arguments:
    STRIPE_TIMEOUT="10"); each still running at the end is killed, and a failed test shows
    what each printed."""
    started: list[WorkerProcess] = []
    # Nothing of the test runner's own Stripe or database settings leaks in.
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("STRIPE_", "BILLING_", "DATABASE_URL"))}

    def start(**extra: str) -> WorkerProcess:
        env = {**base, "DATABASE_URL": database_url, "BILLING_DATA_DIR": str(tmp_path),
               "STRIPE_SECRET_KEY": "sk_test_worker_flow", "STRIPE_API_BASE": flow_stack.sim_url,
               "BILLING_WORKER_THREADS": "2", **extra}
        started.append(WorkerProcess(env, tmp_path / f"worker-{len(started) + 1}.log"))
        return started[-1]

    yield start
    for worker in started:
        if worker.proc.poll() is None:
            worker.kill()
    for number, worker in enumerate(started, 1):
        sys.stdout.write(f"--- worker {number} (exit {worker.proc.returncode}) ---\n"
                         f"{worker.output()}")
