"""The ground every domain stands on: settings, the database and tenant scopes, callers and
roles, errors, exact money and JSON, rate limits, migrations, the embedded PostgreSQL, and
the probes. It imports no domain package."""

from __future__ import annotations

from flask import Flask
from flask_smorest import Api

from billing_gateway.platform import health
from billing_gateway.platform.config import Settings


def init_app(app: Flask, api: Api, settings: Settings) -> None:
    """Register the probes (/healthz, /readyz)."""
    api.register_blueprint(health.blp)
