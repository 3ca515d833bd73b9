"""Saved cards and auto top-up: the org's card, its settings, and the attempts the worker
charges off-session (credited through the Stripe webhook path like every payment)."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from billing_gateway.autotopup import views
from billing_gateway.platform.config import Settings


def init_app(app: Flask, api: Api, settings: Settings) -> None:
    """Register /auto-top-up; state this deployment's top-up bounds in /openapi.json."""
    api.register_blueprint(views.blp)
    fields = api.spec.components.schemas["AutoTopUpRequest"]["properties"]
    # A top-up charges at most the target, so the target is bounded as a Checkout amount.
    fields["targetBalance"].update(maximum=float(settings.max_topup))
    fields["threshold"].update(maximum=float(settings.max_topup - settings.min_topup))
