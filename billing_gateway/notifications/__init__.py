"""Notifications: per-org alert settings, the outbox of money events (written by the
ledger's SQL), outbound webhooks and alert emails, and the worker that delivers them."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from billing_gateway.notifications import views, webhook_views
from billing_gateway.platform.config import Settings


def init_app(app: Flask, api: Api, settings: Settings) -> None:
    """Register /orgs/<orgId>/alerts and /webhook-endpoints."""
    api.register_blueprint(views.blp)
    api.register_blueprint(webhook_views.blp)
