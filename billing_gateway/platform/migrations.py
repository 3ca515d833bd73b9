"""Apply sql/: the numbered migrations in order, once each, then the repeatable files of
sql/functions/ whenever they change; safely from several processes.

Numbered migrations (tables, indexes, constraints, types, grants) are frozen once applied.
Every function, policy and trigger lives in exactly one repeatable file per domain
(Flyway's repeatable migrations: https://documentation.red-gate.com/fd/repeatable-migrations-273973335.html),
re-applied under the migration lock when its checksum changes, after the numbered ones.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg

# Any constant works; it only has to be the same for every migrating process.
_MIGRATION_LOCK = 0x62696C6C  # "bill"

# Repeatable files are recorded in schema_migrations under this prefix and their name.
REPEATABLE_PREFIX = "R:"

# The numbered migrations as they were before their functions and policies moved to
# sql/functions/ (2026-11-25), and as they are since. A database migrated before has the
# old checksums recorded; the same versions now hold only tables, indexes and types, which
# that database already has, and the repeatable files give it the very same functions and
# policies. So an old checksum is accepted once, and only when the file is exactly its
# successor; any other edit is refused. The old files are kept in
# tests/fixtures/sql_before_layout/, and a test migrates a database made with them.
BEFORE_LAYOUT = {  # version: (checksum before, checksum since)
    "001_ledger": ("d5504e1cfd84cc05c8198884322f73ca3f270689d90d01e77db4c374004e66f1",
                   "66ebd25590a0f274e08e3c44f59d6c8298af2556dc872804df35e68c39566231"),
    "002_sms_price": ("8938196ccb814e5204a21255f17d5e0bc8ee29933178683687315a120fdd7e92",
                      "8938196ccb814e5204a21255f17d5e0bc8ee29933178683687315a120fdd7e92"),
    "003_usage": ("c6a9b88587721eba61012cbb375d56b958ba8ac3cfd9e08b18a188d757592b5e",
                  "412555a7a3d1d512e893e8c52fe08f3ad821d65351d04fee0948396179d0a838"),
    "004_stripe": ("bec6e933257d165459a224a1fa6b5d6381a14e98863b59ae48c525bc7748d41c",
                   "378f7d5a5321d61906287998e8aa8f3c2e6ccb2e7a05337eec3c2bfd927c1a79"),
    "005_single_statement": (
        "ebf1212ab47ec601292ba41a7c7ef82e73e3b8c5e47cff86f5353446a8832b71",
        "e8d35e6edae7d8171a01747bcadc3acc9828629c17dfb4245a28c2ee33b1fe91"),
    "006_checkout_requests": (
        "f6102f1b9304b4ca32dfa16a590396bdfcab47e15c4119dae505136bca88de5e",
        "758f70fc82d8aa7ffe6d18bd322af551ab9a97f19a52f29222e9017f3e20a7e9"),
}

# Re-applying a repeatable file replaces policies and the append-only trigger, which takes
# table locks: wait for them at most this long (and fail, to be run again) rather than
# queue every request behind a long transaction.
REPEATABLE_LOCK_TIMEOUT = "5s"


def sql_dir() -> Path:
    """Return the migrations folder: inside the wheel, or at the top of a checkout."""
    package = Path(__file__).resolve().parent.parent  # billing_gateway/
    packaged = package / "sql"
    if packaged.is_dir():
        return packaged
    return package.parent / "sql"


@dataclass(frozen=True)
class Migration:
    """One file of sql/."""

    version: str
    path: Path

    @property
    def checksum(self) -> str:
        """Hash of the file, to notice an applied migration edited afterwards."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest()


def pending_files(directory: Path | None = None) -> list[Migration]:
    """List every numbered migration file in version order."""
    directory = directory or sql_dir()
    return [Migration(p.stem, p) for p in sorted(directory.glob("*.sql"))]


def repeatable_files(directory: Path | None = None) -> list[Migration]:
    """List the repeatable files (sql/functions/*.sql) in the order they are applied."""
    folder = (directory or sql_dir()) / "functions"
    return [Migration(REPEATABLE_PREFIX + p.stem, p) for p in sorted(folder.glob("*.sql"))]


def migrate(dsn: str, directory: Path | None = None) -> list[str]:
    """Apply what is not yet applied; return the versions applied now.

    A session advisory lock serialises concurrent migrators: the second waits, then
    finds everything recorded and applies nothing.
    https://www.postgresql.org/docs/current/explicit-locking.html#ADVISORY-LOCKS
    """
    applied_now: list[str] = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
        try:
            conn.execute(
                """CREATE TABLE IF NOT EXISTS schema_migrations (
                       version text PRIMARY KEY,
                       checksum text NOT NULL,
                       applied_at timestamptz NOT NULL DEFAULT now())"""
            )
            recorded = conn.execute("SELECT version, checksum FROM schema_migrations")
            done: dict[str, str] = dict(recorded.fetchall())
            for migration in pending_files(directory):
                if migration.version in done:
                    _check_unchanged(conn, migration, done[migration.version])
                    continue
                _apply(conn, migration)
                applied_now.append(migration.version)
            # After a numbered migration every repeatable file runs again: a table rebuilt
            # or a function dropped there must not leave its policies or functions missing.
            numbered_ran = bool(applied_now)
            for migration in repeatable_files(directory):
                if numbered_ran or done.get(migration.version) != migration.checksum:
                    _apply(conn, migration, lock_timeout=REPEATABLE_LOCK_TIMEOUT)
                    applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now


def _check_unchanged(conn: psycopg.Connection, migration: Migration, recorded: str) -> None:
    """Refuse an applied migration edited afterwards (but for the layout change, once)."""
    if recorded == migration.checksum:
        return
    before, since = BEFORE_LAYOUT.get(migration.version, (None, None))
    if recorded == before and migration.checksum == since:
        conn.execute("UPDATE schema_migrations SET checksum = %s WHERE version = %s",
                     (migration.checksum, migration.version))
        return
    raise RuntimeError(
        f"migration {migration.version} changed after it was applied; "
        "add a new migration instead of editing an applied one"
    )


def _apply(conn: psycopg.Connection, migration: Migration, *,
           lock_timeout: str | None = None) -> None:
    """Run one file and record its checksum, in one transaction."""
    with conn.transaction():
        if lock_timeout:
            conn.execute("SELECT set_config('lock_timeout', %s, true)", (lock_timeout,))
        conn.execute(migration.path.read_text().encode())
        conn.execute(
            "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)"
            " ON CONFLICT (version) DO UPDATE SET checksum = excluded.checksum,"
            " applied_at = now()",
            (migration.version, migration.checksum),
        )
