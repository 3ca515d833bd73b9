"""The ledger's invariants, checked by SQL over every org (run as a role that sees all orgs)."""

from __future__ import annotations

import psycopg

# Each query returns one row per violation: (org_id, what is wrong).
_CHECKS = {
    "balance equals the sum of its transactions": """
        SELECT o.id, format('balance %s, sum of amounts %s, count %s, rows %s',
                            o.sms_balance, coalesce(t.total, 0), o.transaction_count,
                            coalesce(t.rows, 0))
          FROM organizations o
          LEFT JOIN (SELECT org_id, sum(amount) AS total, count(*) AS rows, max(seq) AS top
                       FROM billing_transactions GROUP BY org_id) t ON t.org_id = o.id
         WHERE o.sms_balance <> coalesce(t.total, 0)
            OR o.transaction_count <> coalesce(t.rows, 0)
            OR coalesce(t.top, 0) <> o.transaction_count""",
    "each row continues the previous one": """
        SELECT t.org_id, format('seq %s: balance_before %s, previous balance_after %s',
                                t.seq, t.balance_before, p.balance_after)
          FROM billing_transactions t
          LEFT JOIN billing_transactions p ON p.org_id = t.org_id AND p.seq = t.seq - 1
         WHERE t.balance_before + t.amount <> t.balance_after
            OR (t.seq = 1 AND t.balance_before <> 0)
            OR (t.seq > 1 AND (p.id IS NULL OR p.balance_after <> t.balance_before))""",
    "per-type counts match the rows": """
        SELECT coalesce(c.org_id, t.org_id),
               format('type %s: counted %s, rows %s, top type_seq %s',
                      coalesce(c.type, t.type), c.n, t.rows, t.top)
          FROM billing_transaction_counts c
          FULL JOIN (SELECT org_id, type, count(*) AS rows, max(type_seq) AS top
                       FROM billing_transactions GROUP BY org_id, type) t
            ON t.org_id = c.org_id AND t.type = c.type
         WHERE c.n IS DISTINCT FROM t.rows OR c.n IS DISTINCT FROM t.top""",
    "no negative balance": """
        SELECT id, format('balance %s', sms_balance) FROM organizations
         WHERE sms_balance < 0 OR sms_balance = 'NaN'""",
}


def find_violations(conn: psycopg.Connection) -> list[str]:
    """Return a readable line per broken invariant; empty when the ledger is sound."""
    problems = []
    for name, query in _CHECKS.items():
        for org_id, detail in conn.execute(query.encode()):
            problems.append(f"{name}: org {org_id}: {detail}")
    return problems
