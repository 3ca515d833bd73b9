"""Prometheus metrics: the metric objects, the counters the domains call, and GET /metrics.

Under gunicorn every worker is its own process with its own counters, so prometheus_client
runs in multiprocess mode there: each process writes its values to files in
PROMETHEUS_MULTIPROC_DIR, and the worker that answers a scrape sums every file.
https://prometheus.github.io/client_python/multiprocess/
The mode is fixed when prometheus_client is first imported, so this module imports it only
when a metric is first used (`_metrics`), never at import: `billing-gateway serve` imports
the views (and so this module) before it sets the directory for its workers. Without the
variable (tests, `flask run`) the default registry of the one process is used.

What each metric means and what to alert on: docs/operations.md. The amounts are floats,
fine for rates and dashboards; the ledger is the exact record of money.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import Counter as Tally
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from flask import Flask, Response, current_app, g, request, request_started

from billing_gateway.platform.config import Settings
from billing_gateway.platform.db import get_pool, notifications_transaction

if TYPE_CHECKING:
    from prometheus_client import Counter, Gauge, Histogram
    from prometheus_client.metrics_core import Metric

log = logging.getLogger("billing_gateway")

MULTIPROCESS_DIR_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"
ENDPOINT = "metrics"
# The route label of requests that matched no route (404, 405): never the raw path, which
# a caller chooses (ids, garbage), and each distinct label is a new time series.
UNMATCHED = "unmatched"
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Most requests take 1 to 50 ms (docs/performance.md); a Stripe call can take seconds.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.1, 0.25, 0.5,
                    1.0, 2.5, 10.0)
# An outbound webhook waits on someone else's server, up to the worker's timeout.
_DELIVERY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

# The words each counter accepts for its outcome; anything else is counted as "other"
# rather than becoming a new time series.
CHARGE_OUTCOMES = frozenset({"charged", "duplicate", "insufficient_funds", "too_large",
                             "invalid"})
# Outcomes whose amount is money moved or refused; a duplicate moves nothing again.
_AMOUNT_OUTCOMES = frozenset({"charged", "insufficient_funds"})
CREDIT_SOURCES = frozenset({"admin", "stripe"})
CREDIT_TYPES = frozenset({"purchase", "bonus", "adjustment", "refund"})
DELIVERY_OUTCOMES = frozenset({"delivered", "failed", "refused", "timeout"})
EMAIL_OUTCOMES = frozenset({"sent", "failed", "refused", "timeout"})
# What one try of an auto top-up came to (billing_gateway/autotopup/attempts.py).
AUTO_TOPUP_OUTCOMES = frozenset({"submitted", "failed", "retry", "canceled"})

# The backlog the outbox worker has not worked off, read at scrape time. Both counts use the
# partial indexes (outbox_events_pending, deliveries_due), so they read only what is pending.
_BACKLOG = """
    SELECT o.n, greatest(0, extract(epoch FROM now() - o.oldest)),
           d.n, greatest(0, extract(epoch FROM now() - d.oldest))
      FROM (SELECT count(*) AS n, min(created_at) AS oldest
              FROM outbox_events WHERE dispatched_at IS NULL) AS o,
           (SELECT count(*) AS n, min(created_at) AS oldest
              FROM deliveries WHERE status = 'pending') AS d"""
# A scrape must answer even when the database does not: short waits, then database_up 0.
_SCRAPE_POOL_TIMEOUT = 1.0
_SCRAPE_STATEMENT_TIMEOUT = "500ms"


@dataclass(frozen=True)
class _Metrics:
    """Every metric object this process updates."""

    requests: Counter
    latency: Histogram
    charges: Counter
    charged_amount: Counter
    credits: Counter
    credited_amount: Counter
    deliveries: Counter
    delivery_seconds: Histogram
    emails: Counter
    auto_topups: Counter
    pool_size: Gauge
    pool_max: Gauge
    pool_available: Gauge
    pool_waiting: Gauge


def multiprocess_dir() -> str | None:
    """The directory of prometheus_client's multiprocess mode, or None (one process)."""
    return os.environ.get(MULTIPROCESS_DIR_VARIABLE) or None


