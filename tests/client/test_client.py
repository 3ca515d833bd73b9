"""billing_gateway.client against the real app served over HTTP on a local port."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any

import psycopg
import pytest
from flask import Flask
from werkzeug.serving import make_server

from billing_gateway import client as billing
from billing_gateway.platform.auth import issue_token
from billing_gateway.platform.config import Settings


class LoseAnswers:
    """WSGI middleware: runs the real app, then answers the first `count` POSTs with `status`.

    The write has committed by then: this is the answer lost on the way back, the case
    a retry with the same Idempotency-Key must not turn into a second charge.
    """

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.count = 0
        self.status = "503 Service Unavailable"
        self.seen_keys: list[str | None] = []

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        if environ["REQUEST_METHOD"] == "POST":
            self.seen_keys.append(environ.get("HTTP_IDEMPOTENCY_KEY"))
        if environ["REQUEST_METHOD"] == "POST" and self.count > 0:
            self.count -= 1
            body = b"".join(self.app(environ, lambda *args: None))
            assert body  # the app answered; the answer is dropped
            start_response(self.status, [("Content-Type", "text/plain")])
            return [b"lost"]
        return self.app(environ, start_response)


@pytest.fixture
def served(app: Flask) -> Iterator[tuple[str, LoseAnswers]]:
    """The app on 127.0.0.1:<free port>, behind LoseAnswers."""
    proxy = LoseAnswers(app)
    server = make_server("127.0.0.1", 0, proxy, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", proxy
    server.shutdown()
    thread.join()


@pytest.fixture
def connect(served: tuple[str, LoseAnswers], settings: Settings) -> Callable[..., Any]:
    """Build a client for a role (and org)."""

    def make(role: str, org: uuid.UUID | None = None, **options: Any) -> billing.BillingClient:
        token = issue_token(settings, org_id=org, role=role, subject=f"client-{role}")
        return billing.BillingClient(served[0], token, backoff=0.01, **options)

    return make


def test_money_round_trip_is_exact(connect: Callable[..., Any], org: uuid.UUID) -> None:
    admin, service = connect("admin"), connect("service")
    credit = admin.add_funds(Decimal("10.00"), org_id=org, type="bonus")
    assert credit["message"] == "Credits added successfully"
    charge = service.deduct(org, "m-1", 3, cost_per_sms=Decimal("0.0075"))
    assert charge["balance"] == Decimal("9.9775")
    assert isinstance(charge["balance"], Decimal)
    balance = connect("member", org).get_balance()
    assert (balance["balance"], balance["formatted"], balance["smsPrice"]) == (
        Decimal("9.9775"), "$9.97", Decimal("0.0075"))
    assert service.get_balance(org, required="9.9776")["sufficient"] is False


def test_typed_errors(connect: Callable[..., Any], org: uuid.UUID, served: tuple) -> None:
    service, member = connect("service"), connect("member", org)
    with pytest.raises(billing.InsufficientFunds) as refused:
        service.deduct(org, "m-1")
    assert (refused.value.status, refused.value.code) == (402, "insufficient_funds")
    with pytest.raises(billing.Forbidden):
        member.deduct(org, "m-1")
    with pytest.raises(billing.ValidationError) as invalid:
        service.deduct(org, "m-1", 0)
    assert "smsCount" in invalid.value.fields
    with pytest.raises(billing.NotFound):
        service.refund_usage(org, "never-sent")
    with pytest.raises(billing.Unauthorized):
        billing.BillingClient(served[0], "not-a-token").get_balance()
    admin = connect("admin")
    admin.add_funds("1.00", org_id=org, idempotency_key="same")
    with pytest.raises(billing.IdempotencyConflict):
        admin.add_funds("2.00", org_id=org, idempotency_key="same")


def test_lost_answers_are_retried_with_one_key_and_charge_once(
    connect: Callable[..., Any], served: tuple[str, LoseAnswers], org: uuid.UUID,
    owner_conn: psycopg.Connection,
) -> None:
    connect("admin").add_funds("5.00", org_id=org)
    proxy = served[1]
    proxy.seen_keys.clear()
    proxy.count = 2  # the first two answers are lost after the charge committed
    charge = connect("service").deduct(org, "retried", cost_per_sms="1.00")
    assert charge["balance"] == Decimal("4.00")
    assert len(proxy.seen_keys) == 3 and len(set(proxy.seen_keys)) == 1
    proxy.count, proxy.status = 1, "500 Internal Server Error"
    bulk = connect("service").deduct_bulk([
        {"orgId": str(org), "messageId": f"b{i}", "smsCount": 1, "costPerSms": "0.50"}
        for i in range(2)])
    assert [r["outcome"] for r in bulk["results"]] == ["charged", "charged"]
    rows = owner_conn.execute(
        "SELECT count(*), sum(amount) FROM billing_transactions"
        " WHERE org_id = %s AND type = 'sms_send'", (org,)).fetchone()
    assert rows == (3, Decimal("-2.0000"))


def test_retries_give_up_with_the_last_error(connect: Callable[..., Any],
                                             served: tuple[str, LoseAnswers],
                                             org: uuid.UUID) -> None:
    served[1].count = 10
    with pytest.raises(billing.BillingError) as failed:
        connect("admin", retries=2).add_funds("1.00", org_id=org)
    assert failed.value.status == 503
    served[1].count = 0


def test_no_server_is_connection_failed() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free, and nothing listens once closed
    client = billing.BillingClient(f"http://127.0.0.1:{port}", "t", retries=1, backoff=0.01)
    with pytest.raises(billing.ConnectionFailed):
        client.get_balance()


def test_iterating_all_pages_yields_each_transaction_once(connect: Callable[..., Any],
                                                          org: uuid.UUID) -> None:
    admin = connect("admin")
    for i in range(1, 8):
        admin.add_funds(f"{i}.00", org_id=org)
    member = connect("member", org)
    pages = member.iter_transactions(page_size=3)
    first = [next(pages) for _ in range(3)]
    admin.add_funds("100.00", org_id=org)  # arrives mid-iteration, shifting offsets
    rest = list(pages)
    amounts = [t["amount"] for t in first + rest]
    assert amounts == [Decimal(f"{i}.00") for i in range(7, 0, -1)]


def test_bulk_usage_refund_and_pricing(connect: Callable[..., Any], org: uuid.UUID) -> None:
    admin, service = connect("admin"), connect("service")
    admin.add_funds("1.00", org_id=org)
    assert admin.set_sms_price(org, "0.05")["source"] == "org"
    bulk = service.deduct_bulk([{"orgId": str(org), "messageId": "x", "smsCount": 2},
                                {"orgId": "nope", "messageId": "y", "smsCount": 1}])
    assert bulk["summary"] == {"charged": 1, "duplicate": 0, "insufficientFunds": 0,
                               "invalid": 1}
    assert service.refund_usage(org, "x")["balance"] == Decimal("1.00")
    page = connect("member", org).get_transactions(type="refund")
    assert page["pagination"]["total"] == 1


def test_create_checkout(connect: Callable[..., Any], org: uuid.UUID) -> None:
    import responses

    from tests import stripe_objects

    session = stripe_objects.checkout_session(org=org, amount_total=2000, status="open",
                                              payment_status="unpaid")
    with responses.RequestsMock() as stripe_api:
        stripe_api.add_passthru("http://127.0.0.1")  # the gateway itself, served for real
        stripe_api.add(responses.POST, "https://api.stripe.com/v1/checkout/sessions",
                       json=session)
        answer = connect("member", org).create_checkout(Decimal("20.00"))
    assert answer == {"sessionId": session["id"], "url": session["url"]}
    with pytest.raises(billing.ValidationError):
        connect("member", org).create_checkout("4.99")


def test_the_client_imports_no_server_code() -> None:
    """The SMS sender installs the client with requests and simplejson alone: importing it
    in a fresh interpreter loads neither Flask, nor a database driver, nor a server module."""
    probe = (
        "import sys, billing_gateway.client\n"
        "server = ('flask', 'werkzeug', 'psycopg', 'psycopg_pool', 'stripe', 'marshmallow',"
        " 'flask_smorest', 'flask_jwt_extended', 'gunicorn')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in server"
        " or (m.startswith('billing_gateway.') and m != 'billing_gateway.client')))\n")
    result = subprocess.run(  # noqa: S603  # our own interpreter and a constant probe
        [sys.executable, "-c", probe], capture_output=True, text=True,
        check=True, timeout=60)
    assert result.stdout.strip() == "[]", result.stdout
