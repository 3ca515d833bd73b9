"""A whole run of `billing-gateway serve` (API calls with tokens, a portal link, a webhook
endpoint and its signed deliveries, a Stripe top-up through stripe-sim) leaves no token
or secret in any log line: the log is grepped for each one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import requests

from tests.plugins.receiver import Receiver
from tests.plugins.servers import Served, free_port


def test_no_token_or_secret_reaches_the_log(tmp_path: Path, receiver: Receiver) -> None:
    served = Served(tmp_path / "data", free_port(),
                    extra_env={"BILLING_WEBHOOK_ALLOW_PRIVATE": "true"})
    secrets: list[str] = []
    org = ""
    try:
        admin, member = served.token("ADMIN_TOKEN"), served.token("MEMBER_TOKEN")
        org = served.demo_org()
        service = subprocess.run(  # the README's way to a token for the SMS sender
            [sys.executable, "-m", "billing_gateway.cli", "token", "--role", "service"],
            env={**os.environ, "BILLING_DATA_DIR": str(tmp_path / "data")},
            capture_output=True, text=True, check=True).stdout.strip()
        as_admin = {"Authorization": f"Bearer {admin}"}
        endpoint = requests.post(f"{served.base}/api/billing/webhook-endpoints", json={
            "url": receiver.url, "events": ["balance.low", "topup.succeeded"]},
            headers=as_admin, timeout=10).json()
        requests.post(f"{served.base}/api/billing/add-funds", headers=as_admin, timeout=10,
                      json={"amount": "10.00", "orgId": org}).raise_for_status()
        requests.post(f"{served.base}/api/billing/deduct", timeout=10, json={
            "orgId": org, "smsCount": 1, "costPerSms": "6.00", "messageId": "log-1"},
            headers={"Authorization": f"Bearer {service}"}).raise_for_status()
        [delivered] = receiver.wait_for(1, seconds=30)  # serve's own worker sent it
        link = requests.post(f"{served.base}/api/billing/portal-sessions", json={},
                             headers={"Authorization": f"Bearer {member}"}, timeout=10).json()
        page = requests.get(link["url"], timeout=10)
        assert page.status_code == 200 and "balance" in page.text
        checkout = requests.post(f"{served.base}/api/billing/create-checkout", timeout=10,
                                 json={"amount": "25.00"},
                                 headers={"Authorization": f"Bearer {member}"}).json()
        paid = requests.post(f"{checkout['url']}/pay", timeout=10, allow_redirects=False)
        assert paid.status_code == 303
        refused = requests.get(f"{served.base}/api/billing/balance", timeout=10,
                               headers={"Authorization": f"Bearer {member}x"})
        assert refused.status_code == 401
        secrets = [admin, member, service, member + "x", endpoint["secret"],
                   link["url"].rsplit("/", 1)[1], delivered.headers["Webhook-Signature"]]
    finally:
        assert served.ctrl_c() == 0
    lines = served.log.read_text().splitlines()
    logged = [line for line in lines if line.startswith("{")]
    assert len(logged) > 10  # the run was logged, as JSON
    assert any("/billing/portal/" in line for line in logged)  # the link's line, redacted
    assert any(org in line for line in logged)  # what is not secret is still there
    for line in logged:
        json.loads(line)
        for secret in secrets:
            assert secret not in line, line
    # Outside the start-up banner (which prints the local tokens for the operator), no
    # other line carries one either.
    for line in lines:
        if "_TOKEN=" not in line and "Authorization: Bearer" not in line:
            for secret in secrets:
                assert secret not in line, line
