"""SMS usage: charges single and bulk, usage refunds, and per-org prices."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from billing_gateway.platform.config import Settings
from billing_gateway.usage import views
from billing_gateway.usage.schemas import BulkChargeItem


def init_app(app: Flask, api: Api, settings: Settings) -> None:
    """Register /deduct, /deduct/bulk, /usage/refund and /orgs/<orgId>/pricing."""
    for blp in (views.usage_blp, views.pricing_blp):
        api.register_blueprint(blp)
    # A bulk item is validated by hand (usage.items), so its shape is named here.
    api.spec.components.schema("BulkChargeItem", schema=BulkChargeItem)
