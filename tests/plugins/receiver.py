"""A real HTTP receiver of outbound webhooks on a loopback port: it records every request
and answers from a script (status codes, headers, a delay)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from werkzeug.wrappers import Request, Response

from billing_gateway.platform.local_server import LocalServer


@dataclass
class Received:
    """One request as the receiver saw it."""

    headers: dict[str, str]
    body: bytes
    at: float


@dataclass
class Receiver:
    """Answers each request with the next scripted answer (the last one repeats)."""

    url: str
    answers: list[tuple[int, dict[str, str]]] = field(default_factory=lambda: [(200, {})])
    delay: float = 0.0
    body: bytes | None = None  # what a failing answer says (default b"nope")
    received: list[Received] = field(default_factory=list)
    arrived: threading.Event = field(default_factory=threading.Event)

    def answer_with(self, *answers: int | tuple[int, dict[str, str]], delay: float = 0.0) -> None:
        """Script the answers: status codes, or (status, headers)."""
        self.answers = [a if isinstance(a, tuple) else (a, {}) for a in answers]
        self.delay = delay

    def wsgi(self, environ: dict, start_response: object) -> object:
        """Record the request, wait `delay`, answer."""
        request = Request(environ)
        self.received.append(Received(dict(request.headers), request.get_data(), time.time()))
        self.arrived.set()
        status, headers = self.answers[min(len(self.received), len(self.answers)) - 1]
        time.sleep(self.delay)
        return Response(b"ok" if status < 300 else (self.body or b"nope"), status=status,
                        headers=headers)(environ, start_response)

    def wait_for(self, count: int, seconds: float = 15.0) -> list[Received]:
        """The first `count` requests, once they have arrived."""
        deadline = time.monotonic() + seconds
        while len(self.received) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"{len(self.received)} of {count} deliveries arrived")
            time.sleep(0.05)
        return self.received[:count]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 (allowed only with BILLING_WEBHOOK_ALLOW_PRIVATE)."""
    server = LocalServer()
    found = Receiver(f"{server.url}/hooks/billing")
    server.serve(found.wsgi)
    try:
        yield found
    finally:
        server.stop()
