"""Serving in production: gunicorn's own refusals in the contract's JSON shape, and behind
nginx with deploy/nginx.conf, charges that answer quickly while slow clients hold
connections, and nginx's own refusals in the same shape."""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from bench.run import SECRET, start_service
from bench.scratch import free_port, nginx_in_front, nginx_path, percentile
from bench.slow_clients import SlowClients, fund, timed_charges
from billing_gateway.platform.auth import issue_token
from billing_gateway.platform.config import Settings
from tests.plugins.servers import Served

# Not in the everyday loop (-m "not slow"): gunicorn and nginx of their own, 120 slow clients.
pytestmark = pytest.mark.slow


def require_nginx() -> None:
    """Skip without nginx on a developer's machine; in CI (CI set) a missing nginx fails."""
    if nginx_path() is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed: .ci/run installs it from Debian's packages")
        pytest.skip("nginx is not installed (apt-get install nginx)")


@pytest.fixture(scope="module")
def service_port(database_url: str) -> Iterator[int]:
    """The service under gunicorn with billing_gateway/gunicorn_conf.py, on 127.0.0.1."""
    port = free_port()
    service = start_service(database_url, port)
    yield port
    service.terminate()
    service.wait(timeout=20)


@pytest.fixture(scope="module")
def proxy_port(service_port: int) -> Iterator[int]:
    """nginx with deploy/nginx.conf in front of the service."""
    require_nginx()
    with nginx_in_front(f"127.0.0.1:{service_port}") as port:
        yield port


@pytest.fixture
def service_token(settings: Settings) -> str:
    """A token of the SMS sender, signed with the secret the gunicorn service uses."""
    return issue_token(settings.with_overrides(jwt_secret=SECRET), org_id=None,
                       role="service", subject="test-serving")


def exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes to 127.0.0.1:port; return the answer's status, headers and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        received = b""
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            chunk = conn.recv(65536)
            if not chunk:
                break
            received += chunk
            head, _, body = received.partition(b"\r\n\r\n")
            length = [line for line in head.lower().split(b"\r\n")
                      if line.startswith(b"content-length:")]
            if length and len(body) >= int(length[0].split(b":")[1]):
                break
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {name.strip().lower(): value.strip()
               for name, _, value in (line.partition(":") for line in lines)}
    return int(status_line.split()[1]), headers, body


def assert_json_error(answer: tuple[int, dict[str, str], bytes], status: int,
                      code: str) -> dict[str, str]:
    """The answer is `status` with the contract's error shape and `code`; return the error."""
    got_status, headers, body = answer
    assert got_status == status, body
    assert headers["content-type"] == "application/json", body
    assert headers.get("x-request-id")
    error: dict[str, str] = json.loads(body)["error"]
    assert set(error) == {"code", "message"}
    assert error["code"] == code
    assert error["message"]
    return error


LONG_LINE = b"GET /api/billing/balance?pad=" + b"a" * 5000 + b" HTTP/1.1\r\nHost: t\r\n\r\n"
MANY_HEADERS = (b"GET /healthz HTTP/1.1\r\nHost: t\r\n"
                + b"".join(b"X-Field-%d: v\r\n" % n for n in range(101)) + b"\r\n")
LARGE_HEADER = b"GET /healthz HTTP/1.1\r\nHost: t\r\nX-Large: " + b"v" * 9000 + b"\r\n\r\n"
BAD_LINE = b"NOT AN HTTP REQUEST LINE\r\n\r\n"


# -- gunicorn, directly -------------------------------------------------------------------

def test_gunicorn_answers_an_overlong_request_line_with_json_414(service_port: int) -> None:
    error = assert_json_error(exchange(service_port, LONG_LINE), 414, "validation_error")
    assert "4094" in error["message"]  # the limit set in gunicorn_conf.py


def test_gunicorn_answers_too_many_headers_with_json_431(service_port: int) -> None:
    assert_json_error(exchange(service_port, MANY_HEADERS), 431, "validation_error")


def test_gunicorn_answers_an_oversized_header_with_json_431(service_port: int) -> None:
    assert_json_error(exchange(service_port, LARGE_HEADER), 431, "validation_error")


