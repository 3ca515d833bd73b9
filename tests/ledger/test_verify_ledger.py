"""billing-gateway verify-ledger: each invariant, broken on purpose, is reported."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from flask.testing import FlaskClient

from billing_gateway import cli
from billing_gateway.ledger import invariants
from tests import stripe_objects as so
from tests.plugins.database import empty_every_table
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import deliver


@pytest.fixture
def tamper(owner_conn: psycopg.Connection) -> Iterator[Callable[[str, tuple], None]]:
    """Run SQL as the superuser with triggers and FK checks off (the append-only trigger
    would refuse), then leave an empty ledger for the autouse soundness check."""

    def run(statement: str, params: tuple = ()) -> None:
        with owner_conn.transaction():
            owner_conn.execute("SET LOCAL session_replication_role = replica")
            owner_conn.execute(statement.encode(), params)

    yield run
    empty_every_table(owner_conn)


@pytest.fixture
def funded(client: FlaskClient, auth: TokenFactory, credit, org: uuid.UUID) -> uuid.UUID:
    """An org with three credits and two charges, and an idempotent request."""
    for amount in ("10.00", "5.00"):
        credit(org, amount)
    client.post("/api/billing/add-funds", headers={**auth("admin"), "Idempotency-Key": "k"},
                json={"amount": "1.00", "orgId": str(org)})
    for message in ("m1", "m2"):
        client.post("/api/billing/deduct", headers=auth("service"), json={
            "orgId": str(org), "smsCount": 2, "costPerSms": "0.50", "messageId": message})
    return org


def _checks(owner_conn: psycopg.Connection, org: uuid.UUID | None = None) -> set[str]:
    return {v.check for v in invariants.iter_violations(owner_conn, org)}


def test_a_sound_ledger_has_no_violation(funded: uuid.UUID,
                                         owner_conn: psycopg.Connection) -> None:
    assert _checks(owner_conn) == set()


@pytest.mark.parametrize("statement,check", [
    ("UPDATE organizations SET sms_balance = sms_balance + 1 WHERE id = %s",
     "balance equals the sum of its transactions"),
    ("UPDATE billing_transactions SET balance_after = balance_after + 1, amount = amount + 1"
     " WHERE org_id = %s AND seq = 2", "each row continues the previous one"),
    ("DELETE FROM billing_transactions WHERE org_id = %s AND seq = 2",
     "each row continues the previous one"),
    ("UPDATE billing_transaction_counts SET n = n + 1 WHERE org_id = %s AND type = 'sms_send'",
     "per-type counts match the rows"),
    ("UPDATE idempotency_keys SET transaction_id = gen_random_uuid() WHERE org_id = %s",
     "every idempotency record matches its transaction"),
    ("UPDATE idempotency_keys SET response_body = NULL WHERE org_id = %s",
     "every idempotency record matches its transaction"),
])
def test_each_broken_invariant_is_reported(funded: uuid.UUID, owner_conn: psycopg.Connection,
                                           tamper: Callable, statement: str,
                                           check: str) -> None:
    tamper(statement, (funded,))
    assert check in _checks(owner_conn)


def test_negative_balance_is_reported(owner_conn: psycopg.Connection, org: uuid.UUID) -> None:
    # DDL is transactional: the rollback restores the constraint and removes the row.
    with owner_conn.transaction(force_rollback=True):
        owner_conn.execute("ALTER TABLE organizations"
                           " DROP CONSTRAINT organizations_balance_non_negative")
        owner_conn.execute("INSERT INTO organizations (id, sms_balance) VALUES (%s, -1)",
                           (org,))
        assert "no negative balance" in _checks(owner_conn)


def test_stripe_state_reversals_and_events_are_checked(
    client: FlaskClient, owner_conn: psycopg.Connection, tamper: Callable, org: uuid.UUID
) -> None:
    intent = so.payment_intent(org=org, amount=1000)
    deliver(client, so.event("payment_intent.succeeded", intent))
    deliver(client, so.event("charge.refunded", so.charge(intent=intent["id"], amount=1000,
                                                         amount_refunded=400)))
    assert _checks(owner_conn) == set()
    tamper("INSERT INTO billing_transactions (org_id, seq, type_seq, type, amount,"
           " balance_before, balance_after, payment_intent_id)"
           " VALUES (%s, 3, 2, 'reversal', -7, 7, 0, %s)", (org, intent["id"]))
    tamper("INSERT INTO stripe_events (id, type, payload) VALUES ('evt_stuck', 'x', '{}')")
    found = _checks(owner_conn)
    assert {"reversals never exceed their purchase", "Stripe payment state matches the ledger",
            "every stored Stripe event processed"} <= found


def test_org_filter(funded: uuid.UUID, other_org: uuid.UUID, credit,
                    owner_conn: psycopg.Connection, tamper: Callable) -> None:
    credit(other_org, "3.00")
    tamper("UPDATE organizations SET sms_balance = 99 WHERE id = %s", (funded,))
    assert _checks(owner_conn, other_org) == set()
    assert _checks(owner_conn, funded) == {"balance equals the sum of its transactions"}


def test_cli_reports_and_exits_1(monkeypatch: pytest.MonkeyPatch, database_url: str,
                                 funded: uuid.UUID, tamper: Callable,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BILLING_JWT_SECRET", "x" * 40)
    assert cli.main(["verify-ledger"]) == 0
    assert "ledger sound: " in capsys.readouterr().out
    tamper("UPDATE organizations SET sms_balance = 99 WHERE id = %s", (funded,))
    assert cli.main(["verify-ledger", "--org", str(funded)]) == 1
    out = capsys.readouterr().out
    assert f"VIOLATION balance equals the sum of its transactions: org {funded}" in out
    assert "ledger NOT sound: 1 violation(s)" in out


def test_cli_refuses_a_role_that_rls_would_blind(monkeypatch: pytest.MonkeyPatch,
                                                 database_url: str, owner_conn: psycopg.Connection,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    owner_conn.execute("DROP ROLE IF EXISTS billing_auditor_test;"
                       " CREATE ROLE billing_auditor_test LOGIN;"
                       " GRANT SELECT ON ALL TABLES IN SCHEMA public TO billing_auditor_test")
    try:
        url = psycopg.conninfo.make_conninfo(database_url, user="billing_auditor_test")
        monkeypatch.setenv("DATABASE_URL", url)
        monkeypatch.setenv("BILLING_JWT_SECRET", "x" * 40)
        assert cli.main(["verify-ledger"]) == 2
        assert "BYPASSRLS" in capsys.readouterr().err
    finally:
        owner_conn.execute("REASSIGN OWNED BY billing_auditor_test TO CURRENT_USER;"
                           " DROP OWNED BY billing_auditor_test; DROP ROLE billing_auditor_test")


def test_two_purchases_of_one_payment_intent_are_reported(
    owner_conn: psycopg.Connection, credit, org: uuid.UUID
) -> None:
    credit(org, "5.00", paymentIntentId="pi_twice")
    with owner_conn.transaction(force_rollback=True):
        owner_conn.execute("DROP INDEX idx_billing_transactions_payment_intent")
        owner_conn.execute("INSERT INTO billing_transactions (org_id, seq, type_seq, type,"
                           " amount, balance_before, balance_after, payment_intent_id)"
                           " VALUES (%s, 2, 2, 'purchase', 5, 5, 10, 'pi_twice')", (org,))
        assert "at most one purchase per PaymentIntent" in _checks(owner_conn)
