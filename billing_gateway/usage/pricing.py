"""An org's own SMS price."""

from __future__ import annotations

from decimal import Decimal
from uuid import UUID

import psycopg

from billing_gateway.platform.db import require_tenant


def set_sms_price(conn: psycopg.Connection, org_id: UUID, price: Decimal | None) -> None:
    """Set the org's SMS price (None: back to the deployment default), creating the org."""
    require_tenant(org_id)
    conn.execute("SELECT lock_organization(%s)", (org_id,))
    conn.execute(
        "UPDATE organizations SET sms_price = %s, updated_at = now() WHERE id = %s",
        (price, org_id),
    )
