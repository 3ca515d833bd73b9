"""Charges per second through POST /deduct/bulk, hot org and spread over many orgs.

Each request goes through the whole Flask stack in-process (routing, JWT, item parsing,
one SQL call under RLS, JSON answer) on one client thread, so the figure is what one
worker process does; bench/run.py (issue 6) measures gunicorn over HTTP.

    python bench/bulk_charges.py                      # 1,000 charges per request
    python bench/bulk_charges.py --batch 100 --requests 50
    DATABASE_URL=postgresql://... python bench/bulk_charges.py

Without DATABASE_URL it uses a throwaway embedded PostgreSQL.
"""

from __future__ import annotations

import argparse
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import bench_settings, percentile, scratch_database
from billing_gateway import create_app
from billing_gateway.ledger.invariants import find_violations
from billing_gateway.platform.auth import issue_token


def fund(dsn: str, orgs: list[uuid.UUID], amount: Decimal) -> None:
    """Give every org a balance through the ledger's own credit function."""
    with psycopg.connect(dsn, autocommit=True) as owner, owner.transaction():
        for org in orgs:
            owner.execute("SELECT set_config('billing.org_id', %s, true)", (str(org),))
            owner.execute("SELECT add_credits(%s, %s, 'bonus')", (org, amount))


def main() -> int:
    """Fund, charge, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000, help="charges per request")
    parser.add_argument("--requests", type=int, default=30, help="requests per scenario")
    parser.add_argument("--orgs", type=int, default=1000, help="orgs in the spread scenario")
    args = parser.parse_args()

    with scratch_database() as dsn:
        hot = uuid.uuid4()
        spread = [uuid.uuid4() for _ in range(args.orgs)]
        fund(dsn, [hot, *spread], Decimal(10_000_000))
        settings = bench_settings(dsn)
        app = create_app(settings)
        client = app.test_client()
        headers = {"Authorization": "Bearer " + issue_token(settings, org_id=None, role="service",
                                                            subject="bench")}
        scenarios = {
            "hot org": lambda i: hot,
            f"spread over {args.orgs} orgs": lambda i: spread[i % len(spread)],
        }
        print(f"{args.batch} charges per request, {args.requests} requests per row, one client")
        print(f"{'scenario':<28}{'charges/s':>11}{'p50 ms':>9}{'p99 ms':>9}")
        for label, pick_org in scenarios.items():
            times = []
            for r in range(args.requests):
                charges = [{"orgId": str(pick_org(i)), "smsCount": 1, "costPerSms": "0.0075",
                            "messageId": f"{label}-{r}-{i}"} for i in range(args.batch)]
                t0 = time.perf_counter()
                response = client.post("/api/billing/deduct/bulk", headers=headers,
                                       json={"charges": charges})
                times.append(time.perf_counter() - t0)
                body = response.get_json()
                assert response.status_code == 200, body
                assert body["summary"]["charged"] == args.batch, body["summary"]
            rate = args.batch * len(times) / sum(times)
            print(f"{label:<28}{rate:>11,.0f}{percentile(times, 50) * 1000:>9.1f}"
                  f"{percentile(times, 99) * 1000:>9.1f}")
        app.extensions["billing_pool"].close()
        with psycopg.connect(dsn, autocommit=True) as owner:
            problems = find_violations(owner)
        print("ledger invariants:", "sound" if not problems else problems)
        return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
