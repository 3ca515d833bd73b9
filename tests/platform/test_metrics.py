"""GET /metrics: requests by route pattern and status, money counted by outcome, the outbox's
backlog read at scrape time, the pool; summed over gunicorn's workers; never public."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import psycopg
import pytest

# Imported now, without PROMETHEUS_MULTIPROC_DIR: this process stays in single-process mode
# even while a test sets the variable (see test_init_refuses_...).
from prometheus_client.parser import text_string_to_metric_families

from billing_gateway import create_app
from billing_gateway.platform import metrics
from billing_gateway.platform.config import Settings
from tests import stripe_objects as so
from tests.plugins.servers import free_port
from tests.plugins.service import TokenFactory
from tests.plugins.webhooks import deliver

DEDUCT = "/api/billing/deduct"
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a scrape, by name and labels."""
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(text) for sample in family.samples}


def scrape(client: Any) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.content_type.startswith("text/plain")
    return parse(response.get_data(as_text=True))


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 when the series does not exist (yet)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def moved(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def deduct(client: Any, auth: TokenFactory, org: uuid.UUID, sms: int, price: str) -> int:
    return client.post(DEDUCT, headers=auth("service"), json={
        "orgId": str(org), "smsCount": sms, "costPerSms": price,
        "messageId": f"m-{uuid.uuid4()}"}).status_code


# -- the app, in one process (the default registry) ---------------------------------------

def test_requests_are_counted_by_route_pattern_method_and_status(
        client: Any, auth: TokenFactory, credit: Any, org: uuid.UUID) -> None:
    credit(org, "1.00")
    before = scrape(client)
    assert deduct(client, auth, org, 1, "0.25") == 201
    assert deduct(client, auth, org, 4, "0.50") == 402
    alerts = client.get(f"/api/billing/orgs/{org}/alerts", headers=auth("admin"))
    assert alerts.status_code == 200
    after = scrape(client)
    for status in ("201", "402"):
        assert moved(before, after, "billing_http_requests_total",
                     route=DEDUCT, method="POST", status=status) == 1
    assert moved(before, after, "billing_http_request_duration_seconds_count", route=DEDUCT) == 2
    # The route's pattern, never the path with the org's id in it.
    assert moved(before, after, "billing_http_requests_total",
                 route="/api/billing/orgs/<uuid:org_id>/alerts", method="GET",
                 status="200") == 1
    assert not any(str(org) in str(labels) for _, labels in after)


def test_paths_matching_no_route_share_one_label(client: Any) -> None:
    before = scrape(client)
    for n in range(3):
        assert client.get(f"/api/billing/no-such-thing/{n}").status_code == 404
    assert client.open("/healthz", method="BREW").status_code == 405
    after = scrape(client)
    assert moved(before, after, "billing_http_requests_total",
                 route="unmatched", method="GET", status="404") == 3
    assert moved(before, after, "billing_http_requests_total",
                 route="unmatched", method="other", status="405") == 1
    assert not any("no-such-thing" in str(labels) or "BREW" in str(labels)
                   for _, labels in after)


def test_charges_are_counted_with_their_amounts_by_outcome(
        client: Any, auth: TokenFactory, credit: Any, org: uuid.UUID) -> None:
    credit(org, "1.00")
    message = {"orgId": str(org), "smsCount": 2, "costPerSms": "0.25", "messageId": "m-once"}
    before = scrape(client)
    assert client.post(DEDUCT, headers=auth("service"), json=message).status_code == 201
    assert client.post(DEDUCT, headers=auth("service"), json=message).status_code == 201
    assert deduct(client, auth, org, 4, "0.50") == 402  # 2.00 asked, 0.50 left
    after = scrape(client)
    assert moved(before, after, "billing_charges_total", outcome="charged") == 1
    assert moved(before, after, "billing_charges_total", outcome="duplicate") == 1
    assert moved(before, after, "billing_charges_total", outcome="insufficient_funds") == 1
    # Floats: exact to far below a cent (the ledger holds the exact amounts).
    assert moved(before, after, "billing_charges_amount_total",
                 outcome="charged") == pytest.approx(0.50, abs=1e-9)
    assert moved(before, after, "billing_charges_amount_total",
                 outcome="insufficient_funds") == pytest.approx(2.00, abs=1e-9)
    assert moved(before, after, "billing_charges_amount_total", outcome="duplicate") == 0


def test_bulk_charges_are_counted_per_item(client: Any, auth: TokenFactory, credit: Any,
                                           org: uuid.UUID) -> None:
    credit(org, "1.00")
    item = {"orgId": str(org), "smsCount": 1, "costPerSms": "0.75"}
    before = scrape(client)
    response = client.post(f"{DEDUCT}/bulk", headers=auth("service"), json={"charges": [
        {**item, "messageId": "b-1"},
        {**item, "messageId": "b-1"},                       # the same message again
        {**item, "messageId": "b-2"},                       # 0.25 left: refused
        {**item, "messageId": "b-3", "smsCount": 0},        # invalid
    ]})
    assert response.status_code == 200, response.get_json()
    after = scrape(client)
    for outcome in ("charged", "duplicate", "insufficient_funds", "invalid"):
        assert moved(before, after, "billing_charges_total", outcome=outcome) == 1, outcome
    assert moved(before, after, "billing_charges_amount_total",
                 outcome="charged") == pytest.approx(0.75, abs=1e-9)
    assert moved(before, after, "billing_charges_amount_total",
                 outcome="insufficient_funds") == pytest.approx(0.75, abs=1e-9)


def test_admin_credits_are_counted_once_per_credit(client: Any, credit: Any,
                                                   org: uuid.UUID) -> None:
    before = scrape(client)
    credit(org, "12.50", paymentIntentId="pi_manual_1")
    credit(org, "12.50", paymentIntentId="pi_manual_1")  # the same payment: credits nothing
    credit(org, "2.00", type="bonus")
    after = scrape(client)
    assert moved(before, after, "billing_credits_total", source="admin", type="purchase") == 1
    assert moved(before, after, "billing_credits_amount_total", source="admin",
                 type="purchase") == pytest.approx(12.50, abs=1e-9)
    assert moved(before, after, "billing_credits_amount_total", source="admin",
                 type="bonus") == pytest.approx(2.00, abs=1e-9)


def test_stripe_credits_are_counted_once_per_payment(client: Any, org: uuid.UUID) -> None:
    event = so.event("payment_intent.succeeded", so.payment_intent(org=org, amount=2550))
    before = scrape(client)
    assert deliver(client, event).status_code == 200
    assert deliver(client, event).status_code == 200  # Stripe delivers again: no new credit
    after = scrape(client)
    assert moved(before, after, "billing_credits_total", source="stripe", type="purchase") == 1
    assert moved(before, after, "billing_credits_amount_total", source="stripe",
                 type="purchase") == pytest.approx(25.50, abs=1e-9)


def test_deliveries_and_emails_are_counted_by_outcome(client: Any) -> None:
    before = scrape(client)
    metrics.delivery_attempted("delivered", 0.2)
    metrics.delivery_attempted("timeout", 10.0)
    metrics.delivery_attempted("bounced", 0.1)  # not an outcome we know: one "other" series
    metrics.email_sent("sent")
    after = scrape(client)
    for outcome in ("delivered", "timeout", "other"):
        assert moved(before, after, "billing_webhook_deliveries_total", outcome=outcome) == 1
    assert moved(before, after, "billing_webhook_delivery_seconds_count") == 3
    assert moved(before, after, "billing_webhook_delivery_seconds_bucket", le="0.25") == 2
    assert moved(before, after, "billing_emails_total", outcome="sent") == 1


def test_the_outbox_backlog_is_read_from_the_database_at_each_scrape(
        client: Any, auth: TokenFactory, credit: Any, org: uuid.UUID,
        owner_conn: psycopg.Connection) -> None:
    empty = scrape(client)
    assert value(empty, "billing_database_up") == 1
    assert ("billing_outbox_pending_events", frozenset()) in empty
    for name in ("billing_outbox_pending_events", "billing_outbox_oldest_pending_age_seconds",
                 "billing_deliveries_pending", "billing_deliveries_oldest_pending_age_seconds"):
        assert value(empty, name) == 0, name
    credit(org, "10.00")
    assert deduct(client, auth, org, 1, "6.00") == 201  # 4.00: below 5.00, balance.low
    # As if the worker had been down for two minutes, with one delivery waiting 90 s.
    owner_conn.execute("UPDATE outbox_events SET created_at = now() - interval '2 minutes'")
    owner_conn.execute(
        "INSERT INTO deliveries (event_id, emails, created_at)"
        " SELECT id, ARRAY['billing@customer.example'], now() - interval '90 seconds'"
        " FROM outbox_events")
    backlog = scrape(client)
    assert value(backlog, "billing_outbox_pending_events") == 1
    assert 120 <= value(backlog, "billing_outbox_oldest_pending_age_seconds") < 180
    assert value(backlog, "billing_deliveries_pending") == 1
    assert 90 <= value(backlog, "billing_deliveries_oldest_pending_age_seconds") < 150
    owner_conn.execute("UPDATE outbox_events SET dispatched_at = now()")
    owner_conn.execute("UPDATE deliveries SET status = 'delivered'")
    done = scrape(client)
    assert value(done, "billing_outbox_pending_events") == 0
    assert value(done, "billing_outbox_oldest_pending_age_seconds") == 0
    assert value(done, "billing_deliveries_pending") == 0


def test_a_scrape_answers_when_the_database_does_not(settings: Settings) -> None:
    nowhere = f"postgresql://billing@127.0.0.1:{free_port()}/billing?connect_timeout=1"
    app = create_app(settings, database_url=nowhere)
    try:
        started = time.monotonic()
        samples = scrape(app.test_client())
        assert time.monotonic() - started < 5
    finally:
        app.extensions["billing_pool"].close()
    assert value(samples, "billing_database_up") == 0
    assert not any(name.startswith(("billing_outbox", "billing_deliveries"))
                   for name, _ in samples)
    assert ("billing_webhook_delivery_seconds_count", frozenset()) in samples  # the rest is


def test_the_pool_is_reported(client: Any, settings: Settings) -> None:
    samples = scrape(client)
    assert value(samples, "billing_pool_max") == settings.pool_max_size
    assert value(samples, "billing_pool_size") >= 1  # the scrape's own query opened it
    assert 0 <= value(samples, "billing_pool_available") <= value(samples, "billing_pool_size")
    assert value(samples, "billing_pool_waiting") == 0


def test_metrics_is_unlimited_uncounted_and_not_in_the_api_description(
        settings: Settings) -> None:
    app = create_app(settings.with_overrides(rate_limit="2/minute"))
    try:
        client = app.test_client()
        assert [client.get("/api/billing/balance").status_code for _ in range(3)] == [
            401, 401, 429]  # limits are on in this app
        assert {client.get("/metrics").status_code for _ in range(5)} == {200}
        samples = scrape(client)
        paths = client.get("/openapi.json").get_json()["paths"]
    finally:
        app.extensions["billing_pool"].close()
    assert not any(dict(labels).get("route") == "/metrics" for _, labels in samples)
    assert not any("metrics" in path for path in paths)


def test_init_refuses_a_multiprocess_dir_set_after_prometheus_client_was_imported(
        settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Workers that counted only for themselves would make /metrics silently report nothing."""
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(tmp_path))
    with pytest.raises(RuntimeError, match="imported before"):
        create_app(settings)
