"""The worker's two jobs: fan new events out to deliveries, and attempt one due delivery.

Each attempt runs inside the transaction that claimed its delivery row with
`FOR UPDATE SKIP LOCKED`: no other worker (on any machine) can claim that row while the
attempt runs, and a worker killed mid-attempt loses its connection, which ends the
transaction and frees the row, still pending and due, for the next worker. The attempt, its
log row and the next due time commit together. A receiver may therefore see an event twice
(at least once), always with the same webhook-id.
https://www.postgresql.org/docs/current/sql-select.html#SQL-FOR-UPDATE-SHARE
"""

from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row

from billing_gateway.notifications import emails, receivers, schedule, signing
from billing_gateway.platform import json_codec, metrics
from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import notifications_transaction

log = logging.getLogger(__name__)

# The events worth an email to the org's billing contacts.
EMAILED = ["balance.low", "balance.depleted", "topup.reversed", "auto_topup.failed"]

_DISPATCH = """
    WITH batch AS (
        SELECT id, org_id, type FROM outbox_events WHERE dispatched_at IS NULL
         ORDER BY seq LIMIT %(limit)s FOR UPDATE SKIP LOCKED
    ), hooks AS (
        INSERT INTO deliveries (event_id, endpoint_id)
        SELECT b.id, e.id FROM batch b
          JOIN webhook_endpoints e
            ON e.enabled AND e.deleted_at IS NULL AND b.type = ANY (e.events)
        ON CONFLICT ON CONSTRAINT deliveries_once DO NOTHING
    ), mails AS (
        INSERT INTO deliveries (event_id, emails)
        SELECT b.id, a.emails FROM batch b JOIN org_alerts a ON a.org_id = b.org_id
         WHERE %(emails)s AND cardinality(a.emails) > 0 AND b.type = ANY (%(emailed)s)
    )
    UPDATE outbox_events o SET dispatched_at = now() FROM batch WHERE o.id = batch.id
"""

_CLAIM = """
    SELECT d.id, d.attempts, d.emails, e.id AS endpoint_id, e.url, e.secret,
           coalesce(e.enabled AND e.deleted_at IS NULL, false) AS endpoint_live,
           e.disabled_reason, ev.id AS event_id, ev.type, ev.data::text AS data,
           utc_text(ev.created_at) AS created_at
      FROM deliveries d
      JOIN outbox_events ev ON ev.id = d.event_id
      LEFT JOIN webhook_endpoints e ON e.id = d.endpoint_id
     WHERE d.status = 'pending' AND d.next_attempt_at <= now()
     ORDER BY d.next_attempt_at
     LIMIT 1
       FOR UPDATE OF d SKIP LOCKED
"""


@dataclass(frozen=True)
class Outcome:
    """What one attempt came to."""

    delivered: bool
    status_code: int | None
    error: str | None
    response_ms: int
    retry_after: str | None = None
    gone: bool = False  # the receiver answered 410: stop sending to it
    # For the metrics: delivered, failed (an HTTP answer or an SMTP error), refused (a
    # private address), timeout.
    kind: str = "failed"


def dispatch(conn: psycopg.Connection, settings: Settings, limit: int = 200) -> int:
    """Turn up to `limit` new events into deliveries (one per endpoint subscribed, one for
    the org's emails); the number of events taken."""
    with notifications_transaction(conn, "worker"):
        cur = conn.execute(_DISPATCH, {"limit": limit, "emails": settings.smtp_url is not None,
                                       "emailed": EMAILED})
        return cur.rowcount


def event_body(row: dict[str, Any]) -> bytes:
    """The event as every attempt sends it, byte for byte."""
    return json_codec.dumps({"id": str(row["event_id"]), "type": row["type"],
                             "createdAt": row["created_at"],
                             "data": json_codec.loads(row["data"])}).encode()


def attempt_next(conn: psycopg.Connection, settings: Settings,
                 rng: random.Random | None = None) -> str | None:
    """Claim one due delivery and attempt it; its outcome, or None when none is due."""
    with notifications_transaction(conn, "worker"), conn.cursor(row_factory=dict_row) as cur:
        row = cur.execute(_CLAIM).fetchone()
        if row is None:
            return None
        attempt = row["attempts"] + 1
        if row["emails"] is not None:
            outcome = _email(settings, row)
            metrics.email_sent("sent" if outcome.delivered else outcome.kind)
        elif not row["endpoint_live"]:
            _finish(conn, row["id"], "failed", f"endpoint {row['disabled_reason'] or 'disabled'}")
            return "skipped"
        else:
            outcome = _post(settings, row)
            metrics.delivery_attempted(outcome.kind, outcome.response_ms / 1000)
        try:
            with conn.transaction():  # a savepoint: if recording fails, record that instead
                return _record(conn, row, attempt, outcome, rng)
        except (psycopg.Error, ValueError, OverflowError) as exc:
            # Never leave an attempt unrecorded: the delivery would be due again at once
            # and a receiver could have it resent every second, for ever.
            log.exception("could not record delivery %s's attempt", row["id"])
            return _record(conn, row, attempt, Outcome(
                False, outcome.status_code, f"could not record the answer ({type(exc).__name__})",
                outcome.response_ms, kind=outcome.kind), rng)


