"""The ledger's invariants, checked by SQL over every org; the core of `verify-ledger`.

Each check is one query that PostgreSQL streams through (window functions over the
(org_id, seq) index, aggregates), returning one row per violation, so the cost grows
with the ledger's size and memory does not. They must run as a role that sees every
org (a superuser or BYPASSRLS): under row level security a role would see nothing and
report a clean ledger that was never read.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg

from billing_gateway.platform import money


def _exponent_sql(column: str) -> str:
    """SQL for the minor-unit exponent of a currency column (money.currency_exponent)."""
    zero = ", ".join(f"'{c}'" for c in sorted(money.ZERO_DECIMAL_CURRENCIES))
    three = ", ".join(f"'{c}'" for c in sorted(money.THREE_DECIMAL_CURRENCIES))
    return f"(CASE WHEN {column} IN ({zero}) THEN 0 WHEN {column} IN ({three}) THEN 3 ELSE 2 END)"


# Each query takes %(org)s (NULL: every org) and returns (org_id, what is wrong).
_CHECKS = {
    "balance equals the sum of its transactions": """
        SELECT o.id, format('balance %%s, sum of amounts %%s, count %%s, rows %%s',
                            o.sms_balance, coalesce(t.total, 0), o.transaction_count,
                            coalesce(t.rows, 0))
          FROM organizations o
          LEFT JOIN (SELECT org_id, sum(amount) AS total, count(*) AS rows, max(seq) AS top
                       FROM billing_transactions
                      WHERE %(org)s::uuid IS NULL OR org_id = %(org)s::uuid
                      GROUP BY org_id) t ON t.org_id = o.id
         WHERE (%(org)s::uuid IS NULL OR o.id = %(org)s::uuid)
           AND (o.sms_balance <> coalesce(t.total, 0)
                OR o.transaction_count <> coalesce(t.rows, 0)
                OR coalesce(t.top, 0) <> o.transaction_count)""",
    "each row continues the previous one": """
        SELECT org_id, format('seq %%s: balance_before %%s + amount %%s, balance_after %%s,'
                              ' previous row seq %%s balance_after %%s',
                              seq, balance_before, amount, balance_after, prev_seq, prev_after)
          FROM (SELECT org_id, seq, balance_before, amount, balance_after,
                       lag(seq) OVER w AS prev_seq, lag(balance_after) OVER w AS prev_after
                  FROM billing_transactions
                 WHERE %(org)s::uuid IS NULL OR org_id = %(org)s::uuid
                WINDOW w AS (PARTITION BY org_id ORDER BY seq)) t
         WHERE balance_before + amount <> balance_after
            OR seq <> coalesce(prev_seq, 0) + 1
            OR balance_before <> coalesce(prev_after, 0)""",
    "per-type counts match the rows": """
        SELECT coalesce(c.org_id, t.org_id),
               format('type %%s: counted %%s, rows %%s, top type_seq %%s',
                      coalesce(c.type, t.type), c.n, t.rows, t.top)
          FROM (SELECT * FROM billing_transaction_counts
                 WHERE %(org)s::uuid IS NULL OR org_id = %(org)s::uuid) c
          FULL JOIN (SELECT org_id, type, count(*) AS rows, max(type_seq) AS top
                       FROM billing_transactions
                      WHERE %(org)s::uuid IS NULL OR org_id = %(org)s::uuid
                      GROUP BY org_id, type) t
            ON t.org_id = c.org_id AND t.type = c.type
         WHERE c.n IS DISTINCT FROM t.rows OR c.n IS DISTINCT FROM t.top""",
    # usage_daily (GET /usage/summary) is the ledger's usage summed per UTC day and
    # campaign: SMS of the sms_send rows, minus the amounts of sms_send rows and usage
    # refunds (refund rows with a message_id). A FULL JOIN needs equality conditions
    # (hash or merge join), so a NULL campaign is matched by (IS NULL, coalesce) pairs.
    "usage rollup matches the ledger": """
        SELECT coalesce(r.org_id, t.org_id),
               format('day %%s campaign %%s: rollup %%s SMS %%s, ledger %%s SMS %%s',
                      coalesce(r.day, t.day), coalesce(r.campaign_id, t.campaign_id, 'none'),
                      r.sms_count, r.amount, t.sms_count, t.amount)
          FROM (SELECT * FROM usage_daily
                 WHERE %(org)s::uuid IS NULL OR org_id = %(org)s::uuid) r
          FULL JOIN (SELECT org_id, utc_day(created_at) AS day, campaign_id,
                            coalesce(sum(sms_count) FILTER (WHERE type = 'sms_send'), 0)
                                AS sms_count,
                            -sum(amount) AS amount
                       FROM billing_transactions
                      WHERE (type = 'sms_send' OR (type = 'refund' AND message_id IS NOT NULL))
                        AND (%(org)s::uuid IS NULL OR org_id = %(org)s::uuid)
                      GROUP BY org_id, utc_day(created_at), campaign_id) t
            ON t.org_id = r.org_id AND t.day = r.day
           AND (t.campaign_id IS NULL) = (r.campaign_id IS NULL)
           AND coalesce(t.campaign_id, '') = coalesce(r.campaign_id, '')
         WHERE r.sms_count IS DISTINCT FROM t.sms_count
            OR r.amount IS DISTINCT FROM t.amount""",
    "no negative balance": """
        SELECT id, format('balance %%s', sms_balance) FROM organizations
         WHERE (%(org)s::uuid IS NULL OR id = %(org)s::uuid)
           AND (sms_balance < 0 OR sms_balance = 'NaN')""",
    "at most one purchase per PaymentIntent": """
        SELECT min(org_id::text)::uuid, format('%%s purchases of %%s', count(*), payment_intent_id)
          FROM billing_transactions
         WHERE type = 'purchase' AND payment_intent_id IS NOT NULL
           AND (%(org)s::uuid IS NULL OR org_id = %(org)s::uuid)
         GROUP BY payment_intent_id HAVING count(*) > 1""",
    # A reversal can be given back (a Stripe refund that failed or was canceled): a
    # `refund` row of the payment whose metadata names the refund (`stripe_refund`,
    # billing_gateway/topups/payments.py). A refund can fail and the charge be refunded
    # again, so reversals alone may add up to more than the purchase; what is taken back
    # net of what was given back may not, and more is never given back than was taken.
    "reversals never exceed their purchase": """
        SELECT org_id, format('%%s: purchase %%s, reversed %%s, given back %%s',
                              payment_intent_id, coalesce(purchased, 0), reversed, given_back)
          FROM (SELECT org_id, payment_intent_id,
                       sum(amount) FILTER (WHERE type = 'purchase') AS purchased,
                       coalesce(-sum(amount) FILTER (WHERE type = 'reversal'), 0) AS reversed,
                       coalesce(sum(amount) FILTER (WHERE type = 'refund'), 0) AS given_back
                  FROM billing_transactions
                 WHERE payment_intent_id IS NOT NULL
                   AND (type IN ('purchase', 'reversal')
                        OR (type = 'refund' AND metadata ? 'stripe_refund'))
                   AND (%(org)s::uuid IS NULL OR org_id = %(org)s::uuid)
                 GROUP BY org_id, payment_intent_id) p
         WHERE reversed - given_back > coalesce(purchased, 0) OR given_back > reversed""",
    # reversed_minor is what is taken back net of what was given back, shortfall included.
    "Stripe payment state matches the ledger": """
        SELECT p.org_id, format('%%s: credited_minor %%s but purchase %%s; reversed_minor %%s'
                                ' but reversals %%s - given back %%s + shortfall %%s',
                                p.payment_intent_id, p.credited_minor, t.purchased,
                                p.reversed_minor, coalesce(t.reversed, 0),
                                coalesce(t.given_back, 0), p.shortfall)
          FROM stripe_payments p
          LEFT JOIN (SELECT payment_intent_id,
                            sum(amount) FILTER (WHERE type = 'purchase') AS purchased,
                            -sum(amount) FILTER (WHERE type = 'reversal') AS reversed,
                            sum(amount) FILTER (WHERE type = 'refund') AS given_back
                       FROM billing_transactions
                      WHERE payment_intent_id IS NOT NULL
                        AND (type IN ('purchase', 'reversal')
                             OR (type = 'refund' AND metadata ? 'stripe_refund'))
                      GROUP BY payment_intent_id) t USING (payment_intent_id)
         WHERE p.credited_minor IS NOT NULL
           AND (%(org)s::uuid IS NULL OR p.org_id = %(org)s::uuid)
           AND (t.purchased IS DISTINCT FROM p.credited_minor
                    * power(10::numeric, -EXPONENT)
                OR coalesce(t.reversed, 0) - coalesce(t.given_back, 0) + p.shortfall
                   <> p.reversed_minor * power(10::numeric, -EXPONENT))""".replace(
                       "EXPONENT", _exponent_sql("p.currency")),
    "every stored Stripe event processed": """
        SELECT org_id, format('event %%s (%%s) received %%s not processed: %%s', id, type,
                              received_at, coalesce(error, 'no error recorded'))
          FROM stripe_events
         WHERE processed_at IS NULL
           AND (%(org)s::uuid IS NULL OR org_id IS NULL OR org_id = %(org)s::uuid)""",
    "every idempotency record matches its transaction": """
        SELECT k.org_id, format('key %%s of %%s: %%s', k.key, k.caller,
                  CASE WHEN k.status_code IS NULL OR k.response_body IS NULL
                           THEN 'claimed but never answered'
                       WHEN t.id IS NULL THEN 'transaction ' || k.transaction_id || ' missing'
                       WHEN t.org_id <> k.org_id THEN 'transaction of another org'
                       ELSE 'answer names another transaction' END)
          FROM idempotency_keys k
          LEFT JOIN billing_transactions t ON t.id = k.transaction_id
         WHERE (%(org)s::uuid IS NULL OR k.org_id = %(org)s::uuid)
           AND (k.status_code IS NULL OR k.response_body IS NULL
                OR (k.transaction_id IS NOT NULL
                    AND (t.id IS NULL OR t.org_id <> k.org_id
                         OR strpos(k.response_body, k.transaction_id::text) = 0)))""",
    # The outbox (sql/010_outbox.sql): an event only with the change that caused it, a
    # top-up event for every top-up and reversal, and threshold events once per crossing.
    "every money event matches its ledger change": """
        SELECT e.org_id, format('%%s %%s at seq %%s: %%s', e.type, e.id, e.ledger_seq,
                  CASE WHEN t.id IS NULL THEN 'no such ledger row'
                       ELSE format('data %%s, row %%s %%s ending at %%s', e.data, t.type,
                                   t.amount, t.balance_after) END)
          FROM outbox_events e
          LEFT JOIN billing_transactions t ON t.org_id = e.org_id AND t.seq = e.ledger_seq
         WHERE e.ledger_seq IS NOT NULL AND (%(org)s::uuid IS NULL OR e.org_id = %(org)s::uuid)
           AND (t.id IS NULL OR (e.data ->> 'balance')::numeric <> t.balance_after
                OR (e.type = 'topup.succeeded'
                    AND (t.type <> 'purchase' OR t.amount <> (e.data ->> 'amount')::numeric
                         OR t.payment_intent_id IS DISTINCT FROM e.data ->> 'paymentIntentId'))
                OR (e.type = 'topup.reversed'
                    AND (t.type <> 'reversal' OR -t.amount <> (e.data ->> 'amount')::numeric))
                OR (e.type = 'balance.low'
                    AND t.balance_after >= (e.data ->> 'threshold')::numeric)
                OR (e.type = 'balance.depleted' AND t.balance_after <> 0)
                OR (e.type = 'balance.recovered'
                    AND t.balance_after < (e.data ->> 'threshold')::numeric))""",
    "every top-up and reversal has its event": """
        SELECT t.org_id, format('%%s at seq %%s (%%s) has no event', t.type, t.seq,
                                t.payment_intent_id)
          FROM billing_transactions t
         WHERE ((t.type = 'purchase' AND t.payment_intent_id IS NOT NULL) OR t.type = 'reversal')
           AND t.created_at >= coalesce((SELECT min(started_at) FROM outbox_start), '-infinity')
           AND (%(org)s::uuid IS NULL OR t.org_id = %(org)s::uuid)
           AND NOT EXISTS (
               SELECT FROM outbox_events e
                WHERE e.org_id = t.org_id AND e.ledger_seq = t.seq
                  AND e.type = CASE t.type WHEN 'purchase' THEN 'topup.succeeded'
                                           ELSE 'topup.reversed' END)""",
    "threshold events once per crossing": """
        SELECT org_id, format('%%s %%s after %%s', type, id, coalesce(prev, 'no event'))
          FROM (SELECT org_id, id, type,
                       lag(type) OVER (PARTITION BY org_id ORDER BY seq) AS prev
                  FROM outbox_events
                 WHERE type IN ('balance.low', 'balance.depleted', 'balance.recovered')
                   AND (%(org)s::uuid IS NULL OR org_id = %(org)s::uuid)) e
         WHERE (type = 'balance.low' AND prev IN ('balance.low', 'balance.depleted'))
            OR (type = 'balance.depleted' AND prev = 'balance.depleted')
            OR (type = 'balance.recovered' AND prev IS DISTINCT FROM 'balance.low'
                AND prev IS DISTINCT FROM 'balance.depleted')""",
    "alert state matches the last threshold event": """
        SELECT o.id, format('state %%s, last threshold event %%s', o.alert_state,
                            coalesce(last.type, 'none'))
          FROM organizations o
          LEFT JOIN LATERAL (
              SELECT type FROM outbox_events e
               WHERE e.org_id = o.id
                 AND e.type IN ('balance.low', 'balance.depleted', 'balance.recovered')
               ORDER BY seq DESC LIMIT 1) last ON true
         WHERE (%(org)s::uuid IS NULL OR o.id = %(org)s::uuid)
           AND o.alert_state <> CASE last.type WHEN 'balance.low' THEN 'low'
                                               WHEN 'balance.depleted' THEN 'depleted'
                                               ELSE 'ok' END""",
    # Auto top-up (sql/013_auto_topup.sql): the org's attempt in flight is the one its row
    # names, and an attempt is succeeded only with its payment's credit, of its amount.
    "the attempt in flight is the one the org names": """
        SELECT coalesce(o.id, a.org_id),
               format('org names attempt %%s; attempt in flight %%s (%%s)',
                      o.auto_topup_attempt, a.id, a.status)
          FROM (SELECT * FROM organizations WHERE auto_topup_attempt IS NOT NULL
                   AND (%(org)s::uuid IS NULL OR id = %(org)s::uuid)) o
          FULL JOIN (SELECT * FROM auto_topup_attempts
                      WHERE status IN ('pending', 'submitted')
                        AND (%(org)s::uuid IS NULL OR org_id = %(org)s::uuid)) a
            ON a.id = o.auto_topup_attempt AND a.org_id = o.id
         WHERE o.id IS NULL OR a.id IS NULL""",
    "every succeeded auto top-up was credited by its payment": """
        SELECT a.org_id, format('attempt %%s of %%s, payment %%s: %%s', a.id, a.amount,
                                a.payment_intent_id,
                                coalesce('credited ' || t.amount, 'no credit'))
          FROM auto_topup_attempts a
          LEFT JOIN billing_transactions t
                 ON t.org_id = a.org_id AND t.payment_intent_id = a.payment_intent_id
                AND t.type = 'purchase'
         WHERE a.status = 'succeeded' AND (%(org)s::uuid IS NULL OR a.org_id = %(org)s::uuid)
           AND (t.id IS NULL OR t.amount <> a.amount)""",
}


@dataclass(frozen=True)
class Violation:
    """One broken invariant."""

    check: str
    org_id: uuid.UUID | None
    detail: str

    def __str__(self) -> str:
        return f"{self.check}: org {self.org_id}: {self.detail}"


class CannotSeeEverything(RuntimeError):
    """The connected role is bound by row level security, so it would see nothing."""


def require_full_view(conn: psycopg.Connection) -> None:
    """Refuse to verify as a role that row level security would blind."""
    row = conn.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles"
                       " WHERE rolname = current_user").fetchone()
    if not row or not row[0]:
        raise CannotSeeEverything(
            "verify-ledger needs a superuser or BYPASSRLS role in DATABASE_URL: under row"
            " level security any other role sees no org and would report a clean ledger")


def iter_violations(conn: psycopg.Connection,
                    org_id: uuid.UUID | None = None) -> Iterator[Violation]:
    """Yield each violation as the checks find them (org_id: only that org)."""
    for name, query in _CHECKS.items():
        with conn.cursor() as cur:
            for org, detail in cur.execute(query.encode(), {"org": org_id}):
                yield Violation(name, org, detail)


def find_violations(conn: psycopg.Connection, org_id: uuid.UUID | None = None) -> list[str]:
    """Return a readable line per broken invariant; empty when the ledger is sound."""
    return [str(violation) for violation in iter_violations(conn, org_id)]


def ledger_size(conn: psycopg.Connection, org_id: uuid.UUID | None = None) -> tuple[int, int]:
    """Return how many orgs and transactions the checks covered (from the counters)."""
    row = conn.execute(
        "SELECT count(*), coalesce(sum(transaction_count), 0) FROM organizations"
        " WHERE %(org)s::uuid IS NULL OR id = %(org)s::uuid", {"org": org_id}).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])
