"""A Checkout Session takes payments for an hour, and an Idempotency-Key replayed after its
session expired (or its payment failed) is refused with 409, never answered with the dead
URL: the caller starts a new top-up with a new key."""

from __future__ import annotations

import time
import uuid
from typing import Any
from urllib.parse import parse_qs

import psycopg
import pytest
import responses
from flask.testing import FlaskClient

from tests import stripe_objects as so
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import deliver

CHECKOUT = "/api/billing/create-checkout"
STRIPE_SESSIONS = "https://api.stripe.com/v1/checkout/sessions"


def _open_session(org: uuid.UUID, expires_at: int) -> dict[str, Any]:
    return so.checkout_session(org=org, amount_total=2500, status="open",
                               payment_status="unpaid", expires_at=expires_at)


@pytest.fixture
def stripe_creates(stripe_api: responses.RequestsMock) -> Any:
    """Stripe creates a session with the expires_at it was asked for."""
    made: list[dict[str, Any]] = []

    def create(request: Any) -> tuple[int, dict[str, str], str]:
        form = parse_qs(request.body)
        session = _open_session(uuid.UUID(form["metadata[org_id]"][0]),
                                int(form["expires_at"][0]))
        made.append(session)
        return 200, {}, so.body(session).decode()

    stripe_api.add_callback(responses.POST, STRIPE_SESSIONS, callback=create)
    return made


def _start(client: FlaskClient, auth: TokenFactory, org: uuid.UUID, key: str) -> Any:
    return client.post(CHECKOUT, headers={**auth("member", org), "Idempotency-Key": key},
                       json={"amount": "25.00"})


def test_a_session_is_asked_to_expire_in_an_hour_and_recorded_so(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, owner_conn: psycopg.Connection,
    stripe_creates: list,
) -> None:
    assert _start(client, auth, org, "k").status_code == 201
    expires_at = stripe_creates[0]["expires_at"]
    assert expires_at == pytest.approx(time.time() + 3600, abs=60)
    recorded = owner_conn.execute("SELECT extract(epoch FROM expires_at)::bigint FROM"
                                  " checkout_sessions").fetchone()
    assert recorded == (expires_at,)


def test_a_replay_while_the_session_is_open_is_the_same_answer(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, stripe_creates: list,
) -> None:
    first = _start(client, auth, org, "k")
    again = _start(client, auth, org, "k")
    assert again.status_code == 201 and again.get_data() == first.get_data()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(stripe_creates) == 1


def test_a_replay_after_the_session_expired_is_refused_not_the_dead_url(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, owner_conn: psycopg.Connection,
    stripe_creates: list,
) -> None:
    first = _start(client, auth, org, "k")
    assert first.status_code == 201
    # Days later: the hour has long passed (no checkout.session.expired was received).
    owner_conn.execute("UPDATE checkout_sessions SET expires_at = now() - interval '3 days'")
    replay = _start(client, auth, org, "k")
    assert replay.status_code == 409
    error = replay.get_json()["error"]
    assert error["code"] == "idempotency_conflict"
    assert "expired at" in error["message"] and "new Idempotency-Key" in error["message"]
    assert first.get_json()["url"] not in replay.get_data(as_text=True)
    assert len(stripe_creates) == 1  # no second session under the same key
    fresh = _start(client, auth, org, "k2")
    assert fresh.status_code == 201
    assert fresh.get_json()["sessionId"] != first.get_json()["sessionId"]


def test_a_replay_after_stripe_expired_the_session_is_refused(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, stripe_creates: list,
) -> None:
    assert _start(client, auth, org, "k").status_code == 201
    expired = {**stripe_creates[0], "status": "expired", "url": None}
    assert deliver(client, so.event("checkout.session.expired", expired)).status_code == 200
    replay = _start(client, auth, org, "k")
    assert replay.status_code == 409
    assert "expired at" in replay.get_json()["error"]["message"]


def test_a_replay_after_the_payment_failed_is_refused(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, stripe_creates: list,
) -> None:
    assert _start(client, auth, org, "k").status_code == 201
    failed = {**stripe_creates[0], "status": "complete", "payment_status": "unpaid",
              "payment_intent": "pi_async", "url": None}
    deliver(client, so.event("checkout.session.async_payment_failed", failed))
    replay = _start(client, auth, org, "k")
    assert replay.status_code == 409
    assert "payment of the Checkout Session" in replay.get_json()["error"]["message"]


def test_a_replay_of_a_paid_session_is_still_the_same_answer(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, owner_conn: psycopg.Connection,
    stripe_creates: list,
) -> None:
    first = _start(client, auth, org, "k")
    intent = so.payment_intent(org=org, amount=2500)
    paid = {**stripe_creates[0], "status": "complete", "payment_status": "paid",
            "payment_intent": intent["id"], "url": None}
    deliver(client, so.event("checkout.session.completed", paid))
    owner_conn.execute("UPDATE checkout_sessions SET expires_at = now() - interval '1 day'")
    again = _start(client, auth, org, "k")
    assert again.status_code == 201 and again.get_data() == first.get_data()


def test_stripe_answering_a_retried_key_with_an_expired_session_is_refused(
    client: FlaskClient, auth: TokenFactory, org: uuid.UUID, owner_conn: psycopg.Connection,
    stripe_api: responses.RequestsMock,
) -> None:
    """A crash left the answer unstored; the retry, hours later but within Stripe's 24 hours
    of idempotency, gets Stripe's first answer again: a session that has expired since."""
    stale = _open_session(org, int(time.time()) - 7200)
    stripe_api.add(responses.POST, STRIPE_SESSIONS, json=stale)
    response = _start(client, auth, org, "after-a-crash")
    assert response.status_code == 409
    assert "expired at" in response.get_json()["error"]["message"]
    assert stale["url"] not in response.get_data(as_text=True)
    # The session is recorded and the request settled, for nobody to chase later.
    assert owner_conn.execute(
        "SELECT r.status, s.id FROM checkout_requests r JOIN checkout_sessions s"
        " ON s.id = r.session_id").fetchall() == [("created", stale["id"])]
