"""Migrations: in order, recorded, idempotent, safe from two processes at once."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

from billing_gateway.platform.migrations import migrate, pending_files, repeatable_files


@pytest.fixture
def empty_database(server_dsn: str) -> Iterator[str]:
    """A brand-new database, dropped afterwards."""
    name = f"billing_mig_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield psycopg.conninfo.make_conninfo(server_dsn, dbname=name)
    with psycopg.connect(server_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))


def _applied(dsn: str) -> list[str]:
    with psycopg.connect(dsn) as conn:
        return [r[0] for r in conn.execute("SELECT version FROM schema_migrations ORDER BY 1")]


def _every_version() -> list[str]:
    """The numbered migrations in order, then the repeatable files."""
    return [m.version for m in pending_files()] + [m.version for m in repeatable_files()]


def test_migrate_applies_every_file_once(empty_database: str) -> None:
    versions = _every_version()
    assert migrate(empty_database) == versions
    assert migrate(empty_database) == []
    assert _applied(empty_database) == sorted(versions)


def test_two_concurrent_migrators_apply_once(empty_database: str) -> None:
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(lambda _: migrate(empty_database), range(2)))
    assert sorted(results, key=len) == [[], _every_version()]
    assert _applied(empty_database) == sorted(_every_version())


def test_a_changed_repeatable_file_is_applied_again(empty_database: str,
                                                    tmp_path: Path) -> None:
    (tmp_path / "001_table.sql").write_text("CREATE TABLE probe (id int);")
    functions = tmp_path / "functions"
    functions.mkdir()
    body = "CREATE OR REPLACE FUNCTION probe_answer() RETURNS int LANGUAGE sql AS $$ SELECT {} $$;"
    (functions / "10_probe.sql").write_text(body.format(1))
    assert migrate(empty_database, tmp_path) == ["001_table", "R:10_probe"]
    assert migrate(empty_database, tmp_path) == []
    (functions / "10_probe.sql").write_text(body.format(2))
    assert migrate(empty_database, tmp_path) == ["R:10_probe"]
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT probe_answer()").fetchone() == (2,)


def test_edited_applied_migration_is_refused(empty_database: str, tmp_path: Path) -> None:
    first = tmp_path / "001_first.sql"
    first.write_text("CREATE TABLE probe (id int);")
    migrate(empty_database, tmp_path)
    first.write_text("CREATE TABLE probe (id bigint);")
    with pytest.raises(RuntimeError, match="changed after it was applied"):
        migrate(empty_database, tmp_path)


def test_failed_migration_leaves_nothing_half_applied(empty_database: str,
                                                      tmp_path: Path) -> None:
    (tmp_path / "001_ok.sql").write_text("CREATE TABLE good (id int);")
    (tmp_path / "002_bad.sql").write_text("CREATE TABLE half (id int); SELECT 1/0;")
    with pytest.raises(psycopg.errors.DivisionByZero):
        migrate(empty_database, tmp_path)
    with psycopg.connect(empty_database) as conn:
        assert conn.execute("SELECT to_regclass('half')").fetchone() == (None,)
        assert conn.execute("SELECT to_regclass('good')").fetchone() is not None
    assert _applied(empty_database) == ["001_ok"]
