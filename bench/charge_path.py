"""What a charge costs in the database alone: pgbench of POST /deduct's one statement
(api_charge, hot org and spread over 1,000 orgs, 16 clients), and charge_sms_bulk with
1,000 charges per call (one client), on a fresh scratch database.

Run it in two checkouts to compare two versions of sql/ (the scripts' own parent folder
supplies billing_gateway and sql/):

    python bench/charge_path.py --seconds 10
    python bench/charge_path.py --events compare   # the outbox trigger on and off, same run
    DATABASE_URL=postgresql://... python bench/charge_path.py
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
import uuid
from pathlib import Path

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.run import SPREAD_ORGS, org_uuid, run_pgbench
from bench.scratch import percentile, scratch_database

BULK = """SELECT count(*) FILTER (WHERE outcome = 'charged') FROM charge_sms_bulk(
    %(orgs)s::uuid[], %(counts)s::integer[], %(costs)s::numeric[], 0.0075,
    %(messages)s::text[], %(campaigns)s::text[], %(descriptions)s::text[], 'bench')"""


def fund(dsn: str) -> None:
    """Fund the hot org and the 1,000 spread orgs (the orgs of bench/run.py)."""
    with psycopg.connect(dsn, autocommit=True) as owner, owner.transaction():
        for n in range(SPREAD_ORGS + 1):
            owner.execute("SELECT set_config('billing.org_id', %s, true)", (org_uuid(n),))
            owner.execute("SELECT add_credits(%s, 100000000, 'bonus')", (org_uuid(n),))


def bulk(dsn: str, calls: int, tag: str = "bulk") -> list[float]:
    """Seconds per charge_sms_bulk call of 1,000 charges over the 1,000 orgs, as billing_app."""
    orgs = [uuid.UUID(org_uuid(1 + i)) for i in range(1000)]
    times = []
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SET ROLE billing_app")
        org_set = "{" + ",".join(f'"{org}":1' for org in orgs) + "}"
        for call in range(calls):
            params = {"orgs": orgs, "counts": [1] * 1000, "costs": [None] * 1000,
                      "messages": [f"{tag}-{call}-{i}" for i in range(1000)],
                      "campaigns": [f"campaign-{i % 10}" for i in range(1000)],
                      "descriptions": ["Sent 1 SMS"] * 1000}
            t0 = time.perf_counter()
            with conn.transaction():
                conn.execute("SELECT set_config('billing.org_set', %s, true)", (org_set,))
                charged = conn.execute(BULK, params).fetchone()
            times.append(time.perf_counter() - t0)
            assert charged == (1000,), charged
    return times


def set_events(dsn: str, on: bool) -> None:
    """Turn the threshold trigger (the outbox's only cost on a charge) on or off."""
    with psycopg.connect(dsn, autocommit=True) as owner:
        owner.execute("ALTER TABLE organizations {} TRIGGER organizations_balance_events"
                      .format("ENABLE" if on else "DISABLE"))


def measure(dsn: str, seconds: float, bulk_calls: int, workdir: Path, label: str) -> None:
    """Print the hot, spread and bulk rows."""
    for spread in (False, True):
        result = run_pgbench(dsn, seconds, spread=spread, workdir=workdir)
        print(f"{label}{result.name:<44}{result.throughput:>10,.0f}{result.p50_ms:>9.2f}"
              f"{result.p99_ms:>9.2f}", flush=True)
    times = bulk(dsn, bulk_calls, tag=uuid.uuid4().hex)  # new messages every time
    print(f"{label}{'charge_sms_bulk, 1,000 charges per call':<44}"
          f"{1000 * len(times) / sum(times):>10,.0f}{percentile(times, 50) * 1000:>9.2f}"
          f"{percentile(times, 99) * 1000:>9.2f}", flush=True)


def main() -> int:
    """Fund, charge, print."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10, help="per pgbench row")
    parser.add_argument("--bulk-calls", type=int, default=40)
    parser.add_argument("--events", choices=["on", "compare"], default="on",
                        help="compare: alternate rounds with the outbox trigger on and off")
    parser.add_argument("--rounds", type=int, default=2, help="rounds of each, with compare")
    args = parser.parse_args()
    with scratch_database() as dsn, tempfile.TemporaryDirectory() as tmp:
        fund(dsn)
        if args.events == "on":
            print(f"{'measurement':<44}{'per s':>10}{'p50 ms':>9}{'p99 ms':>9}")
            measure(dsn, args.seconds, args.bulk_calls, Path(tmp), "")
            return 0
        print(f"{'events':<8}{'measurement':<44}{'per s':>10}{'p50 ms':>9}{'p99 ms':>9}")
        for _ in range(args.rounds):
            for on in (True, False):
                set_events(dsn, on)
                measure(dsn, args.seconds, args.bulk_calls, Path(tmp),
                        f"{'on' if on else 'off':<8}")
        set_events(dsn, True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
