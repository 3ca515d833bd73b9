"""An org's history, a page at a time, at the same cost at any offset."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from billing_gateway.platform.db import require_tenant


@dataclass(frozen=True)
class HistoryPage:
    """One page of an org's ledger, newest first, and the exact number of rows in all."""

    transactions: list[dict[str, Any]]
    total: int


_COLUMNS = """id, type, amount, balance_before, balance_after, sms_count, cost_per_sms,
    payment_method, description, created_at, payment_intent_id, message_id, campaign_id,
    metadata"""


# The exact total comes from counters kept under the org's row lock, never COUNT(*).
_TOTAL_ALL = "SELECT transaction_count FROM organizations WHERE id = %s"


_TOTAL_OF_TYPE = "SELECT n FROM billing_transaction_counts WHERE org_id = %s AND type = %s"


# A page is the range of positions (seq, or type_seq) [total - offset - limit + 1,
# total - offset]: an index range scan, so offset 1,000,000 costs what offset 0 costs.
# The bounds are plain parameters on purpose: under RLS, PostgreSQL applies a qual ahead
# of the policy (as an index condition) only when it is leakproof, and a bound computed
# in SQL (subquery minus offset) is not, so it became a filter over every skipped row.
# https://www.postgresql.org/docs/current/ddl-rowsecurity.html (leakproof functions)
_PAGE_ALL = f"""SELECT {_COLUMNS} FROM billing_transactions
    WHERE org_id = %s AND seq BETWEEN %s AND %s ORDER BY seq DESC"""


_PAGE_OF_TYPE = f"""SELECT {_COLUMNS} FROM billing_transactions
    WHERE org_id = %s AND type = %s AND type_seq BETWEEN %s AND %s ORDER BY type_seq DESC"""


def history(
    conn: psycopg.Connection,
    org_id: UUID,
    *,
    limit: int,
    offset: int,
    type: str | None = None,
) -> HistoryPage:
    """Return a page of the org's transactions, newest first, with the exact total."""
    require_tenant(org_id)
    key = (org_id,) if type is None else (org_id, type)
    row = conn.execute(_TOTAL_ALL if type is None else _TOTAL_OF_TYPE, key).fetchone()
    total = row[0] if row else 0
    upper = total - offset
    if upper < 1:
        return HistoryPage(transactions=[], total=total)
    bounds = (max(1, upper - limit + 1), upper)
    with conn.cursor(row_factory=dict_row) as cur:
        transactions = cur.execute(_PAGE_ALL if type is None else _PAGE_OF_TYPE,
                                   (*key, *bounds)).fetchall()
    return HistoryPage(transactions=transactions, total=total)
