"""Browser sessions of the billing page: opened by a link, kept alive by use, ended by
sign-out, idleness or age. The cookie holds a random token; the database its hash."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from uuid import UUID

import psycopg

from billing_gateway.platform.db import enter_org, tenant_transaction
from billing_gateway.portal import links
from billing_gateway.portal.tokens import new_token, present, token_hash

# However active, a session ends after this; the platform's dashboard hands out a new link.
MAX_AGE = dt.timedelta(hours=12)


@dataclass(frozen=True)
class Member:
    """Who is signed in to the page: a member of one org."""

    org_id: UUID
    member: str
    return_url: str | None


def open_session(conn: psycopg.Connection, link_token: str) -> tuple[str, Member]:
    """Use up a link and start its session in one transaction; return the session's token
    (for the cookie) and who it is for. Raises links.LinkRefused."""
    with tenant_transaction(conn, None):
        grant = links.redeem(conn, link_token)
        enter_org(conn, grant.org_id)
        token = new_token()
        conn.execute(
            "INSERT INTO portal_sessions (session_hash, org_id, member, return_url, expires_at)"
            " VALUES (%s, %s, %s, %s, now() + %s)",
            (token_hash(token), grant.org_id, grant.member, grant.return_url, MAX_AGE))
    return token, Member(grant.org_id, grant.member, grant.return_url)


def find_member(conn: psycopg.Connection, token: str, *, idle: dt.timedelta) -> Member | None:
    """Return who the session belongs to and mark it used now; None when it has ended."""
    with tenant_transaction(conn, None):
        present(conn, token)
        row = conn.execute(
            "UPDATE portal_sessions SET last_seen_at = now()"
            " WHERE session_hash = %s AND ended_at IS NULL AND expires_at > now()"
            "  AND last_seen_at > now() - %s"
            " RETURNING org_id, member, return_url", (token_hash(token), idle)).fetchone()
    return Member(*row) if row else None


def end_session(conn: psycopg.Connection, token: str) -> None:
    """Sign out: the token opens nothing any more, whatever the browser keeps."""
    with tenant_transaction(conn, None):
        present(conn, token)
        conn.execute("UPDATE portal_sessions SET ended_at = now()"
                     " WHERE session_hash = %s AND ended_at IS NULL", (token_hash(token),))