def test_gunicorn_answers_a_malformed_request_line_with_json_400(service_port: int) -> None:
    assert_json_error(exchange(service_port, BAD_LINE), 400, "validation_error")


def test_serve_command_answers_gunicorns_refusals_with_json(tmp_path: Path) -> None:
    port = free_port()
    served = Served(tmp_path / "data", port)
    try:
        assert_json_error(exchange(port, LONG_LINE), 414, "validation_error")
        assert_json_error(exchange(port, BAD_LINE), 400, "validation_error")
    finally:
        assert served.ctrl_c() == 0


# -- behind nginx -------------------------------------------------------------------------

def test_charges_through_nginx_stay_fast_while_120_slow_clients_hold_connections(
        proxy_port: int, database_url: str, owner_conn: psycopg.Connection,
        service_token: str) -> None:
    org = uuid.uuid4()
    fund(database_url, org)
    # 120 connections sending headers a byte per 0.5 s: straight at gunicorn, the first 8
    # pin its 8 threads (2 workers x 4) and every charge waits (bench/slow_clients.py).
    with SlowClients(proxy_port, count=120, interval=0.5, limit=9) as slow:
        time.sleep(1)
        latencies, errors = timed_charges(f"http://127.0.0.1:{proxy_port}", service_token,
                                          org, seconds=5, timeout=5)
        held = slow.still_waiting()
    assert slow.connect_failures == 0
    # nginx still held (nearly) every slow connection when the charges ended: the attack
    # was on all along. Its client_header_timeout (10 s) had not yet run out.
    assert held >= 110, f"only {held} slow connections were still open"
    assert errors == []
    assert len(latencies) >= 30
    assert percentile(latencies, 99) < 1.0, sorted(latencies)[-5:]
    charged = owner_conn.execute(
        "SELECT count(*) FROM billing_transactions WHERE org_id = %s AND type = 'sms_send'",
        (org,)).fetchone()
    assert charged == (len(latencies),)


@pytest.mark.parametrize(("request_bytes", "status", "code"), [
    pytest.param(b"GET /healthz HTTP/1.1\r\n\r\n", 400, "validation_error", id="no-host"),
    pytest.param(BAD_LINE, 400, "validation_error", id="bad-request-line"),
    pytest.param(b"GET /api/billing/balance?pad=" + b"a" * 9000 + b" HTTP/1.1\r\nHost: t\r\n\r\n",
                 414, "validation_error", id="request-line-over-8k"),
    pytest.param(b"GET /x.html HTTP/1.1\r\nHost: t\r\nX-Large: " + b"v" * 9000 + b"\r\n\r\n",
                 431, "validation_error", id="header-over-8k"),
    pytest.param(b"POST /api/billing/deduct/bulk HTTP/1.1\r\nHost: t\r\n"
                 b"Content-Type: application/json\r\nContent-Length: 2000000\r\n\r\n",
                 413, "payload_too_large", id="body-over-1mib"),
    pytest.param(b"GET /_nginx_errors/400 HTTP/1.1\r\nHost: t\r\n\r\n", 404, "not_found",
                 id="error-page-from-outside"),
])
def test_nginx_refusals_are_json(proxy_port: int, request_bytes: bytes, status: int,
                                 code: str) -> None:
    assert_json_error(exchange(proxy_port, request_bytes), status, code)


def test_nginx_answers_json_502_when_gunicorn_is_down() -> None:
    require_nginx()
    with nginx_in_front(f"127.0.0.1:{free_port()}") as port:  # nothing listens there
        answer = exchange(port, b"GET /api/billing/balance HTTP/1.1\r\nHost: t\r\n\r\n")
    assert_json_error(answer, 502, "service_unavailable")
    assert answer[1]["retry-after"] == "1"  # the client retries it, with the same key


def test_nginx_passes_the_apps_own_errors_unchanged(proxy_port: int) -> None:
    answer = exchange(proxy_port, b"GET /api/billing/balance HTTP/1.1\r\nHost: t\r\n"
                                  b"X-Request-Id: serving-test-1\r\n\r\n")
    assert_json_error(answer, 401, "unauthorized")
    assert answer[1]["x-request-id"] == "serving-test-1"  # the app's answer, not nginx's
