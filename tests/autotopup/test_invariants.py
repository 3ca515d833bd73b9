"""verify-ledger's auto top-up checks find what they are for (a corrupted row, made by the
superuser with the checks' own view)."""

from __future__ import annotations

import uuid

import psycopg
import responses
from flask.testing import FlaskClient

from billing_gateway.ledger import invariants
from tests.autotopup.conftest import charge, save_card, turn_on
from tests.plugins.service import TokenFactory


def _found(owner_conn: psycopg.Connection, org: uuid.UUID) -> set[str]:
    return {v.check for v in invariants.iter_violations(owner_conn, org)}


def test_an_attempt_the_org_does_not_name_is_found(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection) -> None:
    save_card(client, auth, stripe_api, org)
    turn_on(client, auth, org, "10.00", "50.00")
    assert charge(client, auth, org, "20.00").status_code == 201
    assert _found(owner_conn, org) == set()
    try:
        owner_conn.execute("UPDATE organizations SET auto_topup_attempt = NULL WHERE id = %s",
                           (org,))
        assert "the attempt in flight is the one the org names" in _found(owner_conn, org)
    finally:  # leave the ledger sound for the fixture that checks it after every test
        owner_conn.execute(
            "UPDATE organizations SET auto_topup_attempt = (SELECT id FROM auto_topup_attempts"
            " WHERE org_id = %s) WHERE id = %s", (org, org))


def test_a_succeeded_attempt_without_its_credit_is_found(
        client: FlaskClient, auth: TokenFactory, org: uuid.UUID,
        stripe_api: responses.RequestsMock, owner_conn: psycopg.Connection) -> None:
    save_card(client, auth, stripe_api, org)
    turn_on(client, auth, org, "10.00", "50.00")
    assert charge(client, auth, org, "20.00").status_code == 201
    try:
        owner_conn.execute(
            "UPDATE auto_topup_attempts SET status = 'succeeded', payment_intent_id = 'pi_none'"
            " WHERE org_id = %s", (org,))
        owner_conn.execute("UPDATE organizations SET auto_topup_attempt = NULL WHERE id = %s",
                           (org,))
        assert "every succeeded auto top-up was credited by its payment" in _found(
            owner_conn, org)
    finally:
        owner_conn.execute("UPDATE auto_topup_attempts SET status = 'canceled'"
                           " WHERE org_id = %s", (org,))
