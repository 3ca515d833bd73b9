"""What one request costs the service's Python, in process: GET /balance and POST /deduct
as the SMS sender through the real app (production settings, rate limits on), on a
scratch database. Prints ms per request (the median of `--rounds` rounds of `--requests`
each) and, with `--profile`, cProfile's heaviest entries: where the time goes, extension
by extension (limiter, JWT, webargs, the view, psycopg).

    python bench/request_cost.py                      # both endpoints
    python bench/request_cost.py --profile deduct     # and the profile of /deduct
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.scratch import bench_settings, scratch_database
from billing_gateway import create_app
from billing_gateway.platform.auth import issue_token

ORG = "00000000-0000-4000-8000-000000000001"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--profile", choices=["balance", "deduct"])
    args = parser.parse_args()
    with scratch_database() as dsn:
        with psycopg.connect(dsn, autocommit=True) as owner, owner.transaction():
            owner.execute("SELECT set_config('billing.org_id', %s, true)", (ORG,))
            owner.execute("SELECT add_credits(%s, 100000000, 'bonus')", (ORG,))
        settings = bench_settings(dsn).with_overrides(environment="production",
                                                      rate_limit="300/minute")
        app = create_app(settings)
        token = issue_token(settings, org_id=None, role="service", subject="bench-sms")
        client = app.test_client()
        headers = {"Authorization": f"Bearer {token}"}
        sent = 0

        def run(kind: str, count: int) -> None:
            nonlocal sent
            for _ in range(count):
                sent += 1
                if kind == "balance":
                    answer = client.get(f"/api/billing/balance?orgId={ORG}", headers=headers)
                else:
                    answer = client.post("/api/billing/deduct", headers=headers, json={
                        "orgId": ORG, "smsCount": 1, "costPerSms": "0.0075",
                        "messageId": f"cost-{sent}"})
                assert answer.status_code in (200, 201), answer.get_json()

        for kind in ("balance", "deduct"):
            run(kind, 200)  # warm: prepared statements, the pool, imports
            rounds = []
            for _ in range(args.rounds):
                started = time.perf_counter()
                run(kind, args.requests)
                rounds.append((time.perf_counter() - started) * 1000 / args.requests)
            print(f"{kind}: {statistics.median(rounds):.3f} ms per request (median of"
                  f" {args.rounds} rounds of {args.requests}; rounds "
                  f"{', '.join(f'{r:.3f}' for r in rounds)})")
        if args.profile:
            profiler = cProfile.Profile()
            profiler.runcall(run, args.profile, args.requests)
            pstats.Stats(profiler).sort_stats("cumulative").print_stats(30)
        app.extensions["billing_pool"].close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
