"""Time `billing-gateway verify-ledger` on a ledger of N transactions over M orgs.

    python bench/verify_ledger.py --transactions 1000000 --orgs 1000
    DATABASE_URL=postgresql://... python bench/verify_ledger.py

Seeds consistent rows directly in SQL (as the owner), then runs the real command.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import finish_seed, scratch_database
from billing_gateway import cli

SEED = """
WITH s AS (
    SELECT o.org_id, i,
           CASE i %% 4 WHEN 0 THEN 'sms_send' WHEN 1 THEN 'purchase' ELSE 'bonus' END AS type,
           CASE i %% 4 WHEN 0 THEN -0.5 ELSE 1.00 END::numeric(18, 4) AS amount
      FROM (SELECT gen_random_uuid() AS org_id FROM generate_series(1, %(orgs)s)) o,
           generate_series(1, %(per_org)s) AS i),
r AS (
    SELECT s.*, sum(amount) OVER (PARTITION BY org_id ORDER BY i) AS after,
           row_number() OVER (PARTITION BY org_id, type ORDER BY i) AS type_seq
      FROM s)
INSERT INTO billing_transactions (org_id, seq, type_seq, type, amount, balance_before,
    balance_after, sms_count, cost_per_sms, message_id)
SELECT org_id, i, type_seq, type, amount, after - amount, after,
       CASE WHEN type = 'sms_send' THEN 1 END, CASE WHEN type = 'sms_send' THEN 0.5 END,
       CASE WHEN type = 'sms_send' THEN 'm' || i END
  FROM r
"""


def main() -> int:
    """Seed, verify, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transactions", type=int, default=1_000_000)
    parser.add_argument("--orgs", type=int, default=1000)
    args = parser.parse_args()
    per_org = max(1, args.transactions // args.orgs)
    with scratch_database() as dsn:
        started = time.perf_counter()
        with psycopg.connect(dsn, autocommit=True) as owner:
            owner.execute("SET session_replication_role = replica")  # no FK checks on seed
            owner.execute(SEED, {"orgs": args.orgs, "per_org": per_org})
            finish_seed(owner)
            version = owner.execute("SHOW server_version").fetchone()[0]  # type: ignore[index]
        print(f"PostgreSQL {version}: seeded {args.orgs * per_org:,} transactions over "
              f"{args.orgs:,} orgs in {time.perf_counter() - started:.1f} s")
        os.environ["DATABASE_URL"] = dsn
        os.environ.setdefault("BILLING_JWT_SECRET", "bench-" + "x" * 40)
        t0 = time.perf_counter()
        code = cli.main(["verify-ledger"])
        print(f"verify-ledger exit {code}, wall time {time.perf_counter() - t0:.2f} s")
        return code


if __name__ == "__main__":
    sys.exit(main())
