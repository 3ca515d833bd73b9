"""One-time portal links: asked for by the platform, opened once by the customer's browser."""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass
from uuid import UUID

import psycopg

from billing_gateway.platform.db import require_tenant
from billing_gateway.portal.tokens import new_token, present, token_hash


class LinkRefusal(enum.StrEnum):
    """Why a link opens nothing."""

    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"


@dataclass(frozen=True)
class Link:
    """A link as handed to the platform: the token appears here and nowhere else."""

    token: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class Grant:
    """What an opened link grants: a session for this member of this org."""

    org_id: UUID
    member: str
    return_url: str | None


class LinkRefused(Exception):
    """The link is unknown, used or expired."""

    def __init__(self, reason: LinkRefusal) -> None:
        super().__init__(reason.value)
        self.reason = reason


def create_link(conn: psycopg.Connection, org_id: UUID, member: str, *,
                return_url: str | None, lifetime: dt.timedelta) -> Link:
    """Store a new link for the org (inside its tenant transaction); return it with its token."""
    require_tenant(org_id)
    token = new_token()
    conn.execute("INSERT INTO organizations (id) VALUES (%s) ON CONFLICT DO NOTHING", (org_id,))
    row = conn.execute(
        "INSERT INTO portal_links (token_hash, org_id, member, return_url, expires_at)"
        " VALUES (%s, %s, %s, %s, now() + %s) RETURNING expires_at",
        (token_hash(token), org_id, member, return_url, lifetime)).fetchone()
    assert row is not None  # INSERT ... RETURNING returns its row
    return Link(token=token, expires_at=row[0])


def redeem(conn: psycopg.Connection, token: str) -> Grant:
    """Use the link up, inside the caller's transaction (atomically: of two browsers opening
    it at once, one wins)."""
    present(conn, token)
    row = conn.execute(
        "UPDATE portal_links SET used_at = now()"
        " WHERE token_hash = %s AND used_at IS NULL AND expires_at > now()"
        " RETURNING org_id, member, return_url", (token_hash(token),)).fetchone()
    if row is not None:
        return Grant(*row)
    seen = conn.execute("SELECT used_at IS NOT NULL FROM portal_links WHERE token_hash = %s",
                        (token_hash(token),)).fetchone()
    if seen is None:
        raise LinkRefused(LinkRefusal.UNKNOWN)
    raise LinkRefused(LinkRefusal.USED if seen[0] else LinkRefusal.EXPIRED)
