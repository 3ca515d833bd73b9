"""Top-ups through Stripe: the Stripe client, Checkout, webhook events, payments (credits,
refunds, disputes) and reconciliation."""

from __future__ import annotations

import math

from flask import Flask
from flask_smorest import Api

from billing_gateway.platform.config import Settings
from billing_gateway.topups import views
from billing_gateway.topups.checkout import StripeSlots


def init_app(app: Flask, api: Api, settings: Settings) -> None:
    """Register /create-checkout, /stripe-webhook and /payments/shortfalls; bound the
    requests that may wait on Stripe at once in this process."""
    api.register_blueprint(views.blp)
    _document_deployment_bounds(api, settings)
    app.extensions["billing_stripe_slots"] = StripeSlots(
        settings.stripe_concurrency, retry_after=math.ceil(settings.stripe_timeout))


def _document_deployment_bounds(api: Api, settings: Settings) -> None:
    """Write this deployment's top-up bounds into /openapi.json, so a client built from it
    (or a fuzzer) knows which amounts create-checkout accepts."""
    amount = api.spec.components.schemas["CheckoutRequest"]["properties"]["amount"]
    amount.update(minimum=float(settings.min_topup), maximum=float(settings.max_topup),
                  exclusiveMinimum=False)