@functools.cache
def _metrics() -> _Metrics:
    """Create the metric objects on first use, once per process (see the module's doc)."""
    from prometheus_client import Counter, Gauge, Histogram

    # Pool gauges: each live worker's own pool, summed; a dead worker's value is dropped
    # (gunicorn's child_exit calls mark_process_dead).
    pool = functools.partial(Gauge, multiprocess_mode="livesum")
    return _Metrics(
        requests=Counter("billing_http_requests", "HTTP requests answered by the app.",
                         ["route", "method", "status"]),
        latency=Histogram("billing_http_request_duration_seconds",
                          "Time from the start of a request to its response, before the "
                          "body is streamed.", ["route"], buckets=_LATENCY_BUCKETS),
        charges=Counter("billing_charges", "SMS charges (single, and each item of a bulk "
                        "request) by outcome.", ["outcome"]),
        charged_amount=Counter("billing_charges_amount", "Money charged, or refused for want "
                               "of funds, in the settlement currency.", ["outcome"]),
        credits=Counter("billing_credits", "Credits added, by source and type.",
                        ["source", "type"]),
        credited_amount=Counter("billing_credits_amount", "Money credited, in the settlement "
                                "currency.", ["source", "type"]),
        deliveries=Counter("billing_webhook_deliveries", "Outbound webhook delivery "
                           "attempts by outcome.", ["outcome"]),
        delivery_seconds=Histogram("billing_webhook_delivery_seconds", "Time of one outbound "
                                   "webhook delivery attempt.", buckets=_DELIVERY_BUCKETS),
        emails=Counter("billing_emails", "Billing emails by outcome.", ["outcome"]),
        auto_topups=Counter("billing_auto_topup_tries", "Off-session charges of saved cards "
                            "asked of Stripe by the worker, by outcome.", ["outcome"]),
        pool_size=pool("billing_pool_size", "Connections open in the database pools."),
        pool_max=pool("billing_pool_max", "Connections the database pools may open."),
        pool_available=pool("billing_pool_available", "Idle connections in the pools."),
        pool_waiting=pool("billing_pool_waiting", "Requests waiting for a pooled connection."),
    )


def _word(value: str, allowed: frozenset[str]) -> str:
    return value if value in allowed else "other"


def charged(outcome: str, amount: Decimal | None, count: int = 1) -> None:
    """Count charges of one outcome; add their amount when it was charged or refused."""
    metrics = _metrics()
    outcome = _word(str(outcome), CHARGE_OUTCOMES)
    metrics.charges.labels(outcome).inc(count)
    if amount is not None and outcome in _AMOUNT_OUTCOMES:
        metrics.charged_amount.labels(outcome).inc(float(amount))


def charged_each(items: Iterable[tuple[str, Decimal | None]]) -> None:
    """Count a bulk charge's items, (outcome, amount or None) each, with one update per outcome."""
    counts: Tally[str] = Tally()
    amounts: dict[str, Decimal] = {}
    for outcome, amount in items:
        counts[outcome] += 1
        if amount is not None:
            amounts[outcome] = amounts.get(outcome, Decimal(0)) + amount
    for outcome, count in counts.items():
        charged(outcome, amounts.get(outcome), count)


def credited(source: str, type: str, amount: Decimal) -> None:
    """Count one credit (source admin or stripe; type purchase, bonus, adjustment, refund)."""
    metrics = _metrics()
    labels = (_word(source, CREDIT_SOURCES), _word(type, CREDIT_TYPES))
    metrics.credits.labels(*labels).inc()
    metrics.credited_amount.labels(*labels).inc(float(amount))


def delivery_attempted(outcome: str, seconds: float) -> None:
    """Count one outbound webhook attempt (delivered, failed, refused, timeout) and its time."""
    metrics = _metrics()
    metrics.deliveries.labels(_word(outcome, DELIVERY_OUTCOMES)).inc()
    metrics.delivery_seconds.observe(seconds)


def email_sent(outcome: str) -> None:
    """Count one billing email by outcome (sent, failed, refused, timeout)."""
    _metrics().emails.labels(_word(outcome, EMAIL_OUTCOMES)).inc()


def auto_topup_tried(outcome: str) -> None:
    """Count one try of an auto top-up (submitted, failed, retry, canceled)."""
    _metrics().auto_topups.labels(_word(outcome, AUTO_TOPUP_OUTCOMES)).inc()


def _sample_pool(app: Flask) -> None:
    """Record this process's pool as it is now (its workers' samples are summed)."""
    pool = app.extensions.get("billing_pool")
    if pool is None or pool.closed:  # opened by the first request that needs it, not here
        return
    stats = pool.get_stats()
    metrics = _metrics()
    metrics.pool_size.set(stats.get("pool_size", 0))
    metrics.pool_max.set(stats.get("pool_max", 0))
    metrics.pool_available.set(stats.get("pool_available", 0))
    metrics.pool_waiting.set(stats.get("requests_waiting", 0))


def _request_started(sender: Flask, **_extra: Any) -> None:
    # Flask's request_started signal comes before every before_request function, so the
    # time includes the JWT check and a refusal by the rate limiter.
    g.metrics_started = time.perf_counter()


def _request_finished(response: Response) -> Response:
    """Count the request by route, method and status; time it; sample the pool."""
    rule = request.url_rule
    if rule is not None and rule.endpoint == ENDPOINT:
        return response  # the scrapes themselves are not the service's traffic
    route = rule.rule if rule is not None else UNMATCHED
    method = request.method if request.method in _METHODS else "other"
    metrics = _metrics()
    metrics.requests.labels(route, method, str(response.status_code)).inc()
    started = g.get("metrics_started")
    if started is not None:
        metrics.latency.labels(route).observe(time.perf_counter() - started)
    _sample_pool(current_app)
    return response


