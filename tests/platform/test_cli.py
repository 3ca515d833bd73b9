"""The commands: token, migrate, and serve on the embedded database as a new user runs it."""

from __future__ import annotations

import json
import re
import time
import uuid
from decimal import Decimal
from pathlib import Path

import jwt
import psutil
import pytest
import requests

from billing_gateway.cli import main
from tests.plugins.servers import Served, call_json, free_port
from tests.plugins.service import TEST_SECRET


def test_token_prints_a_verifiable_jwt(capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_JWT_SECRET", TEST_SECRET)
    org = uuid.uuid4()
    assert main(["token", "--org", str(org), "--role", "admin"]) == 0
    claims = jwt.decode(capsys.readouterr().out.strip(), TEST_SECRET, algorithms=["HS256"])
    assert claims["org_id"] == str(org)
    assert claims["role"] == "admin"
    assert claims["exp"] > time.time()


def test_member_token_needs_an_org(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BILLING_JWT_SECRET", TEST_SECRET)
    assert main(["token", "--role", "member"]) == 2


def test_production_refuses_to_start_without_a_secret(monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.delenv("BILLING_JWT_SECRET", raising=False)
    monkeypatch.setenv("BILLING_ENV", "production")
    assert main(["token", "--role", "admin"]) == 2
    assert "BILLING_JWT_SECRET is required" in capsys.readouterr().err


def test_migrate_command_is_idempotent(database_url: str, monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("DATABASE_URL", database_url)
    monkeypatch.setenv("BILLING_JWT_SECRET", TEST_SECRET)
    assert main(["migrate"]) == 0
    assert "up to date" in capsys.readouterr().out


def _postgres_running(pgdata: Path) -> bool:
    for proc in psutil.process_iter(["name", "cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["name"] == "postgres" and any(str(pgdata) in part for part in cmdline):
            return True
    return False


def test_serve_on_embedded_database_survives_restart(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    port = free_port()
    served = Served(data_dir, port)
    try:
        org = served.demo_org()
        added = call_json(f"{served.base}/api/billing/add-funds", served.token("ADMIN_TOKEN"),
                      {"amount": 25.5, "orgId": org})
        assert added["balance"] == Decimal("25.50")
    finally:
        assert served.ctrl_c() == 0
    assert not _postgres_running(data_dir / "pgdata"), "embedded PostgreSQL left running"

    again = Served(data_dir, port)
    try:
        assert again.demo_org() == org
        balance = call_json(f"{again.base}/api/billing/balance", again.token("MEMBER_TOKEN"))
        assert balance == {"balance": Decimal("25.50"), "formatted": "$25.50", "currency": "usd",
                           "smsPrice": Decimal("0.0075")}
    finally:
        assert again.ctrl_c() == 0
    assert not _postgres_running(data_dir / "pgdata")


def test_serve_without_stripe_keys_pays_through_stripe_sim(tmp_path: Path) -> None:
    """The README's first command: no Stripe account, yet a top-up can be paid (on
    stripe-sim, said loudly) and is credited through the normal webhook."""
    served = Served(tmp_path / "data", free_port())
    try:
        assert "TEST MODE" in served.log.read_text()
        member = served.token("MEMBER_TOKEN")
        session = call_json(f"{served.base}/api/billing/create-checkout", member,
                            {"amount": 25})
        page = requests.get(session["url"], timeout=10)
        assert page.status_code == 200 and "TEST MODE" in page.text
        paid = requests.post(f"{session['url']}/pay", allow_redirects=False, timeout=10)
        assert paid.headers["Location"].startswith(f"{served.base}/billing?success=true")
        balance = call_json(f"{served.base}/api/billing/balance", member)
        assert balance["balance"] == Decimal("25.00")
    finally:
        assert served.ctrl_c() == 0


def test_serve_runs_the_billing_page_end_to_end_and_logs_no_link(tmp_path: Path) -> None:
    """From a portal link to credits added, over HTTP, on `serve` with stripe-sim; the link's
    token never reaches the log (gunicorn's access log is on under serve)."""
    served = Served(tmp_path / "data", free_port())
    try:
        link = call_json(f"{served.base}/api/billing/portal-sessions",
                         served.token("MEMBER_TOKEN"), {})["url"]
        token = link.rsplit("/", 1)[1]
        browser = requests.Session()
        page = browser.get(link, timeout=10)
        assert page.url == f"{served.base}/billing" and "TEST MODE" in page.text
        form = {name: re.search(rf'name="{name}" value="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
                for name in ("csrf_token", "attempt")}
        to_stripe = browser.post(f"{served.base}/billing/add-funds",
                                 data={**form, "quick": "25.00"}, allow_redirects=False,
                                 timeout=10)
        assert to_stripe.status_code == 303
        # Browsers check a form's redirect against form-action: stripe-sim's page must be in it.
        sim = to_stripe.headers["Location"].split("/pay/")[0]
        assert f"form-action 'self' {sim}" in page.headers["Content-Security-Policy"]
        paid = requests.post(f"{to_stripe.headers['Location']}/pay", allow_redirects=False,
                             timeout=10)
        back = browser.get(paid.headers["Location"], timeout=10)
        assert 'data-state="credited"' in back.text and "$25.00" in back.text
        assert re.search(r'id="balance"[^>]*>\$25\.00<', back.text)
        log = served.log.read_text()
        assert token not in log
        # Every log line is JSON (the banner and the quickstart are printed, not logged), and
        # none holds a credential; the access lines name each request by its id.
        logged = [line for line in log.splitlines() if line.startswith("{")]
        records = [json.loads(line) for line in logged]
        access = [r for r in records if r["message"] == "request"]
        opened = [r for r in access if r["path"] == "/billing/portal/[redacted]"]
        assert len(opened) == 1 and opened[0]["status"] == 303 and opened[0]["request_id"]
        assert any(r["path"] == "/billing/add-funds" and r["status"] == 303 for r in access)
        for secret in (served.token("MEMBER_TOKEN"), served.token("ADMIN_TOKEN"), "whsec_"):
            assert secret not in "\n".join(logged)
    finally:
        assert served.ctrl_c() == 0
