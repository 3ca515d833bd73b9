"""Fuzzing the API from its own description: the schemathesis CLI against /openapi.json of
the real app served on a local port, as a member, an admin and the SMS sender, with every
default check and both valid and invalid data. Stripe's API is stubbed (responses)."""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import responses
from flask import Flask
from werkzeug.serving import make_server

from billing_gateway import create_app
from billing_gateway.platform.auth import issue_token
from billing_gateway.platform.config import Settings
from tests import stripe_objects

# Not in the everyday loop (-m "not slow"): schemathesis: thousands of requests per role.
pytestmark = pytest.mark.slow

# Examples per operation and role (CI runs the default; raise it for a longer hunt).
EXAMPLES = int(os.environ.get("BILLING_FUZZ_EXAMPLES", "200"))
FUZZ_ORG = uuid.UUID("00000000-0000-4000-8000-00000000f022")
SCHEMATHESIS = str(Path(sys.executable).with_name("schemathesis"))


@pytest.fixture(scope="module")
def served(settings: Settings) -> Iterator[str]:
    """The app as deployed, on 127.0.0.1:<free port>; rate limits off (one caller sending
    thousands of requests), Stripe's API stubbed."""
    app: Flask = create_app(settings.with_overrides(rate_limit="off"))
    session = stripe_objects.checkout_session(org=FUZZ_ORG, amount_total=1000, status="open",
                                              payment_status="unpaid")
    with responses.RequestsMock(assert_all_requests_are_fired=False) as stripe_api:
        stripe_api.add(responses.POST, "https://api.stripe.com/v1/checkout/sessions",
                       json=session)
        # A new Customer each time, as Stripe makes for each org's own key.
        stripe_api.add_callback(responses.POST, "https://api.stripe.com/v1/customers",
                                callback=lambda _request: (200, {}, json.dumps({
                                    "id": f"cus_{uuid.uuid4().hex[:14]}",
                                    "object": "customer", "metadata": {}})))
        # ... and still has it when the org's next checkout saves a card.
        stripe_api.add_callback(responses.GET,
                                re.compile(r"https://api\.stripe\.com/v1/customers/cus_\w+"),
                                callback=lambda request: (200, {}, json.dumps({
                                    "id": request.url.rsplit("/", 1)[1],
                                    "object": "customer", "metadata": {}})))
        logging.getLogger("werkzeug").setLevel(logging.WARNING)
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        yield f"http://127.0.0.1:{server.server_port}"
        server.shutdown()
        thread.join()
    app.extensions["billing_pool"].close()


CONFIG = Path(__file__).resolve().parents[1] / "schemathesis.toml"
WEBHOOK = "/api/billing/stripe-webhook"


def _schemathesis(served: str, token: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # noqa: S603  # our own venv's schemathesis, fixed arguments
        [SCHEMATHESIS, "--config-file", str(CONFIG),
         "run", f"{served}/openapi.json", "--header", f"Authorization: Bearer {token}",
         "--max-examples", str(EXAMPLES), "--workers", "2", "--checks", "all", "--seed", "1",
         *extra],
        capture_output=True, text=True, timeout=1200, check=False,
    )


@pytest.mark.parametrize("role", ["member", "admin", "service"])
def test_api_conforms_to_its_description(served: str, settings: Settings, role: str) -> None:
    # Every token names the fuzz org (admins and the SMS sender may still name any other).
    token = issue_token(settings, org_id=FUZZ_ORG, role=role, subject=f"fuzz-{role}")
    run = _schemathesis(served, token, "--exclude-path", WEBHOOK)
    if os.environ.get("BILLING_FUZZ_LOG"):  # a path prefix: keep each role's report
        Path(f"{os.environ['BILLING_FUZZ_LOG']}-{role}.log").write_text(run.stdout)
    assert run.returncode == 0, run.stdout[-8000:]


def test_webhook_survives_anything(served: str, settings: Settings) -> None:
    """Stripe's webhook proves itself with an HMAC of the body that a fuzzer cannot
    produce, so every generated delivery is rightly refused (400): all checks but
    "schema-valid data is accepted" apply (no 5xx, documented statuses and shapes)."""
    token = issue_token(settings, org_id=FUZZ_ORG, role="member", subject="fuzz-webhook")
    run = _schemathesis(served, token, "--include-path", WEBHOOK,
                        "--exclude-checks", "positive_data_acceptance")
    assert run.returncode == 0, run.stdout[-8000:]