class _Backlog:
    """The outbox's and the deliveries' backlog, read from PostgreSQL at each scrape."""

    def __init__(self, app: Flask) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        """Yield billing_database_up and, when the database answered in time, the backlog."""
        from prometheus_client.core import GaugeMetricFamily

        up = "1 when the scrape's query answered, 0 when the database did not (in time)."
        try:
            pool = get_pool(self._app)
            with pool.connection(timeout=_SCRAPE_POOL_TIMEOUT) as conn, \
                    notifications_transaction(conn, caller="metrics"):
                conn.execute(f"SET LOCAL statement_timeout = '{_SCRAPE_STATEMENT_TIMEOUT}'")
                row = conn.execute(_BACKLOG).fetchone()
        except Exception as exc:  # PoolTimeout, OperationalError, QueryCanceled: all "down"
            log.warning("metrics: the backlog query failed: %s", exc)
            yield GaugeMetricFamily("billing_database_up", up, value=0)
            return
        assert row is not None  # an aggregate always has its one row
        events, event_age, deliveries, delivery_age = (float(value) for value in row)
        yield GaugeMetricFamily("billing_database_up", up, value=1)
        yield GaugeMetricFamily("billing_outbox_pending_events",
                                "Money events not yet dispatched by the worker.", value=events)
        yield GaugeMetricFamily("billing_outbox_oldest_pending_age_seconds",
                                "Age of the oldest undispatched event (0 when none).",
                                value=event_age)
        yield GaugeMetricFamily("billing_deliveries_pending",
                                "Webhook and email deliveries still to be made or retried.",
                                value=deliveries)
        yield GaugeMetricFamily("billing_deliveries_oldest_pending_age_seconds",
                                "Age of the oldest pending delivery (0 when none).",
                                value=delivery_age)


class _Scrape:
    """What one scrape reports: every process's metrics, then the backlog."""

    def __init__(self, app: Flask) -> None:
        self._app = app

    def collect(self) -> Iterator[Metric]:
        """Yield the metrics of every worker (or of this process), then the backlog's."""
        from prometheus_client import REGISTRY
        from prometheus_client.multiprocess import MultiProcessCollector

        # The query first: it may open this worker's pool, which is then sampled as it is
        # now, before the files of every worker are read.
        backlog = list(_Backlog(self._app).collect())
        _sample_pool(self._app)
        # registry=None: a collector of this scrape only, registered nowhere.
        processes = MultiProcessCollector(None) if multiprocess_dir() else REGISTRY
        yield from processes.collect()
        yield from backlog


def scrape() -> Response:
    """Answer Prometheus: every metric, in the format its Accept header asks for."""
    from prometheus_client.exposition import choose_encoder

    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(_Scrape(current_app)), content_type=content_type)


def _require_multiprocess_values() -> None:
    """Refuse to start when PROMETHEUS_MULTIPROC_DIR came after prometheus_client's import."""
    # Imported first, prometheus_client keeps each worker's counts in that worker's memory,
    # and /metrics, reading the files, would silently report none of them.
    if multiprocess_dir() is None:
        return
    from prometheus_client import values

    if values.ValueClass is values.MutexValue:
        raise RuntimeError(
            f"{MULTIPROCESS_DIR_VARIABLE} is set but prometheus_client was imported before it "
            "was: set it in the environment before the process starts (gunicorn_conf.py and "
            "`serve` do)")


def init_app(app: Flask, settings: Settings) -> None:
    """Serve GET /metrics and count every other request (call it after the rate limiter)."""
    # No token (Prometheus on the internal network), not rate limited, not in /openapi.json.
    _require_multiprocess_values()
    _metrics()  # each process's metric objects exist before its first request
    # A plain Flask route, not a flask-smorest blueprint: it stays out of the API's
    # description, and out of /api/billing. nginx answers it 404 (deploy/nginx.conf);
    # Prometheus scrapes gunicorn directly on the internal address.
    app.add_url_rule("/metrics", ENDPOINT, scrape, methods=["GET"])
    limiter = app.extensions.get("billing_limiter")
    if limiter is not None:
        limiter.exempt(app.view_functions[ENDPOINT])
    request_started.connect(_request_started, app)
    app.after_request(_request_finished)


def serve_standalone(port: int, host: str = "127.0.0.1") -> None:
    """Serve this process's metrics on their own port (`billing-gateway worker
    --metrics-port`): a worker outside gunicorn has no /metrics of its own."""
    from prometheus_client import REGISTRY, CollectorRegistry, start_http_server
    from prometheus_client.multiprocess import MultiProcessCollector

    _metrics()
    registry = REGISTRY
    if multiprocess_dir():
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
    start_http_server(port, addr=host, registry=registry)
