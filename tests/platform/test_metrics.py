"""GET /metrics: requests by route pattern and status, money counted by outcome, the outbox's
backlog read at scrape time, the pool; summed over gunicorn's workers; never public."""

from __future__ import annotations

import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import psycopg
import pytest
import requests

# Imported now, without PROMETHEUS_MULTIPROC_DIR: this process stays in single-process mode
# even while a test sets the variable (see test_init_refuses_...).
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.parser import text_string_to_metric_families

from bench.scratch import nginx_in_front, nginx_path, stop_process
from billing_gateway import create_app
from billing_gateway.platform import metrics
from billing_gateway.platform.config import Settings
from tests import stripe_objects as so
from tests.plugins.servers import Served, free_port
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


# -- under gunicorn: multiprocess mode --------------------------------------------------

SECRET = "metrics-test-secret-" + "m" * 40


@contextmanager
def gunicorn(database_url: str, log: Path, **env: str) -> Iterator[tuple[str, int]]:
    """The service under gunicorn with billing_gateway/gunicorn_conf.py, 2 workers; yield its
    base URL and the master's pid."""
    port = free_port()
    environment = {k: v for k, v in os.environ.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
    environment.update(DATABASE_URL=database_url, BILLING_JWT_SECRET=SECRET,
                       BILLING_BIND=f"127.0.0.1:{port}", WEB_CONCURRENCY="2",
                       BILLING_THREADS="2", **env)
    with log.open("w") as output:
        process = subprocess.Popen(  # noqa: S603  # our own venv's gunicorn, fixed arguments
            [str(Path(sys.executable).with_name("gunicorn")), "-c",
             "python:billing_gateway.gunicorn_conf", "billing_gateway:create_app()"],
            env=environment, stdout=output, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None and time.monotonic() < deadline, log.read_text()
                try:
                    if requests.get(f"{base}/readyz", timeout=2).ok:
                        break
                except requests.RequestException:
                    pass
                time.sleep(0.2)
            yield base, process.pid
        finally:
            stop_process(process)


def per_process(metrics_dir: Path, name: str, **labels: str) -> dict[int, float]:
    """One counter's value in each process's file: {pid: value}."""
    found = {}
    for path in metrics_dir.glob("counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for family in MultiProcessCollector.merge([str(path)]):
            for sample in family.samples:
                if sample.name == name and sample.labels == labels:
                    found[pid] = sample.value
    return found


def test_gunicorn_workers_are_summed_in_every_scrape(database_url: str, tmp_path: Path) -> None:
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    # A file an earlier run left behind, written by our own code: it must not be summed in.
    subprocess.run([sys.executable, "-c",  # this interpreter, a fixed script
                    "from decimal import Decimal; from billing_gateway.platform import metrics;"
                    " metrics.charged('charged', Decimal('1000'))"],
                   env={**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}, check=True)
    assert list(metrics_dir.glob("counter_*.db"))
    requests_made = 12
    # Each worker is replaced after 4 requests, so no one process can answer them all: the
    # count must come from the files of several, dead ones included.
    with gunicorn(database_url, tmp_path / "gunicorn.log",
                  PROMETHEUS_MULTIPROC_DIR=str(metrics_dir),
                  GUNICORN_CMD_ARGS="--max-requests 4") as (base, master):
        for _ in range(requests_made):
            assert requests.get(f"{base}/healthz", timeout=10).status_code == 200
        healthz = {"route": "/healthz", "method": "GET", "status": "200"}
        for _ in range(3):  # whichever worker answers the scrape, the sum is the same
            scraped = requests.get(f"{base}/metrics", timeout=10)
            assert scraped.status_code == 200
            samples = parse(scraped.text)
            assert value(samples, "billing_http_requests_total", **healthz) == requests_made
            assert value(samples, "billing_charges_amount_total", outcome="charged") == 0
            assert value(samples, "billing_database_up") == 1
            assert ("billing_pool_max", frozenset()) in samples
            assert not any(name.startswith("python_gc") for name, _ in samples)  # one process's
        answered = per_process(metrics_dir, "billing_http_requests_total", **healthz)
        assert sum(answered.values()) == requests_made
        assert len([n for n in answered.values() if n > 0]) >= 2, answered
        # child_exit dropped the pool gauges of the workers that exited (their counters stay).
        deadline = time.monotonic() + 10
        while True:
            live = {child.pid for child in psutil.Process(master).children()}
            gauges = {int(path.stem.rsplit("_", 1)[1])
                      for path in metrics_dir.glob("gauge_livesum_*.db")}
            if gauges <= live or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert gauges <= live
        assert set(answered) - live, "no worker was replaced"


def test_gunicorn_without_a_directory_uses_a_private_one_removed_at_exit(
        database_url: str, tmp_path: Path) -> None:
    temp = tmp_path / "tmp"
    temp.mkdir()
    with gunicorn(database_url, tmp_path / "gunicorn.log", TMPDIR=str(temp)) as (base, _):
        assert requests.get(f"{base}/metrics", timeout=10).status_code == 200
        (private,) = temp.glob("billing-gateway-metrics-*")
        assert list(private.glob("*.db"))
    assert not private.exists()


def test_nginx_answers_metrics_404_while_gunicorn_serves_it(database_url: str,
                                                            tmp_path: Path) -> None:
    if nginx_path() is None:
        if os.environ.get("CI"):
            pytest.fail("nginx is not installed: .ci/run installs it from Debian's packages")
        pytest.skip("nginx is not installed (apt-get install nginx)")
    with gunicorn(database_url, tmp_path / "gunicorn.log") as (base, _), \
            nginx_in_front(base.removeprefix("http://")) as proxy_port:
        assert requests.get(f"{base}/metrics", timeout=10).status_code == 200
        proxy = f"http://127.0.0.1:{proxy_port}"
        assert requests.get(f"{proxy}/healthz", timeout=10).status_code == 200
        for path in ("/metrics", "/metrics/", "/metrics?x=1", "/%6Detrics", "//metrics"):
            status, body = get_as_is(proxy_port, path)
            assert status == 404, path
            assert json.loads(body) == {"error": {"code": "not_found", "message": "Not found"}}


def get_as_is(port: int, path: str) -> tuple[int, bytes]:
    """GET a path exactly as written (an HTTP library would normalize it first)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def test_serve_runs_its_workers_in_multiprocess_mode(tmp_path: Path) -> None:
    served = Served(tmp_path / "data", free_port())
    try:
        for _ in range(3):
            assert requests.get(f"{served.base}/healthz", timeout=10).status_code == 200
        samples = parse(requests.get(f"{served.base}/metrics", timeout=10).text)
    finally:
        assert served.ctrl_c() == 0
    assert value(samples, "billing_http_requests_total", route="/healthz", method="GET",
                 status="200") == 3
    assert value(samples, "billing_database_up") == 1
    # The default registry's process metrics exist only in single-process mode.
    assert not any(name.startswith("python_gc") for name, _ in samples)
    assert value(samples, "billing_pool_max") >= 1
