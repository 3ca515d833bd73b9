"""The Stripe API version the service speaks: pinned, sent on every call, the installed
SDK's release, and events of another release noticed."""

from __future__ import annotations

import datetime as dt
import logging
import uuid
from decimal import Decimal

import pytest
import responses
import stripe
from flask.testing import FlaskClient
from stripe._api_version import _ApiVersion  # the SDK's own default, to be overridden

from billing_gateway.platform.config import Settings
from billing_gateway.topups import reconcile, stripe_client
from billing_gateway.topups.stripe_client import STRIPE_API_VERSION
from tests import stripe_objects as so
from tests.plugins.webhooks import deliver

STRIPE = "https://api.stripe.com/v1"


def test_the_pin_is_a_version_of_the_installed_sdks_release() -> None:
    """stripe.api_version is what the installed SDK was generated for; the pin must be of
    the same release (no breaking change between them) and not newer than the SDK knows."""
    release = STRIPE_API_VERSION.partition(".")[2]
    assert release == stripe.major_api_version
    assert STRIPE_API_VERSION[:10] <= stripe.api_version[:10]
    assert so.API_VERSION == STRIPE_API_VERSION  # the test objects are of the same version


@pytest.fixture
def sdk_of_another_version(monkeypatch: pytest.MonkeyPatch) -> None:
    """An SDK whose own default version is not the pin (as after an upgrade): what is sent
    must still be the pin, not whatever the SDK would send by default."""
    monkeypatch.setattr(_ApiVersion, "CURRENT", "2099-01-01.zinnia")


def test_checkout_sends_the_pinned_stripe_version(
    settings: Settings, stripe_api: responses.RequestsMock, org: uuid.UUID,
    sdk_of_another_version: None,
) -> None:
    stripe_api.add(responses.POST, f"{STRIPE}/checkout/sessions", json=so.checkout_session(
        org=org, amount_total=1000, status="open", payment_status="unpaid"))
    client = stripe_client.make_client(settings)
    stripe_client.create_checkout_session(client, settings, org, Decimal("10.00"), "key-1")
    assert stripe_api.calls[0].request.headers["Stripe-Version"] == STRIPE_API_VERSION


def test_reconcile_sends_the_pinned_stripe_version(
    settings: Settings, database_url: str, stripe_api: responses.RequestsMock,
    sdk_of_another_version: None,
) -> None:
    stripe_api.add(responses.GET, f"{STRIPE}/payment_intents", json={
        "object": "list", "url": "/v1/payment_intents", "has_more": False, "data": []})
    reconcile.run(settings, database_url, dt.timedelta(hours=1), lambda _line: None)
    assert [call.request.headers["Stripe-Version"] for call in stripe_api.calls] == [
        STRIPE_API_VERSION]


@pytest.mark.parametrize("version,warned", [(STRIPE_API_VERSION, False),
                                            ("2026-11-25.endive", False),
                                            ("2025-03-31.basil", True),
                                            ("2020-08-27", True)])
def test_an_event_of_another_release_is_processed_and_warned_about(
    client: FlaskClient, org: uuid.UUID, caplog: pytest.LogCaptureFixture, version: str,
    warned: bool,
) -> None:
    evt = so.event("payment_intent.succeeded", so.payment_intent(org=org, amount=500))
    evt["api_version"] = version
    with caplog.at_level(logging.WARNING, logger="billing_gateway"):
        assert deliver(client, evt).status_code == 200
    warnings = [r.getMessage() for r in caplog.records if "rendered in API version" in
                r.getMessage()]
    assert warnings == ([f"stripe event {evt['id']} is rendered in API version {version}, not "
                         f"{STRIPE_API_VERSION}: set the webhook endpoint's API version to "
                         f"{STRIPE_API_VERSION}"] if warned else [])
