"""Each SQL function, policy and trigger is defined in exactly one file (sql/functions/), the
database runs what those files say (no drift), and a database made with the layout before
them (001-006 holding the functions) migrates with every balance, row and answer unchanged."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from billing_gateway.ledger.invariants import find_violations
from billing_gateway.platform.migrations import (
    BEFORE_LAYOUT,
    migrate,
    pending_files,
    repeatable_files,
    sql_dir,
)

BEFORE = Path(__file__).resolve().parents[1] / "fixtures" / "sql_before_layout"
DEFINITION = re.compile(
    r"CREATE\s+(?:OR\s+REPLACE\s+)?(FUNCTION|TRIGGER|POLICY)\s+(\w+)(?:\s+ON\s+(\w+))?",
    re.IGNORECASE)


def _definitions(path: Path) -> list[str]:
    """What a file defines: 'function name', 'policy name on table', 'trigger name'."""
    text = re.sub(r"--[^\n]*", "", path.read_text())
    found = []
    for kind, name, table in DEFINITION.findall(text):
        kind = kind.lower()
        found.append(f"{kind} {name}" + (f" on {table}" if kind == "policy" else ""))
    return found


def test_numbered_migrations_define_no_function_policy_or_trigger() -> None:
    assert {m.version: _definitions(m.path) for m in pending_files()} == {
        m.version: [] for m in pending_files()}


def test_each_function_policy_and_trigger_lives_in_one_file() -> None:
    homes: dict[str, set[str]] = {}
    for migration in repeatable_files():
        for definition in _definitions(migration.path):
            homes.setdefault(definition.split("(")[0], set()).add(migration.version)
    assert {d: v for d, v in homes.items() if len(v) > 1} == {}
    for name in ("charge_sms", "append_ledger_row", "charge_sms_bulk"):
        assert homes[f"function {name}"] == {
            "R:20_ledger" if name == "append_ledger_row" else "R:30_usage"}


def _live_functions(conn: psycopg.Connection) -> dict[str, str]:
    """Every function of the schema (none from extensions), by signature, as PostgreSQL
    reports it."""
    rows = conn.execute("""
        SELECT p.oid::regprocedure::text, pg_get_functiondef(p.oid)
        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
        WHERE n.nspname = 'public' AND p.prokind = 'f'
          AND NOT EXISTS (SELECT FROM pg_depend d WHERE d.objid = p.oid AND d.deptype = 'e')
        ORDER BY 1""").fetchall()
    return dict(rows)


def _live_policies(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT tablename, policyname, permissive, roles, cmd, qual, with_check"
        " FROM pg_policies WHERE schemaname = 'public' ORDER BY 1, 2").fetchall()


def _live_triggers(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT tgrelid::regclass::text, tgname, pg_get_triggerdef(oid) FROM pg_trigger"
        " WHERE NOT tgisinternal ORDER BY 1, 2").fetchall()


def _apply_files_and_compare(conn: psycopg.Connection) -> None:
    """Run every repeatable file in a transaction that is rolled back: if the database
    runs what the files say, nothing PostgreSQL reports changes."""
    before = (_live_functions(conn), _live_policies(conn), _live_triggers(conn))
    with pytest.raises(_RolledBack), conn.transaction():
        for migration in repeatable_files():
            conn.execute(migration.path.read_text().encode())
        after = (_live_functions(conn), _live_policies(conn), _live_triggers(conn))
        assert after[0] == before[0], "functions differ from sql/functions/"
        assert after[1] == before[1], "policies differ from sql/functions/"
        assert after[2] == before[2], "triggers differ from sql/functions/"
        raise _RolledBack


class _RolledBack(Exception):
    """Leaves the comparison's transaction without a trace."""


def test_the_database_runs_what_the_files_say(owner_conn: psycopg.Connection) -> None:
    _apply_files_and_compare(owner_conn)
    names = {signature.split("(")[0] for signature in _live_functions(owner_conn)}
    defined = {d.split()[1] for m in repeatable_files() for d in _definitions(m.path)
               if d.startswith("function")}
    assert names == defined


def test_drift_is_noticed(owner_conn: psycopg.Connection) -> None:
    """A function changed in the database but not in its file fails the comparison."""
    with pytest.raises(_RolledBack), owner_conn.transaction():
        owner_conn.execute("CREATE OR REPLACE FUNCTION require_amount(p_amount numeric,"
                           " p_what text) RETURNS void LANGUAGE plpgsql IMMUTABLE AS $$"
                           " BEGIN END $$")
        with pytest.raises(AssertionError, match="functions differ"):
            _apply_files_and_compare(owner_conn)
        raise _RolledBack  # the changed function goes too


def test_the_files_before_the_layout_and_since_are_the_ones_recorded() -> None:
    import hashlib

    assert {p.stem: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(BEFORE.glob("*.sql"))} == {
        version: before for version, (before, _) in BEFORE_LAYOUT.items()}
    # Migrations added after the layout change (007 on) have no "before" to accept.
    assert {m.version: m.checksum for m in pending_files() if m.version in BEFORE_LAYOUT} == {
        version: since for version, (_, since) in BEFORE_LAYOUT.items()}


def test_an_old_checksum_is_accepted_only_for_its_successor(
        database_before_layout: str, tmp_path: Path) -> None:
    """An old-layout database takes the new 001-006 once; an edited 001 it refuses."""
    for migration in pending_files():
        text = migration.path.read_text()
        if migration.version == "001_ledger":
            text += "\nCREATE TABLE sneaked_in (id int);\n"
        (tmp_path / migration.path.name).write_text(text)
    with pytest.raises(RuntimeError, match="001_ledger changed after it was applied"):
        migrate(database_before_layout, tmp_path)