def _record(conn: psycopg.Connection, row: dict[str, Any], attempt: int, outcome: Outcome,
            rng: random.Random | None) -> str:
    """Log the attempt, set when (or whether) the delivery is tried again, and keep the
    endpoint's failure clock; the delivery's status."""
    conn.execute(
        "INSERT INTO delivery_attempts (delivery_id, attempt, attempted_at, status_code,"
        " error, response_ms) VALUES (%s, %s, clock_timestamp(), %s, %s, %s)",
        (row["id"], attempt, outcome.status_code, outcome.error, outcome.response_ms))
    if outcome.delivered:
        status, delay = "delivered", None
    elif outcome.gone:
        status, delay = "failed", None
    else:
        delay = schedule.delay_with_retry_after(attempt, outcome.retry_after,
                                                datetime.now(UTC), rng)
        status = "failed" if delay is None else "pending"
    conn.execute(
        "UPDATE deliveries SET status = %s, attempts = %s, last_attempt_at = t.at,"
        " last_status = %s, last_error = %s, last_response_ms = %s,"
        " next_attempt_at = t.at + make_interval(secs => %s),"
        " delivered_at = CASE WHEN %s THEN t.at END"
        " FROM (SELECT clock_timestamp() AS at) t WHERE id = %s",
        (status, attempt, outcome.status_code, outcome.error, outcome.response_ms,
         delay or 0, outcome.delivered, row["id"]))
    if row["endpoint_id"] is not None:
        _endpoint_health(conn, row["endpoint_id"], outcome)
    return "delivered" if outcome.delivered else status


def _post(settings: Settings, row: dict[str, Any]) -> Outcome:
    body = event_body(row)
    headers = signing.signed_headers(row["secret"], str(row["event_id"]), int(time.time()), body)
    started = time.monotonic()
    try:
        answer = receivers.post(row["url"], body, headers,
                                timeout=schedule.ATTEMPT_TIMEOUT_SECONDS,
                                allow_private=settings.webhook_allow_private)
    except receivers.ReceiverRefused as exc:
        return Outcome(False, None, _text(str(exc), 500), _ms_since(started), kind="refused")
    except receivers.DeliveryFailed as exc:
        kind = "timeout" if "within" in str(exc) else "failed"
        return Outcome(False, None, _text(str(exc), 500), _ms_since(started), kind=kind)
    delivered = 200 <= answer.status < 300
    return Outcome(delivered, answer.status,
                   None if delivered else f"HTTP {answer.status}: {_text(answer.body_excerpt)}",
                   answer.elapsed_ms, answer.retry_after, gone=answer.status == 410,
                   kind="delivered" if delivered else "failed")


def _email(settings: Settings, row: dict[str, Any]) -> Outcome:
    started = time.monotonic()
    if settings.smtp_url is None:
        return Outcome(False, None, "BILLING_SMTP_URL is not set", 0)
    event = json_codec.loads(event_body(row))
    try:
        emails.send_alert_email(settings.smtp_url, settings.email_from, row["emails"], event,
                                timeout=schedule.ATTEMPT_TIMEOUT_SECONDS)
    except (emails.EmailFailed, ValueError) as exc:
        # ValueError: an address or event no resend can fix; retried all the same, so the
        # log shows it until the delivery fails for good.
        return Outcome(False, None, _text(str(exc), 500), _ms_since(started))
    return Outcome(True, None, None, _ms_since(started), kind="delivered")


def _endpoint_health(conn: psycopg.Connection, endpoint_id: Any, outcome: Outcome) -> None:
    """A success clears the endpoint's run of failures; 410, or failing for DISABLE_AFTER,
    disables it."""
    if outcome.delivered:
        conn.execute("UPDATE webhook_endpoints SET failing_since = NULL"
                     " WHERE id = %s AND failing_since IS NOT NULL", (endpoint_id,))
    elif outcome.gone:
        conn.execute("UPDATE webhook_endpoints SET enabled = false,"
                     " disabled_reason = 'receiver answered 410 Gone' WHERE id = %s",
                     (endpoint_id,))
    else:
        conn.execute(
            "UPDATE webhook_endpoints SET failing_since = coalesce(failing_since, now()),"
            " enabled = enabled AND coalesce(failing_since, now()) > now() - %s,"
            " disabled_reason = CASE WHEN coalesce(failing_since, now()) > now() - %s"
            "   THEN disabled_reason ELSE 'failing for 5 days' END"
            " WHERE id = %s", (schedule.DISABLE_AFTER, schedule.DISABLE_AFTER, endpoint_id))


def _finish(conn: psycopg.Connection, delivery_id: Any, status: str, error: str) -> None:
    conn.execute("UPDATE deliveries SET status = %s, last_error = %s WHERE id = %s",
                 (status, error, delivery_id))


def _text(words: str, limit: int = 200) -> str:
    """A receiver's (or a library's) words as PostgreSQL text can hold them: no NUL."""
    return words[:limit].replace("\x00", "\ufffd")


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
