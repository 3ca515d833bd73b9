"""billing-gateway reconcile: Stripe's PaymentIntents (stubbed) against the ledger."""

from __future__ import annotations

import datetime as dt
import time
import uuid
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qs, urlparse

import psycopg
import pytest
import responses
from flask.testing import FlaskClient

from billing_gateway import cli
from billing_gateway.platform.config import Settings
from billing_gateway.topups import reconcile
from tests import stripe_objects as so
from tests.plugins.database import ledger_inserts_fail
from tests.plugins.service import STRIPE_TEST_KEY
from tests.plugins.webhooks import balance, deliver

INTENTS = "https://api.stripe.com/v1/payment_intents"


class StripeIntents:
    """GET /v1/payment_intents, paged 2 at a time like Stripe (has_more, starting_after)."""

    def __init__(self, mock: responses.RequestsMock, intents: list[dict[str, Any]]) -> None:
        self.intents = intents
        self.queries: list[dict[str, list[str]]] = []
        mock.add_callback(responses.GET, INTENTS, callback=self.page)

    def page(self, request: Any) -> tuple[int, dict[str, str], str]:
        import json

        query = parse_qs(urlparse(request.url).query)
        self.queries.append(query)
        start = 0
        if "starting_after" in query:
            ids = [i["id"] for i in self.intents]
            start = ids.index(query["starting_after"][0]) + 1
        page = self.intents[start:start + 2]
        return 200, {}, json.dumps({
            "object": "list", "url": "/v1/payment_intents", "data": page,
            "has_more": start + 2 < len(self.intents)})



def test_reconcile_credits_a_missed_payment_and_nothing_twice(
    client: FlaskClient, settings: Settings, database_url: str, stripe_api: responses.RequestsMock,
    org: uuid.UUID, other_org: uuid.UUID, owner_conn: psycopg.Connection,
) -> None:
    seen = so.payment_intent(org=org, amount=1500)
    missed = so.payment_intent(org=other_org, amount=2500)
    deliver(client, so.event("payment_intent.succeeded", seen))
    stripe = StripeIntents(stripe_api, [
        seen, missed,
        so.payment_intent(org=None, amount=9900),                       # not ours
        so.payment_intent(org=org, amount=700, status="requires_payment_method"),
    ])
    lines: list[str] = []
    report = reconcile.run(settings, database_url, dt.timedelta(days=3), lines.append)
    assert report.checked == 2
    assert report.repaired == [missed["id"]]
    assert report.unrepaired == []
    assert balance(owner_conn, org) == Decimal("15.00")
    assert balance(owner_conn, other_org) == Decimal("25.00")
    assert f"credited missed payment {missed['id']}" in lines[0]
    assert "repaired 1, reprocessed 0 events, unrepaired 0" in lines[-1]
    # What the gateway asked Stripe: its key, the time window, full pages, then the next page.
    first = stripe.queries[0]
    assert int(first["created[gte]"][0]) == pytest.approx(time.time() - 3 * 86400, abs=60)
    assert first["limit"] == ["100"]
    assert stripe.queries[1]["starting_after"] == [missed["id"]]
    assert stripe_api.calls[0].request.headers["Authorization"] == f"Bearer {STRIPE_TEST_KEY}"
    # A second run finds nothing to repair.
    again = reconcile.run(settings, database_url, dt.timedelta(days=3), lines.append)
    assert (again.checked, again.repaired, again.unrepaired) == (2, [], [])
    assert balance(owner_conn, other_org) == Decimal("25.00")


def test_reconcile_processes_failed_events_and_reports_what_it_cannot_repair(
    client: FlaskClient, settings: Settings, database_url: str, stripe_api: responses.RequestsMock,
    org: uuid.UUID, owner_conn: psycopg.Connection,
) -> None:
    failed = so.payment_intent(org=org, amount=3000)
    with ledger_inserts_fail(owner_conn, "outage (simulated)"):
        assert deliver(client, so.event("payment_intent.succeeded", failed)).status_code == 500
    foreign = so.payment_intent(org=org, amount=1000, currency="eur")
    StripeIntents(stripe_api, [foreign])
    lines: list[str] = []
    report = reconcile.run(settings, database_url, dt.timedelta(hours=1), lines.append)
    assert report.unrepaired == [foreign["id"]]          # another currency: for a human
    assert len(report.reprocessed) == 1
    assert balance(owner_conn, org) == Decimal("30.00")
    assert any("currency_mismatch" in line for line in lines)
    assert owner_conn.execute("SELECT count(*) FROM stripe_events WHERE processed_at IS NULL"
                              ).fetchone() == (0,)


def test_cli_exit_codes(monkeypatch: pytest.MonkeyPatch, database_url: str,
                        stripe_api: responses.RequestsMock, org: uuid.UUID,
                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("STRIPE_SECRET_KEY", STRIPE_TEST_KEY)
    monkeypatch.setenv("BILLING_JWT_SECRET", "x" * 40)
    StripeIntents(stripe_api, [so.payment_intent(org=org, amount=500)])
    assert cli.main(["reconcile", "--since", "12h"]) == 0
    assert "repaired 1" in capsys.readouterr().out
    assert cli.main(["reconcile", "--since", "yesterday"]) == 2
    monkeypatch.delenv("STRIPE_SECRET_KEY")
    assert cli.main(["reconcile"]) == 2
    assert "STRIPE_SECRET_KEY" in capsys.readouterr().err


@pytest.mark.parametrize("text,expected", [("3d", dt.timedelta(days=3)),
                                           ("12h", dt.timedelta(hours=12)),
                                           ("30m", dt.timedelta(minutes=30))])
def test_since_spans(text: str, expected: dt.timedelta) -> None:
    assert reconcile.parse_span(text) == expected