@pytest.fixture
def database_before_layout(server_dsn: str) -> Iterator[str]:
    """A database migrated with the files as they were before sql/functions/."""
    name = f"billing_layout_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    dsn = psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
    migrate(dsn, BEFORE)
    yield dsn
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


SNAPSHOT = {
    "organizations": "SELECT id, sms_balance, transaction_count, sms_price FROM organizations",
    "transactions": "SELECT * FROM billing_transactions",
    "counts": "SELECT * FROM billing_transaction_counts",
    "answers": "SELECT caller, key, org_id, fingerprint, status_code, response_body,"
               " transaction_id FROM idempotency_keys",
    "payments": "SELECT * FROM stripe_payments",
}


def _snapshot(conn: psycopg.Connection) -> dict[str, list[tuple]]:
    return {name: sorted(conn.execute(query).fetchall(), key=repr)
            for name, query in SNAPSHOT.items()}


def test_a_database_of_the_old_layout_migrates_unchanged(database_before_layout: str) -> None:
    orgs = [uuid.uuid4() for _ in range(3)]
    with psycopg.connect(database_before_layout, autocommit=True) as conn:
        for n, org in enumerate(orgs, start=1):
            with conn.transaction():
                conn.execute("SELECT set_config('billing.org_id', %s, true)", (str(org),))
                conn.execute("SELECT add_credits(%s, %s, 'purchase', 'card', %s, NULL, NULL,"
                             " NULL)", (org, 10 * n, f"pi_{n}"))
                conn.execute("SELECT deduct_credits(%s, 0.0075, 1, 0.0075, 'msg-1')", (org,))
                conn.execute("INSERT INTO idempotency_keys (caller, key, org_id, fingerprint,"
                             " status_code, response_body) VALUES ('c', %s, %s, 'f', 201,"
                             " '{}')", (f"k{n}", org))
        conn.execute("SELECT api_deduct(%s, 'sms', 2, NULL, 0.0075, 'msg-2', NULL, NULL)",
                     (orgs[0],))
        before = _snapshot(conn)
        applied = migrate(database_before_layout)
        # The layout's files are recorded as applied; only migrations written since run.
        assert applied == [m.version for m in pending_files() if m.version not in BEFORE_LAYOUT
                           ] + [m.version for m in repeatable_files()]
        assert _snapshot(conn) == before
        recorded = dict(conn.execute("SELECT version, checksum FROM schema_migrations"))
        assert {m.version: recorded[m.version] for m in pending_files()} == {
            m.version: m.checksum for m in pending_files()}
        _apply_files_and_compare(conn)
        names = {signature.split("(")[0] for signature in _live_functions(conn)}
        assert names == {d.split()[1] for m in repeatable_files() for d in _definitions(m.path)
                         if d.startswith("function")}  # nothing left over, nothing missing
        # The functions work as before, under their new names and (for the processes of
        # the previous release, while a deployment migrates) the old ones: the same message
        # is not charged twice.
        for function in ("api_charge", "api_deduct"):
            conn.execute(f"SELECT {function}(%s, 'sms', 2, NULL, 0.0075, 'msg-2', NULL, NULL)",
                         (orgs[0],))
        assert _snapshot(conn) == before
        assert migrate(database_before_layout) == []
    assert sql_dir().is_dir()


def test_usage_before_the_rollup_is_summed_into_it_with_no_charge_lost(
        database_before_layout: str, tmp_path: Path) -> None:
    """008 makes usage_daily; the charge functions of the release before keep charging until
    sql/functions/ is applied, and the backfill there, in the same transaction as the new
    functions, counts their charges too."""
    org = uuid.uuid4()
    for migration in pending_files():  # the numbered files alone: no sql/functions/
        (tmp_path / migration.path.name).write_bytes(migration.path.read_bytes())
    with psycopg.connect(database_before_layout, autocommit=True) as conn:
        with conn.transaction():
            conn.execute("SELECT set_config('billing.org_id', %s, true)", (str(org),))
            conn.execute("SELECT add_credits(%s, 10, 'bonus')", (org,))
            conn.execute("SELECT deduct_credits(%s, 0.0150, 2, 0.0075, 'before', 'c1')", (org,))
        assert "008_usage_daily" in migrate(database_before_layout, tmp_path)
        with conn.transaction():  # an old process, between 008 and the new functions
            conn.execute("SELECT set_config('billing.org_id', %s, true)", (str(org),))
            conn.execute("SELECT deduct_credits(%s, 0.0075, 1, 0.0075, 'between', 'c1')", (org,))
            conn.execute("SELECT deduct_credits(%s, 0.0075, 1, 0.0075, 'none')", (org,))
            conn.execute("SELECT refund_usage(%s, 'before', 0.0075)", (org,))
        assert conn.execute("SELECT count(*) FROM usage_daily").fetchone() == (0,)
        migrate(database_before_layout)
        rows = conn.execute("SELECT campaign_id, sms_count, amount FROM usage_daily"
                            " WHERE org_id = %s ORDER BY campaign_id", (org,)).fetchall()
        assert rows == [("c1", 3, Decimal("0.0150")), (None, 1, Decimal("0.0075"))]
        assert conn.execute("SELECT to_regclass('usage_daily_backfill_pending')").fetchone() \
            == (None,)
        assert find_violations(conn) == []
        # From now on the new functions keep it.
        with conn.transaction():
            conn.execute("SELECT set_config('billing.org_id', %s, true)", (str(org),))
            conn.execute("SELECT charge_sms(%s, 0.0075, 1, 0.0075, 'after', 'c1')", (org,))
        assert find_violations(conn) == []
        assert migrate(database_before_layout) == []
