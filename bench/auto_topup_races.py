"""Auto top-up under concurrent charges, measured from outside: how many PaymentIntents
one crossing makes, and how long a crossing takes to become credit.

Starts its own embedded PostgreSQL, the service under gunicorn (production settings),
stripe-sim (Stripe's API as the service uses it) and `billing-gateway worker`. Each round
takes a new org through what a customer does: a Checkout top-up of 25.00 that saves the
card (paid on stripe-sim), auto top-up on at 10.00 to 50.00; then `--charges` concurrent
POST /deduct of 0.40 each from as many threads, which cross the threshold once. It waits
for the worker's off-session PaymentIntent and its webhook, and counts per round: attempts,
PaymentIntents at stripe-sim for the org's attempts, purchases in the ledger, the final
balance (exactly 50.00 + what the charges after the crossing took is expected), and the
time from the burst's end to the credit.

    python bench/auto_topup_races.py                  # 10 rounds of 50 charges
    python bench/auto_topup_races.py --rounds 1       # the CI smoke
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.money_events import worker_process
from bench.scratch import GATEWAY_WEBHOOK_SECRET, Gateway, gateway, percentile
from billing_gateway.platform.local_server import LocalServer
from billing_gateway.topups import stripe_sim

PRICE = Decimal("0.40")
THRESHOLD, TARGET, FIRST = Decimal("10.00"), Decimal("50.00"), Decimal("25.00")


def _api(service: Gateway, method: str, path: str, **kwargs: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {service.tokens['admin']}", **kwargs.pop("headers", {})}
    return requests.request(method, f"{service.base}/api/billing{path}", headers=headers,
                            timeout=30, **kwargs)


def _wait(condition: Any, what: str, seconds: float = 30) -> float:
    """Poll until condition() is true; the seconds it took."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > seconds:
            raise TimeoutError(what)
        time.sleep(0.02)
    return time.monotonic() - started


def _auto_top_up(service: Gateway, org: uuid.UUID) -> dict[str, Any]:
    answer = _api(service, "GET", "/auto-top-up", params={"orgId": str(org)})
    answer.raise_for_status()
    found: dict[str, Any] = answer.json()
    return found


def _save_card(service: Gateway, org: uuid.UUID) -> None:
    """A Checkout top-up of 25.00 with saveCard, paid on stripe-sim's page."""
    session = _api(service, "POST", "/create-checkout", json={
        "amount": str(FIRST), "orgId": str(org), "saveCard": True},
        headers={"Idempotency-Key": str(uuid.uuid4())})
    session.raise_for_status()
    paid = requests.post(f"{session.json()['url']}/pay", allow_redirects=False, timeout=30)
    assert paid.status_code == 303, paid.text
    _wait(lambda: _auto_top_up(service, org)["paymentMethod"] is not None, "the card saved")


def _burst(service: Gateway, org: uuid.UUID, charges: int) -> list[int]:
    """`charges` concurrent /deduct of PRICE from as many threads; their statuses."""
    headers = {"Authorization": f"Bearer {service.tokens['service']}"}

    def one(i: int) -> int:
        return requests.post(f"{service.base}/api/billing/deduct", headers=headers, json={
            "orgId": str(org), "smsCount": 1, "costPerSms": str(PRICE),
            "messageId": f"race-{org}-{i}"}, timeout=30).status_code

    with ThreadPoolExecutor(max_workers=charges) as pool:
        return list(pool.map(one, range(charges)))


def _round(service: Gateway, sim_url: str, charges: int) -> dict[str, Any]:
    org = uuid.uuid4()
    _save_card(service, org)
    answer = _api(service, "PUT", "/auto-top-up", json={
        "enabled": True, "threshold": str(THRESHOLD), "targetBalance": str(TARGET),
        "orgId": str(org)})
    answer.raise_for_status()
    statuses = _burst(service, org, charges)
    seconds = _wait(lambda: (_auto_top_up(service, org)["lastAttempt"] or {}).get(
        "status") == "succeeded", "the auto top-up credited")
    with psycopg.connect(service.dsn) as conn:
        attempts = conn.execute("SELECT id, amount FROM auto_topup_attempts WHERE org_id = %s",
                                (org,)).fetchall()
        purchases, balance = conn.execute(
            "SELECT count(*) FILTER (WHERE type = 'purchase'), (SELECT sms_balance FROM"
            " organizations WHERE id = %s) FROM billing_transactions WHERE org_id = %s",
            (org, org)).fetchone() or (0, None)
    ids = {str(a[0]) for a in attempts}
    listed = requests.get(f"{sim_url}/v1/payment_intents", params={"limit": 100},
                          timeout=30).json()["data"]
    intents = [i for i in listed if i["metadata"].get("auto_topup_attempt") in ids]
    charged = PRICE * statuses.count(201)
    expected = FIRST - charged + sum((a[1] for a in attempts), Decimal(0))
    return {"charged": statuses.count(201), "attempts": len(attempts),
            "intents": len(intents), "purchases": purchases, "balance": balance,
            "exact": balance == expected and all(a[1] == TARGET - (FIRST - PRICE * 38)
                                                 for a in attempts),
            "seconds": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--charges", type=int, default=50)
    args = parser.parse_args()
    sim = LocalServer()
    # stripe-sim checks no key; the worker (started with os.environ) and gunicorn use it.
    env = {"STRIPE_SECRET_KEY": "sk_test_stripe_sim", "STRIPE_API_BASE": sim.url,
           "BILLING_PUBLIC_URL": "http://127.0.0.1"}
    os.environ.update(env)
    with gateway("autotopup", orgs=1, env=env) as service:
        sim.serve(stripe_sim.StripeSim(
            sim.url, f"{service.base}/api/billing/stripe-webhook", GATEWAY_WEBHOOK_SECRET).app())
        workdir = Path(service.server.pgdata).parent
        with worker_process(service.dsn, workdir):
            rows = [_round(service, sim.url, args.charges) for _ in range(args.rounds)]
    sim.stop()
    print(f"auto top-up races: {args.rounds} rounds, {args.charges} concurrent charges of "
          f"{PRICE} each from {FIRST}, threshold {THRESHOLD}, target {TARGET}")
    print("| round | charged | attempts | PaymentIntents | purchases | balance | exact |"
          " crossing to credit |")
    print("|---:|---:|---:|---:|---:|---:|:---:|---:|")
    for n, row in enumerate(rows, 1):
        print(f"| {n} | {row['charged']} | {row['attempts']} | {row['intents']} |"
              f" {row['purchases']} | {row['balance']} | {'yes' if row['exact'] else 'NO'} |"
              f" {row['seconds'] * 1000:.0f} ms |")
    times = [row["seconds"] * 1000 for row in rows]
    wrong = [n for n, row in enumerate(rows, 1)
             if (row["attempts"], row["intents"], row["purchases"]) != (1, 1, 2)
             or not row["exact"]]
    print(f"crossing to credit: p50 {percentile(times, 50):.0f} ms, max {max(times):.0f} ms;"
          f" rounds with other than one attempt, one PaymentIntent and two purchases, or an"
          f" inexact balance: {wrong or 'none'}")
    return 1 if wrong else 0


if __name__ == "__main__":
    raise SystemExit(main())
