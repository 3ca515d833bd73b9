"""Print what racing charges do to one org: counts per HTTP status, balance, ledger sum.

    python bench/charge_races.py            # embedded PostgreSQL, or DATABASE_URL's server

The same races are asserted by tests/usage/test_deduct.py and tests/usage/test_bulk.py;
this prints them.
"""

from __future__ import annotations

import sys
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import bench_settings, scratch_database
from billing_gateway import create_app
from billing_gateway.ledger.invariants import find_violations
from billing_gateway.platform.auth import issue_token

API = "/api/billing"


def main() -> int:
    """Run three races on one org and print their outcome."""
    with scratch_database() as dsn:
        settings = bench_settings(dsn)
        app = create_app(settings)
        org = uuid.uuid4()
        service, admin = ({"Authorization": "Bearer " + issue_token(
            settings, org_id=None, role=role, subject=role)} for role in ("service", "admin"))

        def post(path: str, headers: dict[str, str], body: dict) -> tuple[int, dict]:
            response = app.test_client().post(API + path, headers=headers, json=body)
            return response.status_code, response.get_json()

        def charge(message: str, price: str) -> tuple[int, dict]:
            return post("/deduct", service, {"orgId": str(org), "smsCount": 1,
                                             "costPerSms": price, "messageId": message})

        post("/add-funds", admin, {"amount": "50.00", "orgId": str(org)})
        with ThreadPoolExecutor(16) as pool:
            statuses = Counter(s for s, _ in pool.map(lambda i: charge(f"p{i}", "1.00"),
                                                      range(200)))
        print("200 parallel /deduct of 1.00 against 50.00:", dict(statuses))

        post("/add-funds", admin, {"amount": "5.00", "orgId": str(org)})
        with ThreadPoolExecutor(10) as pool:
            ids = {body["transactionId"] for _, body in pool.map(lambda i: charge("dup", "0.25"),
                                                                  range(20))}
        print("one messageId sent 20 times concurrently: distinct transactions =", len(ids))

        def mixed(i: int) -> int:
            if i % 3 == 0:
                charges = [{"orgId": str(org), "smsCount": 1, "costPerSms": "0.05",
                            "messageId": f"b{i}-{j}"} for j in range(40)]
                return post("/deduct/bulk", service, {"charges": charges})[0]
            if i % 3 == 1:
                return charge(f"s{i}", "0.30")[0]
            return post("/add-funds", admin, {"orgId": str(org), "amount": "0.10"})[0]

        with ThreadPoolExecutor(8) as pool:
            print("90 racing bulk (40 items) / single / credit requests:",
                  dict(Counter(pool.map(mixed, range(90)))))
        app.extensions["billing_pool"].close()
        with psycopg.connect(dsn) as conn:
            balance, total = conn.execute(
                "SELECT o.sms_balance, sum(t.amount) FROM organizations o"
                " JOIN billing_transactions t ON t.org_id = o.id WHERE o.id = %s"
                " GROUP BY o.sms_balance", (org,)).fetchone() or (None, None)
            problems = find_violations(conn)
        print(f"balance {balance}, sum of the ledger {total}; invariant violations: {problems}")
        return 0 if balance == total and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
