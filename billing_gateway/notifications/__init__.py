"""Notifications: per-org alert settings (the low-balance threshold the billing page and the
alerts use, and who gets billing emails). The outbox, the worker, outbound webhooks and
emails come next (issue 13)."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from billing_gateway.notifications import views
from billing_gateway.platform.config import Settings


def init_app(app: Flask, api: Api, settings: Settings) -> None:
    """Register /orgs/<orgId>/alerts."""
    api.register_blueprint(views.blp)
