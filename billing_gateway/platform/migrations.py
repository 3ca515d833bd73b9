"""Apply the SQL files in sql/ in order, once each, safely from several processes."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import psycopg

# Any constant works; it only has to be the same for every migrating process.
_MIGRATION_LOCK = 0x62696C6C  # "bill"


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
    """List every migration file in version order."""
    directory = directory or sql_dir()
    return [Migration(p.stem, p) for p in sorted(directory.glob("*.sql"))]


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
                    if done[migration.version] != migration.checksum:
                        raise RuntimeError(
                            f"migration {migration.version} changed after it was applied; "
                            "add a new migration instead of editing an applied one"
                        )
                    continue
                with conn.transaction():
                    conn.execute(migration.path.read_text().encode())
                    conn.execute(
                        "INSERT INTO schema_migrations (version, checksum) VALUES (%s, %s)",
                        (migration.version, migration.checksum),
                    )
                applied_now.append(migration.version)
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))
    return applied_now
