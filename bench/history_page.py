"""Time GET /transactions pages for one org with many transactions.

Prints p50/p99 per page kind, through the whole Flask stack (routing, JWT, schema, SQL
under RLS), next to the seed's OFFSET + COUNT(*) query on the same data.

    python bench/history_page.py --transactions 100000
    DATABASE_URL=postgresql://... python bench/history_page.py   # your own server

Without DATABASE_URL it uses a throwaway embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import bench_settings, finish_seed, percentile, scratch_database
from billing_gateway import create_app
from billing_gateway.ledger.invariants import find_violations
from billing_gateway.platform.auth import issue_token

SEED = """
WITH s AS (
    SELECT i,
           CASE i %% 4 WHEN 0 THEN 'sms_send' WHEN 1 THEN 'purchase' ELSE 'bonus' END AS type,
           CASE i %% 4 WHEN 0 THEN -0.5 ELSE 1.00 END::numeric(18, 4) AS amount
      FROM generate_series(1, %(n)s) AS i),
r AS (
    SELECT s.*, sum(amount) OVER (ORDER BY i) AS after,
           row_number() OVER (PARTITION BY type ORDER BY i) AS type_seq
      FROM s)
INSERT INTO billing_transactions (org_id, seq, type_seq, type, amount, balance_before,
    balance_after, sms_count, cost_per_sms, message_id, payment_method, created_at)
SELECT %(org)s, i, type_seq, type, amount, after - amount, after,
       CASE WHEN type = 'sms_send' THEN 1 END, CASE WHEN type = 'sms_send' THEN 0.5 END,
       CASE WHEN type = 'sms_send' THEN 'm' || i END,
       CASE WHEN type <> 'sms_send' THEN 'manual' END,
       now() - (%(n)s - i) * interval '1 second'
  FROM r
"""


def seed(conn: psycopg.Connection, org: uuid.UUID, n: int) -> None:
    """Write n ledger rows for org directly in SQL (as the owner), with consistent counters."""
    conn.execute("INSERT INTO organizations (id) VALUES (%s)", (org,))
    conn.execute(SEED, {"org": org, "n": n})
    finish_seed(conn, org)


def main() -> int:
    """Seed, time, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=100_000)
    parser.add_argument("--pages", type=int, default=200, help="requests per page kind")
    args = parser.parse_args()

    with scratch_database() as dsn:
        org = uuid.uuid4()
        n = args.transactions
        started = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as owner:
            seed(owner, org, n)
            seeded = time.perf_counter() - started
            problems = find_violations(owner)
            assert not problems, problems
            version = owner.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]

        settings = bench_settings(dsn)
        app = create_app(settings)
        client = app.test_client()
        headers = {"Authorization": "Bearer " + issue_token(settings, org_id=org, role="member",
                                                            subject="bench")}
        deep = max(0, n - 50)
        kinds = {
            "first page": "?limit=50",
            f"offset {n // 2}": f"?limit=50&offset={n // 2}",
            f"offset {deep}": f"?limit=50&offset={deep}",
            "type=sms_send, first page": "?limit=50&type=sms_send",
            f"type=bonus, offset {n // 4}": f"?limit=50&type=bonus&offset={n // 4}",
        }
        print(f"PostgreSQL {version}; org with {n:,} transactions (seeded in {seeded:.1f}s); "
              f"{args.pages} requests per row")
        print(f"{'page':<32}{'p50 ms':>9}{'p99 ms':>9}{'rows':>6}{'total':>10}")
        for label, query in kinds.items():
            times = []
            for _ in range(args.pages):
                t0 = time.perf_counter()
                response = client.get(f"/api/billing/transactions{query}", headers=headers)
                times.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, response.get_data(as_text=True)
            body = response.get_json()
            print(f"{label:<32}{percentile(times, 50):>9.2f}{percentile(times, 99):>9.2f}"
                  f"{len(body['transactions']):>6}{body['pagination']['total']:>10,}")
        app.extensions["billing_pool"].close()

        with psycopg.connect(dsn, autocommit=True) as owner:
            times = []
            for _ in range(max(3, args.pages // 20)):
                t0 = time.perf_counter()
                owner.execute("SELECT count(*) FROM billing_transactions WHERE org_id = %s", (org,))
                seed_page = ("SELECT * FROM billing_transactions WHERE org_id = %s"
                             " ORDER BY created_at DESC OFFSET %s LIMIT 50")
                owner.execute(seed_page, (org, n // 2)).fetchall()
                times.append((time.perf_counter() - t0) * 1000)
        print(f"{'seed design, COUNT(*)+OFFSET ' + str(n // 2):<32}{percentile(times, 50):>9.2f}"
              f"{percentile(times, 99):>9.2f}   (SQL only, for reference)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
