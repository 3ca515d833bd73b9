"""An org's alert settings: its low-balance threshold and who gets billing emails."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from uuid import UUID

import psycopg

from billing_gateway.platform.db import require_tenant


@dataclass(frozen=True)
class AlertSettings:
    """The threshold in force (the org's, else the deployment default) and the emails."""

    low_balance_threshold: Decimal
    emails: list[str]
    source: str  # "org" or "default"


def alert_settings(conn: psycopg.Connection, org_id: UUID, *,
                   default_threshold: Decimal) -> AlertSettings:
    """Read the org's settings (in its tenant transaction); an org that set none has the
    default threshold and no emails."""
    require_tenant(org_id)
    row = conn.execute("SELECT low_balance_threshold, emails FROM org_alerts WHERE org_id = %s",
                       (org_id,)).fetchone()
    if row is None or row[0] is None:
        return AlertSettings(default_threshold, list(row[1]) if row else [], "default")
    return AlertSettings(row[0], list(row[1]), "org")


def set_alert_settings(conn: psycopg.Connection, org_id: UUID, *,
                       threshold: Decimal | None, emails: list[str], updated_by: str) -> None:
    """Replace the org's settings (threshold None: back to the default), creating the org."""
    require_tenant(org_id)
    conn.execute("SELECT lock_organization(%s)", (org_id,))
    conn.execute(
        "INSERT INTO org_alerts (org_id, low_balance_threshold, emails, updated_by)"
        " VALUES (%s, %s, %s, %s) ON CONFLICT (org_id) DO UPDATE SET"
        "  low_balance_threshold = EXCLUDED.low_balance_threshold,"
        "  emails = EXCLUDED.emails, updated_by = EXCLUDED.updated_by, updated_at = now()",
        (org_id, threshold, emails, updated_by))
    # The copy the threshold trigger reads under the row lock (sql/010_outbox.sql).
    conn.execute("UPDATE organizations SET alert_threshold = %s WHERE id = %s",
                 (threshold, org_id))
    # A lower threshold may end the episode: the next fall below it must alert again.
    conn.execute("SELECT rearm_alerts(%s)", (org_id,))
