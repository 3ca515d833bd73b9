"""Secret tokens for links and browser sessions: random, shown once, stored as hashes."""

from __future__ import annotations

import hashlib
import secrets

import psycopg


def new_token() -> str:
    """A fresh 256-bit token, URL-safe."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """The stored form of a token: SHA-256 is enough for 256 random bits (nothing to guess)."""
    return hashlib.sha256(token.encode()).hexdigest()


def present(conn: psycopg.Connection, token: str) -> None:
    """Let the rest of the current transaction see the one link or session row this token
    names (sql/functions/50_portal.sql: billing.portal_token), and nothing else of the portal."""
    conn.execute("SELECT set_config('billing.portal_token', %s, true)", (token_hash(token),))
