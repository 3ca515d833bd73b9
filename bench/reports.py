"""Time GET /usage/summary and GET /transactions.csv for one org with many transactions.

Seeds the org directly in SQL (as bench/history_page.py does), spread over a year, with
usage_daily filled as the charge functions would; then, through the whole Flask stack
in-process: the summary by day and by campaign over 30 days and a year (p50/p99), next to
the same sums computed from the ledger (SQL alone: what the summary would cost without
usage_daily), and the whole history as CSV (time to first byte, total, rows/s).

    python bench/reports.py --transactions 2000000
    DATABASE_URL=postgresql://... python bench/reports.py

Without DATABASE_URL it uses a throwaway embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import datetime as dt
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

# 3 of 4 rows are SMS charges (20 campaigns and none), 1 in 4 a purchase, 1 in 100 charges
# refunded; created_at spread evenly over the 365 days before now.
SEED = """
WITH s AS (
    SELECT i,
           CASE WHEN i %% 4 = 1 THEN 'purchase'
                WHEN i %% 100 = 2 THEN 'refund' ELSE 'sms_send' END AS type,
           CASE WHEN i %% 4 = 1 THEN 10.00 WHEN i %% 100 = 2 THEN 0.0075
                ELSE -0.0075 * (1 + i %% 3) END::numeric(18, 4) AS amount
      FROM generate_series(1, %(n)s) AS i),
r AS (
    SELECT s.*, sum(amount) OVER (ORDER BY i) AS after,
           row_number() OVER (PARTITION BY type ORDER BY i) AS type_seq
      FROM s)
INSERT INTO billing_transactions (org_id, seq, type_seq, type, amount, balance_before,
    balance_after, sms_count, cost_per_sms, message_id, campaign_id, payment_method,
    description, created_at)
SELECT %(org)s, i, type_seq, type, amount, after - amount, after,
       CASE WHEN type = 'sms_send' THEN 1 + i %% 3 END,
       CASE WHEN type <> 'purchase' THEN 0.0075 END,
       CASE WHEN type <> 'purchase' THEN 'm' || i END,
       CASE WHEN type <> 'purchase' AND i %% 21 <> 0 THEN 'campaign-' || i %% 20 END,
       CASE WHEN type = 'purchase' THEN 'card' END,
       CASE WHEN type = 'purchase' THEN 'Top-up' ELSE 'Sent SMS' END,
       now() - interval '365 days' * (%(n)s - i) / %(n)s
  FROM r
"""

# The summary without usage_daily: the same sums from the ledger, over (org_id, created_at).
FROM_LEDGER = """
SELECT {key}, coalesce(sum(sms_count) FILTER (WHERE type = 'sms_send'), 0), -sum(amount)
  FROM billing_transactions
 WHERE org_id = %(org)s AND created_at >= %(since)s AND created_at < %(before)s
   AND (type = 'sms_send' OR (type = 'refund' AND message_id IS NOT NULL))
 GROUP BY 1
"""


def seed(conn: psycopg.Connection, org: uuid.UUID, n: int) -> None:
    """Write n ledger rows for org, its counters and its usage_daily, as the owner."""
    conn.execute("INSERT INTO organizations (id) VALUES (%s)", (org,))
    conn.execute(SEED, {"org": org, "n": n})
    finish_seed(conn, org)


def main() -> int:
    """Seed, time, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=200_000)
    parser.add_argument("--requests", type=int, default=50, help="summary requests per row")
    parser.add_argument("--exports", type=int, default=3, help="whole-history CSV exports")
    args = parser.parse_args()

    with scratch_database() as dsn:
        org = uuid.uuid4()
        n = args.transactions
        started = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as owner:
            seed(owner, org, n)
            seeded = time.perf_counter() - started
            problems = find_violations(owner, org)
            assert not problems, problems[:5]
            version = owner.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
            rollup_rows = owner.execute("SELECT count(*) FROM usage_daily").fetchone()[0]  # type: ignore[index]

        settings = bench_settings(dsn)
        app = create_app(settings)
        client = app.test_client()
        headers = {"Authorization": "Bearer " + issue_token(settings, org_id=org, role="member",
                                                            subject="bench")}
        today = dt.datetime.now(dt.UTC).date()
        ranges = {"30 days": today - dt.timedelta(days=29),
                  "a year": today - dt.timedelta(days=365)}
        print(f"PostgreSQL {version}; org with {n:,} transactions over a year (seeded in "
              f"{seeded:.1f}s, {rollup_rows:,} usage_daily rows); {args.requests} requests "
              "per row")
        print(f"{'GET /usage/summary':<40}{'p50 ms':>9}{'p99 ms':>9}{'items':>7}{'SMS':>12}")
        for label, start in ranges.items():
            for group in ("day", "campaign"):
                times = []
                for _ in range(args.requests):
                    t0 = time.perf_counter()
                    response = client.get(f"/api/billing/usage/summary?from={start}&to={today}"
                                          f"&groupBy={group}", headers=headers)
                    times.append((time.perf_counter() - t0) * 1000)
                    assert response.status_code == 200, response.get_data(as_text=True)
                body = response.get_json()
                print(f"{f'groupBy={group}, {label}':<40}{percentile(times, 50):>9.2f}"
                      f"{percentile(times, 99):>9.2f}{len(body['items']):>7}"
                      f"{body['total']['smsCount']:>12,}")

        with psycopg.connect(dsn, autocommit=True) as owner:
            for label, start in ranges.items():
                for group, key in (("day", "utc_day(created_at)"), ("campaign", "campaign_id")):
                    times = []
                    for _ in range(3):
                        t0 = time.perf_counter()
                        owner.execute(FROM_LEDGER.format(key=key), {
                            "org": org, "since": dt.datetime.combine(start, dt.time.min, dt.UTC),
                            "before": dt.datetime.combine(today + dt.timedelta(days=1),
                                                          dt.time.min, dt.UTC)}).fetchall()
                        times.append((time.perf_counter() - t0) * 1000)
                    print(f"{f'from the ledger, {group}, {label}':<40}"
                          f"{percentile(times, 50):>9.2f}{max(times):>9.2f}   (SQL only)")

        print(f"\n{'GET /transactions.csv, whole history':<40}{'first byte ms':>14}"
              f"{'total s':>9}{'rows/s':>10}{'MB':>7}")
        for _ in range(args.exports):
            t0 = time.perf_counter()
            response = client.get("/api/billing/transactions.csv", headers=headers,
                                  buffered=False)
            chunks = iter(response.response)
            size = len(next(chunks))
            first_byte = time.perf_counter() - t0
            lines = 0
            for chunk in chunks:
                size += len(chunk)
                lines += chunk.count(b"\r\n")
            response.close()
            total = time.perf_counter() - t0
            print(f"{'':<40}{first_byte * 1000:>14.1f}{total:>9.2f}{n / total:>10,.0f}"
                  f"{size / 1e6:>7.1f}")
        app.extensions["billing_pool"].close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
