"""Webhook endpoints and their delivery log, for the admin API (scope 'notifications')."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

EVENT_TYPES = ("balance.low", "balance.depleted", "balance.recovered", "topup.succeeded",
               "topup.reversed", "auto_topup.succeeded", "auto_topup.failed")
_ENDPOINT_COLUMNS = ("id, url, events, description, enabled, disabled_reason,"
                     " failing_since, created_at")


@dataclass(frozen=True)
class Endpoint:
    """A receiver of events, as the API shows it (never its secret, but once)."""

    id: UUID
    url: str
    events: list[str]
    description: str | None
    enabled: bool
    disabled_reason: str | None
    failing_since: datetime | None
    created_at: datetime


def create(conn: psycopg.Connection, *, url: str, events: list[str], description: str | None,
           secret: str, created_by: str) -> Endpoint:
    """Store a new endpoint with the secret that will sign its deliveries."""
    with conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(
            "INSERT INTO webhook_endpoints (url, events, description, secret, created_by)"
            f" VALUES (%s, %s, %s, %s, %s) RETURNING {_ENDPOINT_COLUMNS}",
            (url, events, description, secret, created_by)).fetchone()
    assert row is not None
    return Endpoint(**row)


def listed(conn: psycopg.Connection) -> list[Endpoint]:
    """Every endpoint not deleted, newest first."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(f"SELECT {_ENDPOINT_COLUMNS} FROM webhook_endpoints"
                           " WHERE deleted_at IS NULL ORDER BY created_at DESC, id").fetchall()
    return [Endpoint(**row) for row in rows]


def delete(conn: psycopg.Connection, endpoint_id: UUID) -> bool:
    """Stop delivering to the endpoint (its log stays); False when there is none."""
    found = conn.execute(
        "UPDATE webhook_endpoints SET deleted_at = now(), enabled = false,"
        " disabled_reason = 'deleted' WHERE id = %s AND deleted_at IS NULL RETURNING id",
        (endpoint_id,)).fetchone()
    return found is not None


def exists(conn: psycopg.Connection, endpoint_id: UUID) -> bool:
    """Tell whether the endpoint exists and is not deleted."""
    return conn.execute("SELECT 1 FROM webhook_endpoints WHERE id = %s AND deleted_at IS NULL",
                        (endpoint_id,)).fetchone() is not None


_DELIVERY = """
    SELECT d.id, d.event_id, e.type AS event_type, d.status, d.attempts, d.next_attempt_at,
           d.last_attempt_at, d.last_status, d.last_error, d.last_response_ms,
           d.delivered_at, d.created_at,
           coalesce((SELECT jsonb_agg(jsonb_build_object(
                        'attempt', a.attempt, 'at', utc_text(a.attempted_at),
                        'status_code', a.status_code, 'error', a.error,
                        'response_ms', a.response_ms) ORDER BY a.attempt)
                       FROM delivery_attempts a WHERE a.delivery_id = d.id), '[]') AS log
      FROM deliveries d JOIN outbox_events e ON e.id = d.event_id
"""


def deliveries(conn: psycopg.Connection, endpoint_id: UUID, limit: int) -> list[dict[str, Any]]:
    """The endpoint's deliveries, newest first, each with its attempts."""
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_DELIVERY + " WHERE d.endpoint_id = %s"
                           " ORDER BY d.created_at DESC, d.id LIMIT %s",
                           (endpoint_id, limit)).fetchall()


def retry(conn: psycopg.Connection, endpoint_id: UUID,
          delivery_id: UUID) -> dict[str, Any] | None:
    """Make a delivery due now, delivered or not (a resend); None when the endpoint has no
    such delivery.

    A delivery being attempted right now holds its row: the retry waits for that attempt
    to end, so it never runs beside it.
    """
    found = conn.execute(
        "UPDATE deliveries SET status = 'pending', next_attempt_at = now()"
        " WHERE id = %s AND endpoint_id = %s RETURNING id",
        (delivery_id, endpoint_id)).fetchone()
    if found is None:
        return None
    with conn.cursor(row_factory=dict_row) as cur:
        return cur.execute(_DELIVERY + " WHERE d.id = %s", (delivery_id,)).fetchone()
